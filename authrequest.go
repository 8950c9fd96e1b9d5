package sluice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/internal/flightcache"
)

// Defaults of AuthRequest.
const (
	DefaultAuthTimeout         = 5 * time.Second
	DefaultAuthMaxBody         = 1 << 20
	DefaultAuthMaxResponseBody = 64 << 10
	DefaultAuthCacheSize       = 10000
)

// AuthRequest is an Authorizer that asks an HTTP auth service about every
// request, with the semantics of nginx auth_request, Traefik ForwardAuth
// and Caddy forward_auth:
//
//   - the subrequest goes to URL with method Method (GET by default),
//     the client's RequestHeaders and Cookies, and X-Forwarded-Method,
//     X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Uri and
//     X-Forwarded-For describing the original request and its client;
//   - a 2xx answer allows: the AuthResponseHeaders it carries are copied
//     into the outbound request and its ClientResponseHeaders (such as
//     Set-Cookie) are added to the client's response;
//   - any other answer is relayed to the client as is (status, headers
//     minus hop-by-hop ones, body up to MaxResponseBody), so a 302 to a
//     login page or a 401 with WWW-Authenticate reaches the browser;
//   - a timeout, a connection failure or a malformed answer fails closed
//     with 503 Service Unavailable.
//
// The AuthResponseHeaders are deleted from every outbound request before
// the subrequest, whatever its outcome, so a client cannot spoof them.
//
// With CacheKey and CacheTTL set, allow decisions are cached per key for
// CacheTTL (never longer), at most CacheSize of them, and concurrent
// requests with the same key make a single subrequest. Denials are never
// cached nor shared, since their answer (a redirect back to the page the
// client asked for) may depend on the request.
//
// The fields must not be changed after the first call to Authorize.
type AuthRequest struct {
	// URL is the auth service's endpoint, an absolute http or https URL.
	URL string

	// Method is the subrequest's method. If empty, GET is used, or the
	// client's method when SendBody is set.
	Method string

	// RequestHeaders are the client request headers sent to the auth
	// service. Hop-by-hop headers are never sent. If nil, Authorization
	// and Cookie are sent.
	RequestHeaders []string

	// Cookies, if not nil, restricts the Cookie header sent to the auth
	// service to the cookies of these names (the session cookie), so other
	// cookies of the site never reach it.
	Cookies []string

	// AuthResponseHeaders are copied from a 2xx answer into the outbound
	// request (replacing values of the same name), e.g. "X-Auth-User".
	// Hop-by-hop headers and headers the answer names in Connection are
	// never copied.
	AuthResponseHeaders []string

	// ClientResponseHeaders are added from a 2xx answer to the client's
	// response, e.g. "Set-Cookie" for a refreshed session cookie. They are
	// added to the upstream's, never replacing them.
	ClientResponseHeaders []string

	// SendBody sends the request body to the auth service. At most MaxBody
	// bytes are read (a longer body gets 413 Content Too Large); the
	// upstream still receives the whole body, untouched. Decisions about
	// requests with a body are never cached.
	SendBody bool

	// MaxBody bounds the body sent with SendBody. If zero,
	// DefaultAuthMaxBody is used.
	MaxBody int64

	// MaxResponseBody bounds the body of a non-2xx answer relayed to the
	// client; a longer one fails closed. If zero,
	// DefaultAuthMaxResponseBody is used.
	MaxResponseBody int64

	// Timeout bounds one subrequest, body included. If zero,
	// DefaultAuthTimeout is used.
	Timeout time.Duration

	// CacheKey returns the key under which an allow decision for the
	// request is cached, or "" not to cache it. The key must capture
	// everything the auth service decides on: the session cookie for a
	// yes/no session check (see CookieKey), plus the host or path when the
	// decision depends on which application is asked for. If nil, nothing
	// is cached.
	CacheKey func(r *http.Request) string

	// CacheTTL is how long an allow decision is reused. If zero, nothing
	// is cached.
	CacheTTL time.Duration

	// CacheSize bounds the number of cached decisions (least recently used
	// ones are evicted). If zero, DefaultAuthCacheSize is used.
	CacheSize int

	// Transport carries the subrequests. If nil, the Proxy's transport is
	// used (same connection pool, dial and header timeouts).
	Transport http.RoundTripper

	initOnce  sync.Once
	initErr   error
	target    *url.URL
	respNames headerNames
	reqNames  []string
	cache     *flightcache.Cache[*authResult]
	now       func() time.Time // for tests
}

