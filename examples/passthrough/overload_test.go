package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// TestOverloadFlags: -max-in-flight answers 503 beyond its bound,
// -max-per-client 429, and -max-conns leaves a connection beyond its
// bound unserved until one closes, behind both servers.
func TestOverloadFlags(t *testing.T) {
	tests := []struct {
		name   string
		cfg    config
		status int // of a second request while one is held; 0: not served until the first ends
	}{
		{"max-in-flight", config{maxInFlight: 1}, http.StatusServiceUnavailable},
		{"max-per-client", config{maxPerClient: 1}, http.StatusTooManyRequests},
		{"max-conns", config{maxConns: 1}, 0},
		{"max-conns net/http", config{maxConns: 1, netHTTP: true}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			held, release := make(chan struct{}, 1), make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					held <- struct{}{}
					<-release
				}
				io.WriteString(w, "ok")
			}))
			defer up.Close()
			cfg := tt.cfg
			cfg.upstream, cfg.timeout = up.URL, 5*time.Second
			addr, stop := startServe(t, cfg)
			defer stop()

			first := dialGet(t, addr, "/hold")
			defer first.Close()
			<-held
			second := dialGet(t, addr, "/x")
			defer second.Close()
			if tt.status != 0 {
				res := readResponse(t, second, 10*time.Second)
				if res == nil || res.StatusCode != tt.status || res.Header.Get("Retry-After") != "1" {
					t.Fatalf("second request: %v, want %d with Retry-After: 1", res, tt.status)
				}
				close(release)
				readResponse(t, first, 10*time.Second)
				return
			}
			if res := readResponse(t, second, 300*time.Millisecond); res != nil {
				t.Fatalf("second connection served beyond -max-conns 1: %s", res.Status)
			}
			close(release)
			if res := readResponse(t, first, 10*time.Second); res == nil || res.StatusCode != http.StatusOK {
				t.Fatalf("first request: %v", res)
			}
			first.Close()
			if res := readResponse(t, second, 10*time.Second); res == nil || res.StatusCode != http.StatusOK {
				t.Fatalf("second request once the first connection closed: %v", res)
			}
		})
	}
}

type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func dialGet(t *testing.T, addr, path string) *bufConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return &bufConn{Conn: c, br: bufio.NewReader(c)}
}

// readResponse reads a response within d, or returns nil when none came
// (a read that timed out).
func readResponse(t *testing.T, c *bufConn, d time.Duration) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		t.Fatalf("reading a response: %v", err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}
