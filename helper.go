package sluice

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

	"github.com/sluiceproxy/sluice/internal/squid"
)

// HelperConfig describes the external helper processes of a Helper.
type HelperConfig struct {
	// Command and Args are the helper program and its arguments.
	Command string
	Args    []string
	// Env is the helpers' environment; if nil, the proxy's.
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
	// DefaultHelperTimeout is used.
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

// DefaultHelperTimeout is the per-request helper timeout when
// HelperConfig.Timeout is zero.
const DefaultHelperTimeout = 10 * time.Second

// Helper asks external helper programs about every request, with the line
// protocol of Squid's url_rewrite_program (also spoken by ExaProxy
// rewriters and store_id_program helpers). For each request a helper gets
//
//	[channel-ID] URL client-IP/- - METHOD myip=IP myport=PORT
//
// where URL is the absolute URL the client asked for and client-IP the
// requester as the Proxy determined it (ProxyRequest.ClientAddr, so an L7
// load balancer in TrustedProxies is seen through). It answers
//
//	[channel-ID] OK                      let the request pass unchanged
//	[channel-ID] OK rewrite-url=URL      send it to URL instead (Director)
//	[channel-ID] OK status=30x url=URL   redirect the client to URL
//	[channel-ID] ERR [message=TEXT]      deny it with 403 Forbidden
//	[channel-ID] BH [message=TEXT]       the helper cannot decide
//
// Helper is an Authorizer (see Authorize) and, through Director, a
// rewriting Director; used as both, it asks once per request.
type Helper struct {
	pool   *squid.Pool
	bypass bool
	log    *slog.Logger
}

// NewHelper starts the helper processes. Close stops them.
func NewHelper(cfg HelperConfig) (*Helper, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultHelperTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pool, err := squid.Start(squid.Config{
		Path: cfg.Command, Args: cfg.Args, Env: cfg.Env,
		Children: cfg.Children, Concurrency: cfg.Concurrency,
		QueueSize: cfg.QueueSize, Timeout: timeout, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("sluice: helper: %w", err)
	}
	return &Helper{pool: pool, bypass: cfg.Bypass, log: log}, nil
}

// Close stops the helper processes; requests still waiting fail.
func (h *Helper) Close() error { return h.pool.Close() }

// HelperResult is the outcome of a helper answer.
type HelperResult int

// The helper answers.
const (
	HelperOK  HelperResult = HelperResult(squid.OK)
	HelperERR HelperResult = HelperResult(squid.ERR)
	HelperBH  HelperResult = HelperResult(squid.BH)
)

// HelperReply is a helper's answer about one request.
type HelperReply struct {
	Result HelperResult
	r      squid.Reply
}

// Get returns the value of the key=value pair named key of the answer,
// e.g. "rewrite-url", "status", "url", "message" or "store-id".
func (r *HelperReply) Get(key string) (string, bool) { return r.r.Get(key) }

// Errors of Helper.Query, also reachable with errors.Is from the errors
// that fail a request.
var (
	ErrHelperOverloaded = squid.ErrOverloaded
	ErrHelperTimeout    = squid.ErrTimeout
	ErrHelperDied       = squid.ErrHelperDied
	ErrHelperSyntax     = squid.ErrSyntax
)

type helperReplyKey struct{ h *Helper }

// Query asks a helper about pr and returns its answer. It is the building
// block of Authorize and Director, for other uses of the protocol (a
// store_id helper). A helper failure is returned as an error (see the
// ErrHelper variables); a BH answer is a reply.
func (h *Helper) Query(pr *ProxyRequest) (*HelperReply, error) {
	if r, ok := pr.Context().Value(helperReplyKey{h}).(*HelperReply); ok {
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
		if errors.Is(err, squid.ErrBadField) {
			return nil, &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("sluice: helper: request URL: %w", err)}
		}
		return nil, err
	}
	return &HelperReply{Result: HelperResult(r.Result), r: r}, nil
}

// requestURL is the absolute URL of the request: its own for an
// absolute-form request (forward proxying), else built from Host.
func requestURL(in *http.Request) string {
	if in.URL.IsAbs() {
		return in.URL.String()
	}
	scheme := "http"
	if in.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + in.Host + in.URL.RequestURI()
}

// Authorize implements Authorizer: OK allows, OK status=30x url=U
// redirects, ERR denies with 403 (with the helper's message= as body),
// and a helper failure fails closed with 503 unless Bypass is set. The
// answer is remembered for Director.
func (h *Helper) Authorize(pr *ProxyRequest) (Decision, error) {
	r, err := h.Query(pr)
	if err == nil && r.Result == HelperBH {
		msg, _ := r.Get("message")
		err = fmt.Errorf("sluice: helper answered BH: %q", msg)
	}
	if err != nil {
		return h.failure(pr, err)
	}
	pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), helperReplyKey{h}, r))
	if r.Result == HelperERR {
		msg, ok := r.Get("message")
		if !ok {
			msg = "403 forbidden by filter"
		}
		return Deny(http.StatusForbidden, msg+"\n"), nil
	}
	if loc, ok := r.Get("url"); ok {
		code := http.StatusFound
		if s, ok := r.Get("status"); ok {
			code, err = strconv.Atoi(s)
			if err != nil || code < 300 || code > 399 {
				return h.failure(pr, fmt.Errorf("%w: redirect status %q", squid.ErrSyntax, s))
			}
		}
		return Redirect(loc, code), nil
	}
	return Allow, nil
}

