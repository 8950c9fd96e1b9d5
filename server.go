package sluice

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1server"
)

// Defaults of Server, used when the corresponding field is zero.
const (
	DefaultReadHeaderTimeout = h1server.DefaultReadHeaderTimeout
	DefaultIdleTimeout       = h1server.DefaultIdleTimeout
	DefaultMaxHeaderBytes    = h1server.DefaultMaxHeaderBytes
)

// Server is sluice's own HTTP/1.1 server: the fast front end for a Proxy,
// or for any http.Handler. It is a drop-in for the HTTP/1.1 part of
// http.Server (Serve, Shutdown, Close) with a smaller cost per
// connection:
//
//   - a keep-alive connection waiting for its next request holds no
//     buffer and only the small stack of a fresh goroutine: under 5 KiB
//     per idle connection in the shared benchmark, against 22.9 KiB for
//     net/http (see the README);
//   - a request costs no background-read goroutine: the goroutine that
//     waits for the next request also notices a client that went away,
//     and cancels the request's context (on TCP connections; behind a
//     tls.Listener a client that leaves is noticed when a read or write
//     fails);
//   - a response's head and a small body leave in one write, a bigger
//     piece in one writev(2), and a body of known length from sluice's
//     engine moves socket to socket with splice(2).
//
// Its handlers get what net/http gives them: http.Flusher, http.Hijacker,
// io.ReaderFrom and http.ResponseController's deadlines and full duplex
// (always on); Request.Context is canceled when the client goes away or
// the handler returns; Expect: 100-continue is answered on the first read
// of the body; a request body left unread is drained (up to 256 KiB) to
// keep the connection; a panic closes the connection (quietly for
// http.ErrAbortHandler). Requests with ambiguous framing are refused with
// 400: Transfer-Encoding with Content-Length, Transfer-Encoding in
// HTTP/1.0, differing Content-Lengths, several Host headers.
//
// It does not serve HTTP/2 or TLS itself: for those, use http.Server (a
// Proxy works under both), or give Serve a tls.Listener to get HTTPS over
// HTTP/1.1 without the idle-memory savings.
//
// The zero value with a Handler is ready to use. Fields must not change
// after Serve is called.
type Server struct {
	// Handler answers every request. It must not be nil.
	Handler http.Handler

	// ReadHeaderTimeout bounds the whole time to read a request head,
	// counted from its first byte, however steadily the head trickles
	// in: a head begun and not complete in time is answered 408 Request
	// Timeout and the connection closes (logged once, at Info). It also
	// bounds the wait for a new connection's first byte, which closes
	// silently. If zero, DefaultReadHeaderTimeout; if negative, none
	// (IdleTimeout then bounds a new connection's wait).
	ReadHeaderTimeout time.Duration

	// IdleTimeout is how long a keep-alive connection may wait for the
	// first byte of its next request; it closes silently after. If zero,
	// DefaultIdleTimeout; if negative, none.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds the request line and header, and the trailer
	// of a chunked request body (431 beyond it). If zero,
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	// Logger receives handler panics and request heads that timed out.
	// If nil, slog.Default().
	Logger *slog.Logger

	once sync.Once
	srv  *h1server.Server
}

func (s *Server) server() *h1server.Server {
	s.once.Do(func() {
		s.srv = &h1server.Server{
			Handler:           s.Handler,
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
			Logger:            s.Logger,
		}
	})
	return s.srv
}

// Serve accepts connections on ln and serves them until Shutdown or Close,
// when it returns http.ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener) error { return s.server().Serve(ln) }

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops the server gracefully: listeners and idle connections
// close at once; a connection serving a request closes after its
// response, which says Connection: close. It returns when every
// connection is closed, or ctx's error when ctx ends first. Hijacked
// connections (WebSocket tunnels) are the handler's: Proxy.Shutdown ends
// those, and Serve (the function) calls both.
func (s *Server) Shutdown(ctx context.Context) error { return s.server().Shutdown(ctx) }

// Close closes the listeners and all connections at once.
func (s *Server) Close() error { return s.server().Close() }
