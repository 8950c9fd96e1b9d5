package sluice

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// CONNECT tunnels (RFC 9110 §9.3.6). A CONNECT request goes through the
// pipeline like any other: its target is the canonical authority
// ("host:port"), routes match it as the path "/" on its host, the
// Authorizers decide on it. Unless a route's Interceptor answers it,
// Forward asks the Director where the tunnel goes: a Director that opens
// tunnels sets pr.Out.URL to tcp://host:port (package forward's does, to
// the authority the client named). Any other answer refuses the CONNECT
// with 405, so a reverse proxy, whose Directors send requests to http(s)
// upstreams, never opens a tunnel. The Proxy connects, and only once the
// connection is made does the client get its 200 and the tunnel start:
// an unreachable target is a 502 or 504, never a 200 then a close.

// DefaultConnectIdleTimeout ends a CONNECT tunnel in which no byte moved
// either way for this long, when WebSocketConfig.IdleTimeout is zero (as
// Squid's read_timeout).
const DefaultConnectIdleTimeout = 15 * time.Minute

// helloTimeout and helloLimit bound the wait for, and the size of, the
// TLS ClientHello read from a tunnel for ProxyRequest.ClientHello.
const (
	helloTimeout = 10 * time.Second
	helloLimit   = 64 << 10
)

var (
	errConnectNotTunnel   = &Error{Status: http.StatusMethodNotAllowed, Err: errors.New("sluice: CONNECT: the Director opens no tunnels (it did not set a tcp://host:port target)")}
	errTunnelTransport    = errors.New("sluice: a CONNECT tunnel cannot go through RoundTrip; use Forward")
	errDialCheckTransport = &Error{Status: http.StatusInternalServerError, Err: errors.New("sluice: DialCheck needs the Proxy's own engine, and Transport is set")}
)

// serveConnect opens the tunnel of a CONNECT request: see the comment at
// the top of this file.
func (p *Proxy) serveConnect(w http.ResponseWriter, pr *ProxyRequest) error {
	if !p.conns.begin() {
		return errShuttingDown
	}
	defer p.conns.end()
	director := p.Director
	if pr.route != nil && pr.route.Director != nil {
		director = pr.route.Director
	}
	if director == nil {
		return ErrNoRoute
	}
	if err := director.Direct(pr); err != nil {
		return err
	}
	u := pr.Out.URL
	if u.Scheme != "tcp" {
		return errConnectNotTunnel
	}
	if err := checkTarget(pr.Out); err != nil {
		return err
	}
	// The dial is the tunnel's one attempt, for OnAttempt and the Record;
	// being connected is its answer.
	done := pr.beginAttempt()
	up, err := p.dialTunnel(pr, u.Host)
	if err != nil {
		pr.attemptFailed(err, nil, done)
		return err
	}
	pr.rec.Connect = time.Since(pr.attemptStart)
	pr.attemptAnswered(http.StatusOK)
	pr.attemptDone = done
	client, br, err := pr.switchClient(w, http.StatusOK, make(http.Header))
	if err != nil {
		up.Close()
		return err
	}
	var pending []byte
	if pr.ClientHello != nil {
		pending, err = peekClientHello(client, br, pr.ClientHello)
		if err != nil {
			client.Close()
			up.Close()
			// The client has its 200: nothing more can be said to it.
			return &abortError{fmt.Errorf("sluice: tunnel to %s refused after the ClientHello: %w", u.Host, err)}
		}
	} else if n := br.Buffered(); n > 0 {
		pending, _ = br.Peek(n)
	}
	idle := p.wsConfig().IdleTimeout
	if idle == 0 {
		idle = DefaultConnectIdleTimeout
	}
	t := &tunnel{
		client:   client,
		upstream: &upstreamConn{rwc: up, conn: up},
		pending:  pending,
		idle:     idle,
	}
	p.detachTunnel(pr.detach(), t)
	return nil
}

// dialTunnel connects to the target of a tunnel, within DialTimeout and
// under pr.DialCheck.
func (p *Proxy) dialTunnel(pr *ProxyRequest, addr string) (net.Conn, error) {
	timeout := p.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	ctx := pr.Out.Context()
	if pr.DialCheck != nil {
		ctx = withDialCheck(ctx, pr.DialCheck)
		d.ControlContext = dialControl
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if pr.In.Context().Err() != nil {
			return nil, fmt.Errorf("%w: %w", errClientGone, err)
		}
		return nil, err
	}
	return c, nil
}

