package sluice

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// DefaultMaxMessageSize bounds a WebSocket message in frame-level mode
// when WebSocketInterceptor.MaxMessageSize is zero.
const DefaultMaxMessageSize = 1 << 20

// Direction tells which way a WebSocket message travels.
type Direction uint8

const (
	// ToUpstream is a message from the client to the upstream.
	ToUpstream Direction = iota + 1
	// ToClient is a message from the upstream to the client.
	ToClient
)

// String returns "client" or "upstream", the side a message comes from.
func (d Direction) String() string {
	switch d {
	case ToUpstream:
		return "to upstream"
	case ToClient:
		return "to client"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// MessageType is the type of a WebSocket data message (RFC 6455 §5.6).
type MessageType uint8

const (
	// TextMessage is a message of UTF-8 text (opcode 1).
	TextMessage MessageType = MessageType(ws.OpText)
	// BinaryMessage is a message of arbitrary bytes (opcode 2).
	BinaryMessage MessageType = MessageType(ws.OpBinary)
)

// String returns "text" or "binary".
func (t MessageType) String() string {
	switch t {
	case TextMessage:
		return "text"
	case BinaryMessage:
		return "binary"
	}
	return "MessageType(" + strconv.Itoa(int(t)) + ")"
}

// WebSocketMessage is one complete data message (all fragments joined,
// unmasked, decompressed) seen by a WebSocketInterceptor.
type WebSocketMessage struct {
	// Direction is the way the message travels.
	Direction Direction
	// Type is TextMessage or BinaryMessage. The handler may change it.
	Type MessageType
	// Data is the payload. It is borrowed from the proxy's buffer and
	// valid only until the handler returns; the handler may change it in
	// place or point it at other bytes. The proxy does not check that a
	// modified text message is still UTF-8.
	Data []byte
}

// ErrDropMessage is returned by a WebSocketInterceptor's Message handler
// to drop the message: it is not forwarded, and the connection goes on.
var ErrDropMessage = errors.New("sluice: drop websocket message")

// CloseError is returned by a Message or Open handler to end the session:
// both peers get a close frame with Code and Reason (RFC 6455 §5.5.1).
// A Code that may not be sent (1005, 1006, 1015, outside 1000-4999) is
// replaced by 1011 (internal error).
type CloseError struct {
	Code   int
	Reason string
}

// Error describes the close code and reason.
func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket close %d: %s", e.Code, e.Reason)
}

// WebSocketCompression is what a WebSocketInterceptor does with the
// permessage-deflate extension (RFC 7692). Leaving compression opaque is
// only possible in the transparent tunnel, where no route looks at
// messages.
type WebSocketCompression uint8

const (
	// CompressionStrip removes the client's Sec-WebSocket-Extensions
	// offer, so that messages travel uncompressed both ways. Other
	// extensions are removed too: a frame-level proxy cannot interpret
	// frames of extensions it does not know.
	CompressionStrip WebSocketCompression = iota
	// CompressionTerminate negotiates permessage-deflate separately with
	// the client and with the upstream (each when the peer supports it),
	// without context takeover, and decompresses, inspects and
	// recompresses every message (github.com/gobwas/ws/wsflate).
	CompressionTerminate
)

// WebSocketInterceptor is an Interceptor that looks at WebSocket traffic
// message by message: put it on a route (Proxy.Handle) and the
// WebSocket upgrades the route captures are relayed at frame level;
// requests of that route that are not WebSocket upgrades are forwarded as
// usual.
//
// The proxy acts as a full endpoint toward both peers (RFC 6455 §5-§7):
// it validates every frame (unmasked client frames, reserved bits or
// opcodes: close 1002; invalid UTF-8: 1007; a message over MaxMessageSize:
// 1009, detected from the headers, never by allocating the announced
// length), reassembles fragmented messages, forwards ping, pong and close
// frames as they come (between the fragments of a message too) and never
// sends close codes 1005, 1006 or 1015.
type WebSocketInterceptor struct {
	// Message is called with every data message, in each direction, before
	// it is forwarded. It may change the message; return nil to forward
	// it, ErrDropMessage to drop it, a *CloseError to end the session with
	// that code, or another error to end it with 1011 (internal error).
	// The two directions call it from their own goroutines, so it may run
	// concurrently with itself. If nil, messages are forwarded unchanged.
	Message func(s *WebSocketSession, m *WebSocketMessage) error

	// Open, if not nil, is called once the upgrade succeeded, before any
	// message is relayed. A non-nil error ends the session as it would
	// from Message.
	Open func(s *WebSocketSession) error

	// MaxMessageSize bounds a message (after decompression); a larger one
	// ends the session with 1009 (message too big). If zero,
	// DefaultMaxMessageSize.
	MaxMessageSize int64

	// Compression says what to do with permessage-deflate. The zero value
	// strips the offer.
	Compression WebSocketCompression

	// PingInterval, if positive, makes the proxy ping both peers at this
	// interval to keep idle connections (and the NATs on their way) alive.
	// The pongs are not forwarded.
	PingInterval time.Duration

	// IdleTimeout ends the session with 1001 (going away) when no frame
	// arrived from either peer for this long (pongs count). If zero, the
	// Proxy's WebSocketConfig.IdleTimeout.
	IdleTimeout time.Duration

	// MaxSessionTime, if positive, ends the session with 1008 (policy
	// violation) once it is this old, as GitLab Workhorse does for
	// terminal channels.
	MaxSessionTime time.Duration

	// ReauthorizeInterval, if positive, runs the Proxy's Authorizer and
	// the route's again at this interval, on a copy of the request; a
	// denial or an error ends the session with 1008 (policy violation).
	ReauthorizeInterval time.Duration
}

var (
	deflateOffer    = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	deflateResponse = deflateOffer
)

// Intercept implements Interceptor.
func (ic *WebSocketInterceptor) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	if !isWebSocket(pr) {
		return pr.Forward(w)
	}
	h := pr.Out.Header
	clientOffer := h["Sec-Websocket-Extensions"]
	delete(h, "Sec-Websocket-Extensions")
	if ic.Compression == CompressionTerminate {
		h.Set("Sec-WebSocket-Extensions", deflateOffer)
	}
	up, err := pr.roundTripUpgrade(w)
	if up == nil {
		return err
	}
	upDeflate, err := checkDeflateResponse(up.res.Header)
	if err != nil {
		up.Close()
		return err
	}
	rh := up.res.Header
	delete(rh, "Sec-Websocket-Extensions")
	clientDeflate := ic.Compression == CompressionTerminate && acceptDeflateOffer(clientOffer)
	if clientDeflate {
		rh.Set("Sec-WebSocket-Extensions", deflateResponse)
	}
	client, br, err := pr.switchClient(w, rh)
	if err != nil {
		up.Close()
		return err
	}
	s := ic.newSession(pr, client, br, up, clientDeflate, upDeflate)
	p := pr.proxy
	p.conns.add(s)
	defer p.conns.remove(s)
	if p.shutdown.Load() {
		s.shutdown(CloseGoingAway, "proxy shutting down")
	}
	s.run()
	return nil
}

