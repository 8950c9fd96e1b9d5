package sluice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/h1client"
	"github.com/sluiceproxy/sluice/internal/h1wire"
	"github.com/sluiceproxy/sluice/internal/h2client"
	"golang.org/x/net/http/httpguts"
)

// Result describes how one attempt to reach an upstream ended; see
// Observer.
type Result struct {
	// Upstream is the host:port the attempt went to.
	Upstream string
	// Status is the upstream's response status, 0 if there was none.
	Status int
	// Err is the failure of the attempt or of its response body, nil if
	// the exchange completed (whatever the status).
	Err error
	// Duration runs from sending the request to the end of the response
	// body, or to the failure.
	Duration time.Duration
}

// RetryPolicy says which failed attempts are tried again. A retry is only
// ever made when it is safe: no byte of the response (not even a 1xx
// interim response) reached the client, and either nothing of the request
// reached the upstream (the connection could not be made, or the request
// was not written) or the method is idempotent (RFC 9110 §9.2.2) and the
// request has no body or a body that could be kept for replay (see
// ReplayLimit). A request that is not idempotent and whose body was
// started is never sent twice, except to an HTTP/2 upstream that refused
// it without processing it (RFC 9113 §8.7: REFUSED_STREAM, or a stream
// above a GOAWAY's last stream ID), when its body was kept (see
// ReplayLimit and docs/upstream-protocols.md).
type RetryPolicy struct {
	// Attempts is the maximum number of attempts, the first included.
	// If zero, 2.
	Attempts int

	// Duration bounds the time from the first attempt after which no new
	// attempt is started. If zero, there is no bound but Attempts.
	Duration time.Duration

	// Idempotent allows retrying idempotent requests after a failure that
	// may have reached the upstream (a reset connection, a response header
	// timeout). If false, only requests that certainly did not reach the
	// upstream are retried.
	Idempotent bool

	// ReplayLimit bounds the request body kept in memory so that an
	// idempotent request with a body can be sent again when Idempotent
	// is set. The body is kept as the transport reads it; a request whose
	// body grows past the limit is no longer retried once its body was
	// started. A body going to an upstream that may speak HTTP/2
	// (https://, h2c://) is kept the same way, whatever the method and
	// Idempotent, so that a stream the upstream refused unprocessed can
	// be sent again (not when Attempts is 1). If zero,
	// DefaultReplayLimit; if negative, bodies are never kept.
	ReplayLimit int64
}

// DefaultReplayLimit is the request body size kept for replay when
// RetryPolicy.ReplayLimit is zero.
const DefaultReplayLimit = 64 << 10

var defaultRetry = RetryPolicy{Attempts: 2}

// Forward sends the outbound request upstream and streams the response to
// w: the transparent default that a request no Interceptor claims gets.
// Upgrade requests (WebSocket and others) become a tunnel.
//
// It returns an error if the exchange failed; the caller (usually an
// Interceptor returning it to the Proxy) leaves the status decision to
// StatusFor. After the response started, a failure is returned wrapped so
// that the Proxy aborts the client connection.
func (pr *ProxyRequest) Forward(w http.ResponseWriter) error {
	if pr.In.Method == http.MethodConnect {
		return pr.proxy.serveConnect(w, pr)
	}
	if pr.upgrade != "" {
		return pr.proxy.serveUpgrade(w, pr)
	}
	if pr.Out.Body != nil {
		// Let the upstream's response stream while the request body is
		// still arriving (HTTP/1.1 full duplex); without it net/http
		// would discard the unread request body before the first write.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	res, err := pr.RoundTrip()
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		return fmt.Errorf("%w: 101 Switching Protocols to a request without upgrade", errBadResponse)
	}
	if pr.ModifyResponse != nil {
		if err := pr.ModifyResponse(res); err != nil {
			return err
		}
	}
	return pr.WriteResponse(w, res)
}

var (
	errBadResponse   = errors.New("sluice: malformed upstream response")
	errGRPCOverHTTP1 = errors.New("sluice: gRPC request (Content-Type application/grpc) over HTTP/1.x: gRPC needs HTTP/2 from the client")
)

// isGRPC reports whether a request's Content-Type is gRPC's:
// "application/grpc", alone or followed by "+format" or parameters, in
// any case; gRPC-Web ("application/grpc-web...") is not.
func isGRPC(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	const g = "application/grpc"
	v := ct[0]
	if len(v) < len(g) || !strings.EqualFold(v[:len(g)], g) {
		return false
	}
	rest := v[len(g):]
	return rest == "" || rest[0] == '+' || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}