// peekClientHello reads the client's first bytes through br, within
// helloTimeout and helloLimit, parses them as a TLS ClientHello with
// crypto/tls (nothing is decrypted: the ClientHello is sent in the
// clear), calls check with it (nil if they are not one) and returns every
// byte read and still buffered, for the tunnel to send on first.
func peekClientHello(client net.Conn, br *bufio.Reader, check func(*tls.ClientHelloInfo) error) ([]byte, error) {
	_ = client.SetReadDeadline(time.Now().Add(helloTimeout))
	defer client.SetReadDeadline(time.Time{})
	rec := &recorder{r: br, limit: helloLimit}
	var hello *tls.ClientHelloInfo
	first, err := br.Peek(1)
	if err == nil && first[0] == 0x16 { // a TLS handshake record
		errStop := errors.New("stop")
		_ = tls.Server(helloConn{rec}, &tls.Config{
			GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				c := *h
				c.Conn = nil
				hello = &c
				return nil, errStop
			},
		}).Handshake()
	} else if err != nil && len(first) == 0 {
		return nil, fmt.Errorf("sluice: reading the tunnel's first bytes: %w", err)
	}
	if rec.err != nil && hello == nil && !errors.Is(rec.err, io.EOF) {
		return nil, fmt.Errorf("sluice: reading the tunnel's TLS ClientHello: %w", rec.err)
	}
	if err := check(hello); err != nil {
		return nil, err
	}
	if n := br.Buffered(); n > 0 {
		more, _ := br.Peek(n)
		rec.buf = append(rec.buf, more...)
	}
	return rec.buf, nil
}

// recorder reads r and keeps what it read, up to limit bytes.
type recorder struct {
	r     io.Reader
	buf   []byte
	limit int
	err   error
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if left := r.limit - len(r.buf); left <= 0 {
		r.err = errors.New("ClientHello too large")
		return 0, r.err
	} else if len(p) > left {
		p = p[:left]
	}
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	if err != nil {
		r.err = err
	}
	return n, err
}

// helloConn is the connection crypto/tls parses a ClientHello from: reads
// come from the recorder, writes (its alert after GetConfigForClient
// stops it) go nowhere.
type helloConn struct{ r io.Reader }

func (c helloConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (helloConn) Write(p []byte) (int, error)      { return len(p), nil }
func (helloConn) Close() error                     { return nil }
func (helloConn) LocalAddr() net.Addr              { return nil }
func (helloConn) RemoteAddr() net.Addr             { return nil }
func (helloConn) SetDeadline(time.Time) error      { return nil }
func (helloConn) SetReadDeadline(time.Time) error  { return nil }
func (helloConn) SetWriteDeadline(time.Time) error { return nil }

// dialCheckKey carries ProxyRequest.DialCheck to the dialers.
type dialCheckKey struct{}

func withDialCheck(ctx context.Context, check func(netip.AddrPort) error) context.Context {
	return context.WithValue(ctx, dialCheckKey{}, check)
}

// errNoDialCheck fails a dial of the checked engine that lost its check:
// closed, not open.
var errNoDialCheck = errors.New("sluice: dial without the exchange's DialCheck")

// checkAddr applies the DialCheck in ctx to addr.
func checkAddr(ctx context.Context, addr netip.AddrPort) error {
	check, _ := ctx.Value(dialCheckKey{}).(func(netip.AddrPort) error)
	if check == nil {
		return errNoDialCheck
	}
	if err := check(netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())); err != nil {
		return &dialRefusedError{addr: addr, err: err}
	}
	return nil
}

// dialControl is net.Dialer.ControlContext for exchanges with a
// DialCheck: it runs once the name is resolved, before each connect(2).
func dialControl(ctx context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &dialRefusedError{err: fmt.Errorf("%s address %q", network, address)}
	}
	return checkAddr(ctx, ap)
}

// dialRefusedError is a connection that the exchange's DialCheck refused.
// It is never retried.
type dialRefusedError struct {
	addr netip.AddrPort
	err  error
}

func (e *dialRefusedError) Error() string {
	return fmt.Sprintf("sluice: connection to %v refused by DialCheck: %v", e.addr, e.err)
}

func (e *dialRefusedError) Unwrap() error { return e.err }