// acceptDeflateOffer reports whether one of the client's permessage-deflate
// offers can be accepted with deflateResponse (RFC 7692 §7.1): the proxy
// compresses with a 32 KiB window, so an offer limiting
// server_max_window_bits below 15 is declined.
func acceptDeflateOffer(vv []string) bool {
	exts, ok := parseExtensions(vv)
	if !ok {
		return false
	}
offers:
	for _, e := range exts {
		if e.name != wsflate.ExtensionName {
			continue
		}
		seen := map[string]bool{}
		for _, p := range e.params {
			if seen[p[0]] {
				continue offers
			}
			seen[p[0]] = true
			switch p[0] {
			case "server_no_context_takeover", "client_no_context_takeover":
				if p[1] != "" {
					continue offers
				}
			case "server_max_window_bits":
				if p[1] != "15" {
					continue offers
				}
			case "client_max_window_bits":
				if n, err := strconv.Atoi(p[1]); p[1] != "" && (err != nil || n < 8 || n > 15) {
					continue offers
				}
			default:
				continue offers
			}
		}
		return true
	}
	return false
}

// checkDeflateResponse checks the upstream's answer to deflateOffer. It
// reports whether permessage-deflate was accepted; a response the proxy
// cannot honour (context takeover by the server, a client window limit
// it did not offer) is a malformed response.
func checkDeflateResponse(h http.Header) (bool, error) {
	exts, ok := parseExtensions(h["Sec-Websocket-Extensions"])
	if !ok {
		return false, fmt.Errorf("%w: malformed Sec-WebSocket-Extensions", errBadResponse)
	}
	if len(exts) == 0 {
		return false, nil
	}
	if len(exts) > 1 || exts[0].name != wsflate.ExtensionName {
		return false, fmt.Errorf("%w: unexpected extensions %q", errBadResponse, h["Sec-Websocket-Extensions"])
	}
	noTakeover := false
	for _, p := range exts[0].params {
		switch p[0] {
		case "server_no_context_takeover":
			noTakeover = true
		case "client_no_context_takeover":
		case "server_max_window_bits":
			if n, err := strconv.Atoi(p[1]); err != nil || n < 8 || n > 15 {
				return false, fmt.Errorf("%w: bad server_max_window_bits %q", errBadResponse, p[1])
			}
		default:
			return false, fmt.Errorf("%w: unexpected permessage-deflate parameter %q", errBadResponse, p[0])
		}
	}
	if !noTakeover {
		return false, fmt.Errorf("%w: permessage-deflate without server_no_context_takeover", errBadResponse)
	}
	return true, nil
}