// RoundTrip sends the outbound request to the upstream the Director picks
// and returns the response, as http.RoundTripper does: the caller must
// close its body. Safe retries are made according to the Proxy's
// RetryPolicy. 1xx responses are relayed to the client as they arrive.
// Hop-by-hop headers are still in the returned response; WriteResponse
// removes them.
func (pr *ProxyRequest) RoundTrip() (*http.Response, error) {
	p := pr.proxy
	p.init()
	if pr.In.Method == http.MethodConnect {
		return nil, errTunnelTransport
	}
	if pr.In.ProtoMajor < 2 && isGRPC(pr.In.Header["Content-Type"]) {
		return nil, &Error{Status: http.StatusHTTPVersionNotSupported, Err: errGRPCOverHTTP1}
	}
	director := p.Director
	if pr.route != nil && pr.route.Director != nil {
		director = pr.route.Director
	}
	if director == nil {
		return nil, ErrNoRoute
	}
	policy := p.Retry
	if policy == nil {
		policy = &defaultRetry
	}
	attempts := policy.Attempts
	if attempts <= 0 {
		attempts = 2
	}

	hasBody := pr.Out.Body != nil && pr.Out.Body != http.NoBody
	if a, ok := pr.Out.Body.(*attemptBody); ok && a.b == pr.body {
		// RoundTrip again on the same request: go on with its body.
		pr.body.detach()
	} else if hasBody {
		var limit int64
		if attempts > 1 && policy.Idempotent && h1wire.IsIdempotent(pr.Out.Method) {
			limit = policy.ReplayLimit
			if limit == 0 {
				limit = DefaultReplayLimit
			}
			if pr.Out.ContentLength > limit {
				limit = 0 // known too large: never kept
			}
		}
		// Announced (or hook-set) trailers that may not be forwarded
		// are not announced upstream; those arriving with the body are
		// filtered when it ends (requestBody.trailersTo).
		for k := range pr.Out.Trailer {
			if !p.trailerAllowed(k, pr.In.Header["Connection"]) || ownedName(pr.owned, k) {
				delete(pr.Out.Trailer, k)
			}
		}
		if pr.body == nil {
			pr.body = new(requestBody)
		}
		pr.body.start(pr.Out.Body, limit, pr.Out.ContentLength)
		pr.body.trailersTo(pr)
		pr.bodyUsed = true
	}
	orig := *pr.Out.URL
	origHost := pr.Out.Host
	eng, _ := p.transport.(*engine)
	obs, _ := director.(Observer)
	pr.hooks.pr = pr
	traced, checked := false, false
	first := time.Now()
	for {
		*pr.Out.URL = orig
		pr.Out.Host = origHost
		pr.wroteHeaders.Store(false)
		if hasBody {
			pr.Out.Body = pr.body.attempt()
		}
		if err := director.Direct(pr); err != nil {
			return nil, err
		}
		if err := checkTarget(pr.Out); err != nil {
			return nil, err
		}
		if pr.DialCheck != nil && !checked {
			// Its own engine: connections made under a DialCheck are
			// never handed to exchanges without one (see DialCheck).
			if eng == nil {
				return nil, errDialCheckTransport
			}
			eng = p.checkedEngine()
			*pr.Out = *pr.Out.WithContext(withDialCheck(pr.Out.Context(), pr.DialCheck))
			checked = true
		}
		done := pr.beginAttempt()
		start := pr.attemptStart
		var res *http.Response
		var err error
		if eng != nil && (pr.Out.URL.Scheme == "http" || pr.Out.URL.Scheme == "unix") {
			if pr.Out.URL.Scheme == "unix" && pr.Out.Host == "" {
				pr.Out.Host = unixHost
			}
			res, err = eng.h1.Do(pr.Out, &pr.hooks)
		} else {
			if hasBody && eng != nil && pr.attempt == 0 && attempts > 1 && policy.ReplayLimit >= 0 && multiplexed(pr.Out.URL.Scheme) {
				// An HTTP/2 upstream may refuse a stream unprocessed
				// (REFUSED_STREAM, GOAWAY): keep the body so that the
				// transport can send it again, whatever the method.
				limit := policy.ReplayLimit
				if limit == 0 {
					limit = DefaultReplayLimit
				}
				pr.body.keepFor(limit, pr.Out.ContentLength)
				pr.Out.GetBody = pr.body.getBody
			}
			if !traced {
				pr.traceRequest()
				traced = true
			}
			if eng != nil {
				res, err = eng.roundTrip(pr.Out)
			} else {
				res, err = p.transport.RoundTrip(pr.Out)
			}
		}
		if err == nil {
			pr.attemptAnswered(res.StatusCode)
			if obs != nil || done != nil {
				ob := &observedBody{rc: res.Body, obs: obs, done: done, pr: pr,
					res: Result{Upstream: pr.Out.URL.Host, Status: res.StatusCode}, start: start}
				res.Body = ob
				// A 101 body is the upgraded connection: keep it writable.
				if rw, ok := ob.rc.(io.ReadWriter); ok && res.StatusCode == http.StatusSwitchingProtocols {
					res.Body = &observedConn{ob: ob, rw: rw}
				}
			}
			return res, nil
		}
		// The transport may still be reading the body of the failed
		// attempt (its writer goroutine): detach ends that, so what we
		// learn about the body is final and a retry never shares it.
		var bs bodyState
		if hasBody {
			bs = pr.body.detach()
		}
		switch {
		case bs.err != nil:
			err = clientBodyError(bs.err, pr.In.ProtoMajor == 2)
		case pr.In.Context().Err() != nil:
			err = fmt.Errorf("%w: %w", errClientGone, err)
		}
		pr.attemptFailed(err, obs, done)
		if !pr.retryable(err, policy, first, hasBody, bs) || pr.attempt+1 >= attempts {
			return nil, err
		}
		pr.logger().Debug("sluice: retrying", "upstream", pr.Out.URL.Host, "err", err)
		pr.tried = append(pr.tried, pr.Out.URL.Host)
		pr.attempt++
	}
}

