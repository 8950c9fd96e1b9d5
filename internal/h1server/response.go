package h1server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request. The head and small
// bodies collect in the connection's output buffer and leave in one
// write; bigger pieces go out with the buffer in one writev(2), and bodies
// of known length can move socket to socket through ReadFrom (splice).
//
// Like net/http's, it also implements http.Flusher, http.Hijacker,
// io.ReaderFrom and the deadline and full-duplex methods of
// http.ResponseController.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int   // 0 until the final status is set
	headWritten bool  // the head is in the output buffer (or sent)
	cl          int64 // the body's length, -1 while unknown
	written     int64
	chunked     bool
	noBody      bool // HEAD, 1xx, 204, 304: nothing of the body is sent
	notAllowed  bool // 204, 304: writing a body is an error
	closeAfter  bool
	trailers    []string // declared trailer names
	pending     []byte   // the start of a body of unknown length, held to frame it
	hijacked    bool
	err         error // sticky write error

	mu          sync.Mutex // guards canContinue against the body's reader
	canContinue bool       // a 100 Continue may still be sent
	chunkHdr    [20]byte
}

// pendingMax is how much of a body of unknown length is held back before
// the head goes out: a body that ends within it gets a Content-Length
// instead of chunked framing.
const pendingMax = 2048

func newResponse(c *conn, req *http.Request) *response {
	return &response{c: c, req: req, header: make(http.Header), cl: -1}
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational statuses
// (1xx other than 101) are sent at once, except to HTTP/1.0 clients.
func (w *response) WriteHeader(code int) {
	if w.hijacked || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("h1server: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.status = code
	w.mu.Lock()
	if w.canContinue {
		// The client waits for 100 Continue that will not come now: it
		// may send the body or not, so the connection cannot be reused.
		w.canContinue = false
		w.closeAfter = true
	}
	w.mu.Unlock()

	h := w.header
	switch {
	case code == http.StatusNoContent || code == http.StatusNotModified:
		w.noBody, w.notAllowed = true, true
	case code == http.StatusSwitchingProtocols:
		w.noBody, w.notAllowed, w.closeAfter = true, true, true
	case w.req.Method == http.MethodHead:
		w.noBody = true
	}
	if vv := h["Content-Length"]; len(vv) > 0 {
		if n, err := h1wire.ParseContentLength(vv[0]); err == nil && len(vv) == 1 {
			w.cl = n
		} else {
			delete(h, "Content-Length")
		}
	}
	delete(h, "Transfer-Encoding") // the framing is the server's choice
	if !w.noBody && w.req.ProtoMinor >= 1 {
		for k := range h1wire.FieldNames(h["Trailer"]) {
			w.trailers = append(w.trailers, k)
		}
	}
	if w.req.Close || w.c.srv.closing.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}
}

// writeInterim sends a 1xx response with the current header.
func (w *response) writeInterim(code int) {
	if w.req.ProtoMinor == 0 {
		return // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
	}
	if code == http.StatusContinue {
		w.mu.Lock()
		w.canContinue = false
		w.mu.Unlock()
	}
	c := w.c
	b := c.outBuf()
	b = append(b, "HTTP/1.1 "...)
	b = append(b, statusLine(code)...)
	b = append(b, "\r\n"...)
	for k, vv := range w.header {
		if k == "Content-Length" || k == "Transfer-Encoding" || k == "Trailer" {
			continue
		}
		b = appendField(b, k, vv)
	}
	c.out = append(b, "\r\n"...)
	w.fail(c.flushOut(nil, nil, nil))
}

// sendContinue answers Expect: 100-continue when the handler first reads
// the body, unless the final response began. It runs on the goroutine
// that reads the body, so it writes to the socket directly: the head,
// when the handler writes one, stays in the buffer until after this.
func (w *response) sendContinue() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.canContinue {
		return nil
	}
	w.canContinue = false
	c := w.c
	idle := c.writeIdle
	if idle > 0 && !c.ownWrite.Load() {
		// Not through armWrite: this may run on another goroutine than
		// the handler's, which owns writeArmed.
		_ = c.nc.SetWriteDeadline(time.Now().Add(idle))
	} else {
		idle = 0
	}
	_, err := io.WriteString(c.nc, "HTTP/1.1 100 Continue\r\n\r\n")
	return c.writeError(err, idle)
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case w.err != nil:
		return 0, w.err
	case w.notAllowed:
		return 0, http.ErrBodyNotAllowed
	case w.noBody:
		w.written += int64(len(p))
		return len(p), nil
	case w.cl >= 0 && w.written+int64(len(p)) > w.cl:
		return 0, http.ErrContentLength
	}
	if !w.headWritten {
		if w.cl < 0 && w.trailers == nil && len(w.pending)+len(p) <= pendingMax {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.startBody(p)
	}
	if err := w.writeBody(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// startBody writes the head, choosing the framing, and what was pending.
func (w *response) startBody(first []byte) {
	if len(w.pending) > 0 {
		first = w.pending
	}
	w.writeHead(first)
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = nil
		w.writeBody(p)
	}
}

// writeBody frames p and queues or sends it.
func (w *response) writeBody(p []byte) error {
	if len(p) == 0 || w.err != nil {
		return w.err
	}
	c := w.c
	w.written += int64(len(p))
	if !w.chunked {
		if len(c.out)+len(p) <= cap(c.out) {
			c.out = append(c.out, p...)
			return nil
		}
		return w.fail(c.flushOut(p, nil, nil))
	}
	hdr := append(strconv.AppendInt(w.chunkHdr[:0], int64(len(p)), 16), '\r', '\n')
	if len(c.out)+len(hdr)+len(p)+2 <= cap(c.out) {
		c.out = append(append(append(c.out, hdr...), p...), '\r', '\n')
		return nil
	}
	return w.fail(c.flushOut(hdr, p, crlf))
}

var crlf = []byte("\r\n")

// fail records a failed write to the client. As with net/http, the
// request's work stops: the client is gone, or does not read.
func (w *response) fail(err error) error {
	if err != nil && w.err == nil {
		w.err = err
		w.c.cancel()
	}
	return err
}

// writeHead puts the status line and header in the output buffer. first
// is the start of the body, for Content-Type sniffing as net/http does.
func (w *response) writeHead(first []byte) {
	w.headWritten = true
	h := w.header
	proto11 := w.req.ProtoMinor >= 1
	if !w.noBody {
		switch {
		case len(w.trailers) > 0:
			w.chunked, w.cl = true, -1 // trailers need chunked framing
		case w.cl < 0 && proto11:
			w.chunked = true
		case w.cl < 0:
			w.closeAfter = true // HTTP/1.0: the end of the body is the close
		}
	}
	if b, ok := w.req.Body.(*body); ok && (b.unread.Load() > maxDrain || b.failed.Load()) {
		// More of the request body is left than will be drained, or it
		// could not be read: this response ends the connection, and says
		// so.
		w.closeAfter = true
	}
	keepAlive10 := !proto11 && !w.closeAfter

	b := w.c.outBuf()
	if proto11 {
		b = append(b, "HTTP/1.1 "...)
	} else {
		b = append(b, "HTTP/1.0 "...) // as net/http answers HTTP/1.0 clients
	}
	b = append(b, statusLine(w.status)...)
	b = append(b, "\r\n"...)
	for k, vv := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding":
			// The framing is the one decided in WriteHeader, whatever
			// the handler changed since.
			continue
		case "Trailer":
			if !w.chunked {
				continue
			}
		}
		b = appendField(b, k, vv)
	}
	if _, ok := h["Date"]; !ok {
		b = appendDate(b)
	}
	if w.sniffs() && len(first) > 0 {
		b = append(b, "Content-Type: "...)
		b = append(b, http.DetectContentType(first)...)
		b = append(b, "\r\n"...)
	}
	if w.cl >= 0 && !w.chunked && w.status >= 200 && w.status != http.StatusNoContent {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.cl, 10)
		b = append(b, "\r\n"...)
	}
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	switch {
	case w.closeAfter && w.status != http.StatusSwitchingProtocols &&
		!httpguts.HeaderValuesContainsToken(h["Connection"], "close"):
		// (A 101 keeps its Connection: Upgrade alone, as with net/http.)
		b = append(b, "Connection: close\r\n"...)
	case keepAlive10:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	w.c.out = append(b, "\r\n"...)
}

