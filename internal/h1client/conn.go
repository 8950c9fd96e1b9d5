package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1wire"
	"golang.org/x/net/http/httpguts"
)

// conn is one upstream connection. Between exchanges it sits in its
// hostPool with br and bw returned to their pools.
type conn struct {
	client    *Client
	pool      *hostPool
	nc        net.Conn
	probe     *prober
	dialed    time.Duration // how long connecting took
	lr        h1wire.LimitReader
	br        *bufio.Reader
	bw        *bufio.Writer
	tp        textproto.Reader
	idleSince time.Time
	rdl, wdl  time.Time     // the deadlines in force on nc (zero: none)
	bodyIdle  time.Duration // read idle bound of the body phase; 0 before it

	// State of the current exchange. The response side and the request
	// body writer each finish on their own; whichever finishes last
	// decides whether the connection goes back to the pool.
	mu          sync.Mutex
	closed      bool
	hasWriter   bool // a request body writer runs for this exchange
	writerEnd   chan struct{}
	reqDone     bool
	reqErr      error
	respDone    bool
	respReuse   bool
	headDone    bool        // the final response head was read
	stop        func() bool // stops the context.AfterFunc that aborts on cancel
	noReuse     bool
	bodyStarted atomic.Bool      // the body writer consumed request body bytes
	lim         io.LimitedReader // the source handed to Body.WriteTo's ReaderFrom
	chunkHdr    [20]byte         // scratch for chunk sizes
	iov         [3][]byte        // scratch for writev
}

func (pc *conn) acquireBuffers() {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(&pc.lr)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(idleWriter{pc})
	pc.br, pc.bw = br, bw
	pc.tp.R = br
	pc.closed, pc.stop, pc.noReuse = false, nil, false
	pc.bodyStarted.Store(false)
	pc.hasWriter, pc.reqDone, pc.reqErr, pc.respDone, pc.respReuse = false, false, nil, false, false
	pc.headDone, pc.bodyIdle = false, 0
}

func (pc *conn) releaseBuffers() {
	pc.br.Reset(nil)
	readerPool.Put(pc.br)
	pc.bw.Reset(nil)
	writerPool.Put(pc.bw)
	pc.br, pc.bw = nil, nil
	pc.tp.R = nil
}

// close closes the connection for good; it is safe to call more than once
// and from any goroutine.
func (pc *conn) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.closed {
		pc.closed = true
		pc.nc.Close()
	}
}

// reset closes the connection with a TCP reset (SO_LINGER 0).
func (pc *conn) reset() {
	if tc, ok := pc.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	pc.close()
}

var errHeaderTooLarge = fmt.Errorf("%w: response head too large", ErrBadResponse)

