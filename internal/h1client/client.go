// Package h1client is sluice's HTTP/1.1 client for plain-text upstreams:
// the fast path of the engine.
//
// Compared with http.Transport it keeps what a proxy needs and drops the
// rest: connections are pooled per upstream with no goroutine and no
// buffer held while idle (bufio readers and writers go back to pools
// between exchanges), a request without a body costs no goroutine at all,
// header maps are copied without re-canonicalization, and a response body
// of known length exposes the raw TCP connection so that the server side
// can move it with splice(2) (see Body.WriteTo).
//
// It does not do TLS, HTTP/2, proxies from the environment, compression
// or redirects: the engine uses http.Transport for those cases.
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
)

// Defaults for zero Client fields.
const (
	DefaultDialTimeout            = 10 * time.Second
	DefaultIdleConnTimeout        = 90 * time.Second
	DefaultMaxIdleConnsPerHost    = 256
	DefaultExpectContinueTimeout  = time.Second
	DefaultMaxResponseHeaderBytes = 1 << 20
)

// Hooks receives events of one exchange. Methods are called from the
// goroutine of RoundTrip, before it returns.
type Hooks interface {
	// Got1xx is called for each informational response (100 included)
	// before the final one.
	Got1xx(code int, header http.Header)
	// WroteHeaders is called once the request head was written.
	WroteHeaders()
	// GotConn is called with the connection the request goes on: dial
	// is the time it took to connect, 0 for a pooled one.
	GotConn(dial time.Duration)
}

// Client is an HTTP/1.1 client for http:// upstreams. Its zero value is
// usable; fields must not change after first use.
type Client struct {
	// DialTimeout bounds connecting. If zero, DefaultDialTimeout.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response head after
	// the request was written. If zero, no limit.
	ResponseHeaderTimeout time.Duration
	// ReadIdleTimeout bounds each wait for more of a response body (its
	// trailers included): a read that gets no byte for this long fails
	// the body (within a quarter more). A body that keeps coming, however
	// slowly, is never cut; the time the caller takes between two reads
	// does not count. If zero, DefaultReadIdleTimeout; if negative, none.
	ReadIdleTimeout time.Duration
	// WriteIdleTimeout bounds each wait for the upstream to take more of
	// a request, head or body: a write to which it takes no byte for
	// this long fails the exchange (within a half more). The time
	// spent reading the request body from its source does not count. If
	// zero, DefaultWriteIdleTimeout; if negative, none.
	//
	// Both idle bounds fail with an error that is a net.Error whose
	// Timeout method reports true (and that wraps
	// os.ErrDeadlineExceeded), as does ResponseHeaderTimeout.
	WriteIdleTimeout time.Duration
	// IdleConnTimeout is how long a connection stays idle in the pool.
	// If zero, DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost bounds the pool per upstream. If zero,
	// DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// ExpectContinueTimeout is how long a request with
	// "Expect: 100-continue" waits for the 100 before sending its body
	// anyway. If zero, DefaultExpectContinueTimeout.
	ExpectContinueTimeout time.Duration
	// MaxResponseHeaderBytes bounds a response head. If zero,
	// DefaultMaxResponseHeaderBytes.
	MaxResponseHeaderBytes int64
	// Logger receives a line for each upstream connection closed because
	// the upstream sent more than its framing. If nil, slog.Default().
	Logger *slog.Logger
	// DialContext, if set, replaces net.Dialer.DialContext. A connection
	// that does not implement syscall.Conn cannot be checked for unread
	// bytes and is therefore never reused; one that buffers reads of its
	// own must not implement it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// CheckAddr, if set, is called with the context of the request and
	// the address of every connection before it is made (once the name
	// is resolved, before connect(2)) and before a pooled one is reused;
	// an error refuses the address (a refused pooled connection is
	// closed, and a new one dialed). It replaces DialContext. Unix-domain
	// sockets are refused.
	CheckAddr func(ctx context.Context, addr netip.AddrPort) error

	// The hot path takes no lock of the Client: hosts is replaced, not
	// changed, when an upstream is added (under mu), and janitorOn
	// mirrors janitor != nil.
	mu        sync.Mutex
	hosts     atomic.Pointer[map[string]*hostPool]
	janitor   chan struct{} // wakes the running janitor; nil when none runs
	janitorOn atomic.Bool
}

// ErrBadResponse wraps every failure to parse an upstream response.
var ErrBadResponse = errors.New("malformed HTTP response")

// errServerClosedIdle is what a reused connection that the server had
// already closed looks like; such a request is retried on a new one.
var errServerClosedIdle = errors.New("h1client: server closed idle connection")

