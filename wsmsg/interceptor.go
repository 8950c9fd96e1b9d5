// Package wsmsg relays WebSocket connections message by message, so that a
// sluice.Proxy can look at, change, drop, inject and end what passes: put
// an Interceptor on a route and the WebSocket upgrades it captures are
// relayed at message level instead of through the transparent tunnel.
//
//	p.Handle("/chat", &wsmsg.Interceptor{
//		OnMessage: func(s *wsmsg.Session, m *wsmsg.Message) error {
//			if m.Direction == wsmsg.ToUpstream && bytes.Contains(m.Data, []byte("secret")) {
//				return wsmsg.ErrDrop
//			}
//			return nil
//		},
//	})
//
// The proxy is a full endpoint toward each peer (RFC 6455 §5-§7, RFC 7692
// with CompressionTerminate). Close codes are github.com/gobwas/ws's
// ws.StatusCode values (ws.StatusPolicyViolation, ...), the one list of
// them the proxy uses.
package wsmsg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice"
)

// DefaultMaxMessageSize bounds a message when Interceptor.MaxMessageSize
// is zero.
const DefaultMaxMessageSize = 1 << 20

// Direction tells which way a message travels.
type Direction uint8

const (
	// ToUpstream is a message from the client to the upstream.
	ToUpstream Direction = iota + 1
	// ToClient is a message from the upstream to the client.
	ToClient
)

