// Package h1server is sluice's HTTP/1.1 server. It serves an http.Handler
// like net/http's Server, with a different cost model for connections:
//
//   - A keep-alive connection waiting for its next request holds no
//     buffer: the read and write buffers go back to pools after every
//     response, and the wait runs on a fresh goroutine whose stack is as
//     small as the wait needs, not as deep as the last handler went.
//   - A request costs no background-read goroutine. The goroutine that
//     waits for the connection's next request is started while the
//     current one is still served; it notices a client that goes away
//     (and cancels the request's context) and, once the handler is done,
//     reads the next request itself.
//
// Requests are parsed with net/textproto's header reader and net/http's
// chunked reader; the request line, framing and the checks of RFC 9112 are
// this package's. HTTP/2 is not served here: a connection that starts
// with the HTTP/2 preface can be handed on (Server.H2C).
package h1server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the Server fields left zero. The head bound is
// HAProxy's usual "timeout http-request"; the two idle bounds are
// nginx's client_body_timeout and send_timeout.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyIdleTimeout   = 60 * time.Second
	DefaultWriteIdleTimeout  = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 1 << 20
)

// Server serves HTTP/1.x requests to Handler. Its zero value (with a
// Handler) is ready to use; fields must not change once serving began.
type Server struct {
	Handler http.Handler

	// ReadHeaderTimeout bounds the whole time to read a request head,
	// from its first byte; a head begun and not done in time gets 408
	// and the connection closes. It also bounds the wait for the first
	// byte of a new connection (IdleTimeout does for the next requests).
	// If zero, DefaultReadHeaderTimeout; if negative, none.
	ReadHeaderTimeout time.Duration

	// BodyIdleTimeout bounds how long a read of a request body waits for
	// the client's next byte. Bytes arriving renew it, so a slow but
	// steady upload is never cut, and the handler's time between reads
	// does not count. A read that times out fails with an error for which
	// errors.Is(err, os.ErrDeadlineExceeded) holds; the request's context
	// stays alive (the handler may still answer, e.g. 408) and the
	// connection closes after the response. It bounds the drain of a body
	// the handler left unread too. If zero, DefaultBodyIdleTimeout; if
	// negative, none.
	BodyIdleTimeout time.Duration

	// WriteIdleTimeout bounds how long a write to the client waits for
	// the client to take bytes. It is renewed for every write, and every
	// 128 KiB of a larger one or of a body moved with splice(2), so a
	// client that keeps reading is never cut: it must take 128 KiB per
	// bound (2.2 KB/s at the default). A write that times out fails with
	// an error for which errors.Is(err, os.ErrDeadlineExceeded) holds, the
	// request's context is canceled (as for any failed write) and the
	// connection closes. If zero, DefaultWriteIdleTimeout; if negative,
	// none.
	//
	// Both idle bounds are renewed at most every eighth of their length
	// while there is traffic (a renewal costs clock reads and a timer
	// update): a peer idle for a bound is cut after 7/8 of it at the
	// earliest. A handler that sets a read or write deadline with
	// http.ResponseController takes over that direction from them for
	// the rest of its request.
	WriteIdleTimeout time.Duration

	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request. If zero, DefaultIdleTimeout; if negative, none.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds the request line and header (and the trailer
	// of a chunked body). If zero, DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	// Logger receives handler panics and request heads that timed out.
	// If nil, slog.Default().
	Logger *slog.Logger

	// H2C, if not nil, takes the connections that begin with the HTTP/2
	// connection preface (prior knowledge, RFC 9113 §3.3): see h2c.go.
	H2C func(net.Conn)

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
}

// bound returns d, def if d is zero, or 0 (none) if d is negative.
func bound(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (s *Server) readHeaderTimeout() time.Duration {
	return bound(s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
}

func (s *Server) bodyIdleTimeout() time.Duration {
	return bound(s.BodyIdleTimeout, DefaultBodyIdleTimeout)
}

func (s *Server) writeIdleTimeout() time.Duration {
	return bound(s.WriteIdleTimeout, DefaultWriteIdleTimeout)
}

func (s *Server) idleTimeout() time.Duration {
	return bound(s.IdleTimeout, DefaultIdleTimeout)
}

// firstByteTimeout bounds the wait for a new connection's first request:
// ReadHeaderTimeout, or IdleTimeout when the head has no bound.
func (s *Server) firstByteTimeout() time.Duration {
	if d := s.readHeaderTimeout(); d > 0 {
		return d
	}
	return s.idleTimeout()
}

// deadline returns the time d from now, or no deadline if d is 0.
func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return DefaultMaxHeaderBytes
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Accept returns the next connection of ln. A temporary failure (out of
// file descriptors and the like) is waited out, as net/http does, instead
// of spinning: backoff, zero at first, carries the wait between calls.
// Once closing is set, a failure is http.ErrServerClosed.
func Accept(ln net.Listener, closing *atomic.Bool, backoff *time.Duration) (net.Conn, error) {
	for {
		nc, err := ln.Accept()
		if err == nil {
			*backoff = 0
			return nc, nil
		}
		if closing.Load() {
			return nil, http.ErrServerClosed
		}
		var te interface{ Temporary() bool }
		if !errors.As(err, &te) || !te.Temporary() {
			return nil, err
		}
		*backoff = min(max(2**backoff, 5*time.Millisecond), time.Second)
		time.Sleep(*backoff)
	}
}

// Serve accepts connections on ln and serves them until Shutdown or Close,
// then returns http.ErrServerClosed; other accept failures that persist
// end it with their error. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handler == nil {
		return errors.New("h1server: Serve with a nil Handler")
	}
	if !s.track(&ln, true) {
		ln.Close()
		return http.ErrServerClosed
	}
	defer s.track(&ln, false)
	defer ln.Close()
	var backoff time.Duration
	for {
		nc, err := Accept(ln, &s.closing, &backoff)
		if err != nil {
			return err
		}
		c := newConn(s, nc)
		if !s.trackConn(c, true) {
			nc.Close()
			continue
		}
		c.setIdleDeadline(s.firstByteTimeout())
		go c.await(false)
	}
}

func (s *Server) track(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, ln)
		return true
	}
	if s.closing.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// closeListeners stops accepting.
func (s *Server) closeListeners() {
	s.closing.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		(*ln).Close()
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.unpark()
			c.nc.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns) == 0
}

