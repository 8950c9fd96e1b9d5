package sluice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// Record describes one exchange as the Proxy saw it. The Proxy fills one
// in for every request and hands it to OnExchange once, when the exchange
// ends, whatever happened: a response, an error page, a denial, an
// aborted response, a client that left, a panic in a hook, the end of a
// tunnel or WebSocket session. A Record is valid only during the call
// (the Proxy reuses it); copy what must outlive it.
type Record struct {
	// Start is when the Proxy got the request; Duration runs from Start
	// to the end of the response body, of the tunnel, or of the failure.
	Start    time.Time
	Duration time.Duration

	// Method, Host, Path (escaped) and Query (raw) are the request's, in
	// the canonical form every hook and the upstream saw; a request
	// refused before it was put in that form has them as sent. A CONNECT
	// has its authority as Host and no Path.
	Method, Host, Path, Query string

	// Proto is the client's protocol ("HTTP/1.1", "HTTP/2.0").
	Proto string

	// Route is the pattern of the route that claimed the request, "" if
	// none did.
	Route string

	// Client is ProxyRequest.ClientAddr (invalid if unknown); Peer is the
	// address of the connection the request came on (with a PROXY
	// protocol header, the address it gave).
	Client, Peer netip.Addr

	// RequestID is the request's ID when Proxy.RequestIDHeader is set.
	RequestID string

	// Request is the inbound request (ProxyRequest.In), for the fields
	// an access log wants (User-Agent, Referer). Hooks must not change it.
	Request *http.Request

	// Status is the status the client got: 101 for a switched protocol,
	// 200 for a CONNECT tunnel, StatusClientClosedRequest (499) for a
	// client that left before its response started. For a response
	// aborted after it started, it is the status that was sent, and Err
	// says why the body was cut.
	Status int

	// RequestBytes is the request body the Proxy read from the client;
	// ResponseBytes the response body it wrote to the client. For a
	// tunnel, the bytes the client sent through it and the bytes it got.
	RequestBytes, ResponseBytes int64

	// Upstream is the host:port of the last attempt to reach an
	// upstream, "" if there was none. UpstreamHeader runs from Start to
	// the arrival of that upstream's response head (0 if none arrived),
	// Connect is the time spent connecting for that attempt (0 when it
	// reused a pooled connection, or for a Transport other than the
	// Proxy's engine).
	Upstream       string
	UpstreamHeader time.Duration
	Connect        time.Duration

	// Attempts lists every attempt to reach an upstream, in order: the
	// failed ones, and the one that answered, with the end of its body.
	Attempts []Result

	// Err is why the exchange failed, nil if it did not; ErrorClass
	// names the kind of failure, for logs and metrics: "" (none),
	// "policy" (refused by the proxy: malformed or ambiguous request,
	// Authorizer denial, destination not allowed), "client" (the client
	// went away, was too slow or sent a bad body), "timeout" (an upstream
	// bound expired), "refused" (no connection to the upstream could be
	// made, or no upstream was available), "bad_response" (the upstream
	// broke HTTP), "upstream" (the upstream connection failed during the
	// exchange), "internal" (a hook failed or panicked), "overload"
	// (refused with 503 or 429 by MaxInFlight or MaxPerClient).
	Err        error
	ErrorClass string

	// CloseCode is the WebSocket close code of a session relayed by
	// package wsmsg, 0 otherwise.
	CloseCode int

	// Context is the exchange's context as the hooks left it (values an
	// OnAttempt hook or an Authorizer added, such as a trace span); it
	// is done by now.
	Context context.Context

	attempts [2]Result // backing array of Attempts for most exchanges
}

// The error classes of Record.ErrorClass.
const (
	classPolicy      = "policy"
	classClient      = "client"
	classTimeout     = "timeout"
	classRefused     = "refused"
	classBadResponse = "bad_response"
	classUpstream    = "upstream"
	classInternal    = "internal"
	classOverload    = "overload"
)

// errorClass returns Record.ErrorClass for an exchange that failed with
// err.
func errorClass(err error) string {
	var ne net.Error
	var se *Error
	var refused *dialRefusedError
	var ae *authError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errOverload):
		return classOverload
	case errors.As(err, &ae), errors.Is(err, errPanic), errors.Is(err, errBadTarget):
		return classInternal
	case errors.Is(err, errClientGone), errors.Is(err, errClientTimeout):
		return classClient
	case errors.As(err, &refused), errors.Is(err, ErrNoRoute):
		return classPolicy
	case errors.As(err, &se) && se.Status >= 400 && se.Status < 500:
		return classPolicy
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return classTimeout
	case errors.Is(err, errBadResponse):
		return classBadResponse
	case isConnectError(err), errors.Is(err, ErrNoUpstream), errors.Is(err, errShuttingDown):
		return classRefused
	case errors.As(err, &se):
		return classInternal
	}
	return classUpstream
}

