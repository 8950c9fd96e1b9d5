package sluice

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1server"
)

// Defaults of Server, used when the corresponding field is zero. The
// head bound is HAProxy's usual "timeout http-request"; the two idle
// bounds are nginx's client_body_timeout and send_timeout. See
// docs/timeouts.md for every bound of the Proxy and the Server.
const (
	DefaultReadHeaderTimeout = h1server.DefaultReadHeaderTimeout // 10 s
	DefaultBodyIdleTimeout   = h1server.DefaultBodyIdleTimeout   // 60 s
	DefaultWriteIdleTimeout  = h1server.DefaultWriteIdleTimeout  // 60 s
	DefaultIdleTimeout       = h1server.DefaultIdleTimeout       // 2 min
	DefaultMaxHeaderBytes    = h1server.DefaultMaxHeaderBytes    // 1 MiB
)

// Server is sluice's own server: the front end for a Proxy, or for any
// http.Handler, serving HTTP/1.1 with its own engine and HTTP/2 with
// net/http's, over TLS (ServeTLS, ListenAndServeTLS: ALPN offers "h2" and
// "http/1.1") or in cleartext (Serve, ListenAndServe; cleartext HTTP/2
// with prior knowledge when Protocols allows it). It has the shape of
// http.Server (Addr, TLSConfig, Protocols, HTTP2, Serve, ServeTLS,
// Shutdown, Close), with a smaller cost per HTTP/1.1 connection:
//
//   - a keep-alive connection waiting for its next request holds no
//     buffer and only the small stack of a fresh goroutine: 4.9-5.4 KiB
//     per idle connection in the benchmark's runs, against 23 KiB for
//     net/http (docs/benchmarks.md); over TLS, crypto/tls keeps its own
//     record buffer, sized by the largest record the client sent;
//   - a request costs no background-read goroutine: the goroutine that
//     waits for the next request also notices a client that went away,
//     and cancels the request's context, over TLS as on TCP;
//   - a response's head and a small body leave in one write, a bigger
//     piece in one writev(2), and a body of known length from sluice's
//     engine moves socket to socket with splice(2).
//
// Its handlers get what net/http gives them: http.Flusher, http.Hijacker
// (HTTP/1.1), io.ReaderFrom and http.ResponseController's deadlines and
// full duplex (always on); Request.TLS over TLS; Request.Context is
// canceled when the client goes away (over HTTP/2, when it resets the
// stream) or the handler returns; Expect: 100-continue is answered on the
// first read of the body; a request body left unread is drained (up to
// 256 KiB) to keep the connection; a panic closes the connection, or
// resets the HTTP/2 stream (quietly for http.ErrAbortHandler). HTTP/1.1
// requests with ambiguous framing are refused with 400: Transfer-Encoding
// with Content-Length, Transfer-Encoding in HTTP/1.0, differing
// Content-Lengths, several Host headers.
//
// No wait on an HTTP/1.1 client is unbounded by default: a request head
// must be complete ReadHeaderTimeout after its first byte (408
// otherwise), a read of a request body waits at most BodyIdleTimeout for
// the client's next byte, a write at most WriteIdleTimeout for the
// client to take bytes, and a keep-alive connection waits IdleTimeout for
// its next request. Slow but steady clients are never cut: the body and
// write bounds are idle bounds, renewed by every byte that moves. A TLS
// handshake must be done within ReadHeaderTimeout. HTTP/2 connections
// have net/http's bounds (see HTTP2 and docs/tls-http2.md).
//
// The zero value with a Handler is ready to use. Fields must not change
// after Serve is called.
type Server struct {
	// Addr is the TCP address ListenAndServe listens on, "host:port".
	// If empty, ":http" (port 80).
	Addr string

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

	// BodyIdleTimeout bounds how long a read of a request body waits for
	// the client's next byte. Bytes arriving renew it, so a slow but
	// steady upload is never cut, and the handler's time between reads
	// does not count. A read that times out fails with an error for which
	// errors.Is(err, os.ErrDeadlineExceeded) holds; the request's context
	// stays alive, so the handler may still answer (a Proxy answers 408
	// Request Timeout and its upstream sees the request aborted), and the
	// connection closes after the response. It bounds the drain of a
	// body the handler left unread too. If zero, DefaultBodyIdleTimeout;
	// if negative, none.
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

	// IdleTimeout is how long a keep-alive connection may wait for the
	// first byte of its next request; it closes silently after. If zero,
	// DefaultIdleTimeout; if negative, none.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds the request line and header, and the trailer
	// of a chunked request body (431 beyond it). If zero,
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	// MaxConns bounds the connections the Server holds open at once, of
	// every kind, from their accept to their close: HTTP/1.1 connections
	// (idle or serving), connections in their TLS handshake or reading
	// their PROXY protocol header, HTTP/2 connections, and connections a
	// handler hijacked (WebSocket and CONNECT tunnels) until the handler
	// closes them. At the bound the Server stops accepting, as nginx's
	// worker_connections and HAProxy's maxconn do: new connections wait
	// in the kernel's listen queue (its length is the listener's backlog,
	// net.core.somaxconn on Linux) and are served, with no error, as soon
	// as a connection closes; to make room, an HTTP/1.1 connection idle
	// between requests is closed for each connection waiting (nginx
	// reuses its keep-alive connections the same way). Reaching the bound
	// is logged at warning level, at most every 10 s. Backpressure rather
	// than an answer: answering a connection takes what the bound is
	// there to save (a descriptor, a goroutine, a TLS handshake), and a
	// client left in the listen queue is still served when the burst
	// passes, where a refused one must retry (docs/limits.md). Requests
	// are bounded with an answer by Proxy.MaxInFlight.
	//
	// Each proxied HTTP/1.1 request also holds an upstream connection:
	// keep MaxConns under half the process's limit of open files (ulimit
	// -n), or accepts and upstream connections fail for lack of
	// descriptors. Connections of a listener that makes TLS connections
	// itself (tls.NewListener) are not counted: serve TLS with ServeTLS,
	// ListenAndServeTLS or TLSListener, whose TLS is the Server's. If
	// zero, 32768; if negative, no bound.
	MaxConns int

	// TLSConfig configures TLS for ServeTLS, ListenAndServeTLS and
	// TLSListener: certificates, or GetCertificate to serve many names
	// or to pick up a renewed certificate without a restart; client
	// certificates (ClientAuth, ClientCAs); versions; session tickets.
	// It is cloned, and its NextProtos gets "h2" and "http/1.1" as
	// Protocols allows. If nil, crypto/tls's defaults with the
	// certificate given to ServeTLS.
	TLSConfig *tls.Config

	// Protocols are the protocols served, as in http.Server: HTTP1 over
	// TLS and cleartext, HTTP2 over TLS (by ALPN), UnencryptedHTTP2
	// cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3, "h2c"),
	// recognized by its connection preface on the same listener as
	// HTTP/1.1. If nil, HTTP/1 and HTTP/2 over TLS: no h2c. An HTTP/1.1
	// request to upgrade to h2c is never honored.
	Protocols *http.Protocols

	// HTTP2 tunes HTTP/2: streams per connection (250 by default), flow
	// control windows (how much of a request body is buffered per stream
	// and connection: 1 MiB each by default), frame size, write timeout,
	// pings. If nil, DefaultHTTP2Config(); a zero MaxReadFrameSize or
	// WriteByteTimeout means sluice's default, other zero fields
	// net/http's defaults.
	HTTP2 *http.HTTP2Config

	// ProxyProtocol lists the peers that put a PROXY protocol header
	// (version 1 or 2: HAProxy's send-proxy and send-proxy-v2, the layer
	// 4 load balancers of AWS, Google Cloud and Azure) in front of each
	// connection to tell the client's address. A connection from one of
	// them must start with that header, before the TLS handshake on a TLS
	// listener; the header's source becomes the connection's remote
	// address, the Request.RemoteAddr that a Proxy's TrustedProxies,
	// AllowFrom, Squid helpers and X-Forwarded-For go by, and its
	// destination the local address (http.LocalAddrContextKey). The
	// sender's health checks (version 2 LOCAL, version 1 UNKNOWN) keep
	// the connection's own addresses. A missing, malformed or incomplete
	// header, or one relaying UDP or a Unix socket, closes the connection
	// (logged at debug level); the header and the TLS handshake together
	// must be done within ReadHeaderTimeout. Connections from any other
	// peer are served as they are: a PROXY header from them is a
	// malformed request (400), never believed. Peers are matched by their
	// TCP address; on a TLS listener, the header is read when the
	// listener comes from TLSListener (as with ServeTLS and
	// ListenAndServeTLS), and a listed peer's connection from another TLS
	// listener is closed (logged at warning level). If nil, no peer sends
	// a header.
	ProxyProtocol []netip.Prefix

	// Logger receives handler panics (error level), request heads that
	// timed out (info), and clients' HTTP/2 protocol errors, failed TLS
	// handshakes and refused PROXY protocol headers (debug). If nil,
	// slog.Default().
	Logger *slog.Logger

	once  sync.Once
	srv   *h1server.Server
	front front // TLS and HTTP/2: server_tls.go
}

