package sluice

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/internal/canonical"
)

// An Interceptor handles a request that its route captured. It may answer
// locally by writing to w, edit pr.Out and call pr.Forward(w) to pass the
// request on (the transparent default), or call pr.RoundTrip to get the
// upstream's response, inspect or transform it and write the result itself.
//
// If Intercept returns an error and nothing was written to w yet, the
// client gets StatusFor(err) and the failure is logged; if the response
// already started, the client connection is aborted so that a truncated
// body never looks complete.
type Interceptor interface {
	Intercept(w http.ResponseWriter, pr *ProxyRequest) error
}

// InterceptorFunc adapts a function to the Interceptor interface.
type InterceptorFunc func(w http.ResponseWriter, pr *ProxyRequest) error

// Intercept calls f(w, pr).
func (f InterceptorFunc) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	return f(w, pr)
}

// Route is one entry of a Proxy's route table.
type Route struct {
	// Pattern selects the requests the route captures, in the syntax of
	// http.ServeMux: "[METHOD ][HOST]/[PATH]" with {name} and {name...}
	// wildcards, e.g. "POST /{index}/_search" or "files.example.com/".
	// Wildcard values are available from In.PathValue and Out.PathValue.
	Pattern string

	// Interceptor handles the captured request. If nil, the request is
	// forwarded as is (useful with Authorizer or Director alone).
	Interceptor Interceptor

	// Authorizer, if not nil, runs after the Proxy's Authorizer for
	// requests this route captured.
	Authorizer Authorizer

	// Director, if not nil, replaces the Proxy's Director for requests
	// this route captured.
	Director Director

	// Timeout, if positive, bounds each exchange the route captured, from
	// the route match to the end of the response body: see
	// ProxyRequest.SetTimeout. If zero, there is no total bound (idle
	// bounds still apply); set it on routes whose responses are short.
	Timeout time.Duration
}

// Handle adds a route that sends requests matching pattern to ic. Routes
// are tried in the order they were added and the first match wins (unlike
// http.ServeMux, where the most specific pattern wins). Matching is done on
// the request's canonical target, the one the hooks see and the upstream
// receives ("/a/../b" is "/b" for both); a pattern also claims the path
// with its trailing slash removed or added ("/admin/" claims "/admin",
// which ServeMux would redirect; "/secret" claims "/secret/", which many
// frameworks serve as "/secret"), and a path that would match another
// route once ";" parameters are cut off or letter case is ignored is
// refused with 400. A pattern's host is matched in canonical form. See
// docs/security.md.
//
// Handle panics if pattern is invalid, as http.ServeMux.Handle does, or
// if its host has a port (routes match the host without its port, so it
// would never match).
func (p *Proxy) Handle(pattern string, ic Interceptor) {
	p.AddRoute(Route{Pattern: pattern, Interceptor: ic})
}

// HandleFunc is Handle for a function.
func (p *Proxy) HandleFunc(pattern string, f func(w http.ResponseWriter, pr *ProxyRequest) error) {
	p.Handle(pattern, InterceptorFunc(f))
}

// AddRoute adds rt to the route table; see Handle.
func (p *Proxy) AddRoute(rt Route) {
	p.routes.add(rt)
}

type route struct {
	Route
	index int
	names []string // wildcard names in Pattern
}

func (rt *route) authorizer() Authorizer {
	if rt == nil {
		return nil
	}
	return rt.Authorizer
}

// ServeHTTP is never called for real: the route table uses http.ServeMux
// only to match, and *route is the handler type that marks a match.
func (rt *route) ServeHTTP(http.ResponseWriter, *http.Request) {}

// routeTable matches requests against routes with one http.ServeMux per
// route, so that the first added route wins whatever the specificity of
// its pattern. The common case (no routes) costs one atomic load.
type routeTable struct {
	mu        sync.Mutex
	routes    atomic.Pointer[[]*routeMux]
	mixedCase atomic.Bool                     // a pattern's path has upper case letters
	literals  atomic.Pointer[map[string]bool] // the literal segments of the patterns' paths
}

type routeMux struct {
	rt   *route
	mux  *http.ServeMux
	fold *http.ServeMux // the pattern with its path in lower case; mux if that changes nothing
	// slash: the pattern can match a path ending in "/" and not the same
	// path without it ("/x/", "/x/{$}", "/x/{rest...}"); otherwise the
	// other way round ("/x", "/{id}"). It tells which of a path's
	// trailing-slash spellings (see find) the route can claim.
	slash bool
}

