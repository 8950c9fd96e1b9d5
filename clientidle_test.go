package sluice

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// newBoundedFront serves p on a loopback port behind the front the tests
// run with (see newFront), with the client's idleness bounded to bound
// while it sends a request body or reads a response: by sluice.Server's
// BodyIdleTimeout and WriteIdleTimeout, or behind net/http's server by
// the Proxy's ClientIdleTimeout. It returns the address.
func newBoundedFront(t *testing.T, p *Proxy, bound time.Duration) string {
	t.Helper()
	if netHTTPFront() {
		// As docs/timeouts.md says to configure http.Server: the Proxy
		// bounds the body and the response, the server the rest.
		p.ClientIdleTimeout = bound
		s := httptest.NewUnstartedServer(p)
		s.Config.ReadHeaderTimeout = bound
		s.Config.IdleTimeout = bound
		s.Start()
		t.Cleanup(func() {
			s.Close()
			p.CloseIdleConnections()
		})
		return s.Listener.Addr().String()
	}
	p.ClientIdleTimeout = time.Hour // not used behind Server
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: p, BodyIdleTimeout: bound, WriteIdleTimeout: bound}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		for end := time.Now().Add(5 * time.Second); srv.server().Conns() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		p.CloseIdleConnections()
	})
	return ln.Addr().String()
}

// upstreamBody is what a raw upstream saw of a request body.
type upstreamBody struct {
	n   int   // bytes of body
	err error // nil: the body ended as its framing says
}

// bodyRecorder is a raw upstream that reads one request per connection,
// reports what it got of the body, and answers 200 if the body was whole.
// (A reset may destroy bytes the upstream had not read yet, its head
// included: then it reports no byte of body.)
func bodyRecorder(t *testing.T) (*rawServer, chan upstreamBody) {
	got := make(chan upstreamBody, 4)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			got <- upstreamBody{0, fmt.Errorf("request head: %w", err)}
			return
		}
		n, err := io.Copy(io.Discard, req.Body) // a chunked body must end with its last chunk
		got <- upstreamBody{int(n), err}
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return up, got
}

// A client that stops sending its request body for longer than the
// body's idle bound gets 408 and loses its connection, and the upstream
// sees the request aborted, never a complete one (with a length: fewer
// bytes and a reset or close; chunked: no last chunk). A client that
// sends slowly but steadily gets its body through.
func TestClientBodyIdleTimeout(t *testing.T) {
	const bound = 200 * time.Millisecond
	tests := []struct {
		name   string
		pieces []string // sent bound/3 apart, then the client waits
		status int
		got    int // bytes of body the upstream got (at most, when not whole)
		whole  bool
	}{
		{"stalled with length", []string{"PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789"},
			408, 10, false},
		{"stalled chunked", []string{"PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"},
			408, 10, false},
		{"stalled in a chunk", []string{"PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n0123456789"},
			408, 10, false},
		{"steady with length", []string{"PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n", "ab", "cd", "ef", "gh"},
			200, 8, true},
		{"steady chunked", []string{"PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nab\r\n", "2\r\ncd\r\n", "0\r\n\r\n"},
			200, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			up, got := bodyRecorder(t)
			logs := &logRecorder{}
			p := &Proxy{Director: &SingleHost{Target: parseURL(t, up.URL())}, Logger: logs.logger()}
			addr := newBoundedFront(t, p, bound)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for i, piece := range tt.pieces {
				if i > 0 {
					time.Sleep(bound / 3)
				}
				io.WriteString(c, piece)
			}
			stalled := time.Now()
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			io.Copy(io.Discard, res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			ub := <-got
			if (ub.err == nil) != tt.whole {
				t.Errorf("upstream read the body to its end: %v, want %v (err %v)", ub.err == nil, tt.whole, ub.err)
			}
			if tt.whole && ub.n != tt.got || ub.n > tt.got {
				t.Errorf("upstream got %d bytes of body, want %d", ub.n, tt.got)
			}
			if tt.status == 200 {
				return
			}
			if after := time.Since(stalled); after < bound*3/4 || after > bound+time.Second {
				t.Errorf("answered %v after the client stalled, want about %v", after, bound)
			}
			if !res.Close {
				t.Error("408 without Connection: close")
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the 408: %q, %v; want the close", rest, err)
			}
			if !strings.Contains(logs.String(), "status=408") {
				t.Errorf("log:\n%s", logs)
			}
		})
	}
}

