package sluice

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/wsframe"
	"golang.org/x/net/http/httpguts"
)

// WebSocketConfig configures the tunnels the Proxy makes for upgraded
// connections (WebSocket and other protocols switched to with Upgrade,
// RFC 9110 §7.8) and for CONNECT requests.
type WebSocketConfig struct {
	// IdleTimeout ends a tunnel when neither side sent a byte for this
	// long; WebSocket peers get a close frame with code 1001 (going away)
	// first. It applies to transparent tunnels and is the default of
	// wsmsg.Interceptor.IdleTimeout. If zero, upgraded connections never
	// time out, and CONNECT tunnels after DefaultConnectIdleTimeout.
	IdleTimeout time.Duration
}

func (p *Proxy) wsConfig() WebSocketConfig {
	if p.WebSocket != nil {
		return *p.WebSocket
	}
	return WebSocketConfig{}
}

// errShuttingDown refuses upgrades once Shutdown was called.
var errShuttingDown = &Error{Status: http.StatusServiceUnavailable, Err: errors.New("sluice: shutting down")}

// upstreamConn is the upstream side of a switched connection.
type upstreamConn struct {
	res  *http.Response
	rwc  io.ReadWriteCloser // res.Body: drains what came with the 101 first
	conn net.Conn           // for deadlines; nil with a Transport that hides it
}

func (u *upstreamConn) Read(p []byte) (int, error)  { return u.rwc.Read(p) }
func (u *upstreamConn) Write(p []byte) (int, error) { return u.rwc.Write(p) }
func (u *upstreamConn) Close() error                { return u.rwc.Close() }

func (u *upstreamConn) setReadDeadline(t time.Time) {
	if u.conn != nil {
		_ = u.conn.SetReadDeadline(t)
	}
}

// roundTripUpgrade sends the upgrade request upstream. If the upstream
// answers anything but a valid 101, the answer is relayed to w as a normal
// response (the client connection stays usable) or an error returned, and
// the upstreamConn is nil.
//
// The caller holds a pending entry of the Proxy's tunnels (tunnelSet.begin)
// for as long as the exchange may still become a tunnel.
func (pr *ProxyRequest) roundTripUpgrade(w http.ResponseWriter) (*upstreamConn, error) {
	var conn net.Conn
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conn = i.Conn }}
	pr.Out = pr.Out.WithContext(httptrace.WithClientTrace(pr.Out.Context(), trace))
	res, err := pr.RoundTrip()
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		defer res.Body.Close()
		if pr.ModifyResponse != nil {
			if err := pr.ModifyResponse(res); err != nil {
				return nil, err
			}
		}
		return nil, pr.WriteResponse(w, res)
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		return nil, fmt.Errorf("%w: 101 response without a connection", errBadResponse)
	}
	if err := checkSwitch(pr, res); err != nil {
		rwc.Close()
		return nil, err
	}
	if nc, ok := rwc.(interface{ NetConn() net.Conn }); ok {
		conn = nc.NetConn() // sluice's engine; http.Transport reports GotConn
	}
	if conn != nil {
		// The tunnel bounds its own waits: this ends the engine's idle
		// bounds on the connection (see Proxy.UpstreamIdleTimeout).
		_ = conn.SetDeadline(time.Time{})
	}
	return &upstreamConn{res: res, rwc: rwc, conn: conn}, nil
}

