package wsmsg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// Session is one WebSocket connection relayed message by message by an
// Interceptor. Its methods are safe for concurrent use, and a Session
// keeps what it returns valid after the session ended.
type Session struct {
	ic     *Interceptor
	up     *sluice.Upgraded // valid until run returns
	req    *http.Request
	addr   netip.Addr
	uri    string // the client's request target, for logs
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	max    int64
	idle   time.Duration

	client, upstream *peer
	subprotocol      string

	closing    atomic.Bool
	lastActive atomic.Int64 // time.Since(start) at the last frame
	pingSeq    atomic.Uint64

	mu       sync.Mutex // guards timers, dead, closed, code, reason
	timers   []*time.Timer
	dead     bool
	inflight sync.WaitGroup // timer callbacks running
	closed   bool           // the first close frame was seen
	code     ws.StatusCode  // its code and reason, for OnClose
	reason   string
}

// Request returns the request that opened the session as it was sent
// upstream (sluice.ProxyRequest.Out at the upgrade: sanitized, with the
// headers the Authorizers added), with the session's context and no body.
// It is a copy the Session owns, so it stays valid after the session
// ended; handlers must not modify it.
func (s *Session) Request() *http.Request { return s.req }

// ClientAddr returns the client's address as the Proxy decided it
// (sluice.ProxyRequest.ClientAddr).
func (s *Session) ClientAddr() netip.Addr { return s.addr }

// Context returns a context canceled when the session ends. It carries
// the values of the upgrade request's context.
func (s *Session) Context() context.Context { return s.ctx }

// Subprotocol returns the subprotocol the upstream chose
// (Sec-WebSocket-Protocol), "" if none.
func (s *Session) Subprotocol() string { return s.subprotocol }

// Send injects a message: toward the upstream (ToUpstream) or the client
// (ToClient). It is written whole, between the frames the proxy relays.
// It fails with ErrClosed once a close frame was sent that way.
func (s *Session) Send(d Direction, t MessageType, data []byte) error {
	if t != Text && t != Binary {
		return fmt.Errorf("wsmsg: cannot send message of type %v", t)
	}
	pe := s.peer(d)
	if pe == nil {
		return fmt.Errorf("wsmsg: bad direction %v", d)
	}
	return pe.writeMessage(ws.OpCode(t), data)
}

// Close ends the session: both peers get a close frame with code and
// reason (see CloseError for the codes that may be sent) and the
// connections are closed once they answered, or after about a second.
func (s *Session) Close(code ws.StatusCode, reason string) {
	s.closeAll(sendableCode(code), reason)
}

func (s *Session) peer(d Direction) *peer {
	switch d {
	case ToUpstream:
		return s.upstream
	case ToClient:
		return s.client
	}
	return nil
}

func sendableCode(code ws.StatusCode) ws.StatusCode {
	if !wsframe.SendableCode(code) {
		return ws.StatusInternalServerError
	}
	return code
}

// peer is one side of a session: where frames are read from and written
// to.
// closeStatus is the close code and reason the session ended with:
// 1006 (abnormal closure) if no close frame was exchanged.
func (s *Session) closeStatus() (ws.StatusCode, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		return ws.StatusAbnormalClosure, s.reason
	}
	return s.code, s.reason
}

