package sluice

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Default limits used when the corresponding Proxy field is zero.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxIdleConnsPerHost   = 256
	DefaultExpectContinueTimeout = 1 * time.Second
	DefaultUpstreamIdleTimeout   = 60 * time.Second
)

// Proxy is an HTTP handler that forwards requests to upstream servers,
// letting a few routes capture requests to do something special with them
// (see Handle) and passing everything else through untouched.
//
// The zero value is usable once Director (or Fallback) is set. Fields must
// not be changed after the first call to ServeHTTP; routes may be added with
// Handle at any time.
//
// Every request goes through the same pipeline:
//
//  1. sanitize: malformed or smuggling input is refused, the request target
//     is put in its one canonical spelling (which every later step and the
//     upstream see: docs/security.md), hop-by-hop headers are removed, the
//     client identity is computed and the outbound request
//     (ProxyRequest.Out) is built from the inbound one (ProxyRequest.In);
//  2. route: the first route whose pattern matches claims the request;
//  3. authorize: Authorizer, then the route's own Authorizer;
//  4. intercept: the route's Interceptor handles the request, usually ending
//     in ProxyRequest.Forward; a request no route claims is forwarded as is;
//  5. direct and stream: the Director picks the upstream, the engine sends
//     the request and streams the response back.
type Proxy struct {
	// Director picks the upstream for every forwarded request.
	// If nil, requests that no route answers locally are served by Fallback.
	Director Director

	// Authorizer decides whether a request may proceed at all. It runs
	// before any route's Interceptor and before the route's own Authorizer.
	// If nil, every request is allowed.
	Authorizer Authorizer

	// IdentityHeaders are headers that only the proxy's hooks may set,
	// such as "X-Sluice-User-Email": they are deleted from every inbound
	// request while the outbound one is built, before any hook runs, so a
	// client can never choose the identity the upstream sees. An entry
	// ending in "*" names a prefix ("X-Sluice-*"). ProxyRequest.In keeps
	// what the client sent. See package identity to sign them.
	IdentityHeaders []string

	// Fallback serves the requests the Proxy does not forward: every
	// request when Director is nil, and requests for which the Director
	// returns ErrNoRoute. It lets a Proxy wrap an existing http.Handler.
	// The handler gets the request as it would have gone upstream, as
	// safe as forwarding: the canonical target, IdentityHeaders and
	// forged forwarding headers removed, forwarding headers set, and what
	// the Authorizers added; hop-by-hop fields are gone. If nil, those
	// requests get 404 Not Found.
	Fallback http.Handler

	// KeepEncodedSlashes keeps an encoded slash ("%2F") in a request path
	// as an opaque part of its segment, for APIs whose path segments hold
	// slashes (object keys). By default such a request is refused with 400,
	// since upstreams disagree on whether "/a%2F..%2Fb" is one segment or
	// "/b", and a proxy that decides on one reading while the upstream
	// acts on the other can be bypassed. Set it only when every upstream
	// treats "%2F" as data, never as a separator; routes then match the
	// encoded form segment by segment. See docs/security.md.
	KeepEncodedSlashes bool

	// Transport carries requests to the upstreams.
	// If nil, the Proxy uses its own engine, built from the timeout,
	// pool and TLS fields below: sluice's HTTP/1.1 client for http://
	// upstreams (the fast path: no idle goroutines, splice for large
	// bodies); for https:// upstreams HTTP/2 when they offer it by ALPN,
	// HTTP/1.1 otherwise; for h2c:// upstreams HTTP/2 over cleartext TCP
	// with prior knowledge (docs/upstream-protocols.md). A Transport set
	// here gets every request, h2c:// URLs as they are.
	Transport http.RoundTripper

	// UpstreamTLS configures TLS to https:// upstreams: the CAs trusted
	// (RootCAs), a client certificate for mutual TLS (Certificates or
	// GetClientCertificate), the server name verified and sent by SNI
	// (ServerName; if empty, the target's host), the lowest version
	// (MinVersion). HTTP/2 is offered by ALPN unless NextProtos says
	// otherwise. It is cloned for each connection. If nil, the system's
	// roots and Go's defaults. Not used when Transport is set.
	UpstreamTLS *tls.Config

	// UpstreamTLSFor, if not nil, returns the TLS configuration for the
	// https:// upstream at addr (host:port, as the Director set it),
	// instead of UpstreamTLS; a nil result means UpstreamTLS. It is
	// called for each new connection. Not used when Transport is set.
	UpstreamTLSFor func(addr string) *tls.Config

	// DialTimeout bounds connecting to an upstream.
	// If zero, DefaultDialTimeout is used.
	DialTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers after the request was sent. It never cuts a response body
	// that is still making progress. If zero,
	// DefaultResponseHeaderTimeout is used; if negative, there is none.
	ResponseHeaderTimeout time.Duration

	// UpstreamIdleTimeout bounds how long an exchange under way may wait
	// for the upstream without progress: for it to take more of the
	// request (head or body), or to send more of the response body (as
	// nginx's proxy_send_timeout and proxy_read_timeout). A stalled
	// exchange fails with a timeout: 504 Gateway Timeout if the response
	// has not started, an aborted client connection if it has. Progress
	// resets the bound, so a slow but steady transfer is never cut, and
	// time spent waiting for the client does not count. The wait for the
	// response head is ResponseHeaderTimeout's.
	//
	// It applies to the Proxy's own engine (Transport nil): on the socket
	// for http:// and unix: upstreams, and per exchange (per stream) for
	// https:// and h2c:// ones, whose HTTP/2 connections carry other,
	// quiet streams and are checked with PINGs (docs/timeouts.md). If
	// zero, DefaultUpstreamIdleTimeout is used; if negative, there is none.
	UpstreamIdleTimeout time.Duration

	// IdleConnTimeout is how long an idle upstream connection stays in the
	// pool. If zero, DefaultIdleConnTimeout is used.
	IdleConnTimeout time.Duration

	// MaxIdleConnsPerHost bounds the idle upstream connections kept per
	// upstream. If zero, DefaultMaxIdleConnsPerHost is used.
	MaxIdleConnsPerHost int

	// ClientIdleTimeout bounds the client's idleness where the server in
	// front does not: behind http.Server over HTTP/1.x, a read of the
	// request body waits at most this long for the client's next byte
	// (then 408 Request Timeout, and the upstream sees the request
	// aborted) and a write of the response at most this long for the
	// client to take bytes (then the response is aborted). Bytes that
	// move renew it, so slow but steady clients are never cut (a client
	// must take 128 KiB of a spliced body per bound). It works through
	// the server's deadlines (http.ResponseController's), and is not
	// applied: behind sluice.Server, whose BodyIdleTimeout and
	// WriteIdleTimeout do the same; in a direction for which the
	// http.Server has a ReadTimeout or WriteTimeout of its own; over
	// HTTP/2, whose stream deadlines are timers that would also end a
	// stream whose upstream pauses; to upgraded connections, which have
	// WebSocketConfig.IdleTimeout. See docs/timeouts.md. If zero,
	// DefaultClientIdleTimeout; if negative, none.
	ClientIdleTimeout time.Duration

	// FlushInterval is how often a streamed response is flushed to the
	// client. Responses of unknown length and text/event-stream responses
	// are always flushed after every write; the head of an event stream
	// goes out at once, that of another response of unknown length (a
	// long poll) with its first body bytes or, if they take longer than
	// 100 ms, by itself. If zero, a response is flushed
	// when the proxy's write buffer fills and when it ends; if negative,
	// after every write.
	FlushInterval time.Duration

	// TrustedProxies are the peers whose X-Forwarded-* and Forwarded
	// headers are believed and extended. From any other peer these headers
	// are replaced, so a client cannot choose the identity the upstream
	// sees. If nil, no peer is trusted.
	TrustedProxies []netip.Prefix

	// Via, if not empty, is the pseudonym the proxy adds to the Via header
	// of requests and responses (RFC 9110 §7.6.3), e.g. "sluice".
	Via string

	// Retry says which failed upstream exchanges are tried again. Only
	// safe retries are ever made; see RetryPolicy. If nil, a request is
	// retried once on another upstream pick when the connection to the
	// first one could not be made.
	Retry *RetryPolicy

	// ErrorHandler writes the response for a failed exchange whose
	// response has not started. The status suggested by StatusFor is
	// available through the error. If nil, the Proxy writes a short plain
	// text body with StatusFor(err).
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Logger receives one line per failed exchange (with its request ID
	// when RequestIDHeader is set). If nil, slog.Default()
	// is used.
	Logger *slog.Logger

	// OnExchange, if not nil, gets the Record of every exchange, once,
	// when it ends: after the response body, the error page, the denial,
	// the abort, the end of the tunnel. It runs on the request's
	// goroutine before ServeHTTP returns (a slow hook holds the
	// connection), or, for a tunnel (upgrades, CONNECT), on the tunnel's
	// goroutine when it ends, after ServeHTTP returned; the Record is
	// valid only during the call. Package
	// accesslog writes access log lines from it. Filling the Record in
	// costs no allocation.
	OnExchange func(rec *Record)

	// OnAttempt, if not nil, is called for each attempt to reach an
	// upstream, once the Director picked it and before the request is
	// sent: it may add fields to pr.Out (a trace context) and put values
	// in its context. The function it returns, if not nil, gets how the
	// attempt ended: when it failed, or when its response body was closed
	// (for a 101, when the tunnel ended). It serves upstream metrics and
	// client spans; Observer is the Director's own view of the same.
	OnAttempt func(pr *ProxyRequest) func(Result)

	// RequestIDHeader, if not empty, turns request IDs on, under that
	// header name (usually "X-Request-ID"): a valid ID (1 to 128 visible
	// ASCII characters) sent by a peer in TrustedProxies is kept, any
	// other request gets a new one (32 hex digits). The ID goes upstream
	// in that header, back to the client in the response, into every log
	// line of the Proxy and into the Record. If empty, the Proxy adds no
	// such header (a transparent proxy changes nothing by default) and a
	// client's is forwarded as any other field.
	RequestIDHeader string

	// MaxInFlight bounds the requests the Proxy handles at once, counted
	// from the call of ServeHTTP until it returns. A request beyond it is
	// answered at once, before anything else is done with it, with 503
	// Service Unavailable and Retry-After: 1 (through ErrorHandler if
	// set); its Record has ErrorClass "overload", and refusals are logged
	// at warning level at most once a second, with their count. Nothing
	// waits in a queue: a proxy at its bound sheds what it cannot serve
	// now, and the client, or the load balancer in front, retries
	// (docs/limits.md). An upgraded connection or CONNECT tunnel counts
	// until it is switched: open tunnels and sessions hold no slot (each
	// holds a client connection, which Server.MaxConns bounds). If zero,
	// 16384; if negative, no bound.
	MaxInFlight int

	// MaxPerClient, if positive, bounds the requests of one client the
	// Proxy handles at once (counted as MaxInFlight counts); a request
	// beyond it is answered 429 Too Many Requests with Retry-After: 1,
	// logged and recorded as MaxInFlight's refusals are. A client is
	// ClientKey's answer or, if ClientKey is nil, its address as
	// ClientAddr gives it (the peer, or the client a peer of
	// TrustedProxies names), an IPv6 address by its /64 prefix (what one
	// subscriber usually gets, RFC 6177); requests whose client address
	// is unknown share one count. The table of counts has an entry only
	// for a client with a request in flight. If zero or negative, no
	// bound.
	MaxPerClient int

	// ClientKey, if not nil, names the client of a request for
	// MaxPerClient (an API key, a user name from a header a trusted
	// peer sets), in place of its address; a request for which it
	// returns "" is not counted. It runs once the request is sanitized
	// (pr.Out built, ClientAddr known), before routes and Authorizers.
	ClientKey func(pr *ProxyRequest) string

	// WebSocket configures upgraded connections and CONNECT tunnels. If
	// nil, WebSocket and other upgrades are tunnelled transparently with
	// default limits.
	WebSocket *WebSocketConfig

	initOnce  sync.Once
	transport http.RoundTripper
	checked   atomic.Pointer[engine] // for exchanges with a DialCheck
	identity  headerNames
	routes    routeTable
	shutdown  atomic.Bool
	conns     tunnelSet

	// MaxInFlight and MaxPerClient: limits.go.
	maxInFlight int64 // 0: no bound
	inFlight    atomic.Int64
	clients     clientTable
	shedBusy    shedLog
	shedClient  shedLog
}

// ProxyRequest is one request passing through a Proxy: the inbound request
// as the client sent it, and the outbound request that will be sent
// upstream. Hooks read In and edit Out.
//
// Out is sanitized before any hook sees it: hop-by-hop headers are gone,
// forwarding headers are set by the proxy, and its body is In's body. A
// ProxyRequest is valid only until the Proxy's ServeHTTP returns.
type ProxyRequest struct {
	// In is the request as received, with its target (URL, Host and
	// RequestURI) in the canonical spelling that every hook and the
	// upstream see; its header is the client's. Hooks must not modify it.
	In *http.Request

	// Out is the request that will be sent upstream. Its URL has no
	// scheme and host until a Director sets them with SetURL. Its Trailer
	// map is its own: the client's trailers that may be forwarded are
	// copied into it when the request body ends, so hooks read it only
	// after that.
	Out *http.Request

	// ModifyResponse, if not nil, is called with the upstream's response
	// before anything is written to the client. It may change the status
	// and headers, or replace the body; if it returns an error the
	// exchange fails with that error.
	ModifyResponse func(*http.Response) error

	// BodyFilter, if not nil, is called by WriteResponse with the
	// upstream's response, after ModifyResponse, and returns the filter
	// its body streams through, or nil to leave the body untouched. A
	// filtered response loses its Content-Length (it is sent chunked),
	// its strong ETag is weakened and a gzip or deflate body is decoded
	// first; see BodyFilter.
	BodyFilter func(*http.Response) BodyFilter

	// DialCheck, if not nil, is called with every address the Proxy is
	// about to connect to for this exchange, once its name is resolved
	// (so that the check holds however the name is spelled and whatever
	// the DNS answers), and an error refuses the connection: the
	// exchange fails with it, with its status if it is an *Error and 403
	// otherwise, and is not retried. It is what keeps a forward proxy
	// from reaching the network it runs in (package forward sets it).
	// Directors set it; it applies to the Proxy's own engine and to
	// CONNECT tunnels, and with a Transport set such an exchange fails
	// with 500. Connections made under a DialCheck are pooled apart and
	// never serve exchanges without one; a pooled HTTP/1.1 connection is
	// checked again before reuse, an HTTP/2 or HTTPS one is not, so a
	// Proxy should use one check for all its exchanges.
	DialCheck func(addr netip.AddrPort) error

	// ClientHello, if not nil, is called for a CONNECT tunnel with the
	// TLS ClientHello the client sends first through it, or with nil if
	// its first bytes are not a ClientHello, before any of them reach the
	// target. Nothing is decrypted (the ClientHello travels in the
	// clear), and every byte read is sent on. It lets a policy check the
	// server name the client really asks for (ServerName, from SNI)
	// against the CONNECT authority; with Encrypted Client Hello it is
	// the public name. An error closes the tunnel: the client already
	// has its 200. The ClientHello must arrive within 10 s and fit in
	// 64 KiB. Directors set it.
	ClientHello func(hello *tls.ClientHelloInfo) error

	proxy      *Proxy
	route      *route
	peer       netip.Addr // the TCP peer
	client     netip.Addr
	respHeader http.Header
	attempt    int
	tried      []string
	upgrade    string

	w            *responseWriter // the client's writer
	rw           responseWriter
	idleBody     idleBody     // Out.Body under ClientIdleTimeout
	body         *requestBody // kept with the pooled ProxyRequest; see releaseProxyRequest
	hooks        exchangeHooks
	wroteHeaders atomic.Bool // set by the transport's goroutine
	sent1xx      bool        // a 1xx response reached the client: no retry
	timeout      time.Duration
	rec          Record       // see Record; filled in when OnExchange is set
	attemptStart time.Time    // when the current attempt was sent
	bodyUsed     bool         // body was started for this request
	detached     bool         // a tunnel took the exchange over: see detach
	attemptDone  func(Result) // a CONNECT tunnel's OnAttempt end, called when it ends
	stopTimer    func()       // ends the timers of SetTimeout
	inFlight     bool         // holds a slot of MaxInFlight: see leaveLimits
	clientHeld   bool         // holds a slot of MaxPerClient under clientKey
	clientKey    clientKey
	owned        []*headerNames // header names hooks own for this request (AuthRequest's): never taken from a client trailer
}

// Proxy returns the Proxy handling the request.
func (pr *ProxyRequest) Proxy() *Proxy { return pr.proxy }

// Record returns the exchange's Record as far as it is known. Hooks may
// read it (RequestID, Start, Attempts) and set CloseCode; it is filled
// in only when the Proxy's OnExchange is set, but for RequestID.
func (pr *ProxyRequest) Record() *Record { return &pr.rec }

// Context returns the request's context, canceled when the client goes
// away, the Proxy's handler returns or the bound of SetTimeout expires.
func (pr *ProxyRequest) Context() context.Context { return pr.Out.Context() }

// ClientAddr is the address of the client as the Proxy decided it: the
// TCP peer, or, when the peer is in TrustedProxies, the last untrusted
// address of its X-Forwarded-For chain.
func (pr *ProxyRequest) ClientAddr() netip.Addr { return pr.client }

// Attempt is the number of the current attempt to reach an upstream:
// 0 for the first, 1 for the first retry, and so on. Directors use it with
// Tried to pick another upstream on a retry.
func (pr *ProxyRequest) Attempt() int { return pr.attempt }

// Tried lists the upstream hosts (host:port) of previous failed attempts
// of this request, oldest first.
func (pr *ProxyRequest) Tried() []string { return pr.tried }

// ResponseHeader returns headers the proxy adds to the response the client
// gets, whether it comes from the upstream or from a hook. Values are
// added, not set: a Set-Cookie here and the upstream's Set-Cookie headers
// both reach the client.
func (pr *ProxyRequest) ResponseHeader() http.Header {
	if pr.respHeader == nil {
		pr.respHeader = make(http.Header)
	}
	return pr.respHeader
}

// SetTimeout bounds the rest of the exchange to d, from now until the end
// of the response body: connecting, sending the request, waiting for the
// upstream's response and streaming it back, retries included. When it
// expires before the response started the client gets 504 Gateway
// Timeout; after, the client connection is aborted, so that a cut body
// never looks complete. The expiry is logged once, with d. A bound set
// earlier (by Route.Timeout, or an earlier call) still applies if it ends
// sooner. For an upgrade, the bound ends with the 101 response: a tunnel
// has its own idle timeout (WebSocketConfig.IdleTimeout).
//
// It is off unless set: a total bound would cut long downloads, uploads,
// server-sent events and gRPC streams, which idle bounds already guard.
// Hooks call it before the request is forwarded; d <= 0 does nothing.
func (pr *ProxyRequest) SetTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(pr.Out.Context(), d)
	*pr.Out = *pr.Out.WithContext(ctx)
	if prev := pr.stopTimer; prev != nil {
		pr.stopTimer = func() { cancel(); prev() }
	} else {
		pr.stopTimer = cancel
	}
	if pr.timeout == 0 || d < pr.timeout {
		pr.timeout = d
	}
}