// retryable reports whether the failed attempt may be made again.
func (pr *ProxyRequest) retryable(err error, policy *RetryPolicy, first time.Time, hasBody bool, bs bodyState) bool {
	var refused *dialRefusedError
	if errors.Is(err, errClientGone) || pr.sent1xx || bs.err != nil || errors.As(err, &refused) {
		return false
	}
	if policy.Duration > 0 && time.Since(first) > policy.Duration {
		return false
	}
	if !bs.started && (isConnectError(err) || !pr.wroteHeaders.Load()) {
		return true
	}
	if h2client.Unprocessed(err) && (!bs.started || bs.replayable) {
		return true // RFC 9113 §8.7: the upstream did no processing
	}
	if !policy.Idempotent || !h1wire.IsIdempotent(pr.Out.Method) {
		return false
	}
	return !hasBody || !bs.started || bs.replayable
}

// traceRequest attaches an httptrace.ClientTrace to the outbound request
// so that a RoundTripper other than sluice's engine reports 1xx
// responses and the writing of the request head.
func (pr *ProxyRequest) traceRequest() {
	var getConn time.Time
	trace := &httptrace.ClientTrace{
		Got100Continue: pr.got100Continue,
		Got1xxResponse: pr.got1xxResponse,
		WroteHeaders:   func() { pr.wroteHeaders.Store(true) },
		GetConn:        func(string) { getConn = time.Now() },
		GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused && !getConn.IsZero() {
				pr.rec.Connect = time.Since(getConn) // TLS handshake included
			}
		},
	}
	pr.Out = pr.Out.WithContext(httptrace.WithClientTrace(pr.Out.Context(), trace))
}

// exchangeHooks receives the events of sluice's own engine for one
// request without allocating a trace.
type exchangeHooks struct{ pr *ProxyRequest }

func (h *exchangeHooks) WroteHeaders() { h.pr.wroteHeaders.Store(true) }

func (h *exchangeHooks) GotConn(dial time.Duration) { h.pr.rec.Connect = dial }

func (h *exchangeHooks) Got1xx(code int, header http.Header) {
	if code == http.StatusContinue {
		h.pr.got100Continue()
		return
	}
	_ = h.pr.got1xxResponse(code, textproto.MIMEHeader(header))
}

// got100Continue relays the upstream's 100 Continue to the client. It runs
// before the transport starts sending the body, so the server's automatic
// 100 Continue (sent on the first body read) is never sent on its own: the
// client sees 100 only if the upstream sent it.
func (pr *ProxyRequest) got100Continue() {
	// RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
	if pr.w != nil && !pr.w.started() && pr.In.ProtoAtLeast(1, 1) {
		pr.sent1xx = true
		pr.w.WriteHeader(http.StatusContinue)
	}
}

// got1xxResponse relays other informational responses, such as 103 Early
// Hints, with their headers (RFC 9110 §15.2).
func (pr *ProxyRequest) got1xxResponse(code int, header textproto.MIMEHeader) error {
	if code == http.StatusContinue || pr.w == nil || pr.w.started() || !pr.In.ProtoAtLeast(1, 1) {
		return nil // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
	}
	h := pr.w.Header()
	saved := make(http.Header, len(h))
	copyHeader(saved, h)
	removeHopByHop(http.Header(header))
	copyHeader(h, http.Header(header))
	pr.sent1xx = true
	pr.w.WriteHeader(code)
	clear(h)
	copyHeader(h, saved)
	return nil
}

