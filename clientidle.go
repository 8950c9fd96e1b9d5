package sluice

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultClientIdleTimeout is the Proxy's ClientIdleTimeout when zero: as
// sluice.Server's DefaultBodyIdleTimeout and DefaultWriteIdleTimeout.
const DefaultClientIdleTimeout = 60 * time.Second

// clientWriteChunk is the most that one ReadFrom of a response body may
// move under ClientIdleTimeout, whose deadline is renewed between: as
// sluice.Server's, what a client must take within the bound to stay.
const clientWriteChunk = 128 << 10

// renewEvery is how often, in parts of an idle bound, its deadline is
// renewed while bytes move (see internal/h1server: a renewal costs
// clock reads and a timer update, the check one monotonic clock read).
const renewEvery = 8

// renewed reports whether a deadline d after armed needs no renewal yet.
func renewed(armed time.Time, d time.Duration) bool {
	return !armed.IsZero() && time.Since(armed) < d/renewEvery
}

type (
	readDeadliner  interface{ SetReadDeadline(time.Time) error }
	writeDeadliner interface{ SetWriteDeadline(time.Time) error }
)

// boundsClientIdle reports whether w comes from a server that bounds the
// client's idleness itself (sluice.Server). Wrappers are looked through
// with Unwrap.
func boundsClientIdle(w http.ResponseWriter) bool {
	for {
		switch v := w.(type) {
		case interface{ BoundsClientIdle() bool }:
			return v.BoundsClientIdle()
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return false
		}
	}
}

// deadliners finds the deadline setters of w, as http.ResponseController
// does.
func deadliners(w http.ResponseWriter) (rd readDeadliner, wd writeDeadliner) {
	for rw := w; rw != nil && (rd == nil || wd == nil); {
		if v, ok := rw.(readDeadliner); ok && rd == nil {
			rd = v
		}
		if v, ok := rw.(writeDeadliner); ok && wd == nil {
			wd = v
		}
		u, ok := rw.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		rw = u.Unwrap()
	}
	return rd, wd
}

// boundClient applies ClientIdleTimeout to the request, when the server
// in front does not bound the client's idleness itself: behind
// http.Server over HTTP/1.x, in each direction for which the server has
// no ReadTimeout or WriteTimeout of its own. Not over HTTP/2, whose
// stream deadlines are timers that fire whether or not I/O waits (a
// pause of the upstream would end the stream), nor for upgrades, whose
// tunnels have their own idle timeout.
func (p *Proxy) boundClient(pr *ProxyRequest, w http.ResponseWriter) {
	d := p.ClientIdleTimeout
	switch {
	case d < 0:
		return
	case d == 0:
		d = DefaultClientIdleTimeout
	}
	r := pr.In
	if r.ProtoMajor != 1 || pr.upgrade != "" || boundsClientIdle(w) {
		return
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	rd, wd := deadliners(w)
	if wd != nil && (srv == nil || srv.WriteTimeout <= 0) {
		pr.rw.idle, pr.rw.wd = d, wd
	}
	if b := pr.Out.Body; rd != nil && b != nil && b != http.NoBody && (srv == nil || srv.ReadTimeout <= 0) {
		pr.idleBody = idleBody{rc: b, rd: rd, d: d}
		pr.Out.Body = &pr.idleBody
	}
}

// unboundClient ends what boundClient set up, before the Proxy's handler
// returns. The server still writes the end of the response: if a write
// deadline was set, it is renewed when due, so that this last write is
// neither unbounded nor failed by a deadline that passed while nothing
// was written. It may also drain what is left of the request body
// (net/http reads up to 256 KiB), which gets a last bound. Reads of the
// body after this (a transport still sending it) set no deadline on a
// connection that may serve another request by then.
func (pr *ProxyRequest) unboundClient() {
	w, b := &pr.rw, &pr.idleBody
	drain := false
	if b.rd != nil {
		b.mu.Lock()
		b.done = true
		if drain = !b.eof && !w.hijacked; drain {
			_ = b.rd.SetReadDeadline(time.Now().Add(b.d))
		}
		b.mu.Unlock()
	}
	switch {
	case w.idle <= 0 || w.hijacked:
	case drain:
		// net/http may drain the body before it writes what it holds of
		// the response: the write gets its bound after the drain's.
		_ = w.wd.SetWriteDeadline(time.Now().Add(b.d + w.idle))
	case !w.armed.IsZero() && !renewed(w.armed, w.idle):
		_ = w.wd.SetWriteDeadline(time.Now().Add(w.idle))
	}
}

// idleBody is the inbound request body under ClientIdleTimeout: every
// read that is due renews the server's read deadline (see renewEvery),
// so that a read waits at most d for the client's next byte; reading the
// body to its end clears it.
type idleBody struct {
	rc io.ReadCloser
	rd readDeadliner
	d  time.Duration

	mu    sync.Mutex // serializes deadlines with unboundClient
	armed time.Time
	eof   bool
	done  bool // the Proxy's handler returned: no more deadlines
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.done && !renewed(b.armed, b.d) {
		b.armed = time.Now()
		_ = b.rd.SetReadDeadline(b.armed.Add(b.d))
	}
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		if !b.done && !b.eof {
			_ = b.rd.SetReadDeadline(time.Time{})
		}
		b.eof = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *idleBody) Close() error { return b.rc.Close() }

// arm renews the write deadline under ClientIdleTimeout when due.
func (w *responseWriter) arm() {
	if w.idle > 0 && !renewed(w.armed, w.idle) {
		w.armed = time.Now()
		_ = w.wd.SetWriteDeadline(w.armed.Add(w.idle))
	}
}

// readFromBounded is ReadFrom under ClientIdleTimeout: a body handed over
// as an *io.LimitedReader (which the server may splice) goes
// clientWriteChunk bytes at a time, the bound renewed before each; any
// other source is copied through Write, which renews it.
func (w *responseWriter) readFromBounded(rf io.ReaderFrom, r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok || rf == nil {
		bp := copyBufferPool.Get().(*[]byte)
		defer copyBufferPool.Put(bp)
		return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp)
	}
	var total int64
	for lr.N > 0 {
		w.arm()
		left := lr.N
		want := min(left, clientWriteChunk)
		lr.N = want
		n, err := rf.ReadFrom(lr)
		lr.N = left - n
		total += n
		w.written += n
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}