// appendField appends a header field; names that are not tokens are
// dropped, and CR or LF in values become spaces, so that a handler cannot
// split the response.
func appendField(b []byte, k string, vv []string) []byte {
	if len(vv) == 0 || !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	for _, v := range vv {
		b = append(b, k...)
		b = append(b, ": "...)
		if strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 {
			b = append(b, v...)
		} else {
			for i := 0; i < len(v); i++ {
				c := v[i]
				if c == '\r' || c == '\n' {
					c = ' '
				}
				b = append(b, c)
			}
		}
		b = append(b, "\r\n"...)
	}
	return b
}

// FlushError sends what is buffered, head included; http.ResponseController
// uses it.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headWritten {
		w.startBody(nil)
	}
	if w.err != nil {
		return w.err
	}
	return w.fail(w.c.flushOut(nil, nil, nil))
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// ReadFrom implements io.ReaderFrom. A body of known length read from an
// *io.LimitedReader that fits it (how sluice's engine hands over an
// upstream body) moves socket to socket with splice(2); anything else is
// copied through Write.
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	var sniffed int64
	if !w.headWritten && !w.noBody {
		if w.sniffs() && len(w.pending) == 0 {
			// Sniff from the first bytes, as net/http does.
			n, err := copyThrough(w, io.LimitReader(src, 512))
			sniffed = n
			if err != nil || n < 512 {
				return n, err
			}
		}
	}
	lr, ok := src.(*io.LimitedReader)
	rf, canSplice := w.c.nc.(io.ReaderFrom)
	if ok && canSplice && !w.hijacked && !w.noBody && w.err == nil && !w.chunked && w.trailers == nil &&
		w.cl >= 0 && lr.N <= w.cl-w.written {
		if !w.headWritten {
			w.startBody(nil)
		}
		if err := w.fail(w.c.flushOut(nil, nil, nil)); err != nil {
			return sniffed, err
		}
		n, err := w.c.spliceFrom(rf, lr)
		w.written += n
		w.fail(err)
		return sniffed + n, err
	}
	n, err := copyThrough(w, src)
	return sniffed + n, err
}

var copyPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyThrough copies src to w with a pooled buffer, through w.Write.
func copyThrough(w *response, src io.Reader) (int64, error) {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	return io.CopyBuffer(writerOnly{w}, src, *bp)
}

type writerOnly struct{ io.Writer }

// Hijack implements http.Hijacker: what was written so far is sent, and
// the connection with its buffered reader leaves the server's hands.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	if w.status != 0 && !w.headWritten {
		w.startBody(nil)
	}
	if len(c.out) > 0 {
		if err := w.fail(c.flushOut(nil, nil, nil)); err != nil {
			return nil, nil, err
		}
	}
	if b, ok := w.req.Body.(*body); ok {
		b.abandon() // no end of body can start a waiting goroutine now
	}
	c.readIdle = 0 // the hijacker's reads through br set no deadline
	w.hijacked = true
	c.state.Store(stateHijacked)
	c.srv.trackConn(c, false)
	if c.waiting {
		// Stop the goroutine waiting for the next request, and wait
		// until it is gone: bytes it read are in c.pre, which br gives
		// the hijacker first.
		c.handoff <- handoffHijacked
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
		c.waitMu.Lock()
		c.waitMu.Unlock() //lint:ignore SA2001 the lock is the wait
	}
	_ = c.nc.SetDeadline(time.Time{})
	br := c.br
	if n := len(c.pre); n > 0 {
		// What the waiting goroutine read goes into br's buffer (it
		// fits: the waiter starts only when br holds nothing, and pre
		// is no larger), so that a hijacker that takes br.Buffered()
		// and then reads the connection itself, as a tunnel splicing it
		// does, loses none of it (net/http's background read byte is
		// buffered the same way).
		_, _ = br.Peek(min(n, br.Size()-br.Buffered()))
	}
	c.br = nil // the hijacker owns it now, with what it buffered
	c.releaseBuffers()
	return c.nc, bufio.NewReadWriter(br, bufio.NewWriter(c.nc)), nil
}

