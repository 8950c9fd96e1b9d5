// Package squid asks external helper programs about each request a
// sluice.Proxy handles, with the line protocol of Squid's
// url_rewrite_program (also spoken by ExaProxy rewriters and store_id
// helpers). A Helper is a sluice.Authorizer (allow, deny, redirect) and,
// through its Director method, a rewriting sluice.Director:
//
//	h, err := squid.Start(squid.Config{Command: "/usr/local/bin/filter", Children: 4, Concurrency: 16})
//	if err != nil { ... }
//	defer h.Close()
//	p := &sluice.Proxy{Authorizer: h, Director: h.Director(&forward.Director{Next: backend})}
//
// For a CONNECT request the helper gets the authority ("example.com:443")
// as URL and CONNECT as method, as from Squid.
package squid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
	isquid "github.com/sluiceproxy/sluice/internal/squid"
)

// Config describes the external helper processes of a Helper. Its zero
// value is not useful: Command is required.
type Config struct {
	// Command and Args are the helper program and its arguments. Command
	// is required.
	Command string
	Args    []string
	// Env is the helpers' environment. If nil, the proxy's.
	Env []string

	// Children is the number of helper processes (Squid's children=).
	// If zero, 1.
	Children int

	// Concurrency is the number of requests each helper handles at once,
	// told apart by channel IDs (Squid's concurrency=). If zero, each
	// helper gets one request at a time and lines carry no channel ID.
	Concurrency int

	// QueueSize bounds the requests waiting for a free helper; a request
	// that finds the queue full gets 503 at once. If zero, twice the
	// number of helper slots.
	QueueSize int

	// Timeout bounds the wait for one answer, queueing included. A helper
	// still silent one more Timeout later is restarted. If zero,
	// DefaultTimeout.
	Timeout time.Duration

	// Bypass lets a request through unchanged when the helper cannot
	// decide: timeout, crash, BH or a malformed answer. If false (the
	// default) such requests fail closed with 503 Service Unavailable.
	// A full queue always answers 503.
	Bypass bool

	// Logger receives helper restarts, protocol errors and bypassed
	// failures. If nil, slog.Default().
	Logger *slog.Logger
}

// DefaultTimeout is the per-request helper timeout when Config.Timeout is
// zero.
const DefaultTimeout = 10 * time.Second

// Helper asks external helper programs about every request. For each
// request a helper gets
//
//	[channel-ID] URL client-IP/- - METHOD myip=IP myport=PORT
//
// where URL is the absolute URL the client asked for and client-IP the
// requester as the Proxy determined it (sluice.ProxyRequest.ClientAddr,
// so an L7 load balancer in TrustedProxies is seen through). It answers
//
//	[channel-ID] OK                      let the request pass unchanged
//	[channel-ID] OK rewrite-url=URL      send it to URL instead (Director)
//	[channel-ID] OK status=30x url=URL   redirect the client to URL
//	[channel-ID] ERR [message=TEXT]      deny it with 403 Forbidden
//	[channel-ID] BH [message=TEXT]       the helper cannot decide
//
// Helper is a sluice.Authorizer (see Authorize) and, through Director, a
// rewriting sluice.Director; used as both, it asks once per request.
type Helper struct {
	pool   *isquid.Pool
	bypass bool
	log    *slog.Logger
}

// Start starts the helper processes, which a supervisor restarts when
// they exit. Close stops them.
func Start(cfg Config) (*Helper, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pool, err := isquid.Start(isquid.Config{
		Path: cfg.Command, Args: cfg.Args, Env: cfg.Env,
		Children: cfg.Children, Concurrency: cfg.Concurrency,
		QueueSize: cfg.QueueSize, Timeout: timeout, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("squid: %w", err)
	}
	return &Helper{pool: pool, bypass: cfg.Bypass, log: log}, nil
}

// Close stops the helper processes; requests still waiting fail.
func (h *Helper) Close() error { return h.pool.Close() }

// Result is the outcome word of a helper answer.
type Result int

// The helper answers.
const (
	OK  = Result(isquid.OK)  // success, maybe with rewrite-url= or a redirect
	ERR = Result(isquid.ERR) // the answer is no: deny
	BH  = Result(isquid.BH)  // "broken helper": the helper cannot decide
)

// String returns the result as the protocol writes it ("OK", "ERR", "BH").
func (r Result) String() string { return isquid.Result(r).String() }

// Reply is a helper's answer about one request.
type Reply struct {
	Result Result
	r      isquid.Reply
}

// Get returns the value of the key=value pair named key of the answer,
// e.g. "rewrite-url", "status", "url", "message" or "store-id".
func (r *Reply) Get(key string) (string, bool) { return r.r.Get(key) }

// Errors of Helper.Query, also reachable with errors.Is from the errors
// that fail a request.
var (
	// ErrOverloaded: every helper is busy and the queue is full.
	ErrOverloaded = isquid.ErrOverloaded
	// ErrTimeout: no answer within Config.Timeout.
	ErrTimeout = isquid.ErrTimeout
	// ErrDied: the helper handling the request exited or was restarted.
	ErrDied = isquid.ErrHelperDied
	// ErrSyntax: the helper's answer is malformed.
	ErrSyntax = isquid.ErrSyntax
)

type replyKey struct{ h *Helper }

// Query asks a helper about pr and returns its answer. It is the building
// block of Authorize and Director, for other uses of the protocol (a
// store_id helper). A helper failure is returned as an error (see the Err
// variables); a BH answer is a reply.
func (h *Helper) Query(pr *sluice.ProxyRequest) (*Reply, error) {
	if r, ok := pr.Context().Value(replyKey{h}).(*Reply); ok {
		return r, nil
	}
	in := pr.In
	u := requestURL(in)
	myip, myport := "-", "-"
	if la, ok := in.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			myip, myport = ap.Addr().Unmap().String(), strconv.Itoa(int(ap.Port()))
		}
	}
	client := "-"
	if c := pr.ClientAddr(); c.IsValid() {
		client = c.String()
	}
	r, err := h.pool.Do(pr.Context(), u, client+"/-", "-", in.Method, "myip="+myip, "myport="+myport)
	if err != nil {
		if errors.Is(err, isquid.ErrBadField) {
			return nil, &sluice.Error{Status: http.StatusBadRequest, Err: fmt.Errorf("squid: request URL: %w", err)}
		}
		return nil, err
	}
	return &Reply{Result: Result(r.Result), r: r}, nil
}