func (c *Client) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return DefaultDialTimeout
}

func (c *Client) idleTimeout() time.Duration {
	if c.IdleConnTimeout > 0 {
		return c.IdleConnTimeout
	}
	return DefaultIdleConnTimeout
}

func (c *Client) maxIdle() int {
	if c.MaxIdleConnsPerHost > 0 {
		return c.MaxIdleConnsPerHost
	}
	return DefaultMaxIdleConnsPerHost
}

func (c *Client) maxHeaderBytes() int64 {
	if c.MaxResponseHeaderBytes > 0 {
		return c.MaxResponseHeaderBytes
	}
	return DefaultMaxResponseHeaderBytes
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Client) continueTimeout() time.Duration {
	if c.ExpectContinueTimeout > 0 {
		return c.ExpectContinueTimeout
	}
	return DefaultExpectContinueTimeout
}

// RoundTrip implements http.RoundTripper for http:// requests.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.Do(req, nil)
}

// Do sends req and returns the response once its head arrived; the body
// streams from the connection. hooks may be nil. The URL's scheme is
// "http", or "unix" with the path of a Unix-domain socket as its Host
// (the Host header is then req.Host, which the caller sets).
//
// One response per request: a connection goes back to the pool only if
// its buffer holds no byte past the end of the response, and it is taken
// from the pool only if its buffer and its socket are still empty (a
// non-blocking peek, one system call per exchange; see conn.reusable). A connection that fails either check is closed, and
// one that holds bytes is logged: the upstream sent more than its
// framing (a Content-Length shorter than the body, a body after a HEAD,
// 204 or 304 head, or bytes while idle), and those bytes must never be
// read as the answer to the next request.
//
// An idempotent request (RFC 9110 §9.2.2) whose connection came from the
// pool and turned out closed by the server before any byte of the
// response is retried once on a new connection, provided no byte of its
// body was consumed. Other requests are never sent twice.
func (c *Client) Do(req *http.Request, hooks Hooks) (*http.Response, error) {
	var addr string
	switch {
	case req.URL == nil:
		return nil, errors.New("h1client: request without URL")
	case req.URL.Scheme == "http":
		addr = canonicalAddr(req.URL.Host)
	case req.URL.Scheme == "unix" && strings.HasPrefix(req.URL.Host, "/"):
		addr = req.URL.Host // the socket's path; see getConn
	default:
		return nil, fmt.Errorf("h1client: unsupported scheme in %v", req.URL)
	}
	ctx := req.Context()
	idempotent := h1wire.IsIdempotent(req.Method)
	for try := 0; ; try++ {
		pc, reused, err := c.getConn(ctx, addr)
		if err != nil {
			return nil, err
		}
		if hooks != nil {
			if reused {
				hooks.GotConn(0)
			} else {
				hooks.GotConn(pc.dialed)
			}
		}
		res, err := pc.roundTrip(req, hooks)
		if err == nil {
			return res, nil
		}
		if reused && idempotent && errors.Is(err, errServerClosedIdle) && try == 0 {
			continue
		}
		if errors.Is(err, errServerClosedIdle) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
}

func canonicalAddr(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if len(host) > 0 && host[0] == '[' && host[len(host)-1] == ']' {
		return host + ":80"
	}
	return net.JoinHostPort(host, "80")
}

// CloseIdleConnections closes every idle pooled connection.
func (c *Client) CloseIdleConnections() {
	for _, hp := range c.pools() {
		hp.closeIdle(time.Time{})
	}
	c.mu.Lock()
	if c.janitor != nil {
		select {
		case c.janitor <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
}

// pools returns the host pools (a snapshot; it may miss one being added).
func (c *Client) pools() map[string]*hostPool {
	if m := c.hosts.Load(); m != nil {
		return *m
	}
	return nil
}

// hostPool holds the idle connections to one upstream, most recently
// used last (LIFO keeps the warmest connections busy and lets the others
// time out).
type hostPool struct {
	addr string // host:port, for logs
	mu   sync.Mutex
	idle []*conn
}

func (c *Client) pool(addr string) *hostPool {
	if hp := c.pools()[addr]; hp != nil {
		return hp
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pools()
	if hp := old[addr]; hp != nil {
		return hp
	}
	m := make(map[string]*hostPool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	hp := &hostPool{addr: addr}
	m[addr] = hp
	c.hosts.Store(&m)
	return hp
}

func (c *Client) getConn(ctx context.Context, addr string) (*conn, bool, error) {
	hp := c.pool(addr)
	now := time.Now()
	for {
		hp.mu.Lock()
		n := len(hp.idle)
		if n == 0 {
			hp.mu.Unlock()
			break
		}
		pc := hp.idle[n-1]
		hp.idle[n-1] = nil
		hp.idle = hp.idle[:n-1]
		hp.mu.Unlock()
		if now.Sub(pc.idleSince) > c.idleTimeout() || !pc.reusable("while idle", true) || c.refused(ctx, pc.nc) {
			pc.nc.Close()
			continue
		}
		pc.acquireBuffers()
		return pc, true, nil
	}
	dial := c.DialContext
	if c.CheckAddr != nil {
		d := net.Dialer{Timeout: c.dialTimeout(), KeepAlive: 30 * time.Second, ControlContext: c.control}
		dial = d.DialContext
	} else if dial == nil {
		d := net.Dialer{Timeout: c.dialTimeout(), KeepAlive: 30 * time.Second}
		dial = d.DialContext
	} else if c.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.DialTimeout)
		defer cancel()
	}
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix" // a Unix-domain socket's path (scheme "unix" in Do)
	}
	t0 := time.Now()
	nc, err := dial(ctx, network, addr)
	if err != nil {
		return nil, false, err
	}
	pc := &conn{client: c, pool: hp, nc: nc, probe: newProber(nc), dialed: time.Since(t0)}
	pc.lr = h1wire.LimitReader{R: idleReader{pc}, N: -1, TooLarge: errHeaderTooLarge}
	pc.acquireBuffers()
	return pc, false, nil
}

// control is net.Dialer.ControlContext under CheckAddr.
func (c *Client) control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || network != "tcp4" && network != "tcp6" && network != "tcp" {
		return fmt.Errorf("h1client: %s address %q not checkable", network, address)
	}
	return c.CheckAddr(ctx, ap)
}

// refused reports whether CheckAddr refuses the peer of a pooled
// connection for the request of ctx.
func (c *Client) refused(ctx context.Context, nc net.Conn) bool {
	if c.CheckAddr == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(nc.RemoteAddr().String())
	return err != nil || c.CheckAddr(ctx, ap) != nil
}

// putIdle returns a connection to the pool, or closes it if the pool is
// full or the client closed.
func (c *Client) putIdle(pc *conn) {
	pc.releaseBuffers()
	pc.idleSince = time.Now()
	hp := pc.pool
	hp.mu.Lock()
	if len(hp.idle) >= c.maxIdle() {
		hp.mu.Unlock()
		pc.nc.Close()
		return
	}
	hp.idle = append(hp.idle, pc)
	hp.mu.Unlock()
	c.startJanitor()
}

// startJanitor runs one goroutine per Client, while connections are
// idle, that closes the ones past IdleConnTimeout. It exits when the pool
// is empty.
func (c *Client) startJanitor() {
	if c.janitorOn.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.janitor == nil {
		c.janitor = make(chan struct{}, 1)
		c.janitorOn.Store(true)
		go c.sweep(c.janitor)
	}
}

func (c *Client) sweep(wake chan struct{}) {
	t := time.NewTicker(c.idleTimeout() / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-wake:
		}
		deadline := time.Now().Add(-c.idleTimeout())
		left := 0
		for _, hp := range c.pools() {
			left += hp.closeIdle(deadline)
		}
		if left == 0 && c.stopJanitor() {
			return
		}
	}
}

// stopJanitor clears the janitor if no connection is idle, so that a
// connection put back meanwhile is never left without one: janitorOn
// turns false before the pools are checked, so a putIdle either appended
// before the check (which then sees its connection) or finds janitorOn
// false and waits for mu.
func (c *Client) stopJanitor() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.janitorOn.Store(false)
	for _, hp := range c.pools() {
		hp.mu.Lock()
		n := len(hp.idle)
		hp.mu.Unlock()
		if n > 0 {
			c.janitorOn.Store(true)
			return false
		}
	}
	c.janitor = nil
	return true
}

// closeIdle closes the idle connections unused since before deadline (all
// of them for the zero time) and returns how many are left.
func (hp *hostPool) closeIdle(deadline time.Time) int {
	hp.mu.Lock()
	keep := hp.idle[:0]
	var drop []*conn
	for _, pc := range hp.idle {
		if deadline.IsZero() || pc.idleSince.Before(deadline) {
			drop = append(drop, pc)
		} else {
			keep = append(keep, pc)
		}
	}
	clear(hp.idle[len(keep):])
	hp.idle = keep
	n := len(keep)
	hp.mu.Unlock()
	for _, pc := range drop {
		pc.nc.Close()
	}
	return n
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)
