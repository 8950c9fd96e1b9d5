package wsframe

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Error is a violation of RFC 6455 by the peer: the connection must be
// failed with a close frame carrying Code (RFC 6455 §7.1.7):
// ws.StatusProtocolError, ws.StatusInvalidFramePayloadData (invalid UTF-8)
// or ws.StatusMessageTooBig.
type Error struct {
	Code   ws.StatusCode
	Reason string
}

// Error describes the violation and the close code it calls for.
func (e *Error) Error() string { return fmt.Sprintf("websocket: %s (close %d)", e.Reason, e.Code) }

func protocolError(format string, args ...any) error {
	return &Error{Code: ws.StatusProtocolError, Reason: fmt.Sprintf(format, args...)}
}

// Event is what Reader.Next returns: a complete data message or a control
// frame.
type Event struct {
	// OpCode is OpText or OpBinary for a message, OpPing, OpPong or OpClose
	// for a control frame.
	OpCode ws.OpCode
	// Compressed reports that the message had the permessage-deflate bit
	// (RSV1) set: Payload is deflated and was not checked for UTF-8.
	Compressed bool
	// Payload is the unmasked payload. It is borrowed: valid until the
	// next call to Next.
	Payload []byte
	// CloseCode is the code of a close frame, 0 when it had no payload.
	CloseCode ws.StatusCode
}

// Reader reads frames as a WebSocket endpoint must (RFC 6455 §5, §6.2):
// it checks every header, reassembles fragmented messages up to a limit,
// unmasks, and checks the UTF-8 of text messages and close reasons.
// Control frames come out as soon as they arrive, also between the
// fragments of a message. Memory is the message as it really arrives,
// never what a header claims.
type Reader struct {
	// Src is the connection the frames come from.
	Src *bufio.Reader
	// Masked is the masking frames must have: true for frames from a
	// client (read by a server), false for frames from a server.
	Masked bool
	// MaxMessage bounds the payload of one message (after reassembly);
	// beyond it Next fails with ws.StatusMessageTooBig. It must be positive.
	MaxMessage int64
	// Deflate allows the permessage-deflate bit (RSV1) on the first frame
	// of a data message (RFC 7692 §6).
	Deflate bool

	msg        []byte
	msgOp      ws.OpCode // OpText or OpBinary while a message is open
	compressed bool
	ctrl       [ws.MaxControlFramePayloadSize]byte
}

// Next returns the next message or control frame. Failures of the peer
// are *Error; I/O failures are returned as they are (io.EOF at a frame
// boundary, io.ErrUnexpectedEOF inside a frame).
func (r *Reader) Next() (Event, error) {
	if r.msgOp == 0 {
		r.msg = r.msg[:0]
	}
	for {
		h, err := ReadHeader(r.Src)
		if err == ErrLengthMSB {
			return Event{}, protocolError("invalid payload length")
		}
		if err != nil {
			return Event{}, err
		}
		if err := r.check(h); err != nil {
			return Event{}, err
		}
		if h.OpCode.IsControl() {
			p := r.ctrl[:h.Length]
			if err := r.payload(p, h); err != nil {
				return Event{}, err
			}
			ev := Event{OpCode: h.OpCode, Payload: p}
			if h.OpCode == ws.OpClose {
				code, err := checkClose(p)
				if err != nil {
					return Event{}, err
				}
				ev.CloseCode = code
			}
			return ev, nil
		}
		if h.OpCode != ws.OpContinuation {
			r.msgOp = h.OpCode
			r.compressed = h.Rsv&0x4 != 0
		}
		if h.Length > r.MaxMessage-int64(len(r.msg)) {
			return Event{}, &Error{Code: ws.StatusMessageTooBig, Reason: "message too big"}
		}
		if err := r.appendPayload(h); err != nil {
			return Event{}, err
		}
		if !h.Fin {
			continue
		}
		ev := Event{OpCode: r.msgOp, Compressed: r.compressed, Payload: r.msg}
		r.msgOp = 0
		if ev.OpCode == ws.OpText && !ev.Compressed && !utf8.Valid(ev.Payload) {
			return Event{}, &Error{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in text message"}
		}
		return ev, nil
	}
}

// check validates a header against the connection state (RFC 6455 §5.2,
// §5.4, §5.5; RFC 7692 §6).
func (r *Reader) check(h ws.Header) error {
	switch {
	case h.OpCode.IsReserved():
		return protocolError("reserved opcode %d", h.OpCode)
	case h.Masked != r.Masked && r.Masked:
		return protocolError("unmasked frame from client")
	case h.Masked != r.Masked:
		return protocolError("masked frame from server")
	case h.OpCode.IsControl() && h.Length > ws.MaxControlFramePayloadSize:
		return protocolError("control frame payload over 125 bytes")
	case h.OpCode.IsControl() && !h.Fin:
		return protocolError("fragmented control frame")
	case h.Rsv&^0x4 != 0:
		return protocolError("reserved bits set")
	case h.Rsv != 0 && (!r.Deflate || h.OpCode.IsControl() || h.OpCode == ws.OpContinuation):
		return protocolError("reserved bits set")
	case h.OpCode == ws.OpContinuation && r.msgOp == 0:
		return protocolError("continuation frame without a message")
	case h.OpCode.IsData() && h.OpCode != ws.OpContinuation && r.msgOp != 0:
		return protocolError("new message inside a fragmented message")
	}
	return nil
}

// payload reads a frame payload whose length is already bounded into p.
func (r *Reader) payload(p []byte, h ws.Header) error {
	if _, err := io.ReadFull(r.Src, p); err != nil {
		return unexpected(err, 1)
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return nil
}

// appendPayload reads the payload of a data frame onto the message,
// growing the buffer only as bytes arrive.
func (r *Reader) appendPayload(h ws.Header) error {
	const chunk = 32 << 10
	left := h.Length
	off := 0
	for left > 0 {
		n := int(min(left, chunk))
		start := len(r.msg)
		r.msg = grow(r.msg, n)
		p := r.msg[start : start+n]
		got, err := io.ReadFull(r.Src, p)
		if h.Masked {
			ws.Cipher(p[:got], h.Mask, off)
		}
		r.msg = r.msg[:start+got]
		if err != nil {
			return unexpected(err, 1)
		}
		off += got
		left -= int64(got)
	}
	return nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

// checkClose validates a close payload (RFC 6455 §5.5.1, §7.4) and
// returns its code.
func checkClose(p []byte) (ws.StatusCode, error) {
	switch len(p) {
	case 0:
		return 0, nil
	case 1:
		return 0, protocolError("close payload of one byte")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !SendableCode(code) {
		return 0, protocolError("invalid close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return 0, &Error{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in close reason"}
	}
	return code, nil
}

// Release drops a message buffer that grew past keep bytes, so that one
// large message does not pin memory for the life of the connection.
func (r *Reader) Release(keep int) {
	if cap(r.msg) > keep && r.msgOp == 0 {
		r.msg = nil
	}
}