// WriteResponse writes an upstream response to w: hop-by-hop headers are
// removed, the headers of ProxyRequest.ResponseHeader are added, the
// ProxyRequest's BodyFilter (if any) is applied, and the body is streamed
// with the Proxy's flush policy, followed by the trailers. The body is not
// closed.
func (pr *ProxyRequest) WriteResponse(w http.ResponseWriter, res *http.Response) error {
	connection := res.Header["Connection"] // names hop-by-hop trailers too
	sanitizeResponseHeader(res.Header, "")
	if pr.BodyFilter != nil {
		if err := pr.filterResponse(res); err != nil {
			return err
		}
	}
	hasBody := pr.In.Method != http.MethodHead && bodyAllowed(res.StatusCode)
	if r, ok := res.Body.(interface{ Ready() error }); ok && hasBody && res.ContentLength > 0 {
		// The head waits for the body's first byte (it would wait in
		// the server's buffer anyway): an upstream that fails before
		// it gets an error status, not a head and a cut connection.
		// (Before the head is copied: the error answer has its own.)
		if err := r.Ready(); err != nil {
			return fmt.Errorf("reading upstream body before its first byte: %w", err)
		}
	}
	h := w.Header()
	for k, vv := range res.Header {
		h[k] = vv // res is consumed here: its value slices can be shared
	}
	mergeHeader(h, pr.respHeader)
	if pr.proxy.Via != "" {
		addVia(h, res.ProtoMajor, res.ProtoMinor, pr.proxy.Via)
	}
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			if pr.proxy.trailerAllowed(k, connection) {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			h["Trailer"] = keys
			if pr.In.ProtoMajor == 1 {
				// HTTP/1.1 carries trailers only in chunked framing (RFC
				// 9112 §7.1.2), and an HTTP/2 upstream may send both a
				// Content-Length and trailers: the length goes, or the
				// server would frame by it and drop the trailers.
				delete(h, "Content-Length")
			}
		}
	}
	w.WriteHeader(res.StatusCode)
	if !hasBody {
		return nil
	}
	if res.ProtoMajor == 2 && res.ContentLength < 0 {
		// An HTTP/2 stream (a gRPC call, say): its head goes out now, as
		// the upstream sent it, not with the first piece of the body,
		// which a client waiting for the head (gRPC header metadata)
		// may never cause. A response that ended with its head (gRPC's
		// trailers-only errors) has ContentLength 0 and stays in one
		// frame.
		_ = http.NewResponseController(w).Flush()
	}
	if err := pr.copyResponse(w, res); err != nil {
		return &abortError{err}
	}
	if len(res.Trailer) > 0 {
		declared := make(map[string]bool, len(h["Trailer"]))
		for _, k := range h["Trailer"] {
			declared[k] = true
		}
		for k, vv := range res.Trailer {
			if !pr.proxy.trailerAllowed(k, connection) {
				continue
			}
			if !declared[k] {
				k = http.TrailerPrefix + k
			}
			h[k] = vv
		}
	}
	return nil
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// abortError wraps a failure that happened after the response started.
type abortError struct{ err error }

func (e *abortError) Error() string { return "response aborted: " + e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// flushInterval returns how often a response is flushed: always for
// streams of unknown length and server-sent events.
func (pr *ProxyRequest) flushInterval(res *http.Response) time.Duration {
	if res.ContentLength == -1 {
		return -1
	}
	if isEventStream(res.Header.Get("Content-Type")) {
		return -1
	}
	return pr.proxy.FlushInterval
}

// isEventStream reports whether a Content-Type is text/event-stream,
// whatever its parameters and case, without allocating.
func isEventStream(ct string) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	rest := strings.TrimLeft(ct[len(es):], " \t")
	return rest == "" || rest[0] == ';'
}

const copyBufferSize = 32 << 10

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyResponse streams the response body to w. Memory is one pooled
// buffer whatever the body size; backpressure comes from blocking writes.
func (pr *ProxyRequest) copyResponse(w http.ResponseWriter, res *http.Response) error {
	interval := pr.flushInterval(res)
	dst := io.Writer(w)
	if interval != 0 {
		fw := &flushWriter{w: w, rc: http.NewResponseController(w), latency: interval}
		defer fw.stop()
		dst = fw
		switch {
		case isEventStream(res.Header.Get("Content-Type")):
			// An event stream's head is the client's "open" event.
			_ = fw.rc.Flush()
		case interval < 0:
			// A stream of unknown length (a long poll, a slow chunked
			// answer): its head goes with the first body bytes, or by
			// itself if they are slow to come.
			fw.flushHeadAfter(streamHeadDelay)
		}
	}
	if wt, ok := res.Body.(io.WriterTo); ok && interval == 0 {
		// The engine's bodies of known length move socket to socket
		// (splice) through the server's ReadFrom.
		if _, err := wt.WriteTo(dst); err != nil {
			return fmt.Errorf("streaming response body: %w", err)
		}
		return nil
	}
	bp := copyBufferPool.Get().(*[]byte)
	defer copyBufferPool.Put(bp)
	err := copyBody(dst, res.Body, *bp)
	if err == nil && interval == 0 && res.ContentLength < 0 {
		err = http.NewResponseController(w).Flush()
	}
	return err
}

// copyBody is io.CopyBuffer without the io.ReaderFrom and io.WriterTo
// detours, telling read errors (upstream) from write errors (client).
func copyBody(dst io.Writer, src io.Reader, buf []byte) error {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return fmt.Errorf("%w: %w", errClientGone, werr)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading upstream body: %w", rerr)
		}
	}
}

// flushWriter flushes after every write (latency < 0) or at most latency
// after a write.
type flushWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	latency time.Duration

	mu      sync.Mutex
	t       *time.Timer
	pending bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	if f.latency < 0 {
		f.pending = false
		return n, f.rc.Flush()
	}
	if f.pending {
		return n, nil
	}
	f.pending = true
	if f.t == nil {
		f.t = time.AfterFunc(f.latency, f.delayedFlush)
	} else {
		f.t.Reset(f.latency)
	}
	return n, nil
}

