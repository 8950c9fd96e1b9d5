package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// slack is how late a bound may fire on a loaded test machine, on top of
// the quarter the bound allows itself.
const slack = time.Second

// checkCut fails t unless err is the timeout of an idle bound d that fired
// after elapsed, within [d, d + d/4 + slack].
func checkCut(t *testing.T, err error, elapsed, d time.Duration) {
	t.Helper()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got error %v, want a timeout (net.Error, os.ErrDeadlineExceeded)", err)
	}
	if elapsed < d || elapsed > d+d/4+slack {
		t.Errorf("cut after %v, want between %v and %v", elapsed, d, d+d/4+slack)
	}
}

// tcpSink returns a TCP connection whose peer reads and drops everything:
// a ReaderFrom that splices on Linux, as a ResponseWriter's does.
func tcpSink(t *testing.T) *net.TCPConn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, peer)
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
		peer.Close()
	})
	return c.(*net.TCPConn)
}

// readBody reads a response body as the proxy would: through Read, or
// through WriteTo into a TCP connection (splice).
func readBody(t *testing.T, body io.Reader, writeTo bool) (int64, error) {
	if writeTo {
		return body.(io.WriterTo).WriteTo(tcpSink(t))
	}
	return io.Copy(io.Discard, struct{ io.Reader }{body})
}

// closedBy reports (on the returned channel) how the connection ended
// once the test lets the upstream look: nil or an error if the client
// closed it, a timeout if it is still open.
func closedBy(c net.Conn, look <-chan struct{}) error {
	<-look
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return errors.New("upstream connection still open 5 s after the exchange failed")
	}
	return nil
}

// An upstream that stops in the middle of a body is cut after the read
// idle bound, whatever the framing and whether the body is read or
// spliced, and the connection is closed.
func TestReadIdleTimeoutCutsStalledBody(t *testing.T) {
	const d = 200 * time.Millisecond
	tests := []struct {
		name    string
		resp    string
		writeTo bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf", false},
		{"content-length, WriteTo", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf", true},
		{"content-length, WriteTo, nothing buffered", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", false},
		{"chunked, in the trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n0\r\nX-T: 1\r\n", false},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\nhalf", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			look := make(chan struct{})
			closed := make(chan error, 1)
			s := newServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.resp)
				closed <- closedBy(c, look)
			})
			c := newClient(t)
			c.ReadIdleTimeout = d
			req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
			res, err := c.Do(req, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = readBody(t, res.Body, tt.writeTo)
			elapsed := time.Since(start)
			res.Body.Close()
			checkCut(t, err, elapsed, d)
			close(look)
			if err := <-closed; err != nil {
				t.Error(err)
			}
		})
	}
}

// A body that keeps coming, a piece every third of the bound, is never
// cut, however long it takes in all.
func TestReadIdleTimeoutSparesSteadyBody(t *testing.T) {
	const d = 200 * time.Millisecond
	const pieces = 8 // 8 × d/3: well past the bound in all
	tests := []struct {
		name    string
		head    string
		piece   func(string) string
		end     string
		writeTo bool
	}{
		{"content-length", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 10*pieces),
			func(s string) string { return s }, "", false},
		{"content-length, WriteTo", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 10*pieces),
			func(s string) string { return s }, "", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			func(s string) string { return "a\r\n" + s + "\r\n" }, "0\r\n\r\n", false},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\n", func(s string) string { return s }, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			s := newServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.head)
				for range pieces {
					time.Sleep(d / 3) // a slow upstream, within the bound
					if _, err := io.WriteString(c, tt.piece("0123456789")); err != nil {
						return
					}
				}
				io.WriteString(c, tt.end)
				if tt.head == "HTTP/1.1 200 OK\r\n\r\n" {
					return // close-delimited: the close ends it
				}
				io.Copy(io.Discard, c)
			})
			c := newClient(t)
			c.ReadIdleTimeout = d
			req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
			res, err := c.Do(req, nil)
			if err != nil {
				t.Fatal(err)
			}
			n, err := readBody(t, res.Body, tt.writeTo)
			res.Body.Close()
			if err != nil || n != 10*pieces {
				t.Fatalf("read %d of %d bytes: %v", n, 10*pieces, err)
			}
		})
	}
}

