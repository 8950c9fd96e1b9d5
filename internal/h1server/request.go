package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
	"golang.org/x/net/http/httpguts"
)

// requestError is a request that cannot be served; it is answered with
// status before the connection closes.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, msg} }

var emptyRequest http.Request

// readRequest reads a request head (RFC 9112 §2-§7) and sets up its body.
// Errors that deserve an answer are *requestError; others (EOF, timeouts)
// end the connection silently.
func (c *conn) readRequest(ctx context.Context) (*http.Request, *response, error) {
	c.lr.N, c.lr.Err = c.srv.maxHeaderBytes(), nil
	defer func() { c.lr.N = -1 }()

	line, err := c.readLine()
	if err == nil && len(line) == 0 {
		// RFC 9112 §2.2: ignore at least one empty line before the
		// request line (some clients send a CRLF after a POST body).
		line, err = c.readLine()
	}
	if err != nil {
		return nil, nil, c.headError(err, false)
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return nil, nil, badRequest("malformed request line")
	}
	if !h1wire.ValidMethod(method) {
		return nil, nil, badRequest("invalid method")
	}
	req := emptyRequest.WithContext(ctx)
	req.Method = method // like target and proto, a piece of the line's one string
	req.RequestURI = target
	switch proto {
	case "HTTP/1.1":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		major, minor, ok := http.ParseHTTPVersion(proto)
		if !ok || major == 2 && method == "PRI" {
			// PRI * HTTP/2.0 is a connection preface where h2c is not
			// served: not an HTTP/1 request. Another method with
			// HTTP/2.0 is a version this listener does not serve: 505,
			// as net/http answers.
			return nil, nil, badRequest("malformed HTTP version")
		}
		if major != 1 {
			return nil, nil, &requestError{http.StatusHTTPVersionNotSupported, "only HTTP/1.x is served"}
		}
		req.Proto, req.ProtoMajor, req.ProtoMinor = proto, major, minor
	}

	// The request target (RFC 9112 §3.2): origin, absolute, authority
	// (CONNECT only) or asterisk form.
	rawURL := target
	authority := req.Method == http.MethodConnect && !strings.HasPrefix(target, "/")
	if authority {
		rawURL = "http://" + target
	}
	if req.URL, err = url.ParseRequestURI(rawURL); err != nil {
		return nil, nil, badRequest("malformed request target")
	}
	if authority {
		req.URL.Scheme = ""
	}

	h, err := c.tp.ReadMIMEHeader()
	if err != nil {
		return nil, nil, c.headError(err, true)
	}
	for k := range h {
		// textproto keeps names it cannot canonicalize, such as one with
		// a space before the colon; they are no field names.
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, nil, badRequest("invalid header name")
		}
	}
	req.Header = http.Header(h)
	req.RemoteAddr = c.remoteAddr
	if tc, ok := c.nc.(*tls.Conn); ok {
		// The handshake is done: the head was read through it.
		if c.tlsState == nil {
			cs := tc.ConnectionState()
			c.tlsState = &cs
		}
		req.TLS = c.tlsState
	}

	// Host (RFC 9112 §3.2): exactly one in HTTP/1.1, and well formed.
	hosts, haveHost := h["Host"]
	switch {
	case len(hosts) > 1:
		return nil, nil, badRequest("too many Host headers")
	case !haveHost && req.ProtoMinor >= 1 && req.Method != http.MethodConnect:
		return nil, nil, badRequest("missing required Host header")
	case haveHost && !httpguts.ValidHostHeader(hosts[0]):
		return nil, nil, badRequest("malformed Host header")
	}
	req.Host = req.URL.Host
	if req.Host == "" && haveHost {
		req.Host = hosts[0]
	}
	delete(h, "Host")

	req.Close = shouldClose(req, h)
	c.upgrade = h["Upgrade"] != nil

	w := newResponse(c, req)
	if err := c.setupBody(req, w); err != nil {
		return nil, nil, err
	}
	return req, w, nil
}