// WebSocketSession is one WebSocket connection relayed at frame level by
// a WebSocketInterceptor. Its methods are safe for concurrent use.
type WebSocketSession struct {
	pr     *ProxyRequest
	ic     *WebSocketInterceptor
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	max    int64
	idle   time.Duration

	client, upstream *wsPeer
	subprotocol      string

	closing    atomic.Bool
	lastActive atomic.Int64 // time.Since(start) at the last frame
	pingSeq    atomic.Uint64

	mu       sync.Mutex // guards timers, dead
	timers   []*time.Timer
	dead     bool
	inflight sync.WaitGroup // timer callbacks running
}

// Request returns the request that opened the session. The session ends
// before the Proxy's ServeHTTP returns, so it stays valid for the whole
// session; handlers must only read it.
func (s *WebSocketSession) Request() *ProxyRequest { return s.pr }

// Context returns a context canceled when the session ends.
func (s *WebSocketSession) Context() context.Context { return s.ctx }

// Subprotocol returns the subprotocol the upstream chose
// (Sec-WebSocket-Protocol), "" if none.
func (s *WebSocketSession) Subprotocol() string { return s.subprotocol }

// Send injects a message: toward the upstream (ToUpstream) or the client
// (ToClient). It is written whole, between the frames the proxy
// relays. It fails with ErrSessionClosed once a close frame was sent that
// way.
func (s *WebSocketSession) Send(d Direction, t MessageType, data []byte) error {
	if t != TextMessage && t != BinaryMessage {
		return fmt.Errorf("sluice: cannot send message of type %v", t)
	}
	pe := s.peer(d)
	if pe == nil {
		return fmt.Errorf("sluice: bad direction %v", d)
	}
	return pe.writeMessage(ws.OpCode(t), data)
}

// Close ends the session: both peers get a close frame with code and
// reason (see CloseError for the codes that may be sent) and the
// connections are closed once they answered, or after about a second.
func (s *WebSocketSession) Close(code int, reason string) {
	s.closeAll(sendableCode(code), reason)
}

// ErrSessionClosed is returned by WebSocketSession.Send once the session
// is closing in that direction.
var ErrSessionClosed = errors.New("sluice: websocket session closed")

func (s *WebSocketSession) peer(d Direction) *wsPeer {
	switch d {
	case ToUpstream:
		return s.upstream
	case ToClient:
		return s.client
	}
	return nil
}

func sendableCode(code int) uint16 {
	if code < 0 || code > 0xffff || !wsframe.SendableCode(uint16(code)) {
		return CloseInternalError
	}
	return uint16(code)
}

