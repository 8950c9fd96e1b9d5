package faults

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
)

// seedKey turns a request's id into the key of its byte stream: every
// request carries an id of its own, so that bytes of another request can
// never pass for its own.
func seedKey(id uint64) [32]byte {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], id)
	copy(k[8:], "sluice fault matrix payload v1")
	return k
}

// Payload is the byte stream of a request id: n bytes of ChaCha8 output
// keyed by the id. Both ends regenerate it, so a body is checked byte
// for byte without being stored.
type Payload struct {
	gen  *rand.ChaCha8
	left int64
}

// NewPayload returns the first n bytes of id's stream.
func NewPayload(id uint64, n int64) *Payload {
	return &Payload{gen: rand.NewChaCha8(seedKey(id)), left: n}
}

// Read fills p with the next bytes of the stream; io.EOF after n bytes.
func (p *Payload) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.gen.Read(b)
	p.left -= int64(n)
	return n, nil
}

// Message returns message i of the stream of id (WebSocket and gRPC
// echoes), size bytes.
func Message(id uint64, i int, size int) []byte {
	b := make([]byte, size)
	io.ReadFull(NewPayload(id<<16|uint64(i), int64(size)), b)
	return b
}

// EventData returns the data line of server-sent event i of id.
func EventData(id uint64, i int) string {
	s := sha256.Sum256(fmt.Appendf(nil, "%d/%d", id, i))
	return hex.EncodeToString(s[:16])
}

// Verifier checks a body against the stream of its id as it is written
// to it: it counts the bytes, finds the first that differs (or lies past
// the expected length) and hashes what arrived with SHA-256.
type Verifier struct {
	want int64
	exp  *Payload
	buf  []byte
	got  int64
	bad  int64 // offset of the first wrong byte, -1 while there is none
	sum  hash.Hash
}

// NewVerifier returns a Verifier expecting the first n bytes of id's
// stream.
func NewVerifier(id uint64, n int64) *Verifier {
	return &Verifier{want: n, exp: NewPayload(id, n), buf: make([]byte, 32<<10), bad: -1, sum: sha256.New()}
}

// Write checks p; it never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	v.sum.Write(p)
	for off := 0; off < len(p) && v.bad < 0; {
		chunk := min(len(p)-off, len(v.buf))
		n, _ := io.ReadFull(v.exp, v.buf[:chunk])
		for i := range n {
			if v.buf[i] != p[off+i] {
				v.bad = v.got + int64(off+i)
				break
			}
		}
		if v.bad < 0 && n < chunk { // past the expected length
			v.bad = v.got + int64(off+n)
		}
		off += chunk
	}
	v.got += int64(len(p))
	return len(p), nil
}

// Got is the number of bytes written.
func (v *Verifier) Got() int64 { return v.got }

// Bad is the offset of the first byte that differs from the stream (or
// lies past its end), -1 if none does.
func (v *Verifier) Bad() int64 { return v.bad }

// Complete reports whether exactly the expected bytes arrived.
func (v *Verifier) Complete() bool { return v.bad < 0 && v.got == v.want }

// Sum is the SHA-256 of the bytes written, in hex.
func (v *Verifier) Sum() string { return hex.EncodeToString(v.sum.Sum(nil)) }

// PayloadSum is the SHA-256 of the first n bytes of id's stream, in hex.
func PayloadSum(id uint64, n int64) string {
	h := sha256.New()
	io.Copy(h, NewPayload(id, n))
	return hex.EncodeToString(h.Sum(nil))
}
