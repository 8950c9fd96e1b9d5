package sluice

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/connlimit"
	"github.com/sluiceproxy/sluice/internal/h1server"
	"github.com/sluiceproxy/sluice/internal/h2server"
	"github.com/sluiceproxy/sluice/internal/proxyproto"
)

// front is what Server adds around its HTTP/1.1 server: the accept loop,
// the TLS handshakes, and the HTTP/2 server that connections negotiating
// h2 (by ALPN, or by the h2c preface) are handed to.
type front struct {
	h1, h2, h2c bool // the protocols served
	h2srv       *h2server.Server

	closing   atomic.Bool
	stopped   chan struct{} // closed by stop: wakes accept loops waiting for a slot
	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	pending   map[net.Conn]struct{} // reading a PROXY header or in the TLS handshake

	limit     *connlimit.Limiter // MaxConns; nil for no bound
	limitLog  atomic.Int64       // when reaching MaxConns was last logged (Unix ns)
	emptyScan atomic.Int64       // when a search for an idle connection to close last found none (Unix ns)
}

// defaultMaxConns is Server.MaxConns when it is zero.
const defaultMaxConns = 32768

// DefaultHTTP2MaxReadFrameSize is the largest HTTP/2 frame Server accepts
// (SETTINGS_MAX_FRAME_SIZE) unless Server.HTTP2 says otherwise: 16 KiB,
// the protocol's initial value (RFC 9113 §6.5.2), where net/http allows
// 1 MiB. The frame reader of a connection keeps a buffer the size of the
// largest frame it read, so this bounds it.
const DefaultHTTP2MaxReadFrameSize = 16 << 10

// DefaultHTTP2WriteByteTimeout is how long an HTTP/2 connection may have
// bytes to send that the client does not take before Server closes it,
// unless Server.HTTP2 says otherwise: 60 s, nginx's send_timeout. It is
// renewed by every byte written, so a slow but steady client is never
// cut.
const DefaultHTTP2WriteByteTimeout = 60 * time.Second

// DefaultHTTP2Config returns the HTTP/2 settings Server uses when its
// HTTP2 field is nil: net/http's defaults (250 concurrent streams per
// connection, 1 MiB receive windows per stream and per connection) with
// MaxReadFrameSize DefaultHTTP2MaxReadFrameSize and WriteByteTimeout
// DefaultHTTP2WriteByteTimeout.
func DefaultHTTP2Config() http.HTTP2Config {
	return http.HTTP2Config{
		MaxReadFrameSize: DefaultHTTP2MaxReadFrameSize,
		WriteByteTimeout: DefaultHTTP2WriteByteTimeout,
	}
}

// initFront runs once, with the HTTP/1.1 server built.
func (s *Server) initFront() {
	f := &s.front
	f.h1, f.h2, f.h2c = true, true, false
	if p := s.Protocols; p != nil {
		f.h1, f.h2, f.h2c = p.HTTP1(), p.HTTP2(), p.UnencryptedHTTP2()
	}
	idle := s.IdleTimeout
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	h2 := DefaultHTTP2Config()
	if s.HTTP2 != nil {
		h2 = *s.HTTP2
		if h2.MaxReadFrameSize == 0 {
			h2.MaxReadFrameSize = DefaultHTTP2MaxReadFrameSize
		}
		if h2.WriteByteTimeout == 0 {
			h2.WriteByteTimeout = DefaultHTTP2WriteByteTimeout
		}
	}
	f.stopped = make(chan struct{})
	switch n := s.MaxConns; {
	case n == 0:
		f.limit = connlimit.New(defaultMaxConns)
	case n > 0:
		f.limit = connlimit.New(n)
	}
	f.h2srv = &h2server.Server{
		Handler:        s.Handler,
		IdleTimeout:    idle,
		MaxHeaderBytes: s.MaxHeaderBytes,
		HTTP2:          &h2,
		Logger:         s.Logger,
	}
	if f.h2c && f.h1 {
		// HTTP/1.1 and prior-knowledge HTTP/2 on one listener: the
		// HTTP/1.1 server looks at the first bytes of each connection.
		s.srv.H2C = f.h2srv.ServeConn
	}
}

// ServeTLS serves HTTPS on ln: it is Serve with ln wrapped by
// TLSListener. certFile and keyFile name PEM files of a certificate
// (with its chain) and its key; they may be empty when TLSConfig holds
// certificates or GetCertificate. Like Serve, it returns
// http.ErrServerClosed after Shutdown or Close.
func (s *Server) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	tl, err := s.TLSListener(ln, certFile, keyFile)
	if err != nil {
		return err
	}
	return s.Serve(tl)
}