func (s *Server) server() *h1server.Server {
	s.once.Do(func() {
		s.srv = &h1server.Server{
			Handler:           s.Handler,
			ReadHeaderTimeout: s.ReadHeaderTimeout,
			BodyIdleTimeout:   s.BodyIdleTimeout,
			WriteIdleTimeout:  s.WriteIdleTimeout,
			IdleTimeout:       s.IdleTimeout,
			MaxHeaderBytes:    s.MaxHeaderBytes,
			Logger:            s.Logger,
		}
		s.initFront()
	})
	return s.srv
}

// Serve accepts connections on ln and serves them until Shutdown or Close,
// when it returns http.ErrServerClosed. It closes ln. Connections that
// ln returns as *tls.Conn (a tls.Listener, see TLSListener) complete
// their handshake and are served HTTP/2 or HTTP/1.1 as ALPN negotiated.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln) }

// ListenAndServe listens on the TCP address s.Addr and calls Serve.
func (s *Server) ListenAndServe() error {
	addr := s.Addr
	if addr == "" {
		addr = ":http"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops the server gracefully: listeners, idle connections and
// connections still in their TLS handshake close at once; an HTTP/1.1
// connection serving a request closes after its response, which says
// Connection: close; an HTTP/2 connection gets a GOAWAY (RFC 9113 §6.8),
// finishes its open streams and closes (net/http waits up to a second
// more for the client to close first). It returns when every connection
// is closed, or ctx's error when ctx ends first. Hijacked connections
// (WebSocket tunnels) are the handler's: Proxy.Shutdown ends those, and
// Serve (the function) calls both.
func (s *Server) Shutdown(ctx context.Context) error { return s.shutdown(ctx) }

// Close closes the listeners and all connections at once.
func (s *Server) Close() error { return s.close() }