// endlessUpstream answers every request with a body that does not end
// (chunked, or with a Content-Length of 1 GiB: the splice path) and
// reports when its writes fail: the proxy closed the connection.
func endlessUpstream(t *testing.T, chunked bool) (*rawServer, chan time.Time) {
	cut := make(chan time.Time, 4)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		head := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n"
		piece := make([]byte, 32<<10)
		if chunked {
			head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
			piece = append([]byte(fmt.Sprintf("%x\r\n", len(piece))), append(piece, "\r\n"...)...)
		}
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		for {
			if _, err := c.Write(piece); err != nil {
				cut <- time.Now()
				return
			}
		}
	})
	return up, cut
}

// A client that stops reading its response for longer than the response's
// idle bound loses its connection, and the upstream's with it, on both
// paths a body takes (copied, spliced); one that reads slowly but
// steadily is never cut.
func TestClientWriteIdleTimeout(t *testing.T) {
	const bound = 200 * time.Millisecond
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			leaktest.Check(t)
			up, cut := endlessUpstream(t, chunked)
			p := &Proxy{Director: &SingleHost{Target: parseURL(t, up.URL())}, Logger: (&logRecorder{}).logger()}
			addr := newBoundedFront(t, p, bound)

			// Steady: 128 KiB every bound/3, for 3 bounds.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			for range 9 {
				if _, err := io.CopyN(io.Discard, res.Body, 128<<10); err != nil {
					t.Fatalf("steady reader cut: %v", err)
				}
				time.Sleep(bound / 3)
			}
			// Then stalled: the client reads no more.
			stalled := time.Now()
			select {
			case at := <-cut:
				if after := at.Sub(stalled); after > bound+2*time.Second {
					t.Errorf("upstream connection closed %v after the client stalled, want about %v", after, bound)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream connection stays open with a client that does not read")
			}
			if _, err := io.Copy(io.Discard, res.Body); err == nil {
				t.Error("the client's body ended cleanly")
			}
		})
	}
}

// The client's idle bounds count the client's silence only: an upstream
// that pauses longer than them, while it takes the request body or
// between pieces of its response (and before its end), leaves a client
// that keeps up unharmed.
func TestUpstreamPausesDoNotCountAgainstClient(t *testing.T) {
	leaktest.Check(t)
	const bound = 300 * time.Millisecond
	const size = 4 << 20
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n, err := io.CopyN(io.Discard, req.Body, 1<<20)
		if err != nil {
			return
		}
		time.Sleep(bound * 3 / 2) // the proxy stops reading the client meanwhile
		m, err := io.Copy(io.Discard, req.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		fmt.Fprintf(c, "%x\r\ngot %d\r\n", len(fmt.Sprintf("got %d", n+m)), n+m)
		time.Sleep(bound * 3 / 2) // the proxy writes nothing meanwhile
		io.WriteString(c, "0\r\n\r\n")
	})
	p := &Proxy{Director: &SingleHost{Target: parseURL(t, up.URL())}, Logger: (&logRecorder{}).logger()}
	addr := newBoundedFront(t, p, bound)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		fmt.Fprintf(c, "PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size)
		c.Write(make([]byte, size))
	}()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if want := fmt.Sprintf("got %d", size); err != nil || string(b) != want {
		t.Errorf("response body %q (%v), want %q", b, err, want)
	}
}

// deadlineWriter is a server's ResponseWriter with deadlines;
// boundingWriter the one of a server that bounds the client itself.
type deadlineWriter struct{ http.ResponseWriter }

func (deadlineWriter) SetReadDeadline(time.Time) error  { return nil }
func (deadlineWriter) SetWriteDeadline(time.Time) error { return nil }

type boundingWriter struct{ deadlineWriter }