// ListenAndServeTLS listens on the TCP address s.Addr (":https" if empty)
// and calls ServeTLS.
func (s *Server) ListenAndServeTLS(certFile, keyFile string) error {
	addr := s.Addr
	if addr == "" {
		addr = ":https"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.ServeTLS(ln, certFile, keyFile)
}

// TLSListener returns ln wrapped in TLS the way ServeTLS serves it: a
// clone of TLSConfig (or a new tls.Config) whose ALPN protocols
// (NextProtos) offer "h2" and "http/1.1" as Protocols allows, the user's
// other protocols kept, and, when certFile or keyFile is set or the
// configuration has no certificate of its own, the key pair loaded from
// them. Serve reads the PROXY protocol header of a peer of ProxyProtocol
// before the TLS handshake only on a listener TLSListener returned, itself
// (not wrapped in another listener). It lets a TLS server run under the
// Serve function:
//
//	tl, err := srv.TLSListener(ln, "cert.pem", "key.pem")
//	...
//	err = sluice.Serve(ctx, srv, tl, 0)
func (s *Server) TLSListener(ln net.Listener, certFile, keyFile string) (net.Listener, error) {
	cfg := s.TLSConfig.Clone()
	if cfg == nil {
		cfg = new(tls.Config)
	}
	h1, h2 := true, true
	if p := s.Protocols; p != nil {
		h1, h2 = p.HTTP1(), p.HTTP2()
	}
	cfg.NextProtos = alpn(cfg.NextProtos, h1, h2)
	hasCert := len(cfg.Certificates) > 0 || cfg.GetCertificate != nil || cfg.GetConfigForClient != nil
	if !hasCert || certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("sluice: loading the TLS certificate: %w", err)
		}
		cfg.Certificates = append([]tls.Certificate{cert}, cfg.Certificates...)
	}
	return &tlsListener{Listener: ln, cfg: cfg}, nil
}

// tlsListener is what TLSListener returns: tls.NewListener's listener,
// whose configuration Serve can reach, so that it accepts from the
// listener under it and reads a PROXY protocol header (see
// Server.ProxyProtocol) before the handshake.
type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

// Accept returns the next connection, wrapped in TLS (its handshake is
// done on its first read or write).
func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, l.cfg), nil
}

// alpn returns a copy of protos with "h2" and "http/1.1" present or
// absent as h2 and h1 say, appended in that order when missing (the
// server's order is the preference: RFC 7301 §3.2).
func alpn(protos []string, h1, h2 bool) []string {
	protos = slices.DeleteFunc(slices.Clone(protos), func(p string) bool {
		return (p == "h2" && !h2) || (p == "http/1.1" && !h1)
	})
	if h2 && !slices.Contains(protos, "h2") {
		protos = append(protos, "h2")
	}
	if h1 && !slices.Contains(protos, "http/1.1") {
		protos = append(protos, "http/1.1")
	}
	return protos
}

// serve is Server.Serve: it accepts connections on ln and routes each to
// the HTTP/1.1 or the HTTP/2 server. A connection from a peer of
// ProxyProtocol first has its PROXY header read, and a *tls.Conn its
// handshake completed, on a goroutine of its own (prepare); then a TLS
// connection goes where its ALPN protocol says, a plain one to the
// HTTP/1.1 server, which hands it on when it starts with the h2c preface.
func (s *Server) serve(ln net.Listener) error {
	h1 := s.server()
	f := &s.front
	if s.Handler == nil {
		return errors.New("sluice: Serve with a nil Handler")
	}
	if !f.track(&ln, true) {
		ln.Close()
		return http.ErrServerClosed
	}
	defer f.track(&ln, false)
	defer ln.Close()

	// The HTTP/1.1 server takes this listener's connections from a queue.
	q := h2server.NewQueue(ln.Addr())
	h1done := make(chan struct{})
	go func() {
		defer close(h1done)
		_ = h1.Serve(q)
	}()
	defer func() {
		q.Close()
		<-h1done
	}()

	// A listener from TLSListener is served from the one under it: a
	// PROXY header comes before the TLS handshake.
	raw, tlsCfg := ln, (*tls.Config)(nil)
	if tl, ok := ln.(*tlsListener); ok {
		raw, tlsCfg = tl.Listener, tl.cfg
	}
	var backoff time.Duration
	for {
		nc, err := h1server.Accept(raw, &f.closing, &backoff)
		if err != nil {
			return err
		}
		if f.limit != nil {
			// A listener that makes TLS connections itself (not
			// TLSListener's) is not counted: the slot cannot be put
			// under its TLS.
			if _, isTLS := nc.(*tls.Conn); !isTLS {
				// Until a slot is free this loop accepts nothing more:
				// new connections wait in the listen queue.
				if !s.acquire() {
					nc.Close()
					return http.ErrServerClosed
				}
				// The slot goes back when the connection closes,
				// whoever closes it: a server, a hijacker, a failed
				// handshake.
				nc = connlimit.Wrap(nc, f.limit)
			}
		}
		header := s.sendsProxyHeader(nc)
		if tlsCfg != nil && !header {
			nc = tls.Server(nc, tlsCfg)
		}
		if _, isTLS := nc.(*tls.Conn); isTLS || header {
			if f.trackPending(nc, true) {
				go s.prepare(nc, header, tlsCfg, q)
			} else {
				nc.Close()
			}
			continue
		}
		s.dispatch(nc, q)
	}
}

