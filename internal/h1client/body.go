package h1client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/sluiceproxy/sluice/internal/h1wire"
)

type bodyMode uint8

const (
	modeLength  bodyMode = iota // Content-Length
	modeChunked                 // chunked, then trailers
	modeEOF                     // delimited by the connection's close
)

// Body is a response body read from an upstream connection. Reading it to
// the end returns the connection to the pool; closing it earlier closes
// the connection.
type Body struct {
	// state makes the end of the exchange and an early Close exclusive:
	// Close can shut the connection under a blocked Read without ever
	// touching a connection that went back to the pool.
	state atomic.Int32 // bodyActive, bodyEnded or bodyClosed

	mu         sync.Mutex
	pc         *conn // nil once the exchange ended
	res        *http.Response
	mode       bodyMode
	remaining  int64
	cr         io.Reader
	closeAfter bool
	err        error    // sticky
	nc         net.Conn // the connection, for Close
}

// Read implements io.Reader.
func (b *Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.pc == nil {
		return 0, io.EOF
	}
	n, err := b.read(p)
	if err != nil {
		b.err = err
		if err == io.EOF {
			b.end(nil)
		} else {
			b.end(err)
		}
	}
	return n, err
}

func (b *Body) read(p []byte) (int, error) {
	pc := b.pc
	switch b.mode {
	case modeLength:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := pc.br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case modeChunked:
		n, err := b.cr.Read(p)
		if err == io.EOF {
			if terr := b.readTrailer(); terr != nil {
				return n, terr
			}
		} else if err != nil && !isNetError(err) {
			// Broken chunk framing. A failed read of the socket (the
			// exchange canceled, the connection reset) is no bad response.
			err = fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		return n, err
	default:
		return pc.br.Read(p)
	}
}

// readTrailer reads the trailer section after the last chunk, bounded
// like a response head, into res.Trailer.
func (b *Body) readTrailer() error {
	pc := b.pc
	if err := h1wire.MergeTrailer(&b.res.Trailer, pc.br, &pc.tp, &pc.lr, pc.client.maxHeaderBytes()); err != nil {
		return fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	return nil
}

const (
	bodyActive int32 = iota
	bodyEnded
	bodyClosed
)

// end finishes the exchange: on a clean end the connection may be reused.
func (b *Body) end(err error) {
	pc := b.pc
	b.pc = nil
	if !b.state.CompareAndSwap(bodyActive, bodyEnded) || err != nil || b.mode == modeEOF {
		pc.abort() // failed, or closed meanwhile
		return
	}
	pc.finish(b.closeAfter)
}

// Ready waits until the first byte of the body has arrived, or the body
// failed first, and returns that failure (io.ErrUnexpectedEOF for a
// connection closed before any byte): a caller that has not answered
// yet can then answer with an error status instead of a head followed by
// a cut body. It returns nil at once when bytes are buffered or nothing
// is left to read. The wait is bounded like any read of the body.
func (b *Body) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err == io.EOF:
		return nil
	case b.err != nil:
		return b.err
	case b.pc == nil, b.mode == modeLength && b.remaining == 0, b.pc.br.Buffered() > 0:
		return nil
	}
	if _, err := b.pc.br.Peek(1); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.fail(err)
		return err
	}
	return nil
}