// headError classifies a failure to read a request head, begun past its
// request line or not. A head cut by the client's close is no malformed
// head (textproto reports a cut line as one): nobody gets an answer. A
// head cut by ReadHeaderTimeout gets 408 once it began (readLine tells
// for the request line); before, nobody is waiting for an answer.
func (c *conn) headError(err error, begun bool) error {
	if err == errHeadTimeout || begun && isTimeout(c.lr.Err) {
		return errHeadTimeout
	}
	if c.lr.Err != nil {
		return c.lr.Err
	}
	var pe textproto.ProtocolError
	switch {
	case errors.Is(err, errHeaderTooLarge):
		return &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header too large"}
	case errors.As(err, &pe):
		return badRequest("malformed header")
	case errors.Is(err, errBadLine):
		return badRequest("malformed request line")
	}
	return err // EOF, reset or a timeout before the head began: nobody to answer
}

// errHeadTimeout is a request head begun and not done within
// ReadHeaderTimeout (RFC 9110 §15.5.9).
var errHeadTimeout = &requestError{http.StatusRequestTimeout, "request head not received in time"}

var errBadLine = errors.New("malformed line")

// readLine reads one line of a request head, of any length up to the
// header limit, without its line ending (CRLF, or a bare LF as RFC 9112
// §2.2 allows a server to accept).
func (c *conn) readLine() (string, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = c.br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		switch {
		case len(line) == 0:
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		case isTimeout(err):
			err = errHeadTimeout // a line begun: someone waits for an answer
		}
		return "", err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	for _, b := range line {
		if b == '\r' || b == 0 {
			return "", errBadLine
		}
	}
	return string(line), nil
}

// shouldClose tells whether the connection ends after this request (RFC
// 9112 §9.3): HTTP/1.0 unless keep-alive was asked for, or a "close"
// connection option. The Connection header stays, for a proxy to find the
// hop-by-hop fields it names.
func shouldClose(req *http.Request, h textproto.MIMEHeader) bool {
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if req.ProtoMinor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	return hasClose
}

var chunkedTE = []string{"chunked"}

// setupBody decides the request body's framing (RFC 9112 §6). Messages
// whose framing is ambiguous are refused, not guessed at: both
// Transfer-Encoding and Content-Length, Transfer-Encoding in HTTP/1.0,
// differing Content-Lengths.
func (c *conn) setupBody(req *http.Request, w *response) error {
	h := req.Header
	te, hasTE := h["Transfer-Encoding"]
	cls, hasCL := h["Content-Length"]
	chunked := false
	if hasTE {
		switch {
		case req.ProtoMinor == 0:
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		case hasCL:
			return badRequest("both Transfer-Encoding and Content-Length")
		case len(te) != 1 || !strings.EqualFold(te[0], "chunked"):
			return &requestError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		delete(h, "Transfer-Encoding")
		chunked = true
	}
	length := int64(0)
	if hasCL {
		n, err := h1wire.ParseContentLength(cls[0])
		for _, v := range cls[1:] {
			if m, err2 := h1wire.ParseContentLength(v); err2 != nil || m != n {
				err = h1wire.ErrBadLength
			}
		}
		if err != nil {
			return badRequest("bad Content-Length")
		}
		if len(cls) > 1 {
			h["Content-Length"] = cls[:1]
		}
		length = n
	}

	if vv, ok := h["Trailer"]; ok && chunked {
		trailer := make(http.Header)
		for k := range h1wire.FieldNames(vv) {
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return badRequest("bad trailer key " + k)
			}
			trailer[k] = nil
		}
		delete(h, "Trailer")
		req.Trailer = trailer
	}

	expectContinue := false
	if ex := h["Expect"]; len(ex) > 0 {
		if len(ex) != 1 || !strings.EqualFold(textproto.TrimString(ex[0]), "100-continue") {
			return &requestError{http.StatusExpectationFailed, "unsupported expectation"}
		}
		expectContinue = req.ProtoMinor >= 1 && (chunked || length > 0)
	}

	switch {
	case chunked:
		req.ContentLength = -1
		req.TransferEncoding = chunkedTE
		b := &body{c: c, w: w, req: req, cr: httputil.NewChunkedReader(c.br), expectContinue: expectContinue}
		b.unread.Store(-1)
		req.Body = b
	case length > 0:
		req.ContentLength = length
		b := &body{c: c, w: w, req: req, remaining: length, expectContinue: expectContinue}
		b.unread.Store(length)
		req.Body = b
	default:
		req.Body = http.NoBody
	}
	w.canContinue = expectContinue
	return nil
}

