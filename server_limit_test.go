package sluice

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// quiet is how long a test waits to see that a connection beyond
// MaxConns is not served: any wait shows it, a longer one more surely.
const quiet = 200 * time.Millisecond

// limitedServer runs a Server with MaxConns max whose handler answers
// "ok" to any path, after waiting for gates[path] to close when there is
// one; /hijack hands the connection to hijacked. entered gets each
// request's path as its handler starts. With tlsOn it serves TLS.
type limitedServer struct {
	srv      *Server
	addr     string
	entered  chan string
	hijacked chan net.Conn
	logs     *logRecorder
	roots    *x509.CertPool

	mu    sync.Mutex
	gates map[string]chan struct{}
}

func newLimitedServer(t *testing.T, max int, tlsOn bool, protocols *http.Protocols, configure ...func(*Server)) *limitedServer {
	t.Helper()
	ls := &limitedServer{
		entered:  make(chan string, 16),
		hijacked: make(chan net.Conn, 1),
		logs:     &logRecorder{},
		gates:    map[string]chan struct{}{},
	}
	ls.srv = &Server{
		MaxConns:  max,
		Logger:    ls.logs.logger(),
		Protocols: protocols,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ls.entered <- r.URL.Path
			if r.URL.Path == "/hijack" {
				c, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				ls.hijacked <- c
				return
			}
			ls.mu.Lock()
			gate := ls.gates[r.URL.Path]
			ls.mu.Unlock()
			if gate != nil {
				<-gate
			}
			io.WriteString(w, "ok")
		}),
	}
	for _, c := range configure {
		c(ls.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.addr = ln.Addr().String()
	if tlsOn {
		cert, roots, _ := testcert.Localhost(t)
		ls.roots = roots
		ls.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		if ln, err = ls.srv.TLSListener(ln, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- ls.srv.Serve(ln) }()
	t.Cleanup(func() {
		ls.srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ls
}

// gate makes requests for path wait until the returned function is
// called.
func (ls *limitedServer) gate(path string) (open func()) {
	ch := make(chan struct{})
	ls.mu.Lock()
	ls.gates[path] = ch
	ls.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// send opens a connection and sends a GET for path on it.
func (ls *limitedServer) send(t *testing.T, path string, header string) *clientConn {
	t.Helper()
	c, err := net.Dial("tcp", ls.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cc := &clientConn{Conn: c, br: bufio.NewReader(c)}
	cc.get(t, path, header)
	return cc
}

type clientConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *clientConn) get(t *testing.T, path, header string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n"+header+"\r\n"); err != nil {
		t.Fatal(err)
	}
}

// answer reads the response to the request sent last: it must be 200 "ok".
func (c *clientConn) answer(t *testing.T) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Fatalf("response %s %q %v", res.Status, b, err)
	}
}

// closed reports whether the server closed c (within quiet).
func (c *clientConn) closed() bool {
	c.SetReadDeadline(time.Now().Add(quiet))
	_, err := c.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// waitEntered waits for the handler of path to start.
func (ls *limitedServer) waitEntered(t *testing.T, path string) {
	t.Helper()
	select {
	case got := <-ls.entered:
		if got != path {
			t.Fatalf("handler for %s started, want %s", got, path)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the request for %s was not served", path)
	}
}

// notEntered checks that no handler starts for a while.
func (ls *limitedServer) notEntered(t *testing.T, why string) {
	t.Helper()
	select {
	case got := <-ls.entered:
		t.Fatalf("%s: the request for %s was served beyond MaxConns", why, got)
	case <-time.After(quiet):
	}
}

// TestMaxConnsBacklog: at MaxConns the Server stops accepting; a new
// connection waits in the listen queue, and is served without error once
// a connection closes.
func TestMaxConnsBacklog(t *testing.T) {
	leaktest.Check(t)
	ls := newLimitedServer(t, 2, false, nil)
	openA, openB, openC := ls.gate("/a"), ls.gate("/b"), ls.gate("/c")
	defer openA()
	defer openB()
	defer openC()
	a := ls.send(t, "/a", "Connection: close\r\n")
	ls.waitEntered(t, "/a")
	b := ls.send(t, "/b", "")
	ls.waitEntered(t, "/b")

	c := ls.send(t, "/c", "") // the kernel accepts it; the Server does not
	ls.notEntered(t, "two requests in progress")

	openA()
	a.answer(t)
	if !a.closed() {
		t.Fatal("connection a not closed after its Connection: close")
	}
	ls.waitEntered(t, "/c")
	openC()
	c.answer(t)
	openB()
	b.answer(t)
	if !strings.Contains(ls.logs.String(), "MaxConns reached") {
		t.Errorf("reaching MaxConns not logged:\n%s", ls.logs)
	}
}

// TestMaxConnsReclaimsIdle: at MaxConns, a keep-alive connection idle
// between requests is closed to make room for a new one.
func TestMaxConnsReclaimsIdle(t *testing.T) {
	leaktest.Check(t)
	ls := newLimitedServer(t, 2, false, nil)
	a := ls.send(t, "/a", "")
	ls.waitEntered(t, "/a")
	a.answer(t)
	b := ls.send(t, "/b", "")
	ls.waitEntered(t, "/b")
	b.answer(t)

	c := ls.send(t, "/c", "")
	ls.waitEntered(t, "/c")
	c.answer(t)
	if ac, bc := a.closed(), b.closed(); ac == bc {
		t.Errorf("closed: a %v, b %v; want one of the idle connections closed", ac, bc)
	}
}

// TestMaxConnsCountsEveryKind: a connection holds its slot whatever it is
// doing (in its TLS handshake, serving HTTP/2, hijacked) until it is
// closed.
func TestMaxConnsCountsEveryKind(t *testing.T) {
	h2c := new(http.Protocols)
	h2c.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	tests := []struct {
		name      string
		tls       bool
		protocols *http.Protocols
		configure func(*Server)
		preamble  string // what the waiting client sends before its request
		// hold opens a connection that holds the only slot and returns
		// a function that closes it.
		hold func(t *testing.T, ls *limitedServer) (release func())
	}{
		{
			name: "TLS handshake",
			tls:  true,
			hold: func(t *testing.T, ls *limitedServer) func() {
				c, err := net.Dial("tcp", ls.addr) // and no ClientHello
				if err != nil {
					t.Fatal(err)
				}
				return func() { c.Close() }
			},
		},
		{
			name:      "HTTP/2",
			protocols: h2c,
			hold: func(t *testing.T, ls *limitedServer) func() {
				c, err := net.Dial("tcp", ls.addr)
				if err != nil {
					t.Fatal(err)
				}
				// The preface and an empty SETTINGS frame; the server's
				// SETTINGS frame says the HTTP/2 server has it.
				io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var hdr [9]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[3] != 4 {
					t.Fatalf("no SETTINGS from the HTTP/2 server: % x %v", hdr, err)
				}
				return func() { c.Close() }
			},
		},
		{
			name:      "PROXY protocol",
			configure: func(s *Server) { s.ProxyProtocol = loopbackPrefixes },
			preamble:  "PROXY TCP4 192.0.2.2 127.0.0.1 1000 80\r\n",
			hold: func(t *testing.T, ls *limitedServer) func() {
				// Served after its header, by the server that closes
				// it: the slot is still the one of the connection the
				// header was read from.
				open := ls.gate("/held")
				c, err := net.Dial("tcp", ls.addr)
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(c, "PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\nGET /held HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
				ls.waitEntered(t, "/held")
				return func() {
					open()
					c.Close()
				}
			},
		},
		{
			name: "hijacked",
			hold: func(t *testing.T, ls *limitedServer) func() {
				ls.send(t, "/hijack", "")
				ls.waitEntered(t, "/hijack")
				hc := <-ls.hijacked
				return func() { hc.Close() }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			var configure []func(*Server)
			if tt.configure != nil {
				configure = append(configure, tt.configure)
			}
			ls := newLimitedServer(t, 1, tt.tls, tt.protocols, configure...)
			release := tt.hold(t, ls)
			defer release()

			res := make(chan error, 1)
			go func() {
				// A client that waits for its connection as long as the
				// Server waits for a slot.
				var c net.Conn
				var err error
				if tt.tls {
					c, err = tls.Dial("tcp", ls.addr, &tls.Config{RootCAs: ls.roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
				} else {
					c, err = net.Dial("tcp", ls.addr)
				}
				if err != nil {
					res <- err
					return
				}
				defer c.Close()
				io.WriteString(c, tt.preamble+"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				r, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil && r.StatusCode != http.StatusOK {
					err = errors.New(r.Status)
				}
				res <- err
			}()
			ls.notEntered(t, tt.name)
			release()
			ls.waitEntered(t, "/next")
			if err := <-res; err != nil {
				t.Fatalf("the waiting connection: %v", err)
			}
		})
	}
}

// TestMaxConnsShutdown: a Server waiting for a slot stops at once on
// Shutdown; the connection waiting in the listen queue is never served.
func TestMaxConnsShutdown(t *testing.T) {
	leaktest.Check(t)
	ls := newLimitedServer(t, 1, false, nil)
	ls.send(t, "/hijack", "")
	ls.waitEntered(t, "/hijack")
	hc := <-ls.hijacked
	defer hc.Close()
	ls.send(t, "/never", "")
	ls.notEntered(t, "hijacked connection open")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ls.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	ls.notEntered(t, "after Shutdown")
}
