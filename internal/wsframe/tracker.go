package wsframe

import "github.com/gobwas/ws"

// Tracker follows frame boundaries in an opaque byte stream, so that a
// tunnel that copies bytes without looking at messages can still insert a
// valid close frame at a boundary (RFC 6455 §5.4: control frames may be
// injected between frames, even between fragments of one message).
//
// It looks only at headers: per payload byte it costs a subtraction. A
// stream that is not WebSocket makes it compute meaningless boundaries;
// nothing else breaks. The zero value is at a boundary.
type Tracker struct {
	hdr       [MaxHeaderSize]byte
	hn        int   // header bytes held in hdr
	remaining int64 // payload bytes of the current frame still to come
	bad       bool  // the stream cannot be followed (64-bit length MSB)
}

// Advance accounts for p, the next bytes of the stream. It reports
// whether p completed the header of a close frame.
func (t *Tracker) Advance(p []byte) (sawClose bool) {
	for len(p) > 0 && !t.bad {
		if t.remaining > 0 {
			if int64(len(p)) <= t.remaining {
				t.remaining -= int64(len(p))
				return sawClose
			}
			p = p[t.remaining:]
			t.remaining = 0
		}
		// Collect a header, possibly split across calls.
		for len(p) > 0 {
			t.hdr[t.hn] = p[0]
			t.hn++
			p = p[1:]
			if t.hn >= 2 && t.hn == HeaderLen(t.hdr[0], t.hdr[1]) {
				h, err := ParseHeader(t.hdr[:t.hn])
				t.hn = 0
				if err != nil {
					t.bad = true
					return sawClose
				}
				t.remaining = h.Length
				sawClose = sawClose || h.OpCode == ws.OpClose
				break
			}
		}
	}
	return sawClose
}

// AtBoundary reports whether the bytes seen so far end exactly at the end
// of a frame, so that a new frame may be written after them.
func (t *Tracker) AtBoundary() bool {
	return !t.bad && t.hn == 0 && t.remaining == 0
}

// Valid reports whether the stream could be followed so far.
func (t *Tracker) Valid() bool { return !t.bad }

// Until returns how many of the next bytes may be read without going past
// the end of the current frame, at most max: with it a tunnel that wants
// to stop at the next boundary reads exactly up to it. It returns 0 at a
// boundary.
func (t *Tracker) Until(max int) int {
	switch {
	case t.bad:
		return 0
	case t.remaining > 0:
		return int(min(int64(max), t.remaining))
	case t.hn == 0:
		return 0
	case t.hn == 1:
		return 1 // the second byte tells the header length
	}
	return min(max, HeaderLen(t.hdr[0], t.hdr[1])-t.hn)
}
