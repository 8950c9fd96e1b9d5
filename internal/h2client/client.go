// Package h2client is the engine's client for the upstreams that
// internal/h1client does not serve: TLS upstreams, spoken to in HTTP/2
// when they offer it by ALPN (RFC 9113 §3.2) and in HTTP/1.1 otherwise,
// and h2c upstreams, spoken to in HTTP/2 over cleartext TCP with prior
// knowledge (RFC 9113 §3.3).
//
// It is net/http's Transport with HTTP/2 switched on through
// http.Transport.Protocols and tuned through http.HTTP2Config, not
// golang.org/x/net/http2's Transport: x/net v0.62 deprecates its client
// API in favour of exactly these fields, and from Go 1.27 its Transport
// is a wrapper around net/http's. net/http's Transport also gives what
// a proxy needs and a bare http2.Transport lacks: a response header
// timeout that starts once the request body was sent (a long upload or a
// client-streaming gRPC call is no slow upstream), the bound on response
// heads and the idle timeout. One connection per upstream multiplexes
// the streams; another is opened when the upstream's stream limit is
// reached.
//
// A connection whose peer stopped answering is found by a PING sent
// after PingInterval without a frame from the peer, and closed when no
// answer arrives within PingTimeout; the next request dials a new one. A
// stream that timed out or was canceled is reset (RST_STREAM) with a
// PING alongside, and the connection takes no new stream until the PING
// is answered.
//
// A request the upstream refused without processing it (REFUSED_STREAM,
// or a stream above the last stream ID of a GOAWAY: RFC 9113 §8.7) is
// retried by the transport on a new stream or connection, up to six
// times with a backoff, if it has no body or its Request.GetBody gives
// the body again; Unprocessed tells such a failure when it still ends
// the exchange.
package h2client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultDialTimeout = 10 * time.Second
	// DefaultPingInterval is five minutes because that is the shortest
	// ping interval gRPC servers accept by default (grpc-go's
	// keepalive.EnforcementPolicy.MinTime, grpc-java's
	// permitKeepAliveTime, C-core's min_recv_ping_interval_without_data):
	// pinging more often makes them close the connection with GOAWAY
	// ENHANCE_YOUR_CALM ("too_many_pings"), cutting quiet streams. A dead
	// connection carrying requests is found sooner anyway: a request that
	// times out resets its stream with a PING alongside, and the
	// connection takes no new stream until that PING is answered.
	DefaultPingInterval = 5 * time.Minute
	DefaultPingTimeout  = 15 * time.Second
)

// Config configures a Client. Zero fields get the defaults of the
// constants above or of http.Transport.
type Config struct {
	// DialTimeout bounds connecting, the TLS handshake included.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head after
	// the request, body included, was sent. If zero, none.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes connections idle that long. If zero, none.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost bounds idle HTTP/1.1 connections per upstream.
	MaxIdleConnsPerHost int
	// ExpectContinueTimeout is how long a request with
	// "Expect: 100-continue" waits for the 100 before sending its body.
	ExpectContinueTimeout time.Duration

	// TLS is the base TLS configuration for https:// upstreams; if nil,
	// the system roots and Go's defaults. TLSFor, if not nil, returns
	// the configuration for the upstream at addr (host:port) instead; a
	// nil result means TLS. The configuration is cloned; an empty
	// ServerName becomes the host of addr, nil NextProtos become
	// "h2", "http/1.1", and a nil ClientSessionCache a cache shared by
	// the Client.
	TLS    *tls.Config
	TLSFor func(addr string) *tls.Config

	// PingInterval is how long an HTTP/2 connection may go without a
	// frame from the upstream before a PING checks it; PingTimeout how
	// long the answer may take before the connection is closed. If
	// zero, DefaultPingInterval and DefaultPingTimeout; a negative
	// PingInterval turns the check off.
	PingInterval time.Duration
	PingTimeout  time.Duration

	// DialContext, if set, replaces net.Dialer.DialContext (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// CheckAddr, if set, is called with the context of the request that
	// causes a dial and the address of every connection before it is
	// made (once the name is resolved, before connect(2)); an error
	// refuses the address. It replaces DialContext. Pooled connections
	// are not checked again: a Client with CheckAddr must only carry
	// requests under the same check.
	CheckAddr func(ctx context.Context, addr netip.AddrPort) error
}

// Client carries requests to https:// upstreams (HTTP/2 or HTTP/1.1, as
// ALPN decides) and to http:// URLs in HTTP/2 with prior knowledge
// (h2c). It is safe for concurrent use.
type Client struct {
	cfg      Config
	sessions tls.ClientSessionCache
	tls      *http.Transport // https: ALPN h2 or http/1.1
	tls1     *http.Transport // https: HTTP/1.1 only, for upgrade requests
	h2c      *http.Transport // http: HTTP/2 with prior knowledge
}