// streamHeadDelay is how long the head of a response of unknown length
// waits for its first body bytes before it is sent alone.
const streamHeadDelay = 100 * time.Millisecond

// flushHeadAfter flushes what was written (the head) after d unless a
// write flushed it first.
func (f *flushWriter) flushHeadAfter(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = true
	f.t = time.AfterFunc(d, f.delayedFlush)
}

func (f *flushWriter) delayedFlush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pending {
		return
	}
	f.pending = false
	_ = f.rc.Flush()
}

func (f *flushWriter) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = false
	if f.t != nil {
		f.t.Stop()
	}
}

// requestBody is the inbound request body as the attempts of one
// exchange read it. It counts what was read (to know whether a retry is
// safe) and keeps the transport from closing the inbound body, which
// belongs to the server. With a limit, it also keeps the bytes read, up
// to limit, so that a retry can send the body again: the kept bytes
// first, then the rest of the inbound body.
//
// Each attempt reads through its own attemptBody, from the transport's
// writer goroutine while the handler's goroutine looks at the counters.
// detach ends the current attempt's access: reads are serialized, bytes
// an abandoned attempt read are kept for the next one (or make it fail
// if they cannot be: never a body with a hole), and the counters the
// retry decision reads are final.
type requestBody struct {
	rc      io.ReadCloser
	mu      sync.Mutex
	cond    sync.Cond    // signaled when a read from rc ends; L is &mu
	reading bool         // a read from rc is in progress (without mu)
	cur     *attemptBody // the attempt allowed to read; others get errDetached
	n       int64        // bytes read from rc
	eof     bool
	err     error  // the first read error other than io.EOF
	limit   int64  // bytes kept for replay; 0: none
	kept    []byte // the first n bytes of rc while n <= limit
	over    bool   // more than limit bytes were read: kept is gone
	first   attemptBody

	// The inbound request whose trailers go, filtered, to trailer (the
	// outbound request's) when rc ends; see trailersTo.
	trProxy *Proxy
	trIn    *http.Request
	trOwned []*headerNames
	trailer http.Header
}

// attemptBody is the body one attempt's transport reads. Attempts are
// told apart by address: a writer that outlived its exchange holds a
// pointer no later exchange's requestBody names as current.
type attemptBody struct {
	b   *requestBody
	pos int64 // bytes of the body delivered to this attempt
}

// bodyState is what a failed attempt left of the body.
type bodyState struct {
	started    bool // bytes were read (or the body ended)
	replayable bool // everything read was kept
	err        error
}

var (
	errDetached    = errors.New("sluice: request body of an abandoned attempt")
	errReplayShort = errors.New("sluice: request body cannot be replayed")
)

// start prepares b for rc; limit > 0 keeps that many bytes for replay.
func (b *requestBody) start(rc io.ReadCloser, limit, contentLength int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cond.L = &b.mu
	b.rc, b.cur, b.n, b.eof, b.err = rc, nil, 0, false, nil
	b.limit, b.kept, b.over = limit, nil, false
	if limit > 0 && contentLength > 0 {
		b.kept = make([]byte, 0, contentLength)
	}
	b.first = attemptBody{}
	b.trProxy, b.trIn, b.trOwned, b.trailer = nil, nil, nil, nil
}

// keepFor starts keeping the body for replay, up to limit bytes, if it
// is not kept yet and nothing was read from it: an attempt decides it
// once the Director picked an HTTP/2-capable upstream. A body known to
// be longer than limit is not kept.
func (b *requestBody) keepFor(limit, contentLength int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 || b.n > 0 || b.reading || b.eof || contentLength > limit {
		return
	}
	b.limit = limit
	if contentLength > 0 {
		b.kept = make([]byte, 0, contentLength)
	}
}

// getBody is the outbound request's GetBody, which an HTTP/2 transport
// calls to send again a request the upstream refused unprocessed: it
// returns the body for a new attempt if the bytes read so far were kept
// (or none were read), and an error wrapping h2client.ErrUnprocessed
// otherwise. It never waits for a read in progress, which may wait for
// the client; a byte that read delivers is kept, or makes the new
// attempt fail (never a body with a hole).
func (b *requestBody) getBody() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, fmt.Errorf("%w; reading the request body failed: %w", h2client.ErrUnprocessed, b.err)
	}
	if !(b.limit > 0 && !b.over) && (b.n > 0 || b.reading) {
		return nil, fmt.Errorf("%w; its body was partly sent and not kept for replay (RetryPolicy.ReplayLimit)", h2client.ErrUnprocessed)
	}
	b.cur = &attemptBody{b: b}
	return b.cur, nil
}

// trailersTo makes the end of the body copy the trailers of pr.In (known
// only once its body was read to the end) that Proxy.trailerAllowed lets
// through into pr.Out.Trailer, the map the transport writes after the
// last chunk. Values a hook already set there are kept.
func (b *requestBody) trailersTo(pr *ProxyRequest) {
	if pr.Out.Trailer == nil {
		return // no chunked body, or a hook wants no trailers
	}
	b.mu.Lock()
	b.trProxy, b.trIn, b.trOwned, b.trailer = pr.proxy, pr.In, pr.owned, pr.Out.Trailer
	b.mu.Unlock()
}

