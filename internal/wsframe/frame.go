// Package wsframe holds the WebSocket frame mechanics of the proxy
// (RFC 6455 §5): allocation-free header parsing from a bufio.Reader, a
// cheap frame-boundary tracker for opaque tunnels, a validating message
// reader with size limits, and frame writers. Header values are the
// github.com/gobwas/ws types so that the rest of the code speaks one
// vocabulary.
package wsframe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// CloseGrace bounds how long the proxy waits, after it sent a close frame
// of its own (shutdown, idle timeout, a failed peer), for the peers to
// answer before it closes the TCP connections: a peer that resets or
// vanishes ends the other side within about a second.
const CloseGrace = time.Second

// CloseTimeout bounds a close handshake that a peer started and the proxy
// relays end to end.
const CloseTimeout = 5 * time.Second

// MaxHeaderSize is the largest frame header: 2 bytes, 8 of extended
// length and 4 of mask key (RFC 6455 §5.2).
const MaxHeaderSize = ws.MaxHeaderSize

// HeaderLen returns the full header length announced by the first two
// bytes of a frame.
func HeaderLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// ErrLengthMSB is returned for a 64-bit payload length with its most
// significant bit set (RFC 6455 §5.2).
var ErrLengthMSB = errors.New("wsframe: payload length with most significant bit set")

// ParseHeader decodes a complete header held in b (len(b) must be at least
// HeaderLen(b[0], b[1])).
func ParseHeader(b []byte) (ws.Header, error) {
	var h ws.Header
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	i := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		i = 4
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, ErrLengthMSB
		}
		h.Length = int64(u)
		i = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	return h, nil
}

// ReadHeader reads one frame header from br without allocating (unlike
// ws.ReadHeader, which allocates its scratch buffer on every call).
func ReadHeader(br *bufio.Reader) (ws.Header, error) {
	b, err := br.Peek(2)
	if err != nil {
		return ws.Header{}, unexpected(err, len(b))
	}
	n := HeaderLen(b[0], b[1])
	if b, err = br.Peek(n); err != nil {
		return ws.Header{}, unexpected(err, len(b))
	}
	h, err := ParseHeader(b)
	if _, derr := br.Discard(n); derr != nil && err == nil {
		err = derr
	}
	return h, err
}

func unexpected(err error, got int) error {
	if err == io.EOF && got > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendHeader appends the wire form of h to dst.
func AppendHeader(dst []byte, h ws.Header) []byte {
	b0 := byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b0 |= 0x80
	}
	var m byte
	if h.Masked {
		m = 0x80
	}
	switch {
	case h.Length < 126:
		dst = append(dst, b0, m|byte(h.Length))
	case h.Length <= 0xffff:
		dst = append(dst, b0, m|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(h.Length))
	default:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(h.Length))
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

// NewMask returns a fresh masking key. RFC 6455 §5.3 asks for keys that
// are unpredictable: math/rand/v2's global generator is ChaCha8 seeded
// from the operating system, which is cheap and unpredictable enough.
func NewMask() [4]byte {
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], rand.Uint32())
	return m
}

// WriteFrame writes one frame with payload p to w. When masked is true
// (frames from a client, RFC 6455 §5.3) a fresh key is used and p is
// masked into scratch, never in place: p is not modified. scratch must
// hold at least MaxHeaderSize+1 bytes; the frame goes out in as few writes
// as scratch allows (one when it fits).
func WriteFrame(w io.Writer, scratch []byte, op ws.OpCode, rsv byte, masked bool, p []byte) error {
	h := ws.Header{Fin: true, Rsv: rsv, OpCode: op, Length: int64(len(p)), Masked: masked}
	if masked {
		h.Mask = NewMask()
	}
	buf := AppendHeader(scratch[:0], h)
	off := 0
	for {
		n := copy(buf[len(buf):cap(buf)], p[off:])
		chunk := buf[len(buf) : len(buf)+n]
		if masked {
			ws.Cipher(chunk, h.Mask, off)
		}
		buf = buf[:len(buf)+n]
		off += n
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
		if off == len(p) {
			return nil
		}
		buf = scratch[:0]
	}
}

// CloseBody returns the payload of a close frame with code and reason
// (RFC 6455 §5.5.1), the reason cut to fit the 125-byte control frame
// limit on a UTF-8 boundary. Code 0 gives an empty payload.
func CloseBody(code ws.StatusCode, reason string) []byte {
	if code == 0 {
		return nil
	}
	const max = ws.MaxControlFramePayloadSize - 2
	if len(reason) > max {
		reason = reason[:max]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, uint16(code))
	return append(b, reason...)
}

// SendableCode reports whether code may be put on the wire in a close
// frame (RFC 6455 §7.4): 1000-1003, 1007-1014 and 3000-4999. 1005, 1006
// and 1015 are reserved for reporting and are never sent.
func SendableCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
