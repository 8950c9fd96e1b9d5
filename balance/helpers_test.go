package balance

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
)

// logRecorder keeps expected failures out of the test output but lets a
// test look at what was logged.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (l *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		l.recs = append(l.recs, string(p))
		l.mu.Unlock()
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recs, "")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// quiet returns a logger whose records only a failing test would show.
func quiet() *slog.Logger { return (&logRecorder{}).logger() }

// withRequest runs fn with the ProxyRequest a Proxy makes of a GET of
// http://lb.example/x from remote (if not empty) with header h (if not
// nil): fn runs as the Proxy's Director, so the ProxyRequest is the one
// a Pool gets, valid until fn returns. This is how a Policy is tested
// from outside the sluice package.
func withRequest(tb testing.TB, h http.Header, remote string, fn func(pr *sluice.ProxyRequest)) {
	tb.Helper()
	in := httptest.NewRequest(http.MethodGet, "http://lb.example/x", nil)
	if h != nil {
		in.Header = h
	}
	if remote != "" {
		in.RemoteAddr = remote
	}
	ran := false
	p := &sluice.Proxy{Logger: quiet(), Director: sluice.DirectorFunc(func(pr *sluice.ProxyRequest) error {
		ran = true
		fn(pr)
		return sluice.ErrNoRoute
	})}
	p.ServeHTTP(httptest.NewRecorder(), in)
	if !ran {
		tb.Error("the Proxy did not call its Director")
	}
}

// newUpstream starts an httptest server with h until the test ends.
func newUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newProxyServer serves p until the test ends and returns its URL.
func newProxyServer(t *testing.T, p *sluice.Proxy) string {
	t.Helper()
	if p.Logger == nil {
		p.Logger = quiet()
	}
	s := httptest.NewServer(p)
	t.Cleanup(func() {
		s.Close()
		p.CloseIdleConnections()
	})
	return s.URL
}

// client returns an http.Client whose idle connections are closed when
// the test ends.
func client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// rawServer is an upstream that speaks raw bytes: each accepted
// connection is handed to serve, so tests control framing exactly.
type rawServer struct {
	addr string
}

func newRawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &rawServer{addr: ln.Addr().String()}
}

func (s *rawServer) URL() string { return "http://" + s.addr }

// acceptKey is the Sec-WebSocket-Accept value for key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// eventually polls cond every 5 ms until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// statsOf returns the statistics of the pool's target id.
func statsOf(pool *Pool, id string) Stats {
	for _, s := range pool.Stats() {
		if s.ID == id {
			return s
		}
	}
	return Stats{}
}

// runPool runs pool.Run until the test ends.
func runPool(t *testing.T, pool *Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pool.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// mustAdd adds a member without expiry.
func mustAdd(t *testing.T, pool *Pool, id, url string) {
	t.Helper()
	if err := pool.Add(context.Background(), Member{ID: id, URL: url}); err != nil {
		t.Fatal(err)
	}
}