// attempt returns the body for the next attempt; the first one costs no
// allocation.
func (b *requestBody) attempt() *attemptBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.first.b == nil {
		b.first = attemptBody{b: b}
		b.cur = &b.first
	} else {
		b.cur = &attemptBody{b: b}
	}
	return b.cur
}

// detach ends the current attempt's access to the body, waiting for a
// read in progress, and reports the body's state.
func (b *requestBody) detach() bodyState {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.reading {
		b.cond.Wait()
	}
	b.cur = nil
	return bodyState{started: b.n > 0 || b.eof, replayable: b.limit > 0 && !b.over, err: b.err}
}

// finished reports whether no transport will read the body again: it
// was never used, or it ended (EOF or an error) and no read is in
// progress. Only then may it serve another exchange.
func (b *requestBody) finished() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rc == nil || !b.reading && (b.eof || b.err != nil)
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	b.mu.Lock()
	for b.reading {
		b.cond.Wait()
	}
	switch {
	case b.cur != a:
		b.mu.Unlock()
		return 0, errDetached
	case a.pos < int64(len(b.kept)):
		n := copy(p, b.kept[a.pos:])
		a.pos += int64(n)
		b.mu.Unlock()
		return n, nil
	case a.pos < b.n:
		b.mu.Unlock()
		return 0, errReplayShort
	case b.eof:
		b.mu.Unlock()
		return 0, io.EOF
	case b.err != nil:
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.rc.Read(p)

	b.mu.Lock()
	b.reading = false
	b.n += int64(n)
	a.pos += int64(n)
	if b.limit > 0 && !b.over && n > 0 {
		if b.n > b.limit {
			b.over, b.kept = true, nil
		} else {
			b.kept = append(b.kept, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
		if b.trailer != nil {
			// Before the transport, which called Read, writes b.trailer.
			connection := b.trIn.Header["Connection"]
			for k, vv := range b.trIn.Trailer {
				if len(b.trailer[k]) == 0 && len(vv) > 0 && b.trProxy.trailerAllowed(k, connection) && !ownedName(b.trOwned, k) {
					b.trailer[k] = vv
				}
			}
		}
	} else if err != nil && b.err == nil {
		b.err = err
	}
	if err != nil {
		b.trProxy, b.trIn, b.trOwned, b.trailer = nil, nil, nil, nil
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	return n, err
}

// Close keeps the transport from closing the inbound body.
func (a *attemptBody) Close() error { return nil }

// clientBodyError classifies a failure to read the inbound request body:
// the client was silent for longer than the server allows (408, see
// Server.BodyIdleTimeout), went away (499), sent too much (413) or sent a
// malformed body, e.g. broken chunked framing (400). An HTTP/2 body has
// no framing of its own to get wrong: a failed read there is a stream
// reset (by the client, or by the server for a protocol error) or a lost
// connection, with nobody left to answer.
func clientBodyError(err error, http2 bool) error {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Status: http.StatusRequestTimeout, Err: fmt.Errorf("%w: reading request body: %w", errClientTimeout, err)}
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("reading request body: %w", err)}
	case http2, errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: reading request body: %w", errClientGone, err)
	}
	return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("malformed request body: %w", err)}
}

// observedBody reports the end of a response body to an Observer and to
// the function OnAttempt returned.
type observedBody struct {
	rc    io.ReadCloser
	obs   Observer
	done  func(Result)
	pr    *ProxyRequest
	res   Result
	start time.Time
	once  sync.Once
}

func (b *observedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.failed(err)
	}
	return n, err
}

// failed records why the body broke off. When the client's context is
// done by then, the body broke off because the client went away or
// stopped reading (the engine closes the upstream connection when the
// exchange is canceled; a splice fails on the client's side as well as
// the upstream's): the Result then says so, as the Record does and as a
// failed attempt's does, so that the Observer's statistics and passive
// health never count a client's departure against the upstream.
func (b *observedBody) failed(err error) {
	if b.pr.In.Context().Err() != nil && !errors.Is(err, errClientGone) {
		err = fmt.Errorf("%w: %w", errClientGone, err)
	}
	b.res.Err = err
}

// Ready passes the engine body's Ready through (see WriteResponse), so
// that an Observer's exchanges get the same clear answer when the body
// fails before its first byte; the failure is the attempt's.
func (b *observedBody) Ready() error {
	r, ok := b.rc.(interface{ Ready() error })
	if !ok {
		return nil
	}
	err := r.Ready()
	if err != nil {
		b.failed(err)
	}
	return err
}

// observedConn stands for an observedBody whose response is a 101: its
// body is the upgraded connection, which the tunnel reads, writes and
// half-closes from two goroutines. The Observer hears of it once, when
// the tunnel closes it; tunnel errors are no failure of the upstream.
type observedConn struct {
	ob *observedBody
	rw io.ReadWriter
}