// timedOut wraps err to say that the exchange's SetTimeout bound expired,
// if it did.
func (pr *ProxyRequest) timedOut(err error) error {
	var te *exchangeTimeoutError
	if pr.timeout > 0 && errors.Is(pr.Out.Context().Err(), context.DeadlineExceeded) && pr.In.Context().Err() == nil &&
		!errors.As(err, &te) {
		return &exchangeTimeoutError{d: pr.timeout, err: err}
	}
	return err
}

// exchangeTimeoutError is a failure caused by SetTimeout's bound. It is a
// context.DeadlineExceeded, so that StatusFor maps it to 504.
type exchangeTimeoutError struct {
	d   time.Duration
	err error
}

func (e *exchangeTimeoutError) Error() string {
	return fmt.Sprintf("sluice: exchange timeout (%v) exceeded: %v", e.d, e.err)
}

func (e *exchangeTimeoutError) Unwrap() []error { return []error{context.DeadlineExceeded, e.err} }

// SetURL routes the outbound request to target: scheme and host are taken
// from target, target's path is joined in front of the request path, its
// query merged with the request's, and the outbound Host header set to the
// target host (as httputil.ProxyRequest.SetURL does). To keep the client's
// Host header, set Out.Host = In.Host afterwards.
func (pr *ProxyRequest) SetURL(target *url.URL) {
	rewriteURL(pr.Out.URL, target)
	pr.Out.Host = ""
}