// New returns a Client for cfg.
func New(cfg Config) *Client {
	c := &Client{cfg: cfg, sessions: tls.NewLRUClientSessionCache(0)}
	c.tls = c.transport(true, true, false)
	c.tls1 = c.transport(true, false, false)
	c.h2c = c.transport(false, false, true)
	return c
}

func (c *Client) transport(useTLS, h2, h2c bool) *http.Transport {
	cfg := c.cfg
	ping, pingTimeout := cfg.PingInterval, cfg.PingTimeout
	switch {
	case ping == 0:
		ping = DefaultPingInterval
	case ping < 0:
		ping = 0
	}
	if pingTimeout <= 0 {
		pingTimeout = DefaultPingTimeout
	}
	t := &http.Transport{
		DialContext:           c.dial,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: cfg.ExpectContinueTimeout,
		// The client's Accept-Encoding passes through untouched, and
		// so does the upstream's Content-Encoding.
		DisableCompression: true,
		Protocols:          new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: ping,
			PingTimeout:     pingTimeout,
		},
	}
	switch {
	case useTLS:
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dialTLS(ctx, network, addr, h2)
		}
		t.Protocols.SetHTTP1(true)
		t.Protocols.SetHTTP2(h2)
	case h2c:
		t.Protocols.SetUnencryptedHTTP2(true)
		// For HTTP/2 this bounds the dials in progress, not the
		// connections: the requests that arrive while the first
		// connection is being made wait for it and share it, instead
		// of each dialing one of its own.
		t.MaxConnsPerHost = 1
	}
	return t
}

func (c *Client) dialTimeout() time.Duration {
	if c.cfg.DialTimeout > 0 {
		return c.cfg.DialTimeout
	}
	return DefaultDialTimeout
}

func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.cfg.DialContext != nil && c.cfg.CheckAddr == nil {
		ctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
		defer cancel()
		return c.cfg.DialContext(ctx, network, addr)
	}
	d := net.Dialer{Timeout: c.dialTimeout(), KeepAlive: 30 * time.Second}
	if c.cfg.CheckAddr != nil {
		d.ControlContext = func(ctx context.Context, network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || network != "tcp4" && network != "tcp6" && network != "tcp" {
				return fmt.Errorf("h2client: %s address %q not checkable", network, address)
			}
			return c.cfg.CheckAddr(ctx, ap)
		}
	}
	return d.DialContext(ctx, network, addr)
}

// dialTLS connects and completes the TLS handshake, both within
// DialTimeout, with the configuration for addr. h2 offers "h2" by ALPN
// unless the configuration names its own protocols.
func (c *Client) dialTLS(ctx context.Context, network, addr string, h2 bool) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
	defer cancel()
	cfg := c.TLSConfig(addr)
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	nc, err := c.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// TLSConfig returns the TLS configuration used to connect to addr
// (host:port): a clone of TLSFor(addr) or TLS, with the defaults of
// Config.TLS filled in.
func (c *Client) TLSConfig(addr string) *tls.Config {
	var base *tls.Config
	if c.cfg.TLSFor != nil {
		base = c.cfg.TLSFor(addr)
	}
	if base == nil {
		base = c.cfg.TLS
	}
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if cfg.NextProtos == nil {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = c.sessions
	}
	return cfg
}

// RoundTrip sends an https:// request (over HTTP/2 if the upstream offers
// it, over HTTP/1.1 for an upgrade request, which HTTP/2 cannot carry)
// or an http:// request over HTTP/2 with prior knowledge.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Scheme {
	case "https":
		if len(req.Header["Upgrade"]) > 0 {
			return c.tls1.RoundTrip(req)
		}
		return c.tls.RoundTrip(req)
	case "http":
		return c.h2c.RoundTrip(req)
	}
	return nil, fmt.Errorf("h2client: unsupported scheme in %v", req.URL)
}

// CloseIdleConnections closes the idle connections of every transport.
func (c *Client) CloseIdleConnections() {
	c.tls.CloseIdleConnections()
	c.tls1.CloseIdleConnections()
	c.h2c.CloseIdleConnections()
}

// ErrUnprocessed reports an exchange that the upstream refused without
// processing it and that could not be retried; see Unprocessed.
var ErrUnprocessed = errors.New("h2client: upstream refused the request without processing it")

// Unprocessed reports whether err ended an HTTP/2 exchange that the
// upstream certainly did not process (RFC 9113 §8.7): err wraps
// ErrUnprocessed (what the engine's Request.GetBody returns when the
// transport wants to retry such a request and its body cannot be sent
// again), or it is the transport's last REFUSED_STREAM or graceful
// GOAWAY after its own retries. Such a request may be sent again,
// whatever its method, if its body can be.
//
// net/http does not export its HTTP/2 errors; the last two are known
// by their text.
func Unprocessed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnprocessed) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "stream error: ") && strings.Contains(msg, "; REFUSED_STREAM") ||
		strings.HasSuffix(msg, "http2: Transport received Server's graceful shutdown GOAWAY")
}