func (t *routeTable) add(r Route) {
	names, err := wildcardNames(r.Pattern)
	if err != nil {
		panic(err)
	}
	pattern, folded, err := canonicalPattern(r.Pattern)
	if err != nil {
		panic(err)
	}
	rt := &route{Route: r, names: names}
	mux := http.NewServeMux()
	mux.Handle(pattern, rt)
	fold := mux
	if folded != pattern {
		fold = http.NewServeMux()
		fold.Handle(folded, rt)
		t.mixedCase.Store(true)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	lits := make(map[string]bool)
	if old := t.literals.Load(); old != nil {
		for k := range *old {
			lits[k] = true
		}
	}
	if i := strings.IndexByte(folded, '/'); i >= 0 {
		for seg := range strings.SplitSeq(folded[i:], "/") {
			if seg != "" && !strings.HasPrefix(seg, "{") {
				lits[seg] = true
			}
		}
	}
	t.literals.Store(&lits)
	var routes []*routeMux
	if old := t.routes.Load(); old != nil {
		routes = append(routes, *old...)
	}
	rt.index = len(routes)
	slash := strings.HasSuffix(pattern, "/") || strings.HasSuffix(pattern, "/{$}") || strings.HasSuffix(pattern, "...}")
	routes = append(routes, &routeMux{rt: rt, mux: mux, fold: fold, slash: slash})
	t.routes.Store(&routes)
}

// canonicalPattern returns a ServeMux pattern with its host in the
// canonical form request hosts are matched in (lower case, IDNA, no
// trailing dot), and the same pattern with its path in lower case. A host
// with a port is refused: ServeMux matches the request's host without its
// port, so such a route would never match, and a guard that never matches
// lets everything through.
func canonicalPattern(pattern string) (canon, folded string, err error) {
	method, rest := "", pattern
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		method, rest = pattern[:i+1], strings.TrimLeft(pattern[i+1:], " \t")
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return pattern, pattern, nil // ServeMux says what is wrong
	}
	host, path := rest[:i], rest[i:]
	if host != "" && !strings.Contains(host, "{") {
		h, err := canonical.Host(host, "")
		if err != nil {
			return "", "", fmt.Errorf("sluice: bad route pattern %q: %w", pattern, err)
		}
		if _, port, err := net.SplitHostPort(h); err == nil && port != "" {
			return "", "", fmt.Errorf("sluice: bad route pattern %q: a host with a port never matches (routes match the host without its port)", pattern)
		}
		host = h
	}
	return method + host + path, method + host + strings.ToLower(path), nil
}

// match returns the first route that claims the request and copies the
// pattern's wildcard values into pr.In and pr.Out. It matches on pr.In's
// canonical target, with additions that keep a guarded path guarded from
// upstreams that read paths more loosely than http.ServeMux:
//
//   - a route also claims the path with its trailing slash added or
//     removed: "/admin/" claims "/admin" (which ServeMux would redirect:
//     a redirect is a match, not a miss), "/secret" claims "/secret/"
//     (Express, Rails, ASP.NET Core and Laravel serve "/secret" there);
//   - a path with ";" parameters ("/admin;x/users") is refused with 400 if
//     it would match another route once its parameters are cut off, the
//     way many servers (Java's among them) read it;
//   - a path is refused with 400 if, in lower case and matched against the
//     patterns in lower case, it would match another route ("/ADMIN/x"
//     and a route "/admin/"): Express, ASP.NET Core and IIS match paths
//     without regard to case;
//   - a POST whose method override (methodOverrides) would match another
//     route is refused with 400: Rails, Symfony and Laravel route
//     "POST /items/1" with "X-HTTP-Method-Override: DELETE" as a DELETE.
func (t *routeTable) match(pr *ProxyRequest) (*route, error) {
	routes := t.routes.Load()
	if routes == nil {
		return nil, nil
	}
	m := matchRequest(pr.In, "")
	rm := find(*routes, m, false)
	escaped := pr.In.URL.EscapedPath()
	fold := t.mixedCase.Load() || t.foldsIntoLiteral(escaped)
	if fold && find(*routes, matchRequest(pr.In, strings.ToLower(escaped)), true) != rm {
		return nil, badTarget(errors.New("letter case would change the route"))
	}
	if canonical.HasParams(escaped) {
		p, err := canonical.Path(canonical.StripParams(escaped), pr.proxy.KeepEncodedSlashes)
		if err != nil {
			return nil, badTarget(fmt.Errorf("path parameters: %w", err))
		}
		if find(*routes, matchRequest(pr.In, p), false) != rm ||
			(t.mixedCase.Load() || t.foldsIntoLiteral(p)) && find(*routes, matchRequest(pr.In, strings.ToLower(p)), true) != rm {
			return nil, badTarget(errors.New("path parameters (\";\") would change the route"))
		}
	}
	if pr.In.Method == http.MethodPost {
		for _, method := range methodOverrides(pr.In) {
			mo := matchRequest(pr.In, "")
			mo.Method = method
			if find(*routes, mo, false) != rm {
				return nil, &Error{Status: http.StatusBadRequest, Err: errBadRequest("method override " + strconv.Quote(method) + " would change the route")}
			}
		}
	}
	if rm == nil {
		return nil, nil
	}
	rt := rm.rt
	if len(rt.names) > 0 {
		rm.mux.ServeHTTP(nopResponseWriter{}, m) // sets m's path values
		for _, name := range rt.names {
			v := m.PathValue(name)
			pr.In.SetPathValue(name, v)
			pr.Out.SetPathValue(name, v)
		}
	}
	pr.In.Pattern = rt.Pattern
	pr.Out.Pattern = rt.Pattern
	return rt, nil
}

