// Package overload drives a proxy with many keep-alive HTTP/1.1 clients
// and measures what they get: the 10,000-client run, the runs beyond
// capacity against nginx, with the proxy in a process of its own (the
// built examples/passthrough, or nginx) in front of a fast upstream in
// this one. cmd/overload runs them; docs/robustness.md has the figures and the
// commands.
package overload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Load describes the clients of a run.
type Load struct {
	Addr    string        // the proxy, host:port
	Clients int           // keep-alive connections, one client each
	Think   time.Duration // mean pause between a client's requests (uniform in [0, 2*Think]); 0: none
	Ramp    int           // connections being opened at once (default 200)
	Timeout time.Duration // bound on a request's answer (default 10 s)
	Path    string        // the request target (default "/")

	// AnyStatusWarmUp accepts any answer to the warm-up requests of
	// Connect (a refusal, beyond capacity), not only 200.
	AnyStatusWarmUp bool
}

// Outcome is what the clients of a run got.
type Outcome struct {
	Requests int64            // answered, whatever the status
	Status   map[int]int64    // by status
	Errors   map[string]int64 // by kind: connect, write, read, timeout, closed
	Retried  int64            // requests sent again after a kept-alive connection closed
	Latency  *Histogram       // of every answered request
	OKLat    *Histogram       // of 2xx answers
	ShedLat  *Histogram       // of 429 and 503 answers
	Elapsed  time.Duration
}

// Errs returns the number of failed requests (no answer).
func (o *Outcome) Errs() int64 {
	var n int64
	for _, v := range o.Errors {
		n += v
	}
	return n
}

// Clients holds the connections of a run.
type Clients struct {
	load  Load
	conns []*client
}

type client struct {
	c      net.Conn
	br     *bufio.Reader
	rnd    *rand.Rand
	served int // requests answered on c
}

// outcomeAcc gathers an Outcome from many goroutines.
type outcomeAcc struct {
	mu      sync.Mutex
	status  map[int]int64
	errors  map[string]int64
	lat     Histogram
	okLat   Histogram
	shedLat Histogram
	n       atomic.Int64
	retried atomic.Int64
}

func newAcc() *outcomeAcc {
	return &outcomeAcc{status: map[int]int64{}, errors: map[string]int64{}}
}

func (a *outcomeAcc) answered(status int, d time.Duration) {
	a.n.Add(1)
	a.lat.Record(d)
	switch {
	case status >= 200 && status < 300:
		a.okLat.Record(d)
	case status == 429 || status == 503:
		a.shedLat.Record(d)
	}
	a.mu.Lock()
	a.status[status]++
	a.mu.Unlock()
}

func (a *outcomeAcc) failed(kind string) {
	a.mu.Lock()
	a.errors[kind]++
	a.mu.Unlock()
}

func (a *outcomeAcc) outcome(elapsed time.Duration) *Outcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := &Outcome{Requests: a.n.Load(), Status: map[int]int64{}, Errors: map[string]int64{},
		Latency: a.lat.Clone(), OKLat: a.okLat.Clone(), ShedLat: a.shedLat.Clone(), Elapsed: elapsed,
		Retried: a.retried.Load()}
	for k, v := range a.status {
		o.Status[k] = v
	}
	for k, v := range a.errors {
		o.Errors[k] = v
	}
	return o
}

// Connect opens load.Clients connections to the proxy, each after one
// request answered 200 (the warm-up; not counted), and returns them idle.
// It fails if any connection or warm-up request fails.
func Connect(ctx context.Context, load Load) (*Clients, error) {
	if load.Ramp <= 0 {
		load.Ramp = 200
	}
	if load.Timeout <= 0 {
		load.Timeout = 10 * time.Second
	}
	if load.Path == "" {
		load.Path = "/"
	}
	cs := &Clients{load: load, conns: make([]*client, load.Clients)}
	sem := make(chan struct{}, load.Ramp)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	warm := newAcc()
	for i := range cs.conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cl := &client{rnd: rand.New(rand.NewPCG(uint64(i), 1))}
			if err := cl.dial(ctx, load.Addr, load.Timeout); err != nil {
				select {
				case errc <- fmt.Errorf("connection %d: %w", i, err):
				default:
				}
				return
			}
			cs.conns[i] = cl
			if st := cl.do(ctx, load, warm); st == 0 || (st != 200 && !load.AnyStatusWarmUp) {
				select {
				case errc <- fmt.Errorf("connection %d: warm-up request: status %d (%v)", i, st, warm.errors):
				default:
				}
			}
		})
		select {
		case err := <-errc:
			wg.Wait()
			cs.Close()
			return nil, err
		default:
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		cs.Close()
		return nil, err
	default:
	}
	return cs, nil
}