// body is a request body read from the connection: Content-Length bytes,
// or chunks and a trailer. Reading it to the end lets the connection wait
// for its next request while the response is still being written.
type body struct {
	mu             sync.Mutex
	c              *conn
	w              *response
	req            *http.Request // receives the trailer
	remaining      int64         // for a Content-Length body
	cr             io.Reader     // the chunked reader, or nil
	expectContinue bool          // 100 Continue is due before the first read
	sawEOF         bool
	closed         bool
	err            error // sticky

	// unread mirrors remaining for the response's head, which must not
	// wait for mu while a read blocks (-1 for a chunked body; 0 at EOF);
	// failed tells it that a read failed.
	unread atomic.Int64
	failed atomic.Bool
}

// maxDrain is how much of an unread request body is read and dropped
// after the handler, to keep the connection; beyond it, it closes.
const maxDrain = 256 << 10

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *body) readLocked(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.expectContinue {
		b.expectContinue = false
		if err := b.w.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.read(p)
	if b.cr == nil {
		b.unread.Store(b.remaining)
	}
	if err == nil {
		return n, nil
	}
	c := b.c
	switch {
	case err == io.EOF:
		b.unread.Store(0)
		b.sawEOF = true
		if c.readIdle > 0 {
			c.readIdle, c.readArmed = 0, 0
			if !c.ownRead.Load() {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
		}
		c.startWaiting()
	case isTimeout(err):
		// The client is still there, only silent: the handler may
		// answer (408), and the connection closes after it.
		if c.readIdle > 0 && !c.ownRead.Load() {
			err = &idleError{"reading the request body", c.readIdle, err}
		}
		b.failed.Store(true)
	default:
		// As with net/http, a client whose body cannot be read is gone:
		// the request's work stops.
		b.failed.Store(true)
		c.cancel()
	}
	b.err = err
	return n, err
}

func (b *body) read(p []byte) (int, error) {
	br := b.c.br
	if b.cr == nil {
		if b.remaining <= 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		if terr := b.readTrailer(); terr != nil {
			return n, terr
		}
	}
	return n, err
}

// readTrailer reads the trailer section after the last chunk, bounded
// like the head, into the request's Trailer.
func (b *body) readTrailer() error {
	c := b.c
	if err := h1wire.MergeTrailer(&b.req.Trailer, c.br, &c.tp, &c.lr, c.srv.maxHeaderBytes()); err != nil {
		return fmt.Errorf("reading request %w", err)
	}
	return nil
}

// closeAndDrain ends the body after the handler. It reports whether the
// connection can serve another request: the body was read to its end, or
// what was left of it (up to maxDrain) could be read and dropped.
func (b *body) closeAndDrain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.sawEOF {
		return true
	}
	if b.err != nil || b.expectContinue {
		// A read failed, or the client still waits for 100 Continue and
		// may or may not send the body: the stream is out of step.
		return false
	}
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	for total := 0; total <= maxDrain; {
		n, err := b.readLocked(*bp)
		total += n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// Close implements io.Closer: later reads fail. What is left of the body
// is read and dropped after the handler, to keep the connection.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// abandon ends the body of a connection that is closing.
func (b *body) abandon() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}