func (c *observedConn) Read(p []byte) (int, error)  { return c.rw.Read(p) }
func (c *observedConn) Write(p []byte) (int, error) { return c.rw.Write(p) }
func (c *observedConn) Close() error                { return c.ob.Close() }

// CloseWrite half-closes the upstream connection when it can.
func (c *observedConn) CloseWrite() error {
	if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// WriteTo keeps the engine's zero-copy path when the body has one.
func (b *observedBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var err error
	if wt, ok := b.rc.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		bp := copyBufferPool.Get().(*[]byte)
		defer copyBufferPool.Put(bp)
		n, err = io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{b.rc}, *bp)
	}
	if err != nil {
		b.failed(err)
	}
	return n, err
}

func (b *observedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(func() {
		if b.res.Err != nil {
			// The client's departure may be noticed after the error
			// (net/http's server notices a reset client from its
			// background read, not from a failed splice).
			b.failed(b.res.Err)
		}
		b.res.Duration = time.Since(b.start)
		if b.obs != nil {
			b.obs.Observe(b.pr, b.res)
		}
		if b.done != nil {
			b.done(b.res)
		}
	})
	return err
}

// outboundRequest builds the outbound request from the inbound one: same
// method, URL path and query, header (copied), body and framing; no
// RequestURI, and the context of the inbound request.
func outboundRequest(in *http.Request) *http.Request {
	out := new(http.Request)
	*out = *in
	out.URL = cloneURL(in.URL)
	out.Header = in.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.RequestURI = ""
	out.Close = false
	out.TransferEncoding = nil
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	if in.ContentLength == 0 && len(in.TransferEncoding) == 0 {
		out.Body = nil
	}
	out.Trailer = nil
	if in.Trailer != nil || out.Body != nil && in.ContentLength < 0 {
		// Out's own map, never In's: the inbound trailers are known only
		// when the body ends, and then only those trailerAllowed passes
		// are copied in (see requestBody.trailersTo). Until then it
		// holds the announced names, so that the upstream gets a Trailer
		// header too.
		out.Trailer = make(http.Header, len(in.Trailer))
		for k := range in.Trailer {
			out.Trailer[k] = nil
		}
	}
	return out
}

// notTrailers are the fields that RFC 9110 §6.5.1 rules out of a trailer
// section because they are needed before the content is processed, as
// RFC 7230 §4.1.2 listed them: message framing, routing, request
// modifiers (the controls and conditionals of RFC 9110 §7.6.2, §10.1 and
// §13.1), authentication (RFC 9110 §11, RFC 6265 cookies), response
// control data (RFC 9110 §10.2, RFC 9111 §5) and content metadata (RFC
// 9110 §8); and the hop-by-hop fields of RFC 9110 §7.6.1.
var notTrailers = map[string]bool{
	// framing
	"Content-Length": true, "Transfer-Encoding": true, "Trailer": true,
	// routing
	"Host": true,
	// request controls and conditionals
	"Cache-Control": true, "Expect": true, "Max-Forwards": true, "Pragma": true,
	"Range": true, "Te": true, "If-Match": true, "If-None-Match": true,
	"If-Modified-Since": true, "If-Unmodified-Since": true, "If-Range": true,
	// authentication
	"Authorization": true, "Proxy-Authorization": true, "Www-Authenticate": true,
	"Proxy-Authenticate": true, "Cookie": true, "Set-Cookie": true,
	// response control data
	"Age": true, "Date": true, "Expires": true, "Location": true, "Retry-After": true,
	"Vary": true, "Warning": true,
	// content metadata
	"Content-Type": true, "Content-Encoding": true, "Content-Range": true,
	"Content-Language": true, "Content-Location": true,
	// hop-by-hop
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Upgrade": true,
	"Http2-Settings": true,
}

// trailerAllowed reports whether a trailer field may be passed on: in a
// request's trailers to the upstream, or in a response's to the client.
// Refused are the fields of notTrailers (RFC 9110 §6.5.1), those named in
// the message's Connection header (RFC 9110 §7.6.1), and the fields the
// proxy owns (Forwarded, X-Forwarded-*, X-Real-Ip, Via and the Proxy's
// IdentityHeaders), in any case and in any spelling that a CGI-style
// upstream reads as the same name (X_Forwarded_For): a trailer comes
// after the proxy sanitized the header, and some servers merge trailers
// into the header. End-to-end trailers such as Grpc-Status, Grpc-Message,
// Server-Timing or checksums pass.
func (p *Proxy) trailerAllowed(name string, connection []string) bool {
	if !httpguts.ValidHeaderFieldName(name) {
		return false
	}
	canon := dashedName(name)
	if notTrailers[canon] || isForwardingName(canon) || isTargetOverride(canon) || canon == "Via" || p.identity.matches(canon) {
		return false
	}
	return !httpguts.HeaderValuesContainsToken(connection, name) &&
		!httpguts.HeaderValuesContainsToken(connection, canon)
}