// wsPeer is one side of a session: where frames are read from and
// written to.
type wsPeer struct {
	name     string // "client" or "upstream", for logs and close reasons
	br       *bufio.Reader
	w        io.Writer
	closer   io.Closer
	conn     net.Conn // for deadlines; may be nil for the upstream
	upstream bool     // frames to it are masked, frames from it are not
	deflate  bool     // permessage-deflate negotiated with this peer

	wmu       sync.Mutex
	closeSent bool
	scratch   [4096]byte
}

func (pe *wsPeer) writeFrame(op ws.OpCode, rsv byte, p []byte) error {
	pe.wmu.Lock()
	defer pe.wmu.Unlock()
	if pe.closeSent {
		return ErrSessionClosed
	}
	if op == ws.OpClose {
		pe.closeSent = true
		if pe.conn != nil {
			_ = pe.conn.SetWriteDeadline(time.Now().Add(closeGrace))
		}
	}
	return wsframe.WriteFrame(pe.w, pe.scratch[:], op, rsv, pe.upstream, p)
}

// minDeflate is the size under which messages are sent uncompressed even
// to a peer that negotiated permessage-deflate (RFC 7692 §6.1 lets each
// message choose).
const minDeflate = 64

func (pe *wsPeer) writeMessage(op ws.OpCode, p []byte) error {
	if !pe.deflate || len(p) < minDeflate {
		return pe.writeFrame(op, 0, p)
	}
	buf := deflateBufPool.Get().(*bytes.Buffer)
	defer deflateBufPool.Put(buf)
	buf.Reset()
	fw := flateWriterPool.Get().(*wsflate.Writer)
	defer flateWriterPool.Put(fw)
	fw.Reset(buf)
	if _, err := fw.Write(p); err != nil {
		return err
	}
	if err := fw.Flush(); err != nil {
		return err
	}
	return pe.writeFrame(op, 0x4, buf.Bytes()) // RSV1: compressed (RFC 7692 §6)
}

var (
	deflateBufPool  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	flateWriterPool = sync.Pool{New: func() any {
		return wsflate.NewWriter(nil, func(w io.Writer) wsflate.Compressor {
			fw, _ := flate.NewWriter(w, flate.BestSpeed)
			return fw
		})
	}}
	flateReaderPool = sync.Pool{New: func() any {
		return wsflate.NewReader(nil, func(r io.Reader) wsflate.Decompressor {
			return &flateReader{flate.NewReader(r)}
		})
	}}
)

// flateReader lets wsflate.Reader reuse a flate reader (wsflate wants
// Reset(io.Reader); compress/flate has Reset(io.Reader, []byte)).
type flateReader struct{ io.ReadCloser }

func (f *flateReader) Reset(r io.Reader) { _ = f.ReadCloser.(flate.Resetter).Reset(r, nil) }

func (ic *WebSocketInterceptor) newSession(pr *ProxyRequest, client net.Conn, br *bufio.Reader, up *upstreamConn, clientDeflate, upDeflate bool) *WebSocketSession {
	p := pr.proxy
	ctx, cancel := context.WithCancel(pr.Context())
	s := &WebSocketSession{
		pr: pr, ic: ic, log: p.logger(), ctx: ctx, cancel: cancel, start: time.Now(),
		max:  ic.MaxMessageSize,
		idle: ic.IdleTimeout,
		client: &wsPeer{name: "client", br: br, w: client, closer: client, conn: client,
			deflate: clientDeflate},
		upstream: &wsPeer{name: "upstream", br: bufio.NewReaderSize(up, 4096), w: up, closer: up,
			conn: up.conn, upstream: true, deflate: upDeflate},
		subprotocol: strings.TrimSpace(up.res.Header.Get("Sec-WebSocket-Protocol")),
	}
	if up.conn == nil {
		s.upstream.conn = nil
	}
	if s.max <= 0 {
		s.max = DefaultMaxMessageSize
	}
	if s.idle == 0 {
		s.idle = p.wsConfig().IdleTimeout
	}
	return s
}