// checkSwitch validates a 101 answer (RFC 9110 §15.2.2, RFC 6455 §4.1):
// the protocol must be the one asked for, Connection must name upgrade,
// and for WebSocket Sec-WebSocket-Accept must match the key, and the
// subprotocol and extensions must be ones the request offered.
func checkSwitch(pr *ProxyRequest, res *http.Response) error {
	if !strings.EqualFold(strings.TrimSpace(res.Header.Get("Upgrade")), pr.upgrade) {
		return fmt.Errorf("%w: switched to %q, asked for %q", errBadResponse, res.Header.Get("Upgrade"), pr.upgrade)
	}
	if !httpguts.HeaderValuesContainsToken(res.Header["Connection"], "upgrade") {
		return fmt.Errorf("%w: 101 without Connection: upgrade", errBadResponse)
	}
	if !isWebSocket(pr) {
		return nil
	}
	key := pr.Out.Header.Get("Sec-WebSocket-Key")
	if key == "" || res.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		return fmt.Errorf("%w: bad Sec-WebSocket-Accept", errBadResponse)
	}
	if vv := res.Header["Sec-Websocket-Protocol"]; len(vv) > 0 {
		proto := strings.TrimSpace(vv[0])
		if len(vv) > 1 || !offered(pr.Out.Header["Sec-Websocket-Protocol"], proto) {
			return fmt.Errorf("%w: subprotocol %q was not offered", errBadResponse, strings.Join(vv, ", "))
		}
	}
	if vv := res.Header["Sec-Websocket-Extensions"]; len(vv) > 0 {
		got, ok := wsframe.ParseExtensions(vv)
		if !ok {
			return fmt.Errorf("%w: malformed Sec-WebSocket-Extensions", errBadResponse)
		}
		want, _ := wsframe.ParseExtensions(pr.Out.Header["Sec-Websocket-Extensions"])
		for _, e := range got {
			if !slices.ContainsFunc(want, func(o httphead.Option) bool { return bytes.EqualFold(o.Name, e.Name) }) {
				return fmt.Errorf("%w: extension %q was not offered", errBadResponse, e.Name)
			}
		}
	}
	return nil
}

func isWebSocket(pr *ProxyRequest) bool { return strings.EqualFold(pr.upgrade, "websocket") }

// offered reports whether token is one of the comma-separated values of vv.
func offered(vv []string, token string) bool {
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(t) == token && token != "" {
				return true
			}
		}
	}
	return false
}

func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// switchClient hijacks the client connection and writes the head that
// starts a tunnel: status (101, or 200 for CONNECT) with h minus the
// hop-by-hop fields (RFC 9110 §7.6.1; Connection: Upgrade and Upgrade
// kept for an upgrade) and any framing field, plus ResponseHeader's
// fields and Via. The returned reader holds the bytes the client sent
// right behind its request, then the connection.
func (pr *ProxyRequest) switchClient(w http.ResponseWriter, status int, h http.Header) (net.Conn, *bufio.Reader, error) {
	// A tunnel or session is not a request in flight: its slots of
	// MaxInFlight and MaxPerClient go back before the client can learn
	// of the switch and send its next request.
	pr.leaveLimits()
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("sluice: cannot hijack client connection: %w", err)
	}
	// The server may have set deadlines; the tunnel has its own.
	_ = client.SetDeadline(time.Time{})
	pr.rw.status = status
	sanitizeResponseHeader(h, pr.upgrade)
	delete(h, "Content-Length")
	mergeHeader(h, pr.respHeader)
	if pr.proxy.Via != "" {
		addVia(h, 1, 1, pr.proxy.Via)
	}
	if status == http.StatusOK {
		brw.WriteString("HTTP/1.1 200 Connection established\r\n")
	} else {
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	}
	if err := h.Write(brw); err != nil {
		client.Close()
		return nil, nil, &abortError{err}
	}
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		client.Close()
		return nil, nil, &abortError{fmt.Errorf("%w: %w", errClientGone, err)}
	}
	return client, brw.Reader, nil
}

// serveUpgrade forwards an upgrade request and, if the upstream switches
// protocols, tunnels the two connections transparently: every byte both
// ways, including what the client sent with its request and what the
// upstream sent with its 101 (httputil.ReverseProxy loses the former,
// golang/go#80875). A non-101 answer is relayed as a normal response.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, pr *ProxyRequest) error {
	if !p.conns.begin() {
		return errShuttingDown
	}
	defer p.conns.end()
	up, err := pr.roundTripUpgrade(w)
	if up == nil {
		return err
	}
	client, br, err := pr.switchClient(w, http.StatusSwitchingProtocols, up.res.Header)
	if err != nil {
		up.Close()
		return err
	}
	t := &tunnel{
		client:   client,
		upstream: up,
		ws:       isWebSocket(pr),
		idle:     p.wsConfig().IdleTimeout,
	}
	if n := br.Buffered(); n > 0 {
		t.pending, _ = br.Peek(n)
	}
	view := pr.detach()
	if oc, ok := up.rwc.(*observedConn); ok {
		oc.ob.pr = view // the attempt ends with the tunnel, after pr is recycled
	}
	p.detachTunnel(view, t)
	return nil
}