// localRequest returns the request a local handler (Fallback, Local) gets:
// Out's sanitized header and body, so that it is as safe to act on as what
// the upstream would have got, with In's target, protocol and framing,
// since it is served here, not forwarded.
func (pr *ProxyRequest) localRequest() *http.Request {
	r := new(http.Request)
	*r = *pr.Out
	u := *pr.In.URL
	r.URL = &u
	r.Host = pr.In.Host
	r.RequestURI = pr.In.RequestURI
	r.Proto, r.ProtoMajor, r.ProtoMinor = pr.In.Proto, pr.In.ProtoMajor, pr.In.ProtoMinor
	r.TransferEncoding = pr.In.TransferEncoding
	r.Close = pr.In.Close
	if r.Body == nil {
		r.Body = http.NoBody
	} else if pr.proxy.OnExchange != nil && r.Body != http.NoBody {
		r.Body = &countedBody{ReadCloser: r.Body, n: &pr.rec.RequestBytes}
	}
	return r
}

// refusesAmbiguousFraming reports whether w comes from a server that
// answers 400 to requests with both Content-Length and Transfer-Encoding
// instead of passing them on normalized (Server does; net/http does not).
// Wrappers are looked through with Unwrap.
func refusesAmbiguousFraming(w http.ResponseWriter) bool {
	for {
		switch v := w.(type) {
		case interface{ RefusesAmbiguousFraming() bool }:
			return v.RefusesAmbiguousFraming()
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return false
		}
	}
}