func (s *WebSocketSession) run() {
	defer func() {
		s.kill()
		// The request is released when Intercept returns: wait for the
		// timer callbacks that may still read it.
		s.inflight.Wait()
	}()
	s.touch()
	if s.idle > 0 {
		s.every(s.idle, s.checkIdle)
	}
	if d := s.ic.PingInterval; d > 0 {
		s.every(d, s.ping)
	}
	if d := s.ic.MaxSessionTime; d > 0 {
		s.after(d, func() { s.closeAll(ClosePolicyViolation, "session time limit reached") })
	}
	if d := s.ic.ReauthorizeInterval; d > 0 {
		s.every(d, s.reauthorize)
	}
	if s.ic.Open != nil {
		if err := s.ic.Open(s); err != nil {
			s.handlerFailed(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.relay(s.client, s.upstream, ToUpstream)
	}()
	s.relay(s.upstream, s.client, ToClient)
	<-done
}

// after runs f once after d, unless the session ended.
func (s *WebSocketSession) after(d time.Duration, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.timers = append(s.timers, time.AfterFunc(d, func() {
		if s.enter() {
			defer s.inflight.Done()
			f()
		}
	}))
}

// enter registers a running timer callback; it reports false once the
// session is dead.
func (s *WebSocketSession) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.inflight.Add(1)
	return true
}

// every runs f every d (f returning false stops it) until the session
// ends. No goroutine waits in between.
func (s *WebSocketSession) every(d time.Duration, f func() time.Duration) {
	var t *time.Timer
	s.mu.Lock()
	defer s.mu.Unlock()
	t = time.AfterFunc(d, func() {
		if !s.enter() {
			return
		}
		defer s.inflight.Done()
		next := f()
		s.mu.Lock()
		defer s.mu.Unlock()
		if next > 0 && !s.dead {
			t.Reset(next)
		}
	})
	s.timers = append(s.timers, t)
}

// touch notes activity on the monotonic clock, as the tunnel does: a step
// of the wall clock must not end or prolong idle sessions.
func (s *WebSocketSession) touch() { s.lastActive.Store(int64(time.Since(s.start))) }

func (s *WebSocketSession) checkIdle() time.Duration {
	idleFor := time.Since(s.start) - time.Duration(s.lastActive.Load())
	left := s.idle - idleFor
	if left > 0 {
		return left
	}
	s.closeAll(CloseGoingAway, "idle timeout")
	return 0
}

const pingPrefix = "sluice-ping-"

func (s *WebSocketSession) ping() time.Duration {
	payload := strconv.AppendUint([]byte(pingPrefix), s.pingSeq.Add(1), 10)
	for _, pe := range [2]*wsPeer{s.client, s.upstream} {
		if err := pe.writeFrame(ws.OpPing, 0, payload); err != nil && !errors.Is(err, ErrSessionClosed) {
			s.closeAll(CloseGoingAway, pe.name+" went away")
			return 0
		}
	}
	return s.ic.PingInterval
}

// reauthorize runs the authorizers again on a copy of the request, so
// that what they edit does not race with the handlers reading it.
func (s *WebSocketSession) reauthorize() time.Duration {
	pr := s.pr
	cp := ProxyRequest{
		In: pr.In, Out: pr.Out.Clone(s.ctx),
		proxy: pr.proxy, route: pr.route, peer: pr.peer, client: pr.client, upgrade: pr.upgrade,
	}
	for _, a := range [2]Authorizer{s.pr.proxy.Authorizer, s.pr.route.authorizer()} {
		if a == nil {
			continue
		}
		d, err := a.Authorize(&cp)
		if err != nil || !d.Allow {
			s.log.Info("sluice: websocket session no longer authorized", "uri", s.pr.In.RequestURI, "err", err)
			s.closeAll(ClosePolicyViolation, "authorization revoked")
			return 0
		}
	}
	return s.ic.ReauthorizeInterval
}

// closeAll starts the end of the session: a close frame with code to each
// peer that did not get one yet, then the connections are closed once the
// peers answered, or after closeGrace.
func (s *WebSocketSession) closeAll(code uint16, reason string) {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	// The backstop first: a peer that does not read may block the
	// writes below until the connections are closed.
	s.after(closeGrace+100*time.Millisecond, s.kill)
	body := wsframe.CloseBody(code, reason)
	end := time.Now().Add(closeGrace)
	for _, pe := range [2]*wsPeer{s.client, s.upstream} {
		_ = pe.writeFrame(ws.OpClose, 0, body)
		if pe.conn != nil {
			_ = pe.conn.SetReadDeadline(end)
		}
	}
}

func (s *WebSocketSession) shutdown(code uint16, reason string) {
	go s.closeAll(code, reason)
}

// kill closes both connections and stops the timers.
func (s *WebSocketSession) kill() {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return
	}
	s.dead = true
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
	s.mu.Unlock()
	s.client.closer.Close()
	s.upstream.closer.Close()
	s.cancel()
}