// SetReadDeadline is for http.ResponseController. The handler's deadline
// replaces BodyIdleTimeout for the rest of the request.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.ownRead.Store(true)
	return w.c.nc.SetReadDeadline(t)
}

// SetWriteDeadline is for http.ResponseController. The handler's deadline
// replaces WriteIdleTimeout for the rest of the request.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.ownWrite.Store(true)
	return w.c.nc.SetWriteDeadline(t)
}

// RefusesAmbiguousFraming tells sluice's Proxy that this server answered
// 400 to requests with both Content-Length and Transfer-Encoding (and to
// Transfer-Encoding in HTTP/1.0), so that a chunked request needs no
// closing of the connection after it.
func (w *response) RefusesAmbiguousFraming() bool { return true }

// BoundsClientIdle tells sluice's Proxy that this server bounds the
// client's idleness itself (BodyIdleTimeout, WriteIdleTimeout), so that
// the Proxy applies no ClientIdleTimeout of its own.
func (w *response) BoundsClientIdle() bool { return true }

// EnableFullDuplex is for http.ResponseController: this server always
// lets a handler read the request body while it writes the response.
func (w *response) EnableFullDuplex() error { return nil }

// finish completes the response after the handler returned and reports
// whether the connection may serve another request.
func (w *response) finish() bool {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headWritten {
		switch {
		case w.cl >= 0 || w.trailers != nil || w.hasPrefixTrailer():
		case !w.noBody:
			w.cl = int64(len(w.pending)) // the whole body is known now
		case w.req.Method == http.MethodHead && !w.notAllowed && w.written > 0 && w.written <= pendingMax:
			w.cl = w.written // what a GET would get, as net/http says
		}
		w.startBody(nil)
	}
	c := w.c
	if w.chunked && w.err == nil {
		b := append(c.out, "0\r\n"...)
		for _, k := range w.trailers {
			b = appendField(b, k, w.header[k])
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				b = appendField(b, http.CanonicalHeaderKey(name), vv)
			}
		}
		c.out = append(b, "\r\n"...)
	}
	if w.cl >= 0 && !w.noBody && w.written < w.cl {
		w.closeAfter = true // a short body: the client sees it cut
	}
	if w.err == nil {
		w.fail(c.flushOut(nil, nil, nil))
	}
	return w.err == nil && !w.closeAfter
}

// sniffs reports whether the head gets a Content-Type sniffed from the
// body: none was set (not even nil, to suppress it), and the body has no
// Content-Encoding, whose type would be sniffed instead (as net/http).
func (w *response) sniffs() bool {
	_, typed := w.header["Content-Type"]
	return !typed && !w.noBody && w.header.Get("Content-Encoding") == ""
}

// hasPrefixTrailer reports whether the handler set a trailer with
// http.TrailerPrefix, which needs chunked framing.
func (w *response) hasPrefixTrailer() bool {
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// statusLines holds "200 OK" and the like for the registered codes.
var statusLines = func() (s [600]string) {
	for code := range s {
		if t := http.StatusText(code); t != "" {
			s[code] = strconv.Itoa(code) + " " + t
		}
	}
	return s
}()

func statusLine(code int) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " status code " + strconv.Itoa(code)
}

// The Date header changes once a second; it is formatted once a second.
type dateLine struct {
	sec  int64
	line []byte
}

var dateCache atomic.Pointer[dateLine]

func appendDate(b []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		line := now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat)
		d = &dateLine{sec: now.Unix(), line: append(line, "\r\n"...)}
		dateCache.Store(d)
	}
	return append(b, d.line...)
}

