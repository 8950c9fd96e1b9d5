package h1server

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
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
			if after < bound || after > bound+time.Second {
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
	if got, after := closedWithin(t, br, begin); got != "" || after < idle || after > idle+time.Second {
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
