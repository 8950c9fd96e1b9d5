package sluice

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// newBoundedFront serves p on a loopback port behind the front the tests
// run with (see newFront), with the client's idleness bounded to bound
// while it sends a request body or reads a response. It returns the
// address.
func newBoundedFront(t *testing.T, p *Proxy, bound time.Duration) string {
	t.Helper()
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
func bodyRecorder(t *testing.T) (*rawServer, chan upstreamBody) {
	got := make(chan upstreamBody, 4)
	up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
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
		got    int // bytes of body the upstream got
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
			p := &Proxy{Director: SingleHost(mustParse(t, up.URL()), false), Logger: logs.logger()}
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
			if diff := cmp.Diff(tt.got, ub.n); diff != "" {
				t.Errorf("bytes of body upstream (-want +got):\n%s", diff)
			}
			if (ub.err == nil) != tt.whole {
				t.Errorf("upstream read the body to its end: %v, want %v (err %v)", ub.err == nil, tt.whole, ub.err)
			}
			if tt.status == 200 {
				return
			}
			if after := time.Since(stalled); after < bound*7/8 || after > bound+time.Second {
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
			p := &Proxy{Director: SingleHost(mustParse(t, up.URL()), false), Logger: (&logRecorder{}).logger()}
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
