package h1server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// logBuffer collects what a Server logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// closedWithin reads from br until the server closes the connection and
// returns what came and how long after start the close came.
func closedWithin(t *testing.T, br *bufio.Reader, start time.Time) (string, time.Duration) {
	t.Helper()
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading until the close: %v (got %q)", err, b)
	}
	return string(b), time.Since(start)
}

// A request head must be complete ReadHeaderTimeout after its first byte,
// however steadily it trickles in: a head begun and not done gets 408
// and the connection closes (logged once); a connection that never began
// a head closes silently.
func TestReadHeaderTimeout(t *testing.T) {
	leaktest.Check(t)
	const bound = 200 * time.Millisecond
	logs := &logBuffer{}
	_, addr := start(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = bound
		s.IdleTimeout = 10 * time.Second
		s.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	const answer408 = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n" +
		"Content-Length: 54\r\n\r\n408 Request Timeout: request head not received in time"
	tests := []struct {
		name   string
		pieces []string // sent bound/3 apart
		want   string   // what comes back before the close
	}{
		{"request line cut", []string{"GET /x HT"}, answer408},
		{"header cut", []string{"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1"}, answer408},
		{"trickle past the bound", []string{"GET / HTTP/1.1\r\n", "Host: a\r\n", "X-A: 1\r\n", "X-B: 2\r\n", "X-C: 3\r\n"}, answer408},
		{"silent new connection", nil, ""},
		{"only an empty line", []string{"\r\n"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := dial(t, addr)
			begin := time.Now()
			for i, p := range tt.pieces {
				if i > 0 {
					time.Sleep(bound / 3)
				}
				if _, err := io.WriteString(c, p); err != nil {
					break // the server may have given up already
				}
			}
			got, after := closedWithin(t, br, begin)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if after < bound*9/10 || after > bound+time.Second {
				t.Errorf("closed %v after the first byte, want about %v", after, bound)
			}
		})
	}
	if n := strings.Count(logs.String(), "request head timed out"); n != 3 {
		t.Errorf("logged %d head timeouts, want 3 (one per 408):\n%s", n, logs)
	}

	// A head that trickles in within the bound is served, and the
	// connection stays open for the next one.
	t.Run("trickle within the bound", func(t *testing.T) {
		c, br := dial(t, addr)
		for range 2 {
			for _, p := range []string{"GET /slow HTT", "P/1.1\r\nHost: a\r\n", "\r\n"} {
				io.WriteString(c, p)
				time.Sleep(bound / 4)
			}
			if _, body := readResponse(t, br, "GET"); body != "GET /slow host=a len=0 body=" {
				t.Errorf("got %q", body)
			}
		}
	})
}

// With ReadHeaderTimeout negative, a head has no bound but the first
// byte of a new connection is still awaited for IdleTimeout only.
func TestNoReadHeaderTimeout(t *testing.T) {
	leaktest.Check(t)
	const idle = 150 * time.Millisecond
	_, addr := start(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = -1
		s.IdleTimeout = idle
	})
	_, br := dial(t, addr)
	begin := time.Now()
	// (The server may accept before Dial returns: a tenth of slack.)
	if got, after := closedWithin(t, br, begin); got != "" || after < idle*9/10 || after > idle+time.Second {
		t.Errorf("silent connection: got %q, closed after %v; want nothing after %v", got, after, idle)
	}
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	time.Sleep(2 * idle) // longer than any other bound: the head has none
	io.WriteString(c, "Host: a\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "GET / host=a len=0 body=" {
		t.Errorf("got %q", body)
	}
}

// bodyReader answers 408 when the request body cannot be read in time,
// as a proxy does, and says what it saw.
func bodyReader(pause time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 4)
		var got []byte
		var err error
		for {
			var n int
			n, err = r.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
			time.Sleep(pause) // the handler's own pace
		}
		switch {
		case err == io.EOF:
			fmt.Fprintf(w, "read %q", got)
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.WriteHeader(http.StatusRequestTimeout)
			var ie *idleError
			fmt.Fprintf(w, "read %d bytes, idleError %v, context %v", len(got), errors.As(err, &ie), r.Context().Err())
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "read %d bytes, %v", len(got), err)
		}
	}
}