// The time the caller takes between two reads (a slow client behind the
// proxy) is no upstream stall: only a read that waits counts.
func TestReadIdleTimeoutIgnoresSlowCaller(t *testing.T) {
	leaktest.Check(t)
	const d = 100 * time.Millisecond
	body := strings.Repeat("x", 256<<10) // more than the buffered reader holds
	s := newServer(t, keepAlive(func(*http.Request, []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}))
	c := newClient(t)
	c.ReadIdleTimeout = d
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var one [1]byte
	if _, err := io.ReadFull(res.Body, one[:]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * d) // the caller is busy elsewhere (the upstream is not stalled)
	n, err := io.Copy(io.Discard, struct{ io.Reader }{res.Body})
	if err != nil || n != int64(len(body)-1) {
		t.Fatalf("read %d of %d bytes after a pause: %v", n, len(body)-1, err)
	}
}

// An upstream that stops reading the request body is cut after the write
// idle bound, with Content-Length (plain writes) and chunked (writev)
// framing; the error is the stall, not the closed connection that
// follows it, and the upstream connection is closed.
func TestWriteIdleTimeoutCutsStalledUpload(t *testing.T) {
	const d = 200 * time.Millisecond
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			leaktest.Check(t)
			look := make(chan struct{})
			closed := make(chan error, 1)
			s := newServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				closed <- closedBy(c, look) // reads nothing until told
			})
			c := newClient(t)
			c.WriteIdleTimeout = d
			req, _ := http.NewRequest("POST", "http://"+s.addr+"/", io.NopCloser(io.LimitReader(endless{}, 1<<34)))
			if !chunked {
				req.ContentLength = 1 << 34
			}
			start := time.Now()
			_, err := c.Do(req, nil)
			elapsed := time.Since(start)
			// The kernel takes a few MB before the stall shows: the
			// lower bound holds, the upper one allows that time.
			checkCut(t, err, elapsed, d)
			close(look)
			if err := <-closed; err != nil {
				t.Error(err)
			}
		})
	}
}

// An upstream that reads the body slowly but steadily (32 KiB every
// third of the bound, through socket buffers small enough that the
// writes wait for it) is never cut.
func TestWriteIdleTimeoutSparesSlowReader(t *testing.T) {
	const d = 200 * time.Millisecond
	const size = 512 << 10
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			leaktest.Check(t)
			got := make(chan int64, 1)
			s := newServer(t, func(c net.Conn, br *bufio.Reader) {
				c.(*net.TCPConn).SetReadBuffer(64 << 10)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				var n int64
				buf := make([]byte, 32<<10)
				for {
					time.Sleep(d / 3) // a slow upstream, within the bound
					k, err := req.Body.Read(buf)
					n += int64(k)
					if err != nil {
						break
					}
				}
				got <- n
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
				io.Copy(io.Discard, c)
			})
			c := newClient(t)
			c.WriteIdleTimeout = d
			c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
				}
				return nc, err
			}
			req, _ := http.NewRequest("POST", "http://"+s.addr+"/", io.NopCloser(io.LimitReader(endless{}, size)))
			if !chunked {
				req.ContentLength = size
			}
			start := time.Now()
			res, err := c.Do(req, nil)
			if err != nil {
				t.Fatalf("slow but steady upstream cut: %v", err)
			}
			if elapsed := time.Since(start); elapsed < 2*d {
				t.Errorf("upload done in %v: too fast to test the bound", elapsed)
			}
			res.Body.Close()
			if n := <-got; n != size {
				t.Errorf("upstream read %d bytes, want %d", n, size)
			}
		})
	}
}