func (boundingWriter) BoundsClientIdle() bool { return true }

// The Proxy bounds the client's idleness itself only where the server in
// front does not, and only where deadlines mean idleness: HTTP/1.x, not
// an upgrade, not over a ReadTimeout or WriteTimeout of http.Server's.
func TestClientIdleTimeoutWhere(t *testing.T) {
	tests := []struct {
		name       string
		idle       time.Duration
		srv        *http.Server
		w          http.ResponseWriter
		proto      int
		upgrade    bool
		read, wrte bool // bounds applied
	}{
		{"net/http", 0, &http.Server{}, deadlineWriter{}, 1, false, true, true},
		{"no server in context", 0, nil, deadlineWriter{}, 1, false, true, true},
		{"sluice.Server", 0, nil, boundingWriter{}, 1, false, false, false},
		{"ReadTimeout", 0, &http.Server{ReadTimeout: time.Minute}, deadlineWriter{}, 1, false, false, true},
		{"WriteTimeout", 0, &http.Server{WriteTimeout: time.Minute}, deadlineWriter{}, 1, false, true, false},
		{"HTTP/2", 0, &http.Server{}, deadlineWriter{}, 2, false, false, false},
		{"upgrade", 0, &http.Server{}, deadlineWriter{}, 1, true, false, false},
		{"negative", -1, &http.Server{}, deadlineWriter{}, 1, false, false, false},
		{"no deadlines", 0, &http.Server{}, httptest.NewRecorder(), 1, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{ClientIdleTimeout: tt.idle}
			r := httptest.NewRequest("POST", "http://a/", strings.NewReader("body"))
			r.ProtoMajor = tt.proto
			if tt.srv != nil {
				r = r.WithContext(context.WithValue(r.Context(), http.ServerContextKey, tt.srv))
			}
			if tt.upgrade {
				r.Header.Set("Connection", "upgrade")
				r.Header.Set("Upgrade", "websocket")
			}
			pr := p.newProxyRequest(r)
			pr.rw = responseWriter{ResponseWriter: tt.w}
			p.boundClient(pr, tt.w)
			_, read := pr.Out.Body.(*idleBody)
			wrte := pr.rw.idle > 0
			if read != tt.read || wrte != tt.wrte {
				t.Errorf("read bound %v, write bound %v; want %v, %v", read, wrte, tt.read, tt.wrte)
			}
			if wrte && pr.rw.idle != DefaultClientIdleTimeout {
				t.Errorf("bound %v, want the default %v", pr.rw.idle, DefaultClientIdleTimeout)
			}
		})
	}
}

// A client that stalls in a request body nobody waited for (the upstream
// answered first, or the Proxy answered itself without reading it) loses
// its connection within the body's bound once it has its response.
func TestClientBodyIdleTimeoutAfterEarlyAnswer(t *testing.T) {
	const bound = 200 * time.Millisecond
	for _, local := range []bool{false, true} {
		t.Run(fmt.Sprintf("local=%v", local), func(t *testing.T) {
			if !local && netHTTPFront() {
				// net/http ends the read still running in the transport
				// by clearing the connection's deadlines, then drains the
				// body with none: see docs/timeouts.md.
				t.Skip("net/http drains a body after the handler with no deadline when a read of it was under way")
			}
			leaktest.Check(t)
			up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
				io.Copy(io.Discard, br) // until the proxy gives up on the body
			})
			p := &Proxy{Director: &SingleHost{Target: parseURL(t, up.URL())}, Logger: (&logRecorder{}).logger()}
			if local {
				p.Authorizer = AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Deny(403, "no"), nil })
			}
			addr := newBoundedFront(t, p, bound)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789") // servers drain this much
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			if res.StatusCode != 403 {
				t.Fatalf("status %d, want 403", res.StatusCode)
			}
			answered := time.Now()
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the response: %q, %v; want the close", rest, err)
			}
			if after := time.Since(answered); after > bound+2*time.Second {
				t.Errorf("closed %v after the response, want within about %v", after, bound)
			}
		})
	}
}

func parseURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
