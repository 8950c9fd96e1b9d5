// Package h2server serves the HTTP/2 connections of sluice's front end:
// TLS connections that negotiated "h2" by ALPN, and cleartext connections
// that begin with the HTTP/2 connection preface (prior knowledge, "h2c").
//
// It does not implement HTTP/2 itself. The connections go to net/http's
// HTTP/2 server (the golang.org/x/net/http2 server, bundled into the
// standard library) through a Queue, so that the framing, HPACK, flow
// control, stream concurrency and the graceful shutdown with GOAWAY are
// the standard library's, and net/http tracks the connections for
// Shutdown and Close. golang.org/x/net/http2's own entry point for this,
// Server.ServeConn, is deprecated since x/net v0.51 and, from Go 1.27, a
// wrapper that builds a net/http server per connection; serving through
// net/http directly is the same code without the deprecated path.
package h2server

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/2 connections handed to it with ServeConn. Its zero
// value (with a Handler) is ready to use; fields must not change once a
// connection was handed over.
type Server struct {
	Handler http.Handler

	// IdleTimeout is how long a connection without open streams stays
	// open; then it is closed with GOAWAY. If zero, there is no limit.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds a request's header list (the
	// SETTINGS_MAX_HEADER_LIST_SIZE advertised). If zero, net/http's
	// default (1 MiB).
	MaxHeaderBytes int

	// HTTP2 tunes the HTTP/2 server (streams per connection, flow control
	// windows, frame sizes, pings). If nil, net/http's defaults.
	HTTP2 *http.HTTP2Config

	// Logger receives what net/http logs: handler panics at error level,
	// the rest (clients' protocol errors, mostly) at debug level. If nil,
	// slog.Default().
	Logger *slog.Logger

	mu     sync.Mutex
	srv    *http.Server
	q      *Queue
	served chan struct{} // closed when srv.Serve returned
	closed bool
	conns  atomic.Int64
}

// ServeConn hands c to the HTTP/2 server and returns once it took it (or
// closed c, when the server is shutting down). c is a *tls.Conn whose
// handshake negotiated "h2", or a cleartext connection whose first bytes
// to be read are the connection preface.
func (s *Server) ServeConn(c net.Conn) {
	q := s.start(c.LocalAddr())
	if q == nil || !q.Push(c) {
		c.Close()
	}
}

// start starts the net/http server on the first connection, and returns
// its queue, or nil once the server was shut down.
func (s *Server) start(addr net.Addr) *Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.srv != nil {
		return s.q
	}
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	logger := s.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s.srv = &http.Server{
		Handler:        s.Handler,
		Protocols:      &p, // not HTTP/1: a connection without h2 is closed
		HTTP2:          s.HTTP2,
		IdleTimeout:    s.IdleTimeout,
		MaxHeaderBytes: s.MaxHeaderBytes,
		ErrorLog:       log.New(logWriter{logger}, "", 0),
		// The handler sees every request, "OPTIONS *" included, as it does
		// behind h1server.
		DisableGeneralOptionsHandler: true,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		},
	}
	s.q = NewQueue(addr)
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(s.q)
	}()
	return s.q
}

// logWriter is net/http's ErrorLog: a line mentioning a panic is an
// error, anything else (a client that sent no preface, reset a
// connection, broke the protocol) is routine.
type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	level := slog.LevelDebug
	if bytes.Contains(p, []byte("panic")) {
		level = slog.LevelError
	}
	w.l.Log(context.Background(), level, string(bytes.TrimSpace(p)))
	return len(p), nil
}

// stop marks the server closed and returns what was started, if anything.
func (s *Server) stop() (*http.Server, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.srv, s.served
}

// Shutdown stops taking connections and ends the ones it serves
// gracefully: each gets a GOAWAY (RFC 9113 §6.8) at once, its open streams
// run to their end, and it closes when they are done (net/http waits up to
// a second more for the client to close first). It returns when all are
// closed, or ctx's error when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	srv, served := s.stop()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	<-served // the queue is closed: Serve has returned or is returning
	return err
}

// Close closes every connection at once.
func (s *Server) Close() error {
	srv, served := s.stop()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-served
	return err
}

// Conns reports how many connections are being served.
func (s *Server) Conns() int { return int(s.conns.Load()) }