// A request body that comes slowly from its source (a slow client) is no
// upstream stall: only a write that waits counts.
func TestWriteIdleTimeoutIgnoresSlowSource(t *testing.T) {
	leaktest.Check(t)
	const d = 100 * time.Millisecond
	s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body)
	}))
	c := newClient(t)
	c.WriteIdleTimeout = d
	tick := time.NewTicker(3 * d)
	defer tick.Stop()
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/", io.NopCloser(&slowBody{n: 3, tick: tick.C}))
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatalf("slow request body taken for an upstream stall: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(b) != 30 {
		t.Errorf("echo of %d bytes, want 30", len(b))
	}
}

// Deadlines left on a pooled connection by the last exchange (expired by
// the time it is reused) must not fail the next one, with or without a
// response header timeout.
func TestIdleDeadlinesDoNotOutliveExchange(t *testing.T) {
	for _, rht := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprintf("ResponseHeaderTimeout=%v", rht), func(t *testing.T) {
			leaktest.Check(t)
			s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
				return "HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + string(body)
			}))
			c := newClient(t)
			c.ReadIdleTimeout, c.WriteIdleTimeout, c.ResponseHeaderTimeout = 100*time.Millisecond, 100*time.Millisecond, rht
			for i := range 3 {
				if _, body := get(t, c, "http://"+s.addr+"/", strings.NewReader("ping")); body != "ping" {
					t.Fatalf("exchange %d: %q", i, body)
				}
				pc := pooledConn(t, c, s.addr)
				past := time.Now().Add(-time.Second) // as if idle for long
				pc.setReadDeadline(past)
				pc.setWriteDeadline(past)
			}
			if n := s.accepts.Load(); n != 1 {
				t.Errorf("%d connections, want 1 reused", n)
			}
		})
	}
}

// An upgraded connection belongs to its tunnel, which bounds its own
// waits: the idle bounds no longer apply.
func TestUpgradeHasNoIdleBound(t *testing.T) {
	leaktest.Check(t)
	const d = 50 * time.Millisecond
	s := newServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
		time.Sleep(3 * d) // a quiet tunnel, longer than the bounds
		io.WriteString(c, "late")
		b := make([]byte, 4)
		if _, err := io.ReadFull(br, b); err == nil {
			c.Write(b)
		}
	})
	c := newClient(t)
	c.ReadIdleTimeout, c.WriteIdleTimeout = d, d
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/", nil)
	req.Header.Set("Connection", "upgrade")
	req.Header.Set("Upgrade", "test")
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rw := res.Body.(io.ReadWriter)
	b := make([]byte, 4)
	if _, err := io.ReadFull(rw, b); err != nil || string(b) != "late" {
		t.Fatalf("read %q, %v after a quiet spell, want %q", b, err, "late")
	}
	if _, err := rw.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rw, b); err != nil || string(b) != "pong" {
		t.Fatalf("echo %q, %v", b, err)
	}
}

// A Unix-socket upstream that stops in the middle of a spliced body is
// cut after the read idle bound too.
func TestReadIdleTimeoutUnixSocket(t *testing.T) {
	leaktest.Check(t)
	const d = 200 * time.Millisecond
	path := filepath.Join(t.TempDir(), "up.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	look := make(chan struct{})
	closed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			closed <- err
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			closed <- err
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("h", 50000))
		closed <- closedBy(c, look)
	}()
	t.Cleanup(func() { ln.Close() })
	c := newClient(t)
	c.ReadIdleTimeout = d
	req := &http.Request{Method: "GET", URL: &url.URL{Scheme: "unix", Host: path, Path: "/"}, Host: "localhost", Header: http.Header{}}
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := res.Body.(io.WriterTo).WriteTo(tcpSink(t))
	elapsed := time.Since(start)
	res.Body.Close()
	checkCut(t, err, elapsed, d)
	if n != 50000 {
		t.Errorf("moved %d bytes before the stall, want 50000", n)
	}
	close(look)
	if err := <-closed; err != nil {
		t.Error(err)
	}
}