// find returns the first route that claims m, with its pattern in lower
// case if fold is set: whose pattern matches m's path, or that path with
// its trailing slash added or removed. m is left with the path that
// matched.
func find(routes []*routeMux, m *http.Request, fold bool) *routeMux {
	orig := m.URL
	var alt *url.URL
	p := orig.EscapedPath()
	added := !strings.HasSuffix(p, "/") // alt is p with a slash added, else removed
	for _, rm := range routes {
		m.URL = orig
		if rm.claims(m, fold) {
			return rm
		}
		if p == "/" || rm.slash != added {
			continue // this route cannot claim the other spelling without the first
		}
		if alt == nil {
			u := *orig
			ap := p + "/"
			if !added {
				ap = p[:len(p)-1]
			}
			if setEscapedPath(&u, ap) != nil {
				continue
			}
			alt = &u
		}
		m.URL = alt
		if rm.claims(m, fold) {
			return rm
		}
	}
	m.URL = orig
	return nil
}

func (rm *routeMux) claims(m *http.Request, fold bool) bool {
	mux := rm.mux
	if fold {
		mux = rm.fold
	}
	h, _ := mux.Handler(m)
	_, ok := h.(*route)
	return ok
}

// methodOverrides returns the methods a POST request asks to be taken
// for, in upper case, the way frameworks read them: the
// X-HTTP-Method-Override, X-HTTP-Method and X-Method-Override headers in
// any spelling (Rails' Rack::MethodOverride, Symfony and Laravel, the
// method-override middlewares of Express and ASP.NET Core) and the
// "_method" query parameter (Symfony and Laravel). A "_method" form field
// in the body is not seen: a route that guards a path for some methods
// only cannot guard it from such upstreams (see docs/security.md).
func methodOverrides(r *http.Request) []string {
	var methods []string
	for k, vv := range r.Header {
		switch dashedName(k) {
		case "X-Http-Method-Override", "X-Http-Method", "X-Method-Override":
			for _, v := range vv {
				if v = textproto.TrimString(v); v != "" {
					methods = append(methods, strings.ToUpper(v))
				}
			}
		}
	}
	if strings.Contains(r.URL.RawQuery, "_method") {
		q, _ := url.ParseQuery(r.URL.RawQuery)
		for _, v := range q["_method"] {
			if v = strings.TrimSpace(v); v != "" {
				methods = append(methods, strings.ToUpper(v))
			}
		}
	}
	return methods
}

// foldsIntoLiteral reports whether a segment of the escaped path p has
// upper case letters and, in lower case, is a literal segment of a
// pattern: only then can ignoring case change which route matches, when
// no pattern has upper case letters itself.
func (t *routeTable) foldsIntoLiteral(p string) bool {
	if !hasUpper(p) {
		return false
	}
	lits := t.literals.Load()
	for seg := range strings.SplitSeq(p, "/") {
		if hasUpper(seg) && (*lits)[strings.ToLower(seg)] {
			return true
		}
	}
	return false
}

// hasUpper reports whether s has an upper case ASCII letter.
func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// matchRequest returns a shallow copy of r for matching (ServeMux sets
// path values on it), with escapedPath as its path if not empty. r's
// target is canonical already (see canonicalRequest).
func matchRequest(r *http.Request, escapedPath string) *http.Request {
	if r.Method == http.MethodConnect {
		// A tunnel is matched as the path "/" on its host, without its
		// port, like any other request's host.
		host, _, _ := net.SplitHostPort(r.URL.Host)
		return &http.Request{Method: r.Method, Host: host, URL: &url.URL{Host: host, Path: "/"}, Header: r.Header, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor}
	}
	m := *r
	u := *r.URL
	m.URL = &u
	if escapedPath != "" {
		if err := setEscapedPath(&u, escapedPath); err != nil {
			u.Path, u.RawPath = escapedPath, ""
		}
	}
	return &m
}

// wildcardNames returns the names of the {name} and {name...} wildcards
// of an http.ServeMux pattern.
func wildcardNames(pattern string) ([]string, error) {
	var names []string
	rest := pattern
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return names, nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("sluice: bad route pattern %q: unclosed wildcard", pattern)
		}
		name := strings.TrimSuffix(rest[i+1:i+j], "...")
		if name != "$" && name != "" {
			names = append(names, name)
		}
		rest = rest[i+j+1:]
	}
}

type nopResponseWriter struct{}

func (nopResponseWriter) Header() http.Header         { return http.Header{} }
func (nopResponseWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopResponseWriter) WriteHeader(int)             {}