// CloseIdle closes up to n of the connections waiting for their next
// request (not new ones, whose first request may be on its way), as
// nginx closes keep-alive connections when it runs out of connections,
// and returns how many it closed. A client that sends its next request
// as the connection closes sees it closed before any response, the race
// every keep-alive connection has with IdleTimeout (RFC 9112 §9.3.1).
func (s *Server) CloseIdle(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	closed := 0
	for c := range s.conns {
		if closed >= n {
			break
		}
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.unpark()
			c.nc.Close()
			delete(s.conns, c)
			closed++
		}
	}
	return closed
}

// Shutdown stops the server gracefully: the listeners close, idle
// connections close, and connections serving a request close once their
// response is done (with Connection: close); so do connections accepted
// before whose first request comes within ReadHeaderTimeout. It returns when all are
// closed, or with ctx's error when ctx ends first. Hijacked connections
// are not tracked.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	const maxPoll = 200 * time.Millisecond
	poll := time.Millisecond
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			poll = min(2*poll, maxPoll)
			t.Reset(poll)
		}
	}
}

// Close closes the listeners and every tracked connection at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		// The goroutine that owns c notices and forgets it; a parked
		// connection has none.
		if c.state.Swap(stateClosed) != stateClosed {
			stopped := c.unpark()
			c.nc.Close()
			if stopped {
				delete(s.conns, c)
			}
		}
	}
	return nil
}

// Conns reports how many connections the server tracks: open and not
// hijacked.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
