package sluice

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// newUpstream starts an httptest server with h.
func newUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newProxy starts a Proxy in front of upstream (a base URL) and returns
// the proxy server. The proxy logs to a recorder, returned too.
func newProxy(t *testing.T, upstream string, configure ...func(*Proxy)) (*httptest.Server, *Proxy, *logRecorder) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	p := &Proxy{Director: &SingleHost{Target: u}, Logger: logs.logger()}
	for _, c := range configure {
		c(p)
	}
	s := newFront(t, p)
	t.Cleanup(func() {
		s.Close()
		p.CloseIdleConnections()
	})
	return s, p, logs
}

// newFront serves h the way the proxy's tests are served: with sluice's
// Server, or with net/http's when SLUICE_TEST_FRONT=net/http (.ci/run runs
// the package both ways). The result is an httptest.Server whose Close
// closes the front server's connections too.
func newFront(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	if netHTTPFront() {
		return httptest.NewServer(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h}
	fl := &frontListener{Listener: ln, srv: srv}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(fl)
	}()
	t.Cleanup(func() {
		fl.Close()
		<-done
	})
	return &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: fl, Config: &http.Server{Handler: h}}
}

// frontListener closes its Server's connections when it is closed, as
// httptest.Server.Close does for net/http's.
type frontListener struct {
	net.Listener
	srv    *Server
	closed atomic.Bool
}

func (l *frontListener) Close() error {
	if l.closed.CompareAndSwap(false, true) {
		l.srv.Close()
		// Like httptest.Server.Close, wait for the handlers of the
		// connections (not hijacked ones) to return.
		for end := time.Now().Add(5 * time.Second); l.srv.server().Conns() > 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
	}
	return l.Listener.Close()
}

// netHTTPFront reports whether the tests run behind net/http's server.
func netHTTPFront() bool { return os.Getenv("SLUICE_TEST_FRONT") == "net/http" }

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

// rawServer is an upstream that speaks raw bytes: each accepted connection
// is handed to serve, so tests control framing exactly.
type rawServer struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
}

func newRawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, addr: ln.Addr().String()}
	var mu sync.Mutex
	var open []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
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
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) URL() string { return "http://" + s.addr }

// rawExchange writes req to addr on a new connection and returns all that
// comes back until the server closes the connection or 5 s pass.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