// ServeHTTP runs the request through the pipeline described on Proxy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	var start time.Time
	if p.OnExchange != nil {
		start = time.Now()
	}
	held := false // a slot of MaxInFlight, until pr takes it over
	if p.maxInFlight > 0 {
		if !p.enter() {
			p.shed(w, r, nil, errProxyBusy, start)
			return
		}
		held = true
		defer func() {
			if held {
				p.inFlight.Add(-1)
			}
		}()
	}
	if len(r.TransferEncoding) > 0 && r.ProtoMajor == 1 && !refusesAmbiguousFraming(w) {
		// net/http drops a Content-Length sent along with chunked framing
		// (RFC 9112 §6.3), so the handler cannot tell a smuggling attempt
		// from a plain chunked request. The request itself is re-framed
		// before it goes upstream; what is left is the RFC's "MUST close
		// the connection" after such a message, done for every chunked
		// request. (Server refuses such messages itself, so behind it
		// chunked requests keep their connection.)
		w.Header().Set("Connection", "close")
	}
	if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
		// A refused CONNECT closes the connection: the client may have
		// sent the tunnel's first bytes already, which must not be read
		// as a request. (The 200 that starts a tunnel has its own head.)
		w.Header().Set("Connection", "close")
	}
	if err := checkRequest(r); err != nil {
		// Whatever follows a refused request on this connection cannot be
		// trusted to be framed as the client meant: close it. (HTTP/2
		// frames every request itself; there, net/http would take the
		// header as a request to end the whole connection.)
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		p.failEarly(w, r, err, start)
		return
	}
	cr, err := canonicalRequest(r, p.KeepEncodedSlashes)
	if err != nil {
		p.failEarly(w, r, err, start)
		return
	}
	r = cr
	pr := p.newProxyRequest(r)
	pr.inFlight, held = held, false
	defer p.releaseProxyRequest(pr)
	if p.OnExchange != nil {
		pr.rec.start(r, start)
		defer p.finishExchange(&pr.rec, pr)
	}
	pr.rw = responseWriter{ResponseWriter: w}
	pr.w = &pr.rw
	p.boundClient(pr, w)
	defer pr.unboundClient()
	w = pr.w
	if p.MaxPerClient > 0 && !p.enterClient(pr) {
		p.shed(w, r, pr, errClientBusy, start)
		return
	}

	rt, err := p.routes.match(pr)
	if err != nil {
		p.fail(w, r, pr, err)
		return
	}
	pr.route = rt
	if rt != nil {
		pr.SetTimeout(rt.Timeout)
	}
	if !p.authorize(w, pr) {
		return
	}
	if pr.route != nil && pr.route.Interceptor != nil {
		if err := pr.route.Interceptor.Intercept(w, pr); err != nil {
			p.fail(w, r, pr, err)
		}
		return
	}
	if err := pr.Forward(w); err != nil {
		p.fail(w, r, pr, err)
	}
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		if p.Transport != nil {
			p.transport = p.Transport
		} else {
			p.transport = p.newEngine(nil)
		}
		p.identity = newHeaderNames(p.IdentityHeaders...)
		switch n := p.MaxInFlight; {
		case n == 0:
			p.maxInFlight = defaultMaxInFlight
		case n > 0:
			p.maxInFlight = int64(n)
		}
	})
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