// ownedName reports whether a header name, in any spelling, is one of
// the names hooks own for a request (ProxyRequest.owned).
func ownedName(owned []*headerNames, name string) bool {
	if len(owned) == 0 {
		return false
	}
	canon := dashedName(name)
	for _, n := range owned {
		if n.matches(canon) {
			return true
		}
	}
	return false
}

func cloneURL(u *url.URL) *url.URL {
	u2 := new(url.URL)
	*u2 = *u
	if u.User != nil {
		u2.User = new(url.Userinfo)
		*u2.User = *u.User
	}
	u2.Scheme, u2.Host = "", ""
	return u2
}

// unixHost is the Host header of a request to a unix: upstream whose
// Director left the outbound Host empty (as SetURL does), as curl
// --unix-socket and nginx send it.
const unixHost = "localhost"

// engine is the default transport: sluice's own HTTP/1.1 client for
// http:// and unix: upstreams (pooled connections that hold no goroutine
// or buffer while idle, no per-request trace, splice for bodies of known
// length), and h2client for https:// (HTTP/2 when the upstream offers it by ALPN,
// HTTP/1.1 otherwise) and h2c:// (HTTP/2 over cleartext TCP with prior
// knowledge).
type engine struct {
	h1   *h1client.Client
	h2   *h2client.Client
	idle time.Duration // UpstreamIdleTimeout for exchanges through h2; 0: none
}

// multiplexed reports whether the engine may speak HTTP/2 to a target of
// that scheme.
func multiplexed(scheme string) bool { return scheme == "https" || scheme == "h2c" }

// RoundTrip implements http.RoundTripper for the hooks that call the
// engine directly (auth subrequests, object storage, send-file).
func (e *engine) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Scheme {
	case "http":
		return e.h1.RoundTrip(req)
	case "unix":
		if req.Host == "" {
			r := *req
			r.Host = unixHost
			req = &r
		}
		return e.h1.RoundTrip(req)
	case "h2c":
		r := *req
		u := *req.URL
		r.URL = &u
		req = &r
	}
	return e.roundTrip(req)
}

// roundTrip sends req through h2client; an h2c:// URL is changed into the
// http:// one it stands for (the HTTP/2 ":scheme" is "http").
func (e *engine) roundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "h2c" {
		req.URL.Scheme = "http"
	} else if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%w: scheme %q", errBadTarget, req.URL.Scheme)
	}
	if e.idle > 0 && req.Header.Get("Upgrade") == "" {
		return roundTripIdle(e.h2, req, e.idle)
	}
	return e.h2.RoundTrip(req)
}

func (e *engine) CloseIdleConnections() {
	e.h1.CloseIdleConnections()
	e.h2.CloseIdleConnections()
}

// newEngine builds the default transport from the Proxy's timeouts and
// pool limits and its upstream TLS configuration. Neither client
// negotiates compression of its own (the client's Accept-Encoding passes
// through untouched) or takes a proxy from the environment.
//
// check, if not nil, makes the engine of exchanges with a DialCheck: its
// dialers call it with each address before connecting, and the HTTP/1.1
// pool before reusing a connection.
func (p *Proxy) newEngine(check func(context.Context, netip.AddrPort) error) *engine {
	dial := p.DialTimeout
	if dial == 0 {
		dial = DefaultDialTimeout
	}
	rht := p.ResponseHeaderTimeout
	switch {
	case rht == 0:
		rht = DefaultResponseHeaderTimeout
	case rht < 0:
		rht = 0
	}
	idle := p.IdleConnTimeout
	if idle == 0 {
		idle = DefaultIdleConnTimeout
	}
	perHost := p.MaxIdleConnsPerHost
	if perHost == 0 {
		perHost = DefaultMaxIdleConnsPerHost
	}
	upIdle := p.UpstreamIdleTimeout
	if upIdle == 0 {
		upIdle = DefaultUpstreamIdleTimeout
	}
	return &engine{
		h1: &h1client.Client{
			DialTimeout:           dial,
			ResponseHeaderTimeout: rht,
			IdleConnTimeout:       idle,
			MaxIdleConnsPerHost:   perHost,
			ExpectContinueTimeout: DefaultExpectContinueTimeout,
			ReadIdleTimeout:       upIdle,
			WriteIdleTimeout:      upIdle,
			Logger:                p.Logger,
			CheckAddr:             check,
		},
		h2: h2client.New(h2client.Config{
			DialTimeout:           dial,
			ResponseHeaderTimeout: rht,
			IdleConnTimeout:       idle,
			MaxIdleConnsPerHost:   perHost,
			ExpectContinueTimeout: DefaultExpectContinueTimeout,
			TLS:                   p.UpstreamTLS,
			TLSFor:                p.UpstreamTLSFor,
			CheckAddr:             check,
		}),
		idle: max(upIdle, 0),
	}
}

// checkedEngine returns the engine of exchanges with a DialCheck, made on
// first use.
func (p *Proxy) checkedEngine() *engine {
	if e := p.checked.Load(); e != nil {
		return e
	}
	e := p.newEngine(checkAddr)
	if p.checked.CompareAndSwap(nil, e) {
		return e
	}
	return p.checked.Load()
}