func (pc *conn) roundTrip(req *http.Request, hooks Hooks) (*http.Response, error) {
	if ctx := req.Context(); ctx.Done() != nil {
		pc.stop = context.AfterFunc(ctx, pc.close)
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	expect := hasBody && httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
	if err := pc.writeHead(req, hasBody); err != nil {
		pc.abort()
		return nil, err
	}
	if !hasBody || expect {
		if err := pc.bw.Flush(); err != nil {
			pc.abort()
			if isTimeout(err) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", errServerClosedIdle, err)
		}
	}
	if hooks != nil {
		hooks.WroteHeaders()
	}
	var continueCh chan bool
	if hasBody {
		pc.hasWriter = true
		pc.writerEnd = make(chan struct{})
		if expect {
			continueCh = make(chan bool, 1)
		}
		go pc.writeBody(req, continueCh)
	}
	res, err := pc.readResponse(req, hooks, continueCh)
	if err != nil {
		pc.abort()
		if hasBody {
			// The body writer may still be reading the request body (or
			// about to): wait for it, so that consumedBody is final and a
			// retry on a new connection never shares the body with it (it
			// would send the body with a hole). Its writes fail on the
			// closed connection; a read from the client ends when the
			// client sends or goes away, as with http.Transport.
			if continueCh != nil {
				select {
				case continueCh <- false:
				default:
				}
			}
			<-pc.writerEnd
		}
		if errors.Is(err, errServerClosedIdle) && pc.consumedBody() {
			err = io.ErrUnexpectedEOF
		}
		pc.mu.Lock()
		werr := pc.reqErr
		pc.mu.Unlock()
		var te *idleTimeoutError
		if errors.As(werr, &te) {
			// The upstream stopped taking the request body and the writer
			// closed the connection under the reader: the stall is the
			// cause.
			err = werr
		}
		if cerr := req.Context().Err(); cerr != nil {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		return nil, err
	}
	return res, nil
}

func (pc *conn) consumedBody() bool {
	return pc.bodyStarted.Load()
}

// abort ends a failed exchange: the connection is closed and the body
// writer, if any, fails and returns.
func (pc *conn) abort() {
	if pc.stop != nil {
		pc.stop()
	}
	pc.close()
}

var errInvalidHeader = errors.New("h1client: invalid header")

// writeHead writes the request line and header, with the framing headers
// derived from ContentLength and Body (never from the header map).
func (pc *conn) writeHead(req *http.Request, hasBody bool) error {
	bw := pc.bw
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("%w: Host %q", errInvalidHeader, host)
	}
	if !h1wire.ValidMethod(req.Method) {
		return fmt.Errorf("%w: method %q", errInvalidHeader, req.Method)
	}
	path, query := requestTarget(req.URL)
	if strings.ContainsAny(path, " \t\r\n") || strings.ContainsAny(query, " \t\r\n") {
		return fmt.Errorf("%w: request target %q", errInvalidHeader, path+query)
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if query != "" {
		bw.WriteByte('?')
		bw.WriteString(query)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("%w: name %q", errInvalidHeader, k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("%w: value of %s", errInvalidHeader, k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	var num [20]byte
	switch {
	case hasBody && req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], req.ContentLength, 10))
		bw.WriteString("\r\n")
	case hasBody:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			bw.WriteString("Trailer: ")
			first := true
			for k := range req.Trailer {
				if !httpguts.ValidHeaderFieldName(k) {
					return fmt.Errorf("%w: trailer name %q", errInvalidHeader, k)
				}
				if !first {
					bw.WriteString(", ")
				}
				first = false
				bw.WriteString(k)
			}
			bw.WriteString("\r\n")
		}
	case req.Method == "POST" || req.Method == "PUT" || req.Method == "PATCH":
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close {
		bw.WriteString("Connection: close\r\n")
		pc.noReuse = true
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// requestTarget returns the origin-form request target of u in two
// parts, without allocating in the common case (url.URL.RequestURI
// concatenates).
func requestTarget(u *url.URL) (path, query string) {
	if u.Opaque != "" {
		return u.RequestURI(), ""
	}
	path = u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.ForceQuery && u.RawQuery == "" {
		return path + "?", ""
	}
	return path, u.RawQuery
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

var errBodyNotSent = errors.New("h1client: request body not sent: upstream answered before 100 Continue")

// writeBody streams the request body, with Content-Length framing when
// the length is known and chunked framing otherwise, then its trailers.
// With continueCh it waits for the upstream's 100 Continue (or the
// timeout) first. Its result goes to pc.bodyErr.
func (pc *conn) writeBody(req *http.Request, continueCh chan bool) {
	err := pc.copyBody(req, continueCh)
	if err != nil && err != errBodyNotSent {
		// The upstream must not take a partial body as complete. (A body
		// never sent because the upstream answered first is no partial
		// body: that answer is still being read, and noReuse closes the
		// connection after it.) A reset, not a FIN: some servers take
		// the end of the stream for the end of a Content-Length body.
		pc.reset()
	}
	pc.mu.Lock()
	pc.reqDone, pc.reqErr = true, err
	last := pc.respDone
	if err == nil && !pc.headDone {
		// The response header timeout runs from the end of the request,
		// as with http.Transport: a long upload is not a slow upstream.
		if t := pc.client.ResponseHeaderTimeout; t > 0 {
			pc.setReadDeadline(time.Now().Add(t))
		}
	}
	pc.mu.Unlock()
	close(pc.writerEnd)
	if last {
		pc.release()
	}
}

// writerGrace is how long the end of a response waits for the request
// body writer to report: usually it is done, only a few instructions
// behind the upstream that answered after reading the whole body.
const writerGrace = 50 * time.Millisecond

func (pc *conn) copyBody(req *http.Request, continueCh chan bool) error {
	bw := pc.bw
	if continueCh != nil {
		t := time.NewTimer(pc.client.continueTimeout())
		select {
		case ok := <-continueCh:
			t.Stop()
			if !ok {
				return errBodyNotSent
			}
		case <-t.C:
		}
	}
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	chunked := req.ContentLength <= 0
	remaining := req.ContentLength
	trailer := req.Trailer // filled by the server when the body ends
	for {
		p := buf
		if !chunked && remaining < int64(len(p)) {
			p = p[:remaining]
		}
		var n int
		var rerr error
		if len(p) > 0 {
			n, rerr = req.Body.Read(p)
		} else {
			rerr = io.EOF
		}
		if n > 0 {
			pc.bodyStarted.Store(true)
			if err := pc.writeBodyChunk(p[:n], chunked); err != nil {
				return err
			}
			remaining -= int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading request body: %w", rerr)
		}
	}
	req = nil // from here on only the trailer snapshot is used
	if !chunked {
		if remaining > 0 {
			return fmt.Errorf("request body shorter than its Content-Length by %d bytes", remaining)
		}
		return bw.Flush()
	}
	bw.WriteString("0\r\n")
	for k, vv := range trailer {
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("%w: trailer %s", errInvalidHeader, k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

var crlf = []byte("\r\n")

// writeBodyChunk sends one piece of request body at once: data that fits
// behind what is buffered (the request head) goes out with it in one
// write; otherwise the piece is written straight to the socket, with its
// chunk framing in the same writev(2), never copied through the buffer.
func (pc *conn) writeBodyChunk(data []byte, chunked bool) error {
	bw := pc.bw
	if bw.Buffered() > 0 && bw.Available() >= len(data)+24 {
		if chunked {
			bw.Write(strconv.AppendInt(pc.chunkHdr[:0], int64(len(data)), 16))
			bw.Write(crlf)
		}
		bw.Write(data)
		if chunked {
			bw.Write(crlf)
		}
		return bw.Flush()
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if !chunked {
		return pc.writeResumable(func() (int64, error) {
			n, err := pc.nc.Write(data)
			data = data[n:]
			return int64(n), err
		})
	}
	hdr := append(strconv.AppendInt(pc.chunkHdr[:0], int64(len(data)), 16), '\r', '\n')
	pc.iov = [3][]byte{hdr, data, crlf}
	bufs := net.Buffers(pc.iov[:])
	// WriteTo consumes bufs as it writes: called again, it goes on.
	err := pc.writeResumable(func() (int64, error) { return bufs.WriteTo(pc.nc) })
	pc.iov = [3][]byte{}
	return err
}

const max1xxResponses = 10

// readResponse reads response heads until the final one (relaying 1xx to
// hooks) and sets up the body.
func (pc *conn) readResponse(req *http.Request, hooks Hooks, continueCh chan bool) (*http.Response, error) {
	timeout := pc.client.ResponseHeaderTimeout
	for n1xx := 0; ; n1xx++ {
		pc.lr.N = pc.client.maxHeaderBytes()
		// The header timeout is armed now only if the request is fully
		// sent; otherwise the body writer arms it when it is done. Until
		// then no deadline: not one left by the last exchange either.
		pc.mu.Lock()
		if timeout > 0 && (!pc.hasWriter || pc.reqDone) {
			pc.setReadDeadline(time.Now().Add(timeout))
		} else {
			pc.setReadDeadline(time.Time{})
		}
		pc.mu.Unlock()
		res, err := pc.readHead(req)
		if err != nil {
			return nil, err
		}
		code := res.StatusCode
		if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
			if n1xx >= max1xxResponses {
				return nil, fmt.Errorf("%w: too many 1xx responses", ErrBadResponse)
			}
			// The hook runs before the body writer is released, so that
			// a relayed 100 reaches the client before anything reads its
			// body (which would make net/http send a 100 of its own).
			if hooks != nil {
				hooks.Got1xx(code, res.Header)
			}
			if code == http.StatusContinue && continueCh != nil {
				continueCh <- true
				continueCh = nil
			}
			continue
		}
		if continueCh != nil {
			// A final answer before 100 Continue: the body is never sent,
			// so the connection cannot carry another request.
			continueCh <- false
			pc.noReuse = true
		}
		pc.lr.N = -1
		pc.mu.Lock()
		pc.headDone = true
		pc.mu.Unlock()
		// From here on each read of the body waits at most the read
		// idle bound (see idleReader), and nothing else bounds it.
		if pc.bodyIdle = pc.client.readIdle(); pc.bodyIdle <= 0 {
			pc.setReadDeadline(time.Time{})
		}
		res.Request = req
		if err := pc.setupBody(req, res); err != nil {
			return nil, err
		}
		return res, nil
	}
}

// readHead parses a status line and header block.
func (pc *conn) readHead(req *http.Request) (*http.Response, error) {
	line, err := pc.br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && (err == io.EOF || isReset(err)) {
			return nil, fmt.Errorf("%w: %w", errServerClosedIdle, err)
		}
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%w: status line too long", ErrBadResponse)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	res := &http.Response{}
	if err := parseStatusLine(line, res); err != nil {
		return nil, err
	}
	h, err := pc.tp.ReadMIMEHeader()
	if err != nil {
		if errors.Is(err, errHeaderTooLarge) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		return nil, err
	}
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("%w: invalid header name %q", ErrBadResponse, k)
		}
	}
	res.Header = http.Header(h)
	if res.Header == nil {
		res.Header = make(http.Header)
	}
	return res, nil
}

// parseStatusLine parses "HTTP/1.x NNN reason\r\n" (RFC 9112 §4).
func parseStatusLine(line []byte, res *http.Response) error {
	l := len(line)
	if l >= 2 && line[l-2] == '\r' {
		line = line[:l-2]
	} else {
		line = line[:l-1]
	}
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("%w: status line %q", ErrBadResponse, truncate(line))
	}
	switch line[7] {
	case '1':
		res.Proto, res.ProtoMajor, res.ProtoMinor = "HTTP/1.1", 1, 1
	case '0':
		res.Proto, res.ProtoMajor, res.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		return fmt.Errorf("%w: status line %q", ErrBadResponse, truncate(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: status code %q", ErrBadResponse, truncate(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return fmt.Errorf("%w: status code %d", ErrBadResponse, code)
	}
	res.StatusCode = code
	var reason []byte
	if len(line) > 13 {
		reason = line[13:]
	}
	for _, c := range reason {
		if c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: control character in reason phrase", ErrBadResponse)
		}
	}
	res.Status = statusText(code, reason)
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

var statusCache = func() map[int]string {
	m := make(map[int]string)
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = strconv.Itoa(code) + " " + t
		}
	}
	return m
}()

func statusText(code int, reason []byte) string {
	if s, ok := statusCache[code]; ok && len(s) == len(reason)+4 && s[4:] == string(reason) {
		return s
	}
	return strconv.Itoa(code) + " " + string(reason)
}

var chunkedTE = []string{"chunked"}

// setupBody decides the response framing (RFC 9112 §6.3) and attaches the
// body reader.
func (pc *conn) setupBody(req *http.Request, res *http.Response) error {
	h := res.Header
	res.Close = pc.noReuse || req.Close ||
		httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		(res.ProtoMinor == 0 && !httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive"))

	code := res.StatusCode
	if code == http.StatusSwitchingProtocols {
		// The tunnel that takes the connection bounds its own waits.
		pc.bodyIdle = 0
		pc.setReadDeadline(time.Time{})
		if !pc.hasWriter {
			pc.setWriteDeadline(time.Time{})
		}
		res.ContentLength = -1
		res.Body = pc.upgradeBody()
		if pc.stop != nil {
			pc.stop() // the tunnel owns the connection from here
		}
		return nil
	}

	cl := int64(-1)
	if vv := h["Content-Length"]; len(vv) > 0 {
		for _, v := range vv {
			n, err := h1wire.ParseContentLength(v)
			if err != nil || (cl >= 0 && n != cl) {
				return fmt.Errorf("%w: Content-Length %q", ErrBadResponse, vv)
			}
			cl = n
		}
		if len(vv) > 1 {
			h["Content-Length"] = vv[:1]
		}
	}
	chunked := false
	if te := h["Transfer-Encoding"]; len(te) > 0 {
		if len(te) != 1 || !strings.EqualFold(textproto.TrimString(te[0]), "chunked") {
			return fmt.Errorf("%w: unsupported Transfer-Encoding %q", ErrBadResponse, te)
		}
		delete(h, "Transfer-Encoding")
		chunked = true
		if cl >= 0 {
			// RFC 9112 §6.3: Transfer-Encoding wins, and the connection
			// must not be reused.
			delete(h, "Content-Length")
			cl = -1
			res.Close = true
		}
	}

	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	switch {
	case noBody:
		res.ContentLength = cl
		if code == http.StatusNoContent {
			res.ContentLength = 0
		}
		res.Body = http.NoBody
		pc.finish(res.Close)
	case chunked:
		res.ContentLength = -1
		res.TransferEncoding = chunkedTE
		if tr := h["Trailer"]; len(tr) > 0 {
			res.Trailer = make(http.Header)
			for k := range h1wire.FieldNames(tr) {
				res.Trailer[k] = nil
			}
			delete(h, "Trailer")
		}
		res.Body = &Body{pc: pc, nc: pc.nc, res: res, mode: modeChunked, cr: httputil.NewChunkedReader(pc.br), closeAfter: res.Close}
	case cl == 0:
		res.ContentLength = 0
		res.Body = http.NoBody
		pc.finish(res.Close)
	case cl > 0:
		res.ContentLength = cl
		res.Body = &Body{pc: pc, nc: pc.nc, res: res, mode: modeLength, remaining: cl, closeAfter: res.Close}
	default:
		res.ContentLength = -1
		res.Close = true
		res.Body = &Body{pc: pc, nc: pc.nc, res: res, mode: modeEOF, closeAfter: true}
	}
	return nil
}

// finish ends the response side of the exchange once its body was read
// to the end. The connection goes back to the pool when both directions
// completed cleanly and nothing asked to close it.
func (pc *conn) finish(closeAfter bool) {
	reuse := !closeAfter && !pc.noReuse
	if pc.stop != nil && !pc.stop() {
		reuse = false // the context fired and closed the connection
	}
	if pc.hasWriter {
		select {
		case <-pc.writerEnd:
		default:
			t := time.NewTimer(writerGrace)
			select {
			case <-pc.writerEnd:
			case <-t.C:
				// The upstream answered without taking the whole body and
				// the writer is stuck: close, so that a writer blocked on
				// the socket returns now (one blocked reading the client
				// returns when the server closes that body).
				reuse = false
				pc.close()
			}
			t.Stop()
		}
	}
	pc.mu.Lock()
	pc.respDone, pc.respReuse = true, reuse
	last := !pc.hasWriter || pc.reqDone
	pc.mu.Unlock()
	if last {
		pc.release()
	}
}

// release runs once both sides of the exchange are done.
func (pc *conn) release() {
	pc.mu.Lock()
	reuse := pc.respReuse && pc.reqErr == nil && !pc.closed
	pc.mu.Unlock()
	if reuse && !pc.reusable("after response", false) {
		reuse = false
	}
	if !reuse {
		pc.close()
		return
	}
	pc.client.putIdle(pc)
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