// ErrorClass names the kind of the attempt's failure, in the terms of
// Record.ErrorClass ("timeout", "refused", "bad_response", "upstream",
// "client", ...), or "" if it did not fail. Metrics and client spans
// label attempts with it (OpenTelemetry's error.type). It allocates
// nothing when the attempt did not fail.
func (r Result) ErrorClass() string {
	if r.Err == nil {
		return "" // errorClass's errors.As targets escape
	}
	return errorClass(r.Err)
}

// errPanic marks a Record whose exchange ended in a panic.
var errPanic = errors.New("sluice: panic in the handler")

// startRecord begins the record of an exchange on the request as it
// arrived.
func (rec *Record) start(r *http.Request, start time.Time) {
	rec.Start = start
	rec.fromRequest(r)
	rec.Attempts = rec.attempts[:0]
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		rec.Peer = ap.Addr().Unmap()
	}
	rec.Client = rec.Peer
}

func (rec *Record) fromRequest(r *http.Request) {
	rec.Method, rec.Host, rec.Proto, rec.Request = r.Method, r.Host, r.Proto, r
	if r.Method == http.MethodConnect {
		rec.Path, rec.Query = "", ""
	} else {
		rec.Path, rec.Query = r.URL.EscapedPath(), r.URL.RawQuery
	}
}

// detach returns a view of pr for a tunnel that outlives ServeHTTP: what
// hooks may read of it (In, Out, ClientAddr, Attempt, Tried, Record...)
// copied out of pr, which is recycled when ServeHTTP returns. pr's own
// Record is then not delivered: the view's is, when the tunnel ends.
func (pr *ProxyRequest) detach() *ProxyRequest {
	v := &ProxyRequest{
		In: pr.In, Out: pr.Out, ModifyResponse: pr.ModifyResponse, BodyFilter: pr.BodyFilter,
		DialCheck: pr.DialCheck, ClientHello: pr.ClientHello,
		proxy: pr.proxy, route: pr.route, peer: pr.peer, client: pr.client, respHeader: pr.respHeader,
		attempt: pr.attempt, upgrade: pr.upgrade, attemptStart: pr.attemptStart, attemptDone: pr.attemptDone,
	}
	v.tried = append(v.tried, pr.tried...)
	v.rec = pr.rec
	v.rec.Attempts = append(v.rec.attempts[:0], pr.rec.Attempts...)
	v.rec.Status = pr.rw.status
	v.rec.ResponseBytes += pr.rw.written
	pr.detached = true
	return v
}

// beginAttempt starts an attempt to reach the upstream pr.Out names: it
// calls OnAttempt (before the clock starts) and returns what it gave.
func (pr *ProxyRequest) beginAttempt() func(Result) {
	var done func(Result)
	if pr.proxy.OnAttempt != nil {
		done = pr.proxy.OnAttempt(pr)
	}
	pr.attemptStart = time.Now()
	pr.rec.Connect = 0
	return done
}

// attemptAnswered records in the Record that the attempt got its answer
// (a response head; for a tunnel, the connection). Its Duration comes
// when the exchange ends (see deliver).
func (pr *ProxyRequest) attemptAnswered(status int) {
	if pr.proxy.OnExchange == nil {
		return
	}
	pr.rec.Upstream = pr.Out.URL.Host
	pr.rec.UpstreamHeader = time.Since(pr.rec.Start)
	pr.rec.Attempts = append(pr.rec.Attempts, Result{Upstream: pr.Out.URL.Host, Status: status})
}

// attemptFailed records a failed attempt and reports it to the
// Director's Observer and to the function OnAttempt returned.
func (pr *ProxyRequest) attemptFailed(err error, obs Observer, done func(Result)) {
	failed := Result{Upstream: pr.Out.URL.Host, Err: err, Duration: time.Since(pr.attemptStart)}
	if pr.proxy.OnExchange != nil {
		pr.rec.Upstream = pr.Out.URL.Host
		pr.rec.Attempts = append(pr.rec.Attempts, failed)
	}
	if obs != nil {
		obs.Observe(pr, failed)
	}
	if done != nil {
		done(failed)
	}
}