// CookieKey returns an AuthRequest.CacheKey that keys on the value of the
// named cookie; requests without it, or with more than one cookie of that
// name, are not cached: the auth service may read another one of them
// than the key (Django reads the last), and another request with only
// the key's value would then share its allow.
func CookieKey(name string) func(*http.Request) string {
	return func(r *http.Request) string {
		cs := r.CookiesNamed(name)
		if len(cs) != 1 {
			return ""
		}
		return cs[0].Value
	}
}

// HeaderKey returns an AuthRequest.CacheKey that keys on the value of the
// named request header (e.g. Authorization); requests without it, or with
// more than one field of that name, are not cached.
func HeaderKey(name string) func(*http.Request) string {
	return func(r *http.Request) string {
		vv := r.Header.Values(name)
		if len(vv) != 1 {
			return ""
		}
		return vv[0]
	}
}

// authResult is the part of an auth answer a decision is made of.
type authResult struct {
	status int
	header http.Header // the whole answer's header, for denials
	body   []byte      // denials only
	out    http.Header // AuthResponseHeaders of an allow
	client http.Header // ClientResponseHeaders of an allow
}

func (a *AuthRequest) init() error {
	a.initOnce.Do(func() {
		u, err := url.Parse(a.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			a.initErr = fmt.Errorf("sluice: auth request URL %q: want an absolute http(s) URL", a.URL)
			return
		}
		a.target = u
		a.respNames = newHeaderNames(a.AuthResponseHeaders...)
		a.reqNames = a.RequestHeaders
		if a.reqNames == nil {
			a.reqNames = []string{"Authorization", "Cookie"}
		}
		if a.CacheKey != nil && a.CacheTTL > 0 {
			size := a.CacheSize
			if size <= 0 {
				size = DefaultAuthCacheSize
			}
			a.cache = flightcache.New[*authResult](a.CacheTTL, size, a.now)
		}
	})
	return a.initErr
}

// Authorize implements Authorizer.
func (a *AuthRequest) Authorize(pr *ProxyRequest) (Decision, error) {
	if err := a.init(); err != nil {
		return Decision{}, err
	}
	// Client-sent copies go, in every spelling an upstream would read as
	// the same name (X-Auth_User for X-Auth-User), whatever the decision.
	a.respNames.strip(pr.Out.Header)
	pr.owned = append(pr.owned, &a.respNames) // nor from a trailer
	var body []byte
	if a.SendBody && pr.Out.Body != nil && pr.Out.Body != http.NoBody {
		var tooLarge bool
		var err error
		body, tooLarge, err = a.peekBody(pr)
		if err != nil {
			return Decision{}, err
		}
		if tooLarge {
			return Deny(http.StatusRequestEntityTooLarge, "413 request body too large for authorization\n"), nil
		}
	}

	var res *authResult
	var err error
	key := ""
	if a.cache != nil && body == nil {
		key = a.CacheKey(pr.In)
	}
	if key == "" {
		res, err = a.call(pr.Context(), pr, body)
	} else {
		// The first caller's subrequest serves every waiter: it must not
		// die with the first client, only with its own timeout.
		res, err = a.cache.Load(pr.Context(), key, func() (*authResult, bool, error) {
			r, err := a.call(context.WithoutCancel(pr.Context()), pr, nil)
			return r, err == nil && r.allowed(), err
		})
	}
	if err != nil {
		return Decision{}, err
	}
	if !res.allowed() {
		return Decision{Response: res}, nil
	}
	for k, vv := range res.out {
		pr.Out.Header[k] = append([]string(nil), vv...)
	}
	if len(res.client) > 0 {
		mergeHeader(pr.ResponseHeader(), res.client)
	}
	return Allow, nil
}

func (r *authResult) allowed() bool { return r.status >= 200 && r.status <= 299 }

// ServeHTTP relays a denial to the client.
func (r *authResult) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	for k, vv := range r.header {
		h[k] = append(h[k], vv...)
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
}

