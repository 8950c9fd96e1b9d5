package overload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is a fast HTTP/1.1 upstream: every request (without a body)
// gets the same small 200 response, after Delay. With workers, at most
// that many requests are worked on at once, the others wait their turn:
// an application of bounded capacity (workers/Delay requests a second),
// past which requests queue. It holds a goroutine and a 4 KiB reader per
// connection and allocates nothing per request.
type Upstream struct {
	Addr  string
	Delay time.Duration
	sem   chan struct{} // nil: no bound

	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     map[net.Conn]struct{}
}

// upstreamBody is the body of every response.
var upstreamBody = strings.Repeat("x", 100)

var upstreamResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
	strconv.Itoa(len(upstreamBody)) + "\r\n\r\n" + upstreamBody)

// StartUpstream listens on a loopback port and serves until Close;
// workers bounds the requests worked on at once (0: no bound).
func StartUpstream(delay time.Duration, workers int) (*Upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &Upstream{Addr: ln.Addr().String(), Delay: delay, ln: ln, open: map[net.Conn]struct{}{}}
	if workers > 0 {
		u.sem = make(chan struct{}, workers)
	}
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.mu.Lock()
			u.open[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Go(func() { u.serve(c) })
		}
	})
	return u, nil
}

func (u *Upstream) serve(c net.Conn) {
	defer func() {
		u.mu.Lock()
		delete(u.open, c)
		u.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReaderSize(c, 4<<10)
	for {
		// Requests have no body: a head ends with an empty line.
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if u.sem != nil {
			u.sem <- struct{}{}
		}
		if u.Delay > 0 {
			time.Sleep(u.Delay)
		}
		if u.sem != nil {
			<-u.sem
		}
		if _, err := c.Write(upstreamResponse); err != nil {
			return
		}
	}
}

// Conns returns the number of open connections.
func (u *Upstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.open)
}

// Accepted returns the number of connections accepted so far.
func (u *Upstream) Accepted() int64 { return u.accepted.Load() }

// Close stops the upstream and closes its connections.
func (u *Upstream) Close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.open {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// ServeUpstreamProcess is the body of an upstream process (see
// StartUpstreamProcess): it serves an Upstream with delay and workers, writes
// "addr host:port" to standard output, answers each "accepted" line on
// standard input with "accepted N", and returns when standard input
// closes.
func ServeUpstreamProcess(delay time.Duration, workers int) error {
	u, err := StartUpstream(delay, workers)
	if err != nil {
		return err
	}
	defer u.Close()
	fmt.Println("addr", u.Addr)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "accepted" {
			fmt.Println("accepted", u.Accepted())
		}
	}
	return nil
}

// UpstreamProc is an upstream in a process of its own, so that its work
// does not slow the clients down (or the other way round).
type UpstreamProc struct {
	Addr string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
}

// StartUpstreamProcess runs argv (a program that calls
// ServeUpstreamProcess) and waits for its address.
func StartUpstreamProcess(argv []string, env ...string) (*UpstreamProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	u := &UpstreamProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	for u.out.Scan() {
		if addr, ok := strings.CutPrefix(u.out.Text(), "addr "); ok {
			u.Addr = addr
			return u, nil
		}
	}
	u.Close()
	return nil, errors.New("the upstream process did not start")
}

// Accepted returns the number of connections the upstream accepted.
func (u *UpstreamProc) Accepted() int64 {
	fmt.Fprintln(u.in, "accepted")
	for u.out.Scan() {
		if v, ok := strings.CutPrefix(u.out.Text(), "accepted "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// Close stops the upstream process.
func (u *UpstreamProc) Close() {
	u.in.Close()
	done := make(chan struct{})
	go func() { u.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		u.cmd.Process.Kill()
		<-done
	}
}
