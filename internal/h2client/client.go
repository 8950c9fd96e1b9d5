// Package h2client is the engine's client for the upstreams that
// internal/h1client does not serve: TLS upstreams, spoken to in HTTP/2
// when they offer it by ALPN (RFC 9113 §3.2) and in HTTP/1.1 otherwise,
// and h2c upstreams, spoken to in HTTP/2 over cleartext TCP with prior
// knowledge (RFC 9113 §3.3).
//
// It is net/http's Transport with golang.org/x/net/http2 configured into
// it (http2.ConfigureTransports), rather than a bare http2.Transport,
// because the pair gives what a proxy needs and a bare http2.Transport
// lacks: a response header timeout that starts once the request body was
// sent (a long upload or a client-streaming gRPC call is no slow
// upstream), the bound on response heads, the idle timeout, and the
// http.HTTP2Config (ping health checks) that Go 1.27's net/http, where
// x/net/http2 becomes a wrapper, keeps reading. One connection per
// upstream multiplexes the streams; the x/net transport opens another
// when the upstream's stream limit is reached.
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
// retried by the x/net transport on a new stream or connection, up to six
// times with a backoff, if it has no body or its Request.GetBody gives the
// body again; Unprocessed tells such a failure when it still ends the
// exchange.
package h2client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
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
func New(cfg Config) (*Client, error) {
	c := &Client{cfg: cfg, sessions: tls.NewLRUClientSessionCache(0)}
	var err error
	if c.tls, err = c.transport(true, true, false); err != nil {
		return nil, err
	}
	if c.tls1, err = c.transport(true, false, false); err != nil {
		return nil, err
	}
	if c.h2c, err = c.transport(false, false, true); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) transport(useTLS, h2, h2c bool) (*http.Transport, error) {
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
	if h2 || h2c {
		t2, err := http2.ConfigureTransports(t)
		if err != nil {
			return nil, fmt.Errorf("h2client: %w", err)
		}
		// Also set on t.HTTP2, which x/net reads too; kept here for
		// the x/net versions that read only these.
		t2.ReadIdleTimeout, t2.PingTimeout = ping, pingTimeout
	}
	return t, nil
}

func (c *Client) dialTimeout() time.Duration {
	if c.cfg.DialTimeout > 0 {
		return c.cfg.DialTimeout
	}
	return DefaultDialTimeout
}

func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.cfg.DialContext != nil {
		ctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
		defer cancel()
		return c.cfg.DialContext(ctx, network, addr)
	}
	d := net.Dialer{Timeout: c.dialTimeout(), KeepAlive: 30 * time.Second}
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
// upstream certainly did not process (RFC 9113 §8.7): the stream was
// refused with REFUSED_STREAM, or it was above the last stream ID of the
// upstream's GOAWAY, or err wraps ErrUnprocessed. Such a request may be
// sent again, whatever its method, if its body can be.
func Unprocessed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnprocessed) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	// x/net's graceful-GOAWAY error is not exported; it is returned as
	// is (not wrapped) when its retries are exhausted.
	return strings.HasSuffix(err.Error(), "http2: Transport received Server's graceful shutdown GOAWAY")
}