// failEarly is fail for a request refused before its ProxyRequest exists
// (malformed or ambiguous), with its Record.
func (p *Proxy) failEarly(w http.ResponseWriter, r *http.Request, err error, start time.Time) {
	if p.OnExchange == nil {
		p.fail(w, r, nil, err)
		return
	}
	rec := &Record{}
	rec.start(r, start)
	rec.Err, rec.Status = err, StatusFor(err)
	defer p.finishExchange(rec, nil)
	p.fail(w, r, nil, err)
}

// finishExchange completes pr's record and hands it to OnExchange. It
// runs deferred in ServeHTTP: a panic there (a hook's, or the abort of a
// response that started) is recorded, then goes on.
func (p *Proxy) finishExchange(rec *Record, pr *ProxyRequest) {
	v := recover()
	if v == nil && pr != nil && pr.detached {
		return // the tunnel delivers its Record when it ends
	}
	if v != nil {
		if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel itself is what net/http compares
			if rec.Err == nil {
				rec.Err = fmt.Errorf("%w: response aborted", errClientGone)
			}
		} else {
			rec.Err = fmt.Errorf("%w: %v", errPanic, v)
			if rec.Status == 0 {
				rec.Status = http.StatusInternalServerError
			}
		}
	}
	p.deliver(rec, pr)
	if v != nil {
		panic(v)
	}
}

// deliver fills in what only the end of the exchange knows and calls
// OnExchange.
func (p *Proxy) deliver(rec *Record, pr *ProxyRequest) {
	rec.Duration = time.Since(rec.Start)
	if pr != nil {
		rec.Client = pr.client
		if pr.route != nil {
			rec.Route = pr.route.Pattern
		}
		if pr.rw.status != 0 {
			rec.Status = pr.rw.status
		}
		rec.ResponseBytes += pr.rw.written
		if pr.bodyUsed {
			pr.body.mu.Lock()
			rec.RequestBytes += pr.body.n
			pr.body.mu.Unlock()
		}
		rec.Context = pr.Out.Context()
		if n := len(rec.Attempts); n > 0 {
			last := &rec.Attempts[n-1]
			if last.Status != 0 && last.Duration == 0 {
				last.Duration = time.Since(pr.attemptStart)
				if rec.Err != nil && last.Err == nil {
					last.Err = rec.Err
				}
			}
		}
	} else if rec.Context == nil {
		rec.Context = rec.Request.Context()
	}
	if rec.Status == 0 {
		rec.Status = http.StatusOK // a handler that wrote nothing: the server sends 200
	}
	if rec.ErrorClass == "" && rec.Err != nil {
		rec.ErrorClass = errorClass(rec.Err) // its errors.As targets escape: not called on success
	}
	p.OnExchange(rec)
}

// setRequestID gives pr its request ID: a valid one from a trusted peer's
// RequestIDHeader, or a new one; it goes upstream and to the client.
func (p *Proxy) setRequestID(pr *ProxyRequest) {
	name := p.RequestIDHeader
	id := ""
	if isTrusted(pr.peer, p.TrustedProxies) {
		if vv := pr.In.Header.Values(name); len(vv) == 1 && validRequestID(vv[0]) {
			id = vv[0]
		}
	}
	if id == "" {
		id = newRequestID()
	}
	pr.Out.Header.Set(name, id)
	pr.ResponseHeader().Set(name, id)
	pr.rec.RequestID = id
}

// logger is the Proxy's logger, with the request ID when there is one,
// for the log lines about this exchange.
func (pr *ProxyRequest) logger() *slog.Logger {
	l := pr.proxy.logger()
	if pr.rec.RequestID != "" {
		return l.With("request_id", pr.rec.RequestID)
	}
	return l
}

// validRequestID accepts 1 to 128 visible ASCII characters.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// newRequestID returns 32 random hex digits. They need to be unique, not
// unpredictable: math/rand/v2's per-thread generator, no system call.
func newRequestID() string {
	var b [32]byte
	hex := strconv.AppendUint(b[:0], rand.Uint64()|1<<63, 16) // 16 digits
	hex = strconv.AppendUint(hex, rand.Uint64()|1<<63, 16)
	return string(hex)
}

// countedBody counts the request body a local handler reads, for the
// Record.
type countedBody struct {
	io.ReadCloser
	n *int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	*b.n += int64(n)
	return n, err
}