// acquire takes a slot of MaxConns for a connection just accepted. At
// the bound it closes an HTTP/1.1 connection idle between requests to
// make room, if there is one, and otherwise waits for a connection to
// close, looking for idle ones again every 100 ms. It reports false once
// the Server is stopping.
func (s *Server) acquire() bool {
	f := &s.front
	if f.limit.TryAcquire() {
		return true
	}
	if now := time.Now().UnixNano(); now-f.limitLog.Load() >= int64(10*time.Second) {
		f.limitLog.Store(now)
		s.logger().Warn("sluice: Server.MaxConns reached: new connections wait in the listen queue until one closes",
			"max_conns", f.limit.Max())
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for !f.closing.Load() {
		if s.reclaimIdle() && f.limit.TryAcquire() {
			return true
		}
		t.Reset(100 * time.Millisecond)
		if f.limit.Acquire(f.stopped, t.C) {
			return true
		}
	}
	return false
}

// reclaimIdle closes one HTTP/1.1 connection idle between requests, and
// reports whether there was one. A search that found none (it looks at
// every connection) is not repeated for 50 ms.
func (s *Server) reclaimIdle() bool {
	f := &s.front
	now := time.Now().UnixNano()
	if now-f.emptyScan.Load() < int64(50*time.Millisecond) {
		return false
	}
	if s.srv.CloseIdle(1) == 1 {
		return true
	}
	f.emptyScan.Store(now)
	return false
}

// dispatch hands a plain connection to the HTTP/1.1 server (which passes
// it on to HTTP/2 if it starts with the h2c preface), or to the HTTP/2
// server when h2c is the only protocol served.
func (s *Server) dispatch(nc net.Conn, q *h2server.Queue) {
	f := &s.front
	switch {
	case f.h1:
		if !q.Push(nc) {
			nc.Close()
		}
	case f.h2c:
		f.h2srv.ServeConn(nc)
	default:
		nc.Close()
	}
}

// sendsProxyHeader reports whether nc's peer is one of ProxyProtocol.
func (s *Server) sendsProxyHeader(nc net.Conn) bool {
	if len(s.ProxyProtocol) == 0 {
		return false
	}
	ta, ok := nc.RemoteAddr().(*net.TCPAddr)
	return ok && isTrusted(ta.AddrPort().Addr().Unmap().WithZone(""), s.ProxyProtocol)
}

// prepare does, on the connection's own goroutine, what waits on the
// client before a request can be read: the PROXY header when header is
// set (then the TLS handshake with tlsCfg, if not nil), the TLS handshake
// of a *tls.Conn. Both together are bounded by ReadHeaderTimeout (see
// handshakeTimeout); Shutdown and Close end them (front.stop). The
// connection then goes to its server.
func (s *Server) prepare(nc net.Conn, header bool, tlsCfg *tls.Config, q *h2server.Queue) {
	f := &s.front
	defer f.trackPending(nc, false)
	if d := s.handshakeTimeout(); d > 0 {
		_ = nc.SetDeadline(time.Now().Add(d))
	}
	c := nc
	if header {
		if _, ok := nc.(*tls.Conn); ok {
			// A TLS listener that does not come from TLSListener: the
			// header is under the TLS connection, whose addresses
			// cannot be changed.
			s.logger().Warn("sluice: PROXY protocol on a TLS listener not made by Server.TLSListener: connection closed", "remote", nc.RemoteAddr().String())
			nc.Close()
			return
		}
		// The header is read from the TCP connection itself (on which
		// it is peeked at), under the wrapper of MaxConns if any.
		raw := nc
		lc, limited := nc.(*connlimit.Conn)
		if limited {
			raw = lc.Unwrap()
		}
		pc, _, err := proxyproto.Receive(raw)
		if err != nil {
			s.logger().Debug("sluice: PROXY protocol header refused", "remote", nc.RemoteAddr().String(), "error", err)
			nc.Close()
			return
		}
		if limited {
			pc = connlimit.Rewrap(lc, pc)
		}
		if c = pc; tlsCfg != nil {
			c = tls.Server(c, tlsCfg)
		}
	}
	tc, isTLS := c.(*tls.Conn)
	if isTLS {
		if err := tc.Handshake(); err != nil {
			s.handshakeFailed(tc, err)
			return
		}
	}
	// From here the connection's server tracks it for Shutdown; until
	// then stop closes it, which it may have done during the handshake.
	if !f.handOff(nc) {
		return
	}
	if isTLS {
		s.serveTLS(tc, q)
		return
	}
	// The HTTP/1.1 server sets the read deadline itself.
	_ = c.SetDeadline(time.Time{})
	s.dispatch(c, q)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// serveTLS hands tc, its handshake done within the deadline that prepare
// set, to the server of the protocol it negotiated (ALPN, RFC 7301): "h2"
// to HTTP/2, anything else (or none) to HTTP/1.1. The handshake's
// goroutine, its stack grown by the cryptography, ends there: the
// connection is served on fresh ones.
func (s *Server) serveTLS(tc *tls.Conn, q *h2server.Queue) {
	f := &s.front
	switch h2 := tc.ConnectionState().NegotiatedProtocol == "h2"; {
	case h2 && f.h2:
		_ = tc.SetDeadline(time.Time{})
		f.h2srv.ServeConn(tc)
	case !h2 && f.h1:
		// The HTTP/1.1 server sets the read deadline itself.
		_ = tc.SetWriteDeadline(time.Time{})
		if !q.Push(tc) {
			tc.Close()
		}
	default:
		tc.Close()
	}
}

// handshakeTimeout is ReadHeaderTimeout (its default if zero); if that is
// negative, IdleTimeout (its default if zero); none if both are negative.
func (s *Server) handshakeTimeout() time.Duration {
	switch d := s.ReadHeaderTimeout; {
	case d > 0:
		return d
	case d == 0:
		return DefaultReadHeaderTimeout
	}
	if d := s.IdleTimeout; d != 0 {
		return d
	}
	return DefaultIdleTimeout
}

// handshakeFailed closes a connection whose TLS handshake failed. A client
// that sent plain HTTP gets a 400 saying so in plain HTTP, as net/http
// answers it; the failure is logged at debug level (scanners and clients
// that do not trust the certificate are routine).
func (s *Server) handshakeFailed(tc *tls.Conn, err error) {
	defer tc.Close()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		err = errors.New("client sent an HTTP request to an HTTPS server")
	}
	s.logger().Debug("sluice: TLS handshake failed", "remote", tc.RemoteAddr().String(), "error", err)
}

// looksLikeHTTP reports whether the first five bytes of a connection that
// should have started a TLS handshake look like an HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (f *front) track(ln *net.Listener, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !add {
		delete(f.listeners, ln)
		return true
	}
	if f.closing.Load() {
		return false
	}
	if f.listeners == nil {
		f.listeners = make(map[*net.Listener]struct{})
	}
	f.listeners[ln] = struct{}{}
	return true
}