// String returns "to upstream" or "to client", the way the message
// travels.
func (d Direction) String() string {
	switch d {
	case ToUpstream:
		return "to upstream"
	case ToClient:
		return "to client"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// MessageType is the type of a data message (RFC 6455 §5.6).
type MessageType uint8

const (
	// Text is a message of UTF-8 text (opcode 1).
	Text MessageType = MessageType(ws.OpText)
	// Binary is a message of arbitrary bytes (opcode 2).
	Binary MessageType = MessageType(ws.OpBinary)
)

// String returns "text" or "binary".
func (t MessageType) String() string {
	switch t {
	case Text:
		return "text"
	case Binary:
		return "binary"
	}
	return "MessageType(" + strconv.Itoa(int(t)) + ")"
}

// Message is one complete data message (all fragments joined, unmasked,
// decompressed) seen by an Interceptor.
type Message struct {
	// Direction is the way the message travels.
	Direction Direction
	// Type is Text or Binary. The handler may change it.
	Type MessageType
	// Data is the payload. It is borrowed from the proxy's buffer and
	// valid only until the handler returns; the handler may change it in
	// place or point it at other bytes. The proxy does not check that a
	// modified text message is still UTF-8.
	Data []byte
}

// ErrDrop is returned by an OnMessage handler to drop the message: it is
// not forwarded, and the session goes on.
var ErrDrop = errors.New("wsmsg: drop message")

// ErrClosed is returned by Session.Send once the session sent a close
// frame in that direction.
var ErrClosed = errors.New("wsmsg: session closed")

// CloseError is returned by an OnMessage or OnOpen handler to end the
// session: both peers get a close frame with Code and Reason (RFC 6455
// §5.5.1). A Code that may not be sent (1005, 1006, 1015, outside
// 1000-4999) is replaced by 1011 (ws.StatusInternalServerError).
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

// Error describes the close code and reason.
func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket close %d: %s", e.Code, e.Reason)
}

// Compression is what an Interceptor does with the permessage-deflate
// extension (RFC 7692). Compressed messages can pass opaque only through
// the transparent tunnel, where no route looks at messages.
type Compression uint8

const (
	// CompressionStrip removes the client's Sec-WebSocket-Extensions
	// offer, so that messages travel uncompressed both ways. Other
	// extensions are removed too: a message-level proxy cannot interpret
	// frames of extensions it does not know.
	CompressionStrip Compression = iota
	// CompressionTerminate negotiates permessage-deflate separately with
	// the client and with the upstream (each when the peer supports it),
	// without context takeover, and decompresses, inspects and
	// recompresses every message (github.com/gobwas/ws/wsflate).
	CompressionTerminate
)

// Interceptor is a sluice.Interceptor that relays WebSocket connections
// message by message: the WebSocket upgrades of the route it is on are
// relayed through a Session; the route's other requests are forwarded as
// usual, so it can sit on "/".
//
// The proxy acts as a full endpoint toward both peers (RFC 6455 §5-§7):
// it validates every frame (unmasked client frames, reserved bits or
// opcodes: close 1002; invalid UTF-8: 1007; a message over MaxMessageSize:
// 1009, detected from the headers, never by allocating the announced
// length), reassembles fragmented messages, forwards ping, pong and close
// frames as they come (between the fragments of a message too) and never
// sends close codes 1005, 1006 or 1015. Proxy.Shutdown ends sessions with
// 1001.
type Interceptor struct {
	// OnOpen, if not nil, is called once the upgrade succeeded, before any
	// message is relayed. A non-nil error ends the session as it would
	// from OnMessage.
	OnOpen func(s *Session) error

	// OnMessage is called with every data message, in each direction,
	// before it is forwarded. It may change the message; return nil to
	// forward it, ErrDrop to drop it, a *CloseError to end the session
	// with that code, or another error to end it with 1011 (internal
	// error). The two directions call it from their own goroutines, so it
	// may run concurrently with itself. If nil, messages are forwarded
	// unchanged.
	OnMessage func(s *Session, m *Message) error

	// OnClose, if not nil, is called once when the session has ended and
	// both connections are closed, with the close code and reason of the
	// first close frame of the session (RFC 6455 §7.1.5, §7.1.6), whoever
	// sent it: a peer, or the proxy (a handler's CloseError,
	// Session.Close, a limit, Proxy.Shutdown, a protocol error, or 1001
	// "client went away" / "upstream went away" toward the other peer
	// when one vanished without a close frame). A close frame without a
	// code gives ws.StatusNoStatusRcvd (1005); a session that ended with
	// no close frame at all, ws.StatusAbnormalClosure (1006). No other
	// handler of the session runs during or after it.
	OnClose func(s *Session, code ws.StatusCode, reason string)

	// MaxMessageSize bounds a message (after decompression); a larger one
	// ends the session with 1009 (message too big). If zero,
	// DefaultMaxMessageSize.
	MaxMessageSize int64

	// Compression says what to do with permessage-deflate. If zero,
	// CompressionStrip.
	Compression Compression

	// PingInterval, if positive, makes the proxy ping both peers at this
	// interval to keep idle connections (and the NATs on their way) alive.
	// The pongs are not forwarded. If zero, the proxy sends no pings.
	PingInterval time.Duration

	// IdleTimeout ends the session with 1001 (going away) when no frame
	// arrived from either peer for this long (pongs count). If zero, the
	// Proxy's WebSocketConfig.IdleTimeout; if negative, none.
	IdleTimeout time.Duration

	// MaxSessionTime, if positive, ends the session with 1008 (policy
	// violation) once it is this old, as GitLab Workhorse does for
	// terminal channels. If zero, sessions have no age limit.
	MaxSessionTime time.Duration

	// ReauthorizeInterval, if positive, runs the Proxy's Authorizer and
	// the route's again at this interval (sluice.Upgraded.Reauthorize); a
	// denial or an error ends the session with 1008 (policy violation).
	// If zero, a session is authorized once, at the upgrade.
	ReauthorizeInterval time.Duration
}

// Intercept implements sluice.Interceptor.
func (ic *Interceptor) Intercept(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
	if !strings.EqualFold(pr.Out.Header.Get("Upgrade"), "websocket") {
		return pr.Forward(w)
	}
	h := pr.Out.Header
	clientOffer := h["Sec-Websocket-Extensions"]
	delete(h, "Sec-Websocket-Extensions")
	if ic.Compression == CompressionTerminate {
		h.Set("Sec-WebSocket-Extensions", deflateOffer)
	}
	var clientDeflate, upDeflate bool
	check := func(res *http.Response) error {
		var err error
		if upDeflate, err = checkDeflateResponse(res.Header); err != nil {
			return err
		}
		delete(res.Header, "Sec-Websocket-Extensions")
		clientDeflate = ic.Compression == CompressionTerminate && acceptDeflateOffer(clientOffer)
		if clientDeflate {
			res.Header.Set("Sec-WebSocket-Extensions", deflateResponse)
		}
		return nil
	}
	return pr.Upgrade(w, check, func(ctx context.Context, u *sluice.Upgraded) {
		s := ic.newSession(ctx, pr, u, clientDeflate, upDeflate)
		stop := context.AfterFunc(ctx, func() { s.closeAll(ws.StatusGoingAway, "proxy shutting down") })
		defer stop()
		s.run()
		// The session's end in the exchange's Record: bytes each way
		// (frames as sent, headers included) and the close code.
		rec := pr.Record()
		rec.RequestBytes += s.upstream.w.(*countWriter).n
		rec.ResponseBytes += s.client.w.(*countWriter).n
		code, _ := s.closeStatus()
		rec.CloseCode = int(code)
	})
}

func logger(p *sluice.Proxy) *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}