// detachTunnel runs t on goroutines of its own and returns, so that the
// handler's goroutine, whose stack grew on the way to the switch, is not
// kept for the life of the tunnel: that halves the memory of an idle
// tunnel (BenchmarkWebSocketIdle: 38-40 KB to 19-21 KB). The tunnel's
// Record, in view (see detach), goes to OnExchange when it ends.
func (p *Proxy) detachTunnel(view *ProxyRequest, t *tunnel) {
	p.conns.add(t)
	if p.shutdown.Load() { // Shutdown started after the switch
		t.shutdown(ws.StatusGoingAway, "proxy shutting down")
	}
	go func() {
		defer p.conns.remove(t)
		t.run()
		t.record(view)
		if view.attemptDone != nil {
			view.attemptDone(Result{Upstream: view.rec.Upstream, Status: http.StatusOK, Duration: time.Since(view.attemptStart)})
		}
		if p.OnExchange != nil {
			defer func() {
				if v := recover(); v != nil {
					p.logger().Error("sluice: panic in OnExchange", "panic", v)
				}
			}()
			p.deliver(&view.rec, view)
		}
	}()
}

// Upgraded is an upgrade the upstream accepted, handed by
// ProxyRequest.Upgrade to an Interceptor that speaks the new protocol
// itself instead of tunnelling it (package wsmsg relays WebSocket messages
// this way). It is valid until the serve function it was given to
// returns; the Proxy then closes both connections.
type Upgraded struct {
	// Response is the upstream's 101 Switching Protocols response, as the
	// check function of Upgrade left it. Its Body is Upstream.
	Response *http.Response

	// Client is the client connection, taken over from the server, for
	// writes, deadlines and Close. Read it through ClientReader.
	Client net.Conn

	// ClientReader reads Client, starting with the bytes the client sent
	// right behind its upgrade request.
	ClientReader *bufio.Reader

	// Upstream reads the upstream connection, starting with the bytes the
	// upstream sent right behind its 101, and writes to it.
	Upstream io.ReadWriteCloser

	// UpstreamConn is the network connection under Upstream, for
	// deadlines; nil when the Proxy's Transport does not reveal it.
	UpstreamConn net.Conn

	pr *ProxyRequest
}

// Reauthorize runs the Proxy's Authorizer and the route's again, as for a
// new request, on a copy of the request that opened the exchange whose Out
// has ctx: what they write to the copy (identity headers, response
// headers) is dropped, and the answer of a denial is written nowhere. It
// reports whether both still allow the request, or the first error.
// Long-lived exchanges call it to end once a session was revoked.
func (u *Upgraded) Reauthorize(ctx context.Context) (bool, error) {
	pr := u.pr
	cp := ProxyRequest{
		In: pr.In, Out: pr.Out.Clone(ctx),
		proxy: pr.proxy, route: pr.route, peer: pr.peer, client: pr.client, upgrade: pr.upgrade,
	}
	for _, a := range [2]Authorizer{pr.proxy.Authorizer, pr.route.authorizer()} {
		if a == nil {
			continue
		}
		d, err := a.Authorize(&cp)
		if err != nil {
			return false, err
		}
		if !d.Allow {
			return false, nil
		}
	}
	return true, nil
}

