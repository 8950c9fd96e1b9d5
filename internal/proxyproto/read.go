package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Read reads the PROXY protocol header that starts r, and not a byte
// more: what follows the header is left in r for the next read. It is
// tolerant of a header split across several segments (the spec
// recommends it), waiting for the rest; the caller bounds the wait with a
// read deadline.
//
// On a *net.TCPConn on Unix it peeks at the socket (recv with MSG_PEEK)
// and then consumes exactly the header: a malformed header is usually
// refused at its first byte, without waiting for more. Any other reader is
// read in pieces that can only belong to the header: 15 bytes (the
// shortest header), then the rest of a version 2 header whose length is
// known from its first 16, or a version 1 line 2 bytes at a time (1 after
// a CR).
//
// Errors wrap ErrMalformed for bytes that are not a header, and
// io.ErrUnexpectedEOF for a connection that ended before its header did;
// read errors (a deadline, a closed connection) are returned as they are.
func Read(r io.Reader) (Header, error) {
	bp := bufPool.Get().(*[smallBuf]byte)
	defer bufPool.Put(bp)
	if tc, ok := r.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil && canPeek {
			return readPeeking(tc, rc, bp[:])
		}
	}
	return readExact(r, bp[:])
}

// smallBuf holds any version 1 header and a version 2 header of an
// address block and small TLVs; a bigger version 2 header gets a buffer
// of its own size.
const smallBuf = 256

var bufPool = sync.Pool{New: func() any { return new([smallBuf]byte) }}

// readExact is Read for a reader that cannot peek.
func readExact(r io.Reader, buf []byte) (Header, error) {
	have, want := 0, minLength
	for {
		if want > len(buf) {
			buf = append(buf[:have], make([]byte, want-have)...)
		}
		if _, err := io.ReadFull(r, buf[have:want]); err != nil {
			return Header{}, eofUnexpected(err)
		}
		have = want
		h, n, err := Parse(buf[:have])
		switch {
		case err == nil:
			if n != have {
				// Parse never finds a header shorter than what the
				// steps below asked for (FuzzParse checks it).
				return Header{}, fmt.Errorf("proxyproto: header of %d bytes read as %d", n, have)
			}
			return h, nil
		case !errors.Is(err, ErrIncomplete):
			return Header{}, err
		case buf[0] != 'P' && have < v2FixedLength:
			want = v2FixedLength
		case buf[0] != 'P':
			want = n
		case buf[have-1] == '\r':
			want = have + 1 // the LF
		default:
			want = have + 2 // at least a CR and an LF
		}
	}
}

// readPeeking is Read for a TCP connection whose socket it can peek at:
// it looks at what arrived, consumes what surely belongs to the header
// (all of it while the header is incomplete), and waits for more.
func readPeeking(c *net.TCPConn, rc rawConn, buf []byte) (Header, error) {
	have := 0
	for {
		n, err := peek(rc, buf[have:])
		if err != nil {
			return Header{}, err
		}
		if n == 0 {
			return Header{}, eofUnexpected(io.EOF)
		}
		h, total, err := Parse(buf[:have+n])
		switch {
		case err == nil:
			// Take the header's bytes off the socket: they are there.
			if _, err := io.ReadFull(c, buf[have:total]); err != nil {
				return Header{}, eofUnexpected(err)
			}
			return h, nil
		case !errors.Is(err, ErrIncomplete):
			return Header{}, err
		}
		if _, err := io.ReadFull(c, buf[have:have+n]); err != nil {
			return Header{}, eofUnexpected(err)
		}
		have += n
		if total > len(buf) {
			buf = append(buf[:have], make([]byte, total-have)...)
		}
	}
}

// eofUnexpected turns an end of the connection before the header's end
// into io.ErrUnexpectedEOF.
func eofUnexpected(err error) error {
	if err == io.EOF {
		return fmt.Errorf("proxyproto: connection closed before the header's end: %w", io.ErrUnexpectedEOF)
	}
	return err
}