// peekBody reads up to MaxBody bytes of the request body for the auth
// service and puts them back in front of the rest for the upstream.
func (a *AuthRequest) peekBody(pr *ProxyRequest) (body []byte, tooLarge bool, err error) {
	limit := a.MaxBody
	if limit <= 0 {
		limit = DefaultAuthMaxBody
	}
	if pr.Out.ContentLength > limit {
		return nil, true, nil
	}
	orig := pr.Out.Body
	body, err = io.ReadAll(io.LimitReader(orig, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("%w: reading request body for authorization: %w", errClientGone, err)
	}
	pr.Out.Body = &replayBody{Reader: io.MultiReader(bytes.NewReader(body), orig), c: orig}
	if int64(len(body)) > limit {
		return nil, true, nil
	}
	if body == nil {
		body = []byte{}
	}
	return body, false, nil
}

type replayBody struct {
	io.Reader
	c io.Closer
}

func (b *replayBody) Close() error { return b.c.Close() }

// call makes one subrequest.
func (a *AuthRequest) call(ctx context.Context, pr *ProxyRequest, body []byte) (*authResult, error) {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = DefaultAuthTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	method := a.Method
	if method == "" {
		method = http.MethodGet
		if body != nil {
			method = pr.In.Method
		}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	u := *a.target
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("sluice: auth request: %w", err)
	}
	in := pr.In
	for _, k := range a.reqNames {
		k = textproto.CanonicalMIMEHeaderKey(k)
		if isHopHeader(k) {
			continue
		}
		vv := in.Header[k]
		if k == "Cookie" && a.Cookies != nil {
			vv = filterCookies(in, a.Cookies)
		}
		if len(vv) > 0 {
			req.Header[k] = append([]string(nil), vv...)
		}
	}
	if body != nil {
		if ct := in.Header.Get("Content-Type"); ct != "" {
			req.Header.Set("Content-Type", ct)
		}
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	req.Header.Set("X-Forwarded-Method", in.Method)
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Header.Set("X-Forwarded-Host", in.Host)
	req.Header.Set("X-Forwarded-Uri", in.URL.RequestURI())
	if c := pr.ClientAddr(); c.IsValid() {
		req.Header.Set("X-Forwarded-For", c.String())
	}

	rt := a.Transport
	if rt == nil {
		p := pr.Proxy()
		p.init()
		rt = p.transport
	}
	res, err := rt.RoundTrip(req)
	if err != nil {
		if pr.In.Context().Err() != nil {
			return nil, fmt.Errorf("%w: %w", errClientGone, err)
		}
		return nil, &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("sluice: auth service: %w", err)}
	}
	defer res.Body.Close()
	removeHopByHop(res.Header)
	r := &authResult{status: res.StatusCode}
	if r.allowed() {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, res.Body, 4<<10)
		r.out = pick(res.Header, a.AuthResponseHeaders)
		r.client = pick(res.Header, a.ClientResponseHeaders)
		return r, nil
	}
	limit := a.MaxResponseBody
	if limit <= 0 {
		limit = DefaultAuthMaxResponseBody
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("sluice: auth service: reading answer: %w", err)}
	}
	if int64(len(b)) > limit {
		return nil, &Error{Status: http.StatusServiceUnavailable, Err: errors.New("sluice: auth service: answer body over the limit")}
	}
	res.Header.Del("Content-Length")
	r.header, r.body = res.Header, b
	return r, nil
}

// pick returns the values of names in h, nil if there are none.
func pick(h http.Header, names []string) http.Header {
	var out http.Header
	for _, k := range names {
		k = textproto.CanonicalMIMEHeaderKey(k)
		if isHopHeader(k) {
			continue
		}
		if vv := h[k]; len(vv) > 0 {
			if out == nil {
				out = make(http.Header, len(names))
			}
			out[k] = append([]string(nil), vv...)
		}
	}
	return out
}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// filterCookies returns a Cookie header holding only the named cookies.
func filterCookies(r *http.Request, names []string) []string {
	var parts []string
	for _, c := range r.Cookies() {
		for _, n := range names {
			if c.Name == n {
				parts = append(parts, c.Name+"="+c.Value)
				break
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return []string{strings.Join(parts, "; ")}
}