// Upgrade is Forward for an upgrade request (RFC 9110 §7.8) whose switched
// connections the caller serves itself instead of the transparent tunnel.
// pr is an upgrade request when pr.Out has an Upgrade header: the Proxy
// sets Connection and Upgrade on Out only for a request it may upgrade.
//
// The upstream's answer is validated as Forward does (see
// docs/websockets.md). If it is not a valid 101, the answer is relayed to
// w as a normal response, or the failure returned, and neither check nor
// serve is called. Otherwise check, if not nil, gets the 101 first: it may
// edit its header, which the client gets without hop-by-hop fields; if it
// returns an error the upstream connection is closed, nothing is written
// to the client and Upgrade returns the error (whose status is
// StatusFor's: 502 for a plain error). Then the client gets the 101 and
// serve is called with both connections.
//
// serve runs in the Proxy's handler, so pr stays valid until it returns.
// ctx carries the values of pr's context and is done when the Proxy shuts
// down (Proxy.Shutdown): serve should then end the exchange gracefully
// (a WebSocket endpoint sends close 1001) and return. Connections still
// open when Shutdown's own context ends are closed under it. When serve
// returns, the Proxy closes both connections and Upgrade returns nil.
func (pr *ProxyRequest) Upgrade(w http.ResponseWriter, check func(res *http.Response) error, serve func(ctx context.Context, u *Upgraded)) error {
	if pr.upgrade == "" {
		return Errorf(http.StatusInternalServerError, "sluice: Upgrade of a request that is not an upgrade")
	}
	base := pr.Out.Context()
	p := pr.proxy
	if !p.conns.begin() {
		return errShuttingDown
	}
	defer p.conns.end()
	up, err := pr.roundTripUpgrade(w)
	if up == nil {
		return err
	}
	if check != nil {
		if err := check(up.res); err != nil {
			up.Close()
			return err
		}
	}
	client, br, err := pr.switchClient(w, http.StatusSwitchingProtocols, up.res.Header)
	if err != nil {
		up.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(base))
	h := &handedOver{cancel: cancel, client: client, upstream: up}
	p.conns.add(h)
	defer p.conns.remove(h)
	defer h.kill()
	if p.shutdown.Load() { // Shutdown started after the 101 was sent
		cancel()
	}
	serve(ctx, &Upgraded{Response: up.res, Client: client, ClientReader: br, Upstream: up.rwc, UpstreamConn: up.conn, pr: pr})
	return nil
}

// handedOver is an exchange served by the function given to Upgrade, as
// Shutdown sees it.
type handedOver struct {
	cancel   context.CancelFunc
	client   net.Conn
	upstream io.Closer
}

func (h *handedOver) shutdown(ws.StatusCode, string) { h.cancel() }

func (h *handedOver) kill() {
	h.cancel()
	h.client.Close()
	h.upstream.Close()
}

// tunnel copies bytes both ways between an upgraded client connection and
// its upstream. For WebSocket it follows frame boundaries (headers only)
// so that it can end the connection with a valid close frame.
//
// Cost of an idle tunnel: two goroutines (the handler's and one more),
// each blocked in Read on a 512-byte buffer of the tunnel. A direction
// takes a pooled 32 KiB buffer when a read fills the small one and keeps
// it while reads stay larger than 512 bytes (one read per message, not
// two); a tunnel that went idle right after large reads holds it until
// its next small read. See docs/websockets.md for measured figures.
type tunnel struct {
	client   net.Conn
	upstream *upstreamConn
	pending  []byte // client bytes read by the server with the request
	ws       bool
	idle     time.Duration

	small [2][512]byte
	moved [2]int64 // bytes written: client to upstream, upstream to client

	start      time.Time    // with its monotonic clock reading
	lastActive atomic.Int64 // time.Since(start) at the last read
	idleTimer  *time.Timer
	closing    atomic.Bool
	closeCode  ws.StatusCode
	closeWhy   string
	graceEnd   time.Time
	mu         sync.Mutex // guards closeCode, closeWhy, graceEnd, idleTimer
	killOnce   sync.Once
}

func (t *tunnel) run() {
	if t.idle > 0 {
		t.start = time.Now()
		t.touch()
		t.mu.Lock()
		t.idleTimer = time.AfterFunc(t.idle, t.checkIdle)
		t.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pump(0, t.client, t.upstream, t.client, true)
	}()
	t.pump(1, t.upstream, t.client, t.upstreamConnOrNil(), false)
	<-done
	t.kill()
}

func (t *tunnel) upstreamConnOrNil() net.Conn {
	if t.upstream.conn == nil {
		return nil
	}
	return t.upstream.conn
}

// touch notes activity. It reads only the monotonic clock (time.Now reads
// the wall clock too): it runs for every read, and a step of the wall
// clock must not end or prolong idle tunnels.
func (t *tunnel) touch() { t.lastActive.Store(int64(time.Since(t.start))) }

func (t *tunnel) checkIdle() {
	idleFor := time.Since(t.start) - time.Duration(t.lastActive.Load())
	if left := t.idle - idleFor; left > 0 {
		t.mu.Lock()
		t.idleTimer.Reset(left)
		t.mu.Unlock()
		return
	}
	t.shutdown(ws.StatusGoingAway, "idle timeout")
}

// record adds the bytes the tunnel moved to pr's Record (run has
// returned: both pumps are done).
func (t *tunnel) record(pr *ProxyRequest) {
	pr.rec.RequestBytes += t.moved[0]
	pr.rec.ResponseBytes += t.moved[1]
}