var proxyRequestPool = sync.Pool{New: func() any { return new(ProxyRequest) }}

func (p *Proxy) newProxyRequest(in *http.Request) *ProxyRequest {
	pr := proxyRequestPool.Get().(*ProxyRequest)
	pr.proxy = p
	pr.In = in
	pr.peer = peerAddr(in)
	pr.client = clientAddr(in, pr.peer, p.TrustedProxies)
	pr.Out = outboundRequest(in)
	pr.upgrade = upgradeType(in.Header)
	sanitizeRequestHeader(pr.Out.Header, pr.upgrade)
	p.dropForged(pr.Out.Header, isTrusted(pr.peer, p.TrustedProxies))
	p.setForwarded(pr)
	if p.RequestIDHeader != "" {
		p.setRequestID(pr)
	}
	return pr
}

// releaseProxyRequest recycles pr, unless a transport goroutine may still
// read the request body through it (an upstream that answered before
// taking the whole body): then it is left to the garbage collector.
func (p *Proxy) releaseProxyRequest(pr *ProxyRequest) {
	pr.leaveLimits()
	if pr.stopTimer != nil {
		pr.stopTimer()
	}
	if pr.body != nil && !pr.body.finished() {
		return
	}
	tried, body := pr.tried[:0], pr.body
	*pr = ProxyRequest{}
	pr.tried, pr.body = tried, body
	proxyRequestPool.Put(pr)
}