var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// outBuf returns the output buffer, taking one from the pool if needed.
func (c *conn) outBuf() []byte {
	if c.outp == nil {
		c.outp = outPool.Get().(*[]byte)
		c.out = (*c.outp)[:0]
	}
	return c.out
}

// writeChunk is the most that one write to the client may carry under
// WriteIdleTimeout, whose deadline is renewed between writes: a larger
// piece goes in several. It is what a client must take within the bound
// to be sure to stay.
const writeChunk = 128 << 10

// armWrite renews the write deadline for WriteIdleTimeout when due (see
// renewEvery), unless the handler set one of its own, and returns the
// bound in force (0 if none).
func (c *conn) armWrite() time.Duration {
	if c.writeIdle <= 0 || c.ownWrite.Load() {
		return 0
	}
	if !renewed(c.writeArmed, c.writeIdle) {
		c.writeArmed = now()
		_ = c.nc.SetWriteDeadline(c.writeArmed.time().Add(c.writeIdle))
	}
	return c.writeIdle
}

// writeError says so when a write failed on the idle bound armWrite set.
func (c *conn) writeError(err error, idle time.Duration) error {
	if err != nil && idle > 0 && isTimeout(err) {
		return &idleError{"writing the response", idle, err}
	}
	return err
}

// flushOut sends the output buffer followed by up to three more pieces,
// in one writev(2), or in one for every writeChunk bytes when they are
// more and an idle bound is renewed between writes.
func (c *conn) flushOut(a, b, d []byte) error {
	if len(c.out) == 0 && len(b) == 0 && len(d) == 0 && len(a) <= writeChunk {
		if len(a) == 0 {
			return nil
		}
		idle := c.armWrite()
		_, err := c.nc.Write(a)
		return c.writeError(err, idle)
	}
	c.iov = [4][]byte{c.out, a, b, d}
	err := c.writev(c.iov[:])
	c.iov = [4][]byte{}
	c.out = c.out[:0]
	return err
}

// writev writes bufs (consuming them), writeChunk bytes at most per
// writev(2) when an idle bound is renewed between writes.
func (c *conn) writev(bufs [][]byte) error {
	idle := c.armWrite()
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	if idle == 0 || total <= writeChunk {
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(c.wv)
		return c.writeError(err, idle)
	}
	var part [4][]byte
	for total > 0 {
		k, n := 0, 0
		for i, p := range bufs {
			if n == writeChunk {
				break
			}
			if len(p) == 0 {
				continue
			}
			m := min(len(p), writeChunk-n)
			part[k] = p[:m]
			bufs[i] = p[m:]
			k, n = k+1, n+m
		}
		nb := net.Buffers(part[:k])
		if _, err := nb.WriteTo(c.wv); err != nil {
			return c.writeError(err, idle)
		}
		total -= n
		if total > 0 {
			idle = c.armWrite()
		}
	}
	return nil
}

// spliceFrom moves the bytes of lr to the client through rf, the
// connection's ReadFrom (splice(2) from a TCP source). Under an idle
// bound it goes writeChunk bytes at a time, the bound renewed before
// each: a deadline set once would bound the whole body.
func (c *conn) spliceFrom(rf io.ReaderFrom, lr *io.LimitedReader) (int64, error) {
	var total int64
	for lr.N > 0 {
		idle := c.armWrite()
		if idle == 0 {
			n, err := rf.ReadFrom(lr)
			return total + n, err
		}
		left := lr.N
		want := min(left, writeChunk)
		lr.N = want
		n, err := rf.ReadFrom(lr)
		lr.N = left - n
		total += n
		if err != nil {
			// A timeout may be the source's own deadline: it is the
			// client's only when the client's deadline has passed.
			if c.writeArmed != 0 && c.writeArmed.since() < idle {
				idle = 0
			}
			return total, c.writeError(err, idle)
		}
		if n < want {
			break // the source ended early
		}
	}
	return total, nil
}

func (c *conn) releaseOut() {
	if c.outp != nil {
		if cap(c.out) <= 64<<10 {
			*c.outp = c.out[:0]
			outPool.Put(c.outp)
		}
		c.outp, c.out = nil, nil
	}
}