// Close implements io.Closer. Closing before the end closes the
// connection: draining an unknown amount of body to save it is not worth
// the latency. Close may be called from another goroutine while Read or
// WriteTo is blocked: the connection is closed first, so they return.
func (b *Body) Close() error {
	if b.state.CompareAndSwap(bodyActive, bodyClosed) {
		b.nc.Close() // unblocks a Read waiting on the socket
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pc != nil {
		if b.err == nil {
			b.err = errors.New("h1client: read on closed body")
		}
		pc := b.pc
		b.pc = nil
		pc.abort()
	}
	return nil
}

// WriteTo implements io.WriterTo. For a body of known length of at least
// spliceMin bytes it writes what is already buffered, then hands the rest
// of the connection, as an *io.LimitedReader over the *net.TCPConn, to
// w's ReadFrom when w has one: net/http's ResponseWriter then moves the
// bytes socket to socket with splice(2) on Linux, never through user
// space. Under a read idle bound it does so in batches of what the socket
// holds, waiting for each itself (see readFromIdle). Smaller bodies, and
// bodies where that cannot be done, are copied through Read.
func (b *Body) WriteTo(w io.Writer) (int64, error) {
	b.mu.Lock()
	pc := b.pc
	rf, isRF := w.(io.ReaderFrom)
	// The socket itself, so that the writer's ReadFrom can splice from it:
	// net.TCPConn.ReadFrom splices from TCP and Unix stream sockets.
	var tc io.Reader
	isTCP := false
	if pc != nil {
		switch nc := pc.nc.(type) {
		case *net.TCPConn:
			tc, isTCP = nc, true
		case *net.UnixConn:
			tc, isTCP = nc, true
		}
	}
	idle := pc != nil && pc.bodyIdle > 0
	if pc == nil || b.mode != modeLength || !isRF || b.err != nil ||
		(idle && (!spliceKeepsIdleBound || !isTCP || pc.probe == nil)) {
		b.mu.Unlock()
		return copyPooled(&copyBufPool, w, readerOnly{b})
	}
	if b.remaining < spliceMin && int64(pc.br.Buffered()) < b.remaining {
		b.mu.Unlock()
		return copyPooled(&smallBodyBufPool, w, readerOnly{b})
	}
	defer b.mu.Unlock()
	var total int64
	if n := pc.br.Buffered(); n > 0 {
		m := int64(n)
		if m > b.remaining {
			m = b.remaining
		}
		buf, _ := pc.br.Peek(int(m))
		k, err := w.Write(buf)
		pc.br.Discard(k)
		total += int64(k)
		b.remaining -= int64(k)
		if err != nil {
			b.fail(err)
			return total, err
		}
	}
	if b.remaining > 0 {
		var n int64
		var err error
		if idle {
			n, err = pc.readFromIdle(rf, tc, b.remaining)
		} else {
			pc.lim = io.LimitedReader{R: pc.nc, N: b.remaining}
			if isTCP {
				pc.lim.R = tc
			}
			n, err = rf.ReadFrom(&pc.lim)
			pc.lim.R = nil
		}
		total += n
		b.remaining -= n
		if err == nil && b.remaining > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			b.fail(err)
			return total, err
		}
	}
	b.err = io.EOF
	b.end(nil)
	return total, nil
}

func (b *Body) fail(err error) {
	b.err = err
	b.end(err)
}

type readerOnly struct{ io.Reader }

// spliceMin is the smallest body WriteTo splices. splice(2) costs the
// proxy the least CPU per byte (a third less than a copy for 1 MiB
// bodies), but the pages it moves stay shared with the upstream's socket
// until the client has read them, and when the upstream or the client
// runs on the same machine (a sidecar; loopback benchmarks) that makes
// them do more work: 1 MiB bodies came 0.65x as fast spliced as copied
// through smallBodyBufPool's buffer (bench/run.sh --scenarios B; see
// docs/engine.md). A long body is worth the trade, a short one is not.
const spliceMin = 4 << 20

// smallBodyBufPool holds the buffers of the bodies copied instead of
// spliced: 64 KiB, so that a 1 MiB body takes a few reads, not 32 (no
// faster with 128 KiB).
var smallBodyBufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyPooled copies r to w through a buffer of pool (of *[]byte).
func copyPooled(pool *sync.Pool, w io.Writer, r io.Reader) (int64, error) {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	return io.CopyBuffer(writerOnly{w}, r, *bp)
}

type writerOnly struct{ io.Writer }

// upgradeBody is the connection after a 101 Switching Protocols: reads
// come from the buffered reader first (bytes the upstream sent right
// behind its 101), writes go straight to the connection.
type upgradeBody struct {
	pc *conn
	br *bufio.Reader // the bytes behind the 101 until they are read; then nil
}

// upgradeBody takes the connection's buffers off it for a 101 response:
// a tunnel lives long, mostly idle, and needs neither the writer (the
// request is sent) nor the reader once the bytes behind the 101 are read,
// so they go back to their pools (8 KiB an idle tunnel does not hold).
func (pc *conn) upgradeBody() *upgradeBody {
	u := &upgradeBody{pc: pc, br: pc.br}
	pc.br, pc.tp.R = nil, nil
	if u.br.Buffered() == 0 {
		u.releaseReader()
	}
	if !pc.hasWriter { // else a request body is still being written
		pc.bw.Reset(nil)
		writerPool.Put(pc.bw)
		pc.bw = nil
	}
	return u
}

func (u *upgradeBody) Read(p []byte) (int, error) {
	if u.br != nil {
		if u.br.Buffered() > 0 {
			return u.br.Read(p)
		}
		u.releaseReader()
	}
	return u.pc.nc.Read(p)
}

func (u *upgradeBody) releaseReader() {
	u.br.Reset(nil)
	readerPool.Put(u.br)
	u.br = nil
}

func (u *upgradeBody) Write(p []byte) (int, error) { return u.pc.nc.Write(p) }

func (u *upgradeBody) Close() error {
	u.pc.close()
	return nil
}

// CloseWrite half-closes the upstream connection.
func (u *upgradeBody) CloseWrite() error {
	if cw, ok := u.pc.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn returns the upstream connection of a 101 response body, for
// deadline control.
func (u *upgradeBody) NetConn() net.Conn { return u.pc.nc }

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}