// countWriter counts the bytes written to a peer, for the Record. Writes
// to a peer are serialized (peer.wmu).
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type peer struct {
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

func (pe *peer) writeFrame(op ws.OpCode, rsv byte, p []byte) error {
	pe.wmu.Lock()
	defer pe.wmu.Unlock()
	if pe.closeSent {
		return ErrClosed
	}
	if op == ws.OpClose {
		pe.closeSent = true
		if pe.conn != nil {
			_ = pe.conn.SetWriteDeadline(time.Now().Add(wsframe.CloseGrace))
		}
	}
	return wsframe.WriteFrame(pe.w, pe.scratch[:], op, rsv, pe.upstream, p)
}

func (pe *peer) writeMessage(op ws.OpCode, p []byte) error {
	if !pe.deflate || len(p) < minDeflate {
		return pe.writeFrame(op, 0, p)
	}
	buf := deflateBufPool.Get().(*bytes.Buffer)
	defer deflateBufPool.Put(buf)
	buf.Reset()
	if err := deflate(buf, p); err != nil {
		return err
	}
	return pe.writeFrame(op, 0x4, buf.Bytes()) // RSV1: compressed (RFC 7692 §6)
}

func (ic *Interceptor) newSession(ctx context.Context, pr *sluice.ProxyRequest, u *sluice.Upgraded, clientDeflate, upDeflate bool) *Session {
	p := pr.Proxy()
	// The session outlives nothing of the request but what it copies:
	// the ProxyRequest is recycled once the Proxy's handler returns.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	req := pr.Out.Clone(ctx)
	req.Body, req.GetBody = http.NoBody, nil
	s := &Session{
		ic: ic, up: u, req: req, addr: pr.ClientAddr(), uri: pr.In.RequestURI,
		log: logger(p), ctx: ctx, cancel: cancel, start: time.Now(),
		max:  ic.MaxMessageSize,
		idle: ic.IdleTimeout,
		client: &peer{name: "client", br: u.ClientReader, w: &countWriter{w: u.Client}, closer: u.Client, conn: u.Client,
			deflate: clientDeflate},
		upstream: &peer{name: "upstream", br: bufio.NewReaderSize(u.Upstream, 4096), w: &countWriter{w: u.Upstream}, closer: u.Upstream,
			conn: u.UpstreamConn, upstream: true, deflate: upDeflate},
		subprotocol: strings.TrimSpace(u.Response.Header.Get("Sec-WebSocket-Protocol")),
	}
	if s.max <= 0 {
		s.max = DefaultMaxMessageSize
	}
	if s.idle == 0 && p.WebSocket != nil {
		s.idle = p.WebSocket.IdleTimeout
	}
	return s
}

func (s *Session) run() {
	defer func() {
		s.kill()
		// The Upgraded is valid until serve returns: wait for the timer
		// callbacks that may still use it.
		s.inflight.Wait()
		if s.ic.OnClose != nil {
			code, reason := s.closeStatus()
			s.ic.OnClose(s, code, reason)
		}
	}()
	s.touch()
	if s.idle > 0 {
		s.every(s.idle, s.checkIdle)
	}
	if d := s.ic.PingInterval; d > 0 {
		s.every(d, s.ping)
	}
	if d := s.ic.MaxSessionTime; d > 0 {
		s.after(d, func() { s.closeAll(ws.StatusPolicyViolation, "session time limit reached") })
	}
	if d := s.ic.ReauthorizeInterval; d > 0 {
		s.every(d, s.reauthorize)
	}
	if s.ic.OnOpen != nil {
		if err := s.ic.OnOpen(s); err != nil {
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

// closeFrame records the first close frame of the session, sent or
// received, for OnClose (RFC 6455 §7.1.5, §7.1.6).
func (s *Session) closeFrame(payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if len(payload) < 2 {
		s.code = ws.StatusNoStatusRcvd
		return
	}
	s.code = ws.StatusCode(binary.BigEndian.Uint16(payload))
	s.reason = string(payload[2:])
}

// after runs f once after d, unless the session ended.
func (s *Session) after(d time.Duration, f func()) {
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
func (s *Session) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.inflight.Add(1)
	return true
}

// every runs f every d (f returning 0 stops it) until the session ends.
// No goroutine waits in between.
func (s *Session) every(d time.Duration, f func() time.Duration) {
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
func (s *Session) touch() { s.lastActive.Store(int64(time.Since(s.start))) }

func (s *Session) checkIdle() time.Duration {
	idleFor := time.Since(s.start) - time.Duration(s.lastActive.Load())
	left := s.idle - idleFor
	if left > 0 {
		return left
	}
	s.closeAll(ws.StatusGoingAway, "idle timeout")
	return 0
}

const pingPrefix = "sluice-ping-"

func (s *Session) ping() time.Duration {
	payload := strconv.AppendUint([]byte(pingPrefix), s.pingSeq.Add(1), 10)
	for _, pe := range [2]*peer{s.client, s.upstream} {
		if err := pe.writeFrame(ws.OpPing, 0, payload); err != nil && !errors.Is(err, ErrClosed) {
			s.closeAll(ws.StatusGoingAway, pe.name+" went away")
			return 0
		}
	}
	return s.ic.PingInterval
}

func (s *Session) reauthorize() time.Duration {
	ok, err := s.up.Reauthorize(s.ctx)
	if err != nil || !ok {
		s.log.Info("wsmsg: session no longer authorized", "uri", s.uri, "err", err)
		s.closeAll(ws.StatusPolicyViolation, "authorization revoked")
		return 0
	}
	return s.ic.ReauthorizeInterval
}

// closeAll starts the end of the session: a close frame with code to each
// peer that did not get one yet, then the connections are closed once the
// peers answered, or after wsframe.CloseGrace.
func (s *Session) closeAll(code ws.StatusCode, reason string) {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	// The backstop first: a peer that does not read may block the
	// writes below until the connections are closed.
	s.after(wsframe.CloseGrace+100*time.Millisecond, s.kill)
	body := wsframe.CloseBody(code, reason)
	s.closeFrame(body)
	end := time.Now().Add(wsframe.CloseGrace)
	for _, pe := range [2]*peer{s.client, s.upstream} {
		_ = pe.writeFrame(ws.OpClose, 0, body)
		if pe.conn != nil {
			_ = pe.conn.SetReadDeadline(end)
		}
	}
}

// kill closes both connections and stops the timers.
func (s *Session) kill() {
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

func (s *Session) handlerFailed(err error) {
	var ce *CloseError
	if errors.As(err, &ce) {
		s.closeAll(sendableCode(ce.Code), ce.Reason)
		return
	}
	s.log.Warn("wsmsg: handler failed", "uri", s.uri, "err", err)
	s.closeAll(ws.StatusInternalServerError, "internal error")
}

// relay reads frames from src and forwards them to dst until src sent its
// close frame or the session ends.
func (s *Session) relay(src, dst *peer, dir Direction) {
	rd := &wsframe.Reader{Src: src.br, Masked: !src.upstream, MaxMessage: s.max, Deflate: src.deflate}
	var inflated []byte
	for {
		ev, err := rd.Next()
		if err != nil {
			var fe *wsframe.Error
			switch {
			case errors.As(err, &fe):
				s.log.Debug("wsmsg: protocol error", "peer", src.name, "err", err)
				s.closeAll(fe.Code, src.name+": "+fe.Reason)
			case s.closing.Load():
			default:
				s.closeAll(ws.StatusGoingAway, src.name+" went away")
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
			s.closeFrame(ev.Payload)
			// Relay the close end to end; if dst was already sent one,
			// this is src's answer and the handshake with src is over.
			if err := dst.writeFrame(ws.OpClose, 0, ev.Payload); err == nil {
				s.after(wsframe.CloseTimeout, s.kill)
			}
			return
		}
		if s.closing.Load() {
			continue
		}
		m := Message{Direction: dir, Type: MessageType(ev.OpCode), Data: ev.Payload}
		if ev.Compressed {
			inflated, err = inflate(inflated[:0], ev.Payload, s.max)
			if err != nil {
				s.closeAll(err.(*wsframe.Error).Code, src.name+": "+err.Error())
				continue
			}
			if ev.OpCode == ws.OpText && !utf8.Valid(inflated) {
				s.closeAll(ws.StatusInvalidFramePayloadData, src.name+": invalid UTF-8 in text message")
				continue
			}
			m.Data = inflated
		}
		if s.ic.OnMessage != nil {
			if err := s.ic.OnMessage(s, &m); err != nil {
				if !errors.Is(err, ErrDrop) {
					s.handlerFailed(err)
				}
				continue
			}
		}
		if err := dst.writeMessage(ws.OpCode(m.Type), m.Data); err != nil && !errors.Is(err, ErrClosed) {
			s.closeAll(ws.StatusGoingAway, dst.name+" went away")
		}
		rd.Release(64 << 10)
		if cap(inflated) > 64<<10 {
			inflated = nil
		}
	}
}