func (h *Helper) failure(pr *ProxyRequest, err error) (Decision, error) {
	var se *Error
	if errors.As(err, &se) || errors.Is(err, context.Canceled) {
		return Decision{}, err
	}
	if errors.Is(err, squid.ErrOverloaded) {
		return Decision{}, &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("sluice: helper: %w", err)}
	}
	if h.bypass {
		h.log.Warn("sluice: helper failed, bypassing", "uri", pr.In.RequestURI, "err", err)
		return Allow, nil
	}
	return Decision{}, &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("sluice: helper: %w", err)}
}

// Director returns a Director that sends a request to the helper's
// rewrite-url when it answered one, and hands every other request to next
// (nil: ErrNoRoute). When the Helper is also the Authorizer, its answer is
// reused; otherwise the helper is asked here, and a failure is treated as
// in Authorize. A rewrite keeps the method, headers and body. A rewrite-url
// on the host the client asked a reverse-proxied request for (the Proxy's
// own site) only changes the path and query, and next still picks the
// upstream; any other rewrite-url sends the request to that URL's host,
// with it as Host header.
func (h *Helper) Director(next Director) Director {
	return DirectorFunc(func(pr *ProxyRequest) error {
		r, err := h.Query(pr)
		if err != nil {
			if _, ferr := h.failure(pr, err); ferr != nil {
				return ferr
			}
		} else if s, ok := r.Get("rewrite-url"); ok && r.Result == HelperOK {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%w: helper rewrite-url %q is not an absolute http(s) URL", errBadTarget, s)
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
			return ErrNoRoute
		}
		return next.Direct(pr)
	})
}

// ForwardProxy returns a Director for forward proxying: a request in
// absolute form (GET http://host/path, RFC 9112 §3.2.2), as clients
// configured with an HTTP proxy send it, goes to the host it names. Any
// other request (origin form) goes to next, or gets ErrNoRoute if next is
// nil, so one Proxy can be a forward and a reverse proxy at once.
//
// HTTPS through the proxy (CONNECT tunnels) is not supported: the Proxy
// refuses CONNECT with 405. A forward proxy reaches any host its clients
// name, loopback and private addresses included: restrict it with an
// Authorizer (AllowFrom, a Helper) before exposing it.
func ForwardProxy(next Director) Director {
	return DirectorFunc(func(pr *ProxyRequest) error {
		in := pr.In.URL
		if !in.IsAbs() {
			if next == nil {
				return ErrNoRoute
			}
			return next.Direct(pr)
		}
		if in.Scheme != "http" && in.Scheme != "https" {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("sluice: forward proxy: scheme %q not supported", in.Scheme)}
		}
		pr.Out.URL.Scheme, pr.Out.URL.Host = in.Scheme, in.Host
		pr.Out.Host = ""
		return nil
	})
}