// responseWriter is the http.ResponseWriter the Proxy hands to hooks. It
// remembers whether the final response started, so that a failure after
// that point aborts the connection instead of writing an error page.
// Unwrap gives http.ResponseController access to the server's writer
// (flush, hijack, deadlines, full duplex).
//
// Under ClientIdleTimeout it renews the write deadline before writes
// (see boundClient).
type responseWriter struct {
	http.ResponseWriter
	status  int
	written int64 // body bytes

	idle     time.Duration  // ClientIdleTimeout, if the Proxy applies it
	wd       writeDeadliner // the server's, when idle > 0
	armed    time.Time      // when the write deadline was set
	hijacked bool
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.arm() // sent at once
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// ReadFrom lets the server's writer move large bodies with sendfile or
// splice when the source allows it.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	rf, _ := w.ResponseWriter.(io.ReaderFrom)
	var n int64
	var err error
	switch {
	case w.idle > 0:
		return w.readFromBounded(rf, r) // counts what it writes
	case rf != nil:
		n, err = rf.ReadFrom(r)
	default:
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.written += n
	return n, err
}

// Flush implements http.Flusher for handlers that assert it directly.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker through the server's writer, noting
// that the connection is no longer the server's (nor its deadlines the
// Proxy's to set).
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, brw, err
}

// Unwrap returns the server's ResponseWriter, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) started() bool { return w.status != 0 }

// CloseIdleConnections closes the idle upstream connections of the
// Proxy's transport, if it has that method (the default one does).
func (p *Proxy) CloseIdleConnections() {
	p.init()
	if c, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	if e := p.checked.Load(); e != nil {
		e.CloseIdleConnections()
	}
}