// requestURL is the absolute URL of the request: its own for an
// absolute-form request (forward proxying), its authority for a CONNECT
// ("host:port", as Squid sends it), else built from Host.
func requestURL(in *http.Request) string {
	if in.Method == http.MethodConnect {
		return in.URL.Host
	}
	if in.URL.IsAbs() {
		return in.URL.String()
	}
	scheme := "http"
	if in.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + in.Host + in.URL.RequestURI()
}

// Authorize implements sluice.Authorizer: OK allows, OK status=30x url=U
// redirects, ERR denies with 403 (with the helper's message= as body),
// and a helper failure fails closed with 503 unless Bypass is set. The
// answer is remembered for Director.
func (h *Helper) Authorize(pr *sluice.ProxyRequest) (sluice.Decision, error) {
	r, err := h.Query(pr)
	if err == nil && r.Result == BH {
		msg, _ := r.Get("message")
		err = fmt.Errorf("squid: helper answered BH: %q", msg)
	}
	if err != nil {
		return h.failure(pr, err)
	}
	pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), replyKey{h}, r))
	if r.Result == ERR {
		msg, ok := r.Get("message")
		if !ok {
			msg = "403 forbidden by filter"
		}
		return sluice.Deny(http.StatusForbidden, msg+"\n"), nil
	}
	if loc, ok := r.Get("url"); ok {
		code := http.StatusFound
		if s, ok := r.Get("status"); ok {
			code, err = strconv.Atoi(s)
			if err != nil || code < 300 || code > 399 {
				return h.failure(pr, fmt.Errorf("%w: redirect status %q", ErrSyntax, s))
			}
		}
		return sluice.Redirect(loc, code), nil
	}
	return sluice.Allow, nil
}

func (h *Helper) failure(pr *sluice.ProxyRequest, err error) (sluice.Decision, error) {
	var se *sluice.Error
	if errors.As(err, &se) || errors.Is(err, context.Canceled) {
		return sluice.Decision{}, err
	}
	if errors.Is(err, ErrOverloaded) {
		return sluice.Decision{}, &sluice.Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("squid: %w", err)}
	}
	if h.bypass {
		h.log.Warn("squid: helper failed, bypassing", "uri", pr.In.RequestURI, "err", err)
		return sluice.Allow, nil
	}
	return sluice.Decision{}, &sluice.Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("squid: %w", err)}
}

// Director returns a sluice.Director that sends a request to the helper's
// rewrite-url when it answered one, and hands every other request to next
// (nil: sluice.ErrNoRoute). When the Helper is also the Authorizer, its answer is
// reused; otherwise the helper is asked here, and a failure is treated as
// in Authorize. A rewrite keeps the method, headers and body. A rewrite-url
// on the host the client asked a reverse-proxied request for (the Proxy's
// own site) only changes the path and query, and next still picks the
// upstream; any other rewrite-url sends the request to that URL's host,
// with it as Host header. A CONNECT tunnel is never rewritten: it goes to
// next (a forward.Director opens it), whatever the helper answered.
func (h *Helper) Director(next sluice.Director) sluice.Director {
	return sluice.DirectorFunc(func(pr *sluice.ProxyRequest) error {
		if pr.In.Method == http.MethodConnect {
			if next == nil {
				return sluice.ErrNoRoute
			}
			return next.Direct(pr)
		}
		r, err := h.Query(pr)
		if err != nil {
			if _, ferr := h.failure(pr, err); ferr != nil {
				return ferr
			}
		} else if s, ok := r.Get("rewrite-url"); ok && r.Result == OK {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return &sluice.Error{Status: http.StatusBadGateway, Err: fmt.Errorf("%w: rewrite-url %q is not an absolute http(s) URL", ErrSyntax, s)}
			}
			out := pr.Out.URL
			out.Path, out.RawPath, out.RawQuery = u.Path, u.RawPath, u.RawQuery
			if pr.In.URL.IsAbs() || !strings.EqualFold(u.Host, pr.In.Host) {
				out.Scheme, out.Host = u.Scheme, u.Host
				pr.Out.Host = ""
				return nil
			}
			// Same site as the reverse-proxied request: only the path and
			// query change, next picks the upstream.
		}
		if next == nil {
			return sluice.ErrNoRoute
		}
		return next.Direct(pr)
	})
}