func (s *WebSocketSession) handlerFailed(err error) {
	var ce *CloseError
	if errors.As(err, &ce) {
		s.closeAll(sendableCode(ce.Code), ce.Reason)
		return
	}
	s.log.Warn("sluice: websocket handler failed", "uri", s.pr.In.RequestURI, "err", err)
	s.closeAll(CloseInternalError, "internal error")
}

// relay reads frames from src and forwards them to dst until src sent its
// close frame or the session ends.
func (s *WebSocketSession) relay(src, dst *wsPeer, dir Direction) {
	rd := &wsframe.Reader{Src: src.br, Masked: !src.upstream, MaxMessage: s.max, Deflate: src.deflate}
	var inflated []byte
	for {
		ev, err := rd.Next()
		if err != nil {
			var fe *wsframe.Error
			switch {
			case errors.As(err, &fe):
				s.log.Debug("sluice: websocket protocol error", "peer", src.name, "err", err)
				s.closeAll(fe.Code, src.name+": "+fe.Reason)
			case s.closing.Load():
			default:
				s.closeAll(CloseGoingAway, src.name+" went away")
			}
			return
		}
		s.touch()
		switch ev.OpCode {
		case ws.OpPing:
			_ = dst.writeFrame(ws.OpPing, 0, ev.Payload)
			continue
		case ws.OpPong:
			if !bytes.HasPrefix(ev.Payload, []byte(pingPrefix)) {
				_ = dst.writeFrame(ws.OpPong, 0, ev.Payload)
			}
			continue
		case ws.OpClose:
			// Relay the close end to end; if dst was already sent one,
			// this is src's answer and the handshake with src is over.
			if err := dst.writeFrame(ws.OpClose, 0, ev.Payload); err == nil {
				s.after(closeTimeout, s.kill)
			}
			return
		}
		if s.closing.Load() {
			continue
		}
		m := WebSocketMessage{Direction: dir, Type: MessageType(ev.OpCode), Data: ev.Payload}
		if ev.Compressed {
			inflated, err = inflate(inflated[:0], ev.Payload, s.max)
			if err != nil {
				s.closeAll(err.(*wsframe.Error).Code, src.name+": "+err.Error())
				continue
			}
			if ev.OpCode == ws.OpText && !utf8.Valid(inflated) {
				s.closeAll(CloseInvalidPayload, src.name+": invalid UTF-8 in text message")
				continue
			}
			m.Data = inflated
		}
		if s.ic.Message != nil {
			if err := s.ic.Message(s, &m); err != nil {
				if !errors.Is(err, ErrDropMessage) {
					s.handlerFailed(err)
				}
				continue
			}
		}
		if err := dst.writeMessage(ws.OpCode(m.Type), m.Data); err != nil && !errors.Is(err, ErrSessionClosed) {
			s.closeAll(CloseGoingAway, dst.name+" went away")
		}
		rd.Release(64 << 10)
		if cap(inflated) > 64<<10 {
			inflated = nil
		}
	}
}

// inflate appends the decompressed form of a permessage-deflate payload to
// dst, failing with 1009 beyond max bytes and 1007 on corrupt data.
func inflate(dst, payload []byte, max int64) ([]byte, error) {
	fr := flateReaderPool.Get().(*wsflate.Reader)
	defer flateReaderPool.Put(fr)
	fr.Reset(bytes.NewReader(payload))
	buf := bytes.NewBuffer(dst)
	n, err := buf.ReadFrom(io.LimitReader(fr, max+1))
	if err != nil {
		return nil, &wsframe.Error{Code: CloseInvalidPayload, Reason: "corrupt compressed message"}
	}
	if n > max {
		return nil, &wsframe.Error{Code: CloseMessageTooBig, Reason: "message too big"}
	}
	return buf.Bytes(), nil
}