// kill closes both connections; the pumps return promptly.
func (t *tunnel) kill() {
	t.killOnce.Do(func() {
		t.mu.Lock()
		if t.idleTimer != nil {
			t.idleTimer.Stop()
		}
		t.mu.Unlock()
		t.client.Close()
		t.upstream.Close()
	})
}

// shutdown ends the tunnel: a WebSocket tunnel sends a close frame with
// code to both sides at the next frame boundary and waits up to
// wsframe.CloseGrace for their answers; other tunnels are closed at once.
func (t *tunnel) shutdown(code ws.StatusCode, reason string) {
	if !t.ws {
		t.kill()
		return
	}
	t.mu.Lock()
	if t.closing.Load() {
		t.mu.Unlock()
		return
	}
	t.closeCode, t.closeWhy = code, reason
	t.graceEnd = time.Now().Add(wsframe.CloseGrace)
	t.closing.Store(true)
	t.mu.Unlock()
	// Wake both pumps; each finishes the frame in flight, then sends the
	// close frame.
	now := time.Now()
	_ = t.client.SetReadDeadline(now)
	t.upstream.setReadDeadline(now)
	time.AfterFunc(wsframe.CloseGrace+100*time.Millisecond, t.kill)
}

// pump copies src to dst. On EOF it half-closes dst (the other direction
// goes on); on any other failure it closes both sides.
func (t *tunnel) pump(i int, src io.Reader, dst io.Writer, srcConn net.Conn, toUpstream bool) {
	var tr wsframe.Tracker
	small := t.small[i][:]
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			copyBufferPool.Put(big)
		}
	}()
	if toUpstream && len(t.pending) > 0 {
		if t.ws {
			tr.Advance(t.pending)
		}
		n, err := dst.Write(t.pending)
		t.moved[i] += int64(n)
		t.pending = nil
		if err != nil {
			t.kill()
			return
		}
	}
	for {
		limit := len(buf)
		if t.closing.Load() {
			if tr.AtBoundary() {
				t.finish(src, dst, srcConn, toUpstream, buf, nil)
				return
			}
			if limit = tr.Until(limit); limit == 0 {
				t.kill() // not a stream we can follow
				return
			}
		}
		n, err := src.Read(buf[:limit])
		if n > 0 && t.ws && t.closing.Load() && tr.AtBoundary() {
			// Shutdown began while this read was blocked, and the bytes
			// start a new frame (often the peer's answer to the close
			// frame the other pump already sent): the close frame goes
			// out first and these bytes are not forwarded.
			t.finish(src, dst, srcConn, toUpstream, buf, buf[:n])
			return
		}
		if n > 0 {
			if t.idle > 0 {
				t.touch()
			}
			if t.ws {
				tr.Advance(buf[:n])
			}
			w, werr := dst.Write(buf[:n])
			t.moved[i] += int64(w)
			if werr != nil {
				t.kill()
				return
			}
			switch {
			case n == len(buf) && big == nil:
				big = copyBufferPool.Get().(*[]byte)
				buf = *big
			case n <= len(small) && big != nil:
				// Traffic is back to small reads: give the big buffer
				// back, so that an idle tunnel holds none.
				copyBufferPool.Put(big)
				big, buf = nil, small
			}
		}
		switch {
		case err == nil:
		case err == io.EOF && !t.closing.Load():
			closeWrite(dst)
			return
		case isTimeout(err) && t.closing.Load():
			t.mu.Lock()
			end := t.graceEnd
			t.mu.Unlock()
			if time.Now().After(end) || srcConn == nil {
				t.kill()
				return
			}
			_ = srcConn.SetReadDeadline(end)
		default:
			t.kill()
			return
		}
	}
}