// A request body read waits at most BodyIdleTimeout for the client's next
// byte: a stalled upload fails with a timeout the handler can answer (408,
// and the connection closes); a slow but steady one, and a handler that
// takes its time between reads, are never cut.
func TestBodyIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	const bound = 200 * time.Millisecond
	_, addr := start(t, bodyReader(0), func(s *Server) { s.BodyIdleTimeout = bound })
	_, slowAddr := start(t, bodyReader(bound*3/2), func(s *Server) { s.BodyIdleTimeout = bound })
	tests := []struct {
		name   string
		addr   string
		pieces []string // sent bound/3 apart, then the client waits
		status int
		body   string
	}{
		{"stalled with length", addr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789"},
			408, "read 10 bytes, idleError true, context <nil>"},
		{"stalled chunked", addr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123"},
			408, "read 4 bytes, idleError true, context <nil>"},
		{"stalled before the trailer", addr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n0\r\n"},
			408, "read 4 bytes, idleError true, context <nil>"},
		{"steady", addr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", "ab", "cd", "ef", "gh", "ij", "kl"},
			200, `read "abcdefghijkl"`},
		{"steady chunked", addr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nab\r\n", "2\r\ncd", "\r\n2\r\n", "ef\r\n", "0\r\n", "\r\n"},
			200, `read "abcdef"`},
		{"slow handler", slowAddr, []string{"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nabcdefghijkl"},
			200, `read "abcdefghijkl"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, br := dial(t, tt.addr)
			for i, p := range tt.pieces {
				if i > 0 {
					time.Sleep(bound / 3)
				}
				io.WriteString(c, p)
			}
			stalled := time.Now()
			res, body := readResponse(t, br, "PUT")
			if res.StatusCode != tt.status || body != tt.body {
				t.Errorf("got %d %q, want %d %q", res.StatusCode, body, tt.status, tt.body)
			}
			if tt.status == 200 {
				if res.Close {
					t.Error("connection closes after a complete body")
				}
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
		})
	}
}

// A body the handler left unread is drained within BodyIdleTimeout too: a
// client that stalls in it loses the connection, after its response.
func TestBodyIdleTimeoutWhileDraining(t *testing.T) {
	leaktest.Check(t)
	const bound = 200 * time.Millisecond
	s, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "not reading")
	}), func(s *Server) { s.BodyIdleTimeout = bound })
	c, br := dial(t, addr)
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
	if res, body := readResponse(t, br, "PUT"); res.StatusCode != 200 || body != "not reading" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	stalled := time.Now()
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after the response: %q, %v; want the close", rest, err)
	}
	if after := time.Since(stalled); after > bound+time.Second {
		t.Errorf("closed %v after the response, want about %v", after, bound)
	}
	for end := time.Now().Add(5 * time.Second); s.Conns() > 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if n := s.Conns(); n > 0 {
		t.Errorf("%d connections left", n)
	}
}

// A handler that sets its own read deadline takes over from
// BodyIdleTimeout for its request.
func TestBodyIdleTimeoutHandlerDeadline(t *testing.T) {
	leaktest.Check(t)
	const own = 150 * time.Millisecond
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(own))
		_, err := io.ReadAll(r.Body)
		var ie *idleError
		fmt.Fprintf(w, "timeout %v, idleError %v", errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ie))
	}), func(s *Server) { s.BodyIdleTimeout = 10 * time.Second })
	c, br := dial(t, addr)
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
	stalled := time.Now()
	if _, body := readResponse(t, br, "PUT"); body != "timeout true, idleError false" {
		t.Errorf("handler saw %q", body)
	}
	if after := time.Since(stalled); after > own+time.Second {
		t.Errorf("answered %v after the stall, want about %v", after, own)
	}
}

// smallBuffers shrinks the send buffer of accepted connections, so that a
// client that stops reading blocks the server's writes after little data.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}

// startSmall serves h like start, on connections with small send buffers.
func startSmall(t *testing.T, h http.Handler, configure func(*Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	configure(s)
	done := make(chan error, 1)
	go func() { done <- s.Serve(smallBuffers{ln}) }()
	t.Cleanup(func() {
		s.Close()
		<-done
		for end := time.Now().Add(5 * time.Second); s.Conns() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		if n := s.Conns(); n > 0 {
			t.Errorf("%d connections left", n)
		}
	})
	return ln.Addr().String()
}

// endlessSource is a TCP peer that sends zeros until it is closed.
func endlessSource(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A response write waits at most WriteIdleTimeout for the client to take
// bytes, on every path a body takes (writes through the buffer, one large
// write, splice from a socket): a client that stops reading is cut, and
// the handler's write fails with a timeout and its context is canceled;
// one that reads slowly but steadily gets the whole body.
func TestWriteIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	const bound = 150 * time.Millisecond
	const size = 2 << 20
	src := endlessSource(t)
	type outcome struct {
		err    error
		ctxErr error
		at     time.Time
	}
	results := make(chan outcome, 1)
	addr := startSmall(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Header().Set("Content-Type", "application/octet-stream")
		var err error
		switch r.URL.Path {
		case "/writes":
			buf := make([]byte, 32<<10)
			for n := 0; n < size && err == nil; n += len(buf) {
				_, err = w.Write(buf)
			}
		case "/one-write":
			_, err = w.Write(make([]byte, size))
		case "/splice":
			up, derr := net.Dial("tcp", src)
			if derr != nil {
				panic(derr)
			}
			defer up.Close()
			_, err = w.(io.ReaderFrom).ReadFrom(&io.LimitedReader{R: up, N: size})
		}
		results <- outcome{err, r.Context().Err(), time.Now()}
	}), func(s *Server) { s.WriteIdleTimeout = bound })

	for _, path := range []string{"/writes", "/one-write", "/splice"} {
		t.Run("stalled "+path, func(t *testing.T) {
			c, br := dial(t, addr)
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, res.Body, 64<<10); err != nil {
				t.Fatal(err)
			}
			stalled := time.Now() // and the client reads no more
			o := <-results
			var ie *idleError
			if !errors.As(o.err, &ie) || !errors.Is(o.err, os.ErrDeadlineExceeded) || o.ctxErr != context.Canceled {
				t.Errorf("handler's write: %v (context %v), want an idle timeout and a canceled context", o.err, o.ctxErr)
			}
			// (The server's last progress may come before the client's
			// last read returns: the lower bound is loose.)
			if after := o.at.Sub(stalled); after < bound/2 || after > bound+time.Second {
				t.Errorf("write failed %v after the client stopped reading, want about %v", after, bound)
			}
			if n, err := io.Copy(io.Discard, res.Body); err == nil {
				t.Errorf("body complete (%d more bytes) after a failed write", n)
			}
		})
		t.Run("steady "+path, func(t *testing.T) {
			c, br := dial(t, addr)
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			for err == nil {
				var m int64
				m, err = io.CopyN(io.Discard, res.Body, writeChunk) // 3 per bound

				n += m
				time.Sleep(bound / 3)
			}
			if o := <-results; err != io.EOF || n != size || o.err != nil {
				t.Errorf("read %d bytes (%v), handler %v; want %d bytes", n, err, o.err, size)
			}
		})
	}
}

// A handler that sets its own write deadline takes over from
// WriteIdleTimeout for its request, and only for its request.
func TestWriteIdleTimeoutHandlerDeadline(t *testing.T) {
	leaktest.Check(t)
	const own = 100 * time.Millisecond
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/own" {
			http.NewResponseController(w).SetWriteDeadline(time.Now().Add(own))
		}
		io.WriteString(w, r.URL.Path)
	}), func(s *Server) { s.WriteIdleTimeout = 10 * time.Second })
	c, br := dial(t, addr)
	io.WriteString(c, "GET /own HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "/own" {
		t.Fatalf("got %q", body)
	}
	time.Sleep(own * 3 / 2) // the handler's deadline passes
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "/next" {
		t.Errorf("next request on the connection: %q", body)
	}

	// A stalled client is cut on the handler's deadline, not the bound.
	cut := make(chan error, 1)
	addr = startSmall(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(own))
		_, err := w.Write(make([]byte, 8<<20))
		cut <- err
	}), func(s *Server) { s.WriteIdleTimeout = 10 * time.Second })
	c, _ = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case err := <-cut:
		var ie *idleError
		if !errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ie) {
			t.Errorf("write: %v, want the handler's own timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's deadline did not cut the write")
	}
}

// A hijacked connection is the hijacker's: the idle bounds of the request
// it came with no longer apply to it, even if the request had a body.
func TestHijackEndsIdleBounds(t *testing.T) {
	leaktest.Check(t)
	const bound = 100 * time.Millisecond
	_, addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 2)) // of 4: the body is not done
		time.Sleep(bound / 4)                // past a renewal of its bound
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		defer nc.Close()
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 64)
		n, err := brw.Read(buf)
		fmt.Fprintf(nc, "%q %v", buf[:n], err)
	}), func(s *Server) {
		s.BodyIdleTimeout = bound
		s.WriteIdleTimeout = bound
	})
	c, br := dial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nhi")
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 101 {
		t.Fatalf("%v %v", res, err)
	}
	time.Sleep(bound * 3 / 2) // the tunnel is idle longer than the bounds were
	io.WriteString(c, "later")
	if got, _ := io.ReadAll(br); string(got) != `"later" <nil>` {
		t.Errorf("tunnel read %s", got)
	}
}