func (f *front) trackPending(nc net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !add {
		delete(f.pending, nc)
		return true
	}
	if f.closing.Load() {
		return false
	}
	if f.pending == nil {
		f.pending = make(map[net.Conn]struct{})
	}
	f.pending[nc] = struct{}{}
	return true
}

// stop stops accepting: the listeners close, and so do connections still
// waiting for their PROXY header or in their TLS handshake (no request of
// theirs has begun).
func (f *front) stop() {
	if !f.closing.Swap(true) {
		close(f.stopped)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ln := range f.listeners {
		(*ln).Close()
	}
	for nc := range f.pending {
		nc.Close()
	}
	clear(f.pending)
}

// handOff takes nc off the connections stop closes, as it goes to a
// server that tracks it from now on. It reports false if stop closed nc
// already (no request of its has begun).
func (f *front) handOff(nc net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pending[nc]; !ok {
		return false
	}
	delete(f.pending, nc)
	return true
}

// shutdown is Server.Shutdown: HTTP/1.1 connections end after their
// response, HTTP/2 connections get a GOAWAY and end after their open
// streams.
func (s *Server) shutdown(ctx context.Context) error {
	h1 := s.server()
	s.front.stop()
	h2err := make(chan error, 1)
	go func() { h2err <- s.front.h2srv.Shutdown(ctx) }()
	err := h1.Shutdown(ctx)
	if err2 := <-h2err; err == nil {
		err = err2
	}
	return err
}

// close is Server.Close.
func (s *Server) close() error {
	h1 := s.server()
	s.front.stop()
	err := h1.Close()
	if err2 := s.front.h2srv.Close(); err == nil {
		err = err2
	}
	return err
}