// finish sends the close frame to dst at a frame boundary, then reads
// (and drops) what src still sends until its close frame, EOF or the end
// of the grace period.
//
// already holds bytes of src read after the shutdown began, not forwarded.
func (t *tunnel) finish(src io.Reader, dst io.Writer, srcConn net.Conn, toUpstream bool, buf, already []byte) {
	t.mu.Lock()
	code, why, end := t.closeCode, t.closeWhy, t.graceEnd
	t.mu.Unlock()
	var scratch [wsframe.MaxHeaderSize + ws.MaxControlFramePayloadSize]byte
	if err := wsframe.WriteFrame(dst, scratch[:], ws.OpClose, 0, toUpstream, wsframe.CloseBody(code, why)); err != nil {
		t.kill()
		return
	}
	if srcConn != nil {
		_ = srcConn.SetReadDeadline(end)
	}
	var tr wsframe.Tracker
	if len(already) > 0 && tr.Advance(already) {
		return // the peer's close frame was in what was already read
	}
	for {
		n, err := src.Read(buf)
		if n > 0 && tr.Advance(buf[:n]) {
			return // the peer answered with its close frame
		}
		if err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func closeWrite(c any) {
	if u, ok := c.(*upstreamConn); ok {
		c = u.rwc
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// A liveConn is a hijacked connection the Proxy must end on Shutdown.
type liveConn interface {
	// shutdown starts a graceful end: close frames with code for
	// WebSocket peers.
	shutdown(code ws.StatusCode, reason string)
	// kill closes the connections at once.
	kill()
}

// tunnelSet tracks live tunnels and sessions for Shutdown, and the
// exchanges that may still become one (an upgrade waiting for the
// upstream's 101, a CONNECT dialing): Shutdown waits for those too, or a
// tunnel switched after it looked would outlive it.
type tunnelSet struct {
	mu      sync.Mutex
	m       map[liveConn]struct{}
	pending int           // exchanges between begin and end
	closing bool          // Shutdown began: begin refuses
	empty   chan struct{} // closed when m and pending become empty, if someone waits
}

// begin registers an exchange that may become a tunnel, unless Shutdown
// began; end must follow, once the tunnel (if any) was added.
func (s *tunnelSet) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.pending++
	return true
}

func (s *tunnelSet) end() {
	s.mu.Lock()
	s.pending--
	s.checkEmpty()
	s.mu.Unlock()
}

// close makes begin refuse from now on.
func (s *tunnelSet) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

func (s *tunnelSet) checkEmpty() {
	if len(s.m) == 0 && s.pending == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
}

func (s *tunnelSet) add(t liveConn) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[liveConn]struct{})
	}
	s.m[t] = struct{}{}
	s.mu.Unlock()
}

func (s *tunnelSet) remove(t liveConn) {
	s.mu.Lock()
	delete(s.m, t)
	s.checkEmpty()
	s.mu.Unlock()
}

// len returns the number of live connections.
func (s *tunnelSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// snapshot returns the live connections and a channel closed when none is
// left, nor any exchange that may still become one.
func (s *tunnelSet) snapshot() ([]liveConn, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]liveConn, 0, len(s.m))
	for t := range s.m {
		all = append(all, t)
	}
	if len(all) == 0 && s.pending == 0 {
		ch := make(chan struct{})
		close(ch)
		return all, ch
	}
	if s.empty == nil {
		s.empty = make(chan struct{})
	}
	return all, s.empty
}

// OpenTunnels returns the number of tunnels open now: upgraded
// connections (WebSocket and others, transparent or served through
// ProxyRequest.Upgrade) and CONNECT tunnels. Their Records arrive when
// they end; this is the gauge for the ones under way.
func (p *Proxy) OpenTunnels() int { return p.conns.len() }

// Shutdown ends the Proxy's hijacked connections, which
// http.Server.Shutdown does not see: new upgrades and CONNECTs get 503,
// every WebSocket peer (client and upstream) gets a close frame with code
// 1001 (going away, RFC 6455 §7.4.1) at the next frame boundary, and other
// tunnels are closed; exchanges taken over with ProxyRequest.Upgrade see
// the context given to their serve function done. An upgrade or CONNECT
// already under way (waiting for the upstream's 101, dialing) is waited
// for, and its tunnel, once switched, ended the same way. Shutdown waits
// until the connections ended (about a second at most for WebSocket peers
// that answer or vanish) or ctx is done; then it closes what is left and
// returns ctx.Err().
//
// Register it with http.Server.RegisterOnShutdown, or call it right after
// Server.Shutdown.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.shutdown.Store(true)
	p.conns.close()
	all, empty := p.conns.snapshot()
	for _, t := range all {
		t.shutdown(ws.StatusGoingAway, "proxy shutting down")
	}
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		all, _ = p.conns.snapshot()
		for _, t := range all {
			t.kill()
		}
		return ctx.Err()
	}
}