// Close closes every connection.
func (cs *Clients) Close() {
	for _, c := range cs.conns {
		if c != nil && c.c != nil {
			c.c.Close()
		}
	}
}

// Run has every client make requests, with the think time between, for d
// (a request under way when d ends is finished), and returns what they
// got. A client whose connection fails or is closed opens a new one.
func (cs *Clients) Run(ctx context.Context, d time.Duration) *Outcome {
	acc := newAcc()
	end := time.Now().Add(d)
	start := time.Now()
	// Pauses end with the run; dials do not.
	pauses, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	for _, cl := range cs.conns {
		wg.Go(func() {
			if cs.load.Think > 0 {
				// Spread the clients' first requests over a think time.
				sleep(pauses, time.Duration(cl.rnd.Int64N(int64(2*cs.load.Think))))
			}
			for time.Now().Before(end) && ctx.Err() == nil {
				if cl.c == nil {
					if err := cl.dial(ctx, cs.load.Addr, cs.load.Timeout); err != nil {
						acc.failed("connect")
						sleep(ctx, 100*time.Millisecond)
						continue
					}
				}
				cl.do(ctx, cs.load, acc)
				if cs.load.Think > 0 {
					sleep(pauses, time.Duration(cl.rnd.Int64N(int64(2*cs.load.Think))))
				}
			}
		})
	}
	wg.Wait()
	return acc.outcome(time.Since(start))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (cl *client) dial(ctx context.Context, addr string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	cl.c = c
	if cl.br == nil {
		cl.br = bufio.NewReaderSize(c, 4<<10)
	} else {
		cl.br.Reset(c)
	}
	return nil
}

func (cl *client) drop() {
	if cl.c != nil {
		cl.c.Close()
		cl.c = nil
	}
	cl.served = 0
}

// do sends one GET and reads its answer, recording it in acc; it returns
// the status, or 0 when the request failed (the connection is then
// dropped). Like a browser or Go's http.Transport, a client whose request
// fails on a kept-alive connection before any byte of an answer (the
// server closed the connection while it was idle: RFC 9112 §9.3.1) sends
// it once more on a new connection; acc counts those retries apart.
func (cl *client) do(ctx context.Context, load Load, acc *outcomeAcc) int {
	start := time.Now()
	for retried := false; ; retried = true {
		reused := cl.served > 0
		status, answered, err := cl.roundTrip(load)
		if err == nil {
			acc.answered(status, time.Since(start))
			return status
		}
		cl.drop()
		if reused && !answered && !retried {
			acc.retried.Add(1)
			if derr := cl.dial(ctx, load.Addr, load.Timeout); derr != nil {
				acc.failed("connect")
				return 0
			}
			continue
		}
		acc.failed(err.Error())
		return 0
	}
}

// roundTrip sends one GET on the connection and reads the answer; the
// error is a kind (see errKind), and answered tells whether any byte of
// an answer came.
func (cl *client) roundTrip(load Load) (status int, answered bool, err error) {
	cl.c.SetDeadline(time.Now().Add(load.Timeout))
	if _, err := io.WriteString(cl.c, "GET "+load.Path+" HTTP/1.1\r\nHost: overload.test\r\n\r\n"); err != nil {
		return 0, false, errors.New(errKind("write", err))
	}
	status, closeAfter, answered, err := readResponse(cl.br)
	if err != nil {
		return 0, answered, errors.New(errKind("read", err))
	}
	cl.served++
	if closeAfter {
		cl.drop()
	}
	return status, true, nil
}

func errKind(op string, err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return op
}

// readResponse reads a response with a Content-Length (what the upstream
// and the refusals of sluice and nginx send) and drops its body.
func readResponse(br *bufio.Reader) (status int, closeAfter, answered bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, len(line) > 0, err
	}
	answered = true
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, true, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, true, fmt.Errorf("bad status line %q", line)
	}
	cl := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, true, err
		}
		if len(line) <= 2 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if cl, err = strconv.Atoi(string(v)); err != nil {
				return 0, false, true, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Connection")):
			closeAfter = bytes.EqualFold(v, []byte("close"))
		}
	}
	if cl < 0 {
		return 0, false, true, errors.New("response without Content-Length")
	}
	if _, err := br.Discard(cl); err != nil {
		return 0, false, true, err
	}
	return status, closeAfter, true, nil
}
