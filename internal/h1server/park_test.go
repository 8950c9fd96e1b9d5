//go:build linux

package h1server

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/park"
)

// waitParked waits until n connections are parked.
func waitParked(t *testing.T, n int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); park.Len() < n; {
		if time.Now().After(end) {
			t.Fatalf("%d connections parked, want %d", park.Len(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get sends a GET on c and checks the echo handler's answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if res, body := readResponse(t, br, "GET"); res.StatusCode != 200 || body == "" {
		t.Fatalf("response %d %q", res.StatusCode, body)
	}
}

// Idle keep-alive connections are parked after parkAfter: no goroutine
// each, and their next requests are served as before; a client that hangs
// up while parked is forgotten.
func TestParkedConnections(t *testing.T) {
	leaktest.Check(t)
	s, addr := start(t, echo)
	const n = 20
	before := runtime.NumGoroutine()
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	var cs []client
	for range n {
		c, br := dial(t, addr)
		get(t, c, br)
		cs = append(cs, client{c, br})
	}
	waitParked(t, n)
	if g := runtime.NumGoroutine() - before; g > 2 { // the poller, and slack
		t.Errorf("%d goroutines for %d parked connections", g, n)
	}
	for round := range 2 {
		for _, c := range cs {
			get(t, c.c, c.br)
		}
		if round == 0 {
			waitParked(t, n) // and again
		}
	}
	for _, c := range cs {
		c.c.Close()
	}
	for end := time.Now().Add(5 * time.Second); s.Conns() > 0 || park.Len() > 0; {
		if time.Now().After(end) {
			t.Fatalf("after the clients hung up: %d connections, %d parked", s.Conns(), park.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A parked connection still ends at its idle timeout; a new one that
// never sends anything, at its first-byte timeout.
func TestParkedIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	s, addr := start(t, echo, func(s *Server) {
		s.IdleTimeout = parkAfter + 300*time.Millisecond
		s.ReadHeaderTimeout = parkAfter + 300*time.Millisecond
	})
	idle, ibr := dial(t, addr)
	get(t, idle, ibr)
	_, sbr := dial(t, addr) // silent
	waitParked(t, 2)
	for name, br := range map[string]*bufio.Reader{"idle": ibr, "silent": sbr} {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s connection: %v, want EOF at its timeout", name, err)
		}
	}
	for end := time.Now().Add(5 * time.Second); s.Conns() > 0 || park.Len() > 0; {
		if time.Now().After(end) {
			t.Fatalf("after the timeouts: %d connections, %d parked", s.Conns(), park.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Shutdown closes parked idle connections at once, and Close forgets
// them.
func TestParkedShutdownAndClose(t *testing.T) {
	for _, shutdown := range []bool{true, false} {
		leaktest.Check(t)
		s, addr := start(t, echo)
		c, br := dial(t, addr)
		get(t, c, br)
		waitParked(t, 1)
		if shutdown {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			cancel()
		} else {
			s.Close()
			if n := s.Conns(); n != 0 {
				t.Errorf("Close left %d connections tracked", n)
			}
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("parked connection after shutdown=%v: %v, want EOF", shutdown, err)
		}
		if n := park.Len(); n != 0 {
			t.Errorf("%d connections still parked", n)
		}
	}
}

// A TLS connection parks on the TCP connection under it, and its next
// request (in records crypto/tls reads after the wake-up) is served.
func TestParkedTLS(t *testing.T) {
	leaktest.Check(t)
	c := dialTLSServer(t, echo)
	br := bufio.NewReader(c)
	for range 3 {
		get(t, c, br)
		waitParked(t, 1)
	}
	get(t, c, br)
}
