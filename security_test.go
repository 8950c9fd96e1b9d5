package sluice

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// Regression tests for an attacker's pass over the security model of
// docs/security.md ("what the proxy decides on is exactly what the
// upstream receives"). Each one failed before its fix.

// guardedSetup starts an upstream that records the targets it gets and a
// Proxy in front of it; configure adds routes.
func guardedSetup(t *testing.T, configure func(p *Proxy)) (front string, rec *uriRecorder) {
	t.Helper()
	rec = &uriRecorder{}
	up := newUpstream(t, rec.ServeHTTP)
	px, p, _ := newProxy(t, up.URL)
	configure(p)
	return hostOf(px), rec
}

var (
	denyAll  = AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Deny(http.StatusForbidden, "guarded\n"), nil })
	allowAll = AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Allow, nil })
)

// statusOf sends one raw request line (and headers, without the final
// CRLF) and returns the status code of the answer.
func statusOf(t *testing.T, front, head string) int {
	t.Helper()
	resp := rawExchange(t, front, head+"Connection: close\r\n\r\n")
	if len(resp) < 12 {
		t.Fatalf("%q: no answer: %q", head, resp)
	}
	code, err := strconv.Atoi(resp[9:12])
	if err != nil {
		t.Fatalf("%q: answer %q", head, firstLine(resp))
	}
	return code
}

// A route claims its path with the trailing slash added or removed,
// whatever route follows it. Before, "/admin/" claimed "/admin" only when
// no later route matched "/admin", so a catch-all route after the guard
// ("/") took it; and "/secret" never claimed "/secret/", which Express,
// Rails, ASP.NET Core and Laravel serve as "/secret".
func TestAttackTrailingSlashClaimsGuardedRoute(t *testing.T) {
	leaktest.Check(t)
	front, rec := guardedSetup(t, func(p *Proxy) {
		p.AddRoute(Route{Pattern: "/admin/", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "/secret", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "GET /items/{id}", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "/", Authorizer: allowAll})
	})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/admin", 403},
		{"/admin/", 403},
		{"/admin/x", 403},
		{"/secret", 403},
		{"/secret/", 403},
		{"/secret/.", 403},
		{"/items/7/", 403},
		{"/admin;x", 400}, // parameters would change the route
		{"/SECRET", 400},  // letter case would
		{"/ADMIN;x/y", 400},
		{"/Public/X", 200},
		{"/public", 200},
		{"/public/", 200},
		{"/secretary", 200},
		{"/", 200},
	} {
		if got := statusOf(t, front, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n"); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"/Public/X", "/public", "/public/", "/secretary", "/"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// A path that would match another route if letter case were ignored is
// refused: Express, ASP.NET Core and IIS route "/ADMIN/x" to "/admin/".
func TestAttackLetterCaseCannotSkipRoute(t *testing.T) {
	leaktest.Check(t)
	front, rec := guardedSetup(t, func(p *Proxy) {
		p.AddRoute(Route{Pattern: "/admin/", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "/Docs/", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "/", Authorizer: allowAll})
	})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/ADMIN/x", 400},
		{"/Admin", 400},
		{"/%41dmin/x", 400}, // %41 is "A"
		{"/ADMIN;x/y", 400},
		{"/docs/x", 400}, // the pattern's case differs from the request's
		{"/Docs/x", 403},
		{"/admin/x", 403},
		{"/Public/README", 200},
	} {
		if got := statusOf(t, front, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n"); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"/Public/README"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// A method in lower case is refused: RFC 9110 methods are case-sensitive,
// so "delete" skipped a "DELETE /items/" route, and Django, Flask,
// Symfony and Laravel upper-case it into a DELETE.
func TestAttackLowerCaseMethodRefused(t *testing.T) {
	leaktest.Check(t)
	front, rec := guardedSetup(t, func(p *Proxy) {
		p.AddRoute(Route{Pattern: "DELETE /items/", Authorizer: denyAll})
	})
	for _, tc := range []struct {
		method string
		want   int
	}{
		{"delete", 400},
		{"Delete", 400},
		{"DELETE", 403},
		{"GET", 200},
	} {
		if got := statusOf(t, front, tc.method+" /items/1 HTTP/1.1\r\nHost: a\r\n"); got != tc.want {
			t.Errorf("%s /items/1: %d, want %d", tc.method, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"/items/1"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// A route's host is matched in the canonical form request hosts have. A
// pattern spelled with capitals, a trailing dot or Unicode never matched
// a canonical (lower case, ASCII) request host, so the guard was skipped;
// one with a port can never match and is refused when added.
func TestAttackRoutePatternHostCanonical(t *testing.T) {
	leaktest.Check(t)
	front, rec := guardedSetup(t, func(p *Proxy) {
		p.AddRoute(Route{Pattern: "Admin.Example.COM./", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "GET bücher.example/", Authorizer: denyAll})
	})
	for _, tc := range []struct {
		host string
		want int
	}{
		{"admin.example.com", 403},
		{"ADMIN.example.com:8080", 403},
		{"xn--bcher-kva.example", 403},
		{"www.example.com", 200},
	} {
		if got := statusOf(t, front, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\n"); got != tc.want {
			t.Errorf("Host %s: %d, want %d", tc.host, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"/"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
	for _, pattern := range []string{"admin.example.com:8443/", "GET a..b/"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddRoute(%q) did not panic", pattern)
				}
			}()
			new(Proxy).AddRoute(Route{Pattern: pattern, Authorizer: denyAll})
		}()
	}
}

// OPTIONS * is refused: no route pattern can match it, so a catch-all
// guard ("/") never saw it, and a Director with a target path forwarded
// it as "OPTIONS /base/%2A", a path no route was matched on.
func TestAttackAsteriskFormRefused(t *testing.T) {
	leaktest.Check(t)
	rec := &uriRecorder{}
	up := newUpstream(t, rec.ServeHTTP)
	target, _ := url.Parse(up.URL + "/base")
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) { p.Director = &SingleHost{Target: target} })
	p.AddRoute(Route{Pattern: "/", Authorizer: denyAll})
	want := 400
	if netHTTPFront() {
		want = 200 // http.Server answers OPTIONS * itself, the Proxy never sees it
	}
	if got := statusOf(t, hostOf(px), "OPTIONS * HTTP/1.1\r\nHost: a\r\n"); got != want {
		t.Errorf("OPTIONS *: %d, want %d", got, want)
	}
	if got := rec.got(); len(got) != 0 {
		t.Errorf("upstream got %q", got)
	}
}

// A client cannot make the proxy drop the X-Forwarded-For chain a trusted
// proxy in front built by naming it in Connection: the upstream would
// then see that trusted proxy (an internal address) as the client, while
// the Proxy's own decisions (ClientAddr) used the real one.
func TestAttackConnectionCannotDropForwardingChain(t *testing.T) {
	leaktest.Check(t)
	type seen struct{ XFF, Forwarded, RealIP, Client string }
	got := make(chan seen, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{XFF: r.Header.Get("X-Forwarded-For"), Forwarded: r.Header.Get("Forwarded"), RealIP: r.Header.Get("X-Real-Ip")}
	})
	clients := make(chan string, 1)
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		p.Authorizer = AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
			clients <- pr.ClientAddr().String()
			return Allow, nil
		})
	})
	if code := statusOf(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n"+
		"Forwarded: for=203.0.113.9\r\nX-Real-Ip: 203.0.113.9\r\n"+
		"Connection: keep-alive, x-forwarded-for, FORWARDED, X-Real-IP\r\n"); code != 200 {
		t.Fatalf("status %d", code)
	}
	s := <-got
	s.Client = <-clients
	want := seen{
		XFF:       "203.0.113.9, 127.0.0.1",
		Forwarded: "for=203.0.113.9, for=127.0.0.1;host=a;proto=http",
		RealIP:    "203.0.113.9",
		Client:    "203.0.113.9",
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("upstream saw (-want +got):\n%s", diff)
	}
}

// AuthRequest's AuthResponseHeaders never come from a client's request
// trailers, announced or not, in any spelling: AuthRequest deletes them
// from the header, and an upstream that merges trailers into the header
// would otherwise take the client's X-Auth-User.
func TestAttackAuthResponseHeadersNotFromTrailers(t *testing.T) {
	leaktest.Check(t)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth-User", "alice")
	}))
	t.Cleanup(auth.Close)
	got := make(chan http.Header, 2)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
	})
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.Authorizer = &AuthRequest{URL: auth.URL, AuthResponseHeaders: []string{"X-Auth-User", "X-Auth-Role"}}
	})
	for _, declared := range []string{"Trailer: X-Auth-User, X-Auth-Role, X-Checksum\r\n", ""} {
		resp := rawExchange(t, hostOf(px), "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"+declared+
			"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Auth-User: admin\r\nx_auth_role: root\r\nX-Checksum: abc\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			t.Fatalf("declared %q: %q", declared, firstLine(resp))
		}
		tr := <-got
		for k := range tr {
			if len(tr[k]) == 0 {
				delete(tr, k) // announced, never filled
			}
		}
		if diff := cmp.Diff(http.Header{"X-Checksum": {"abc"}}, tr); diff != "" {
			t.Errorf("declared %q: upstream trailers (-want +got):\n%s", declared, diff)
		}
	}
}

// With KeepEncodedSlashes, PrefixDirector matches and strips its prefix on the
// escaped path the route table matched, so an encoded slash stays one.
// Before, PrefixDirector matched "/api%2Fsecret" against "/api/" on the decoded
// path (while the guard "/api/" did not match the one segment
// "api%2Fsecret"), and StripPrefix decoded it: the api upstream got
// "/secret", and "/api%2F..%2Fsecret" became "/../secret".
func TestAttackRoutesKeepEncodedSlash(t *testing.T) {
	leaktest.Check(t)
	apiRec, mainRec := &uriRecorder{}, &uriRecorder{}
	api := newUpstream(t, apiRec.ServeHTTP)
	main := newUpstream(t, mainRec.ServeHTTP)
	apiURL, _ := url.Parse(api.URL)
	mainURL, _ := url.Parse(main.URL)
	routes := new(PrefixDirector).
		Add("/api/", apiURL, PrefixOptions{StripPrefix: true}).
		Add("/", mainURL, PrefixOptions{})
	px, p, _ := newProxy(t, main.URL, func(p *Proxy) { p.Director = routes; p.KeepEncodedSlashes = true })
	p.AddRoute(Route{Pattern: "/api/", Authorizer: denyAll})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/api/x", 403},
		{"/api%2Fsecret", 200},
		{"/api%2F..%2Fsecret", 200},
	} {
		if got := statusOf(t, hostOf(px), "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n"); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, got, tc.want)
		}
	}
	if got := apiRec.got(); len(got) != 0 {
		t.Errorf("the guarded upstream got %q", got)
	}
	if diff := cmp.Diff([]string{"/api%2Fsecret", "/api%2F..%2Fsecret"}, mainRec.got()); diff != "" {
		t.Errorf("the other upstream got (-want +got):\n%s", diff)
	}
	// Stripping still works on encoded paths.
	px2, _, _ := newProxy(t, main.URL, func(p *Proxy) { p.Director = routes; p.KeepEncodedSlashes = true })
	if got := statusOf(t, hostOf(px2), "GET /api/a%2Fb/c HTTP/1.1\r\nHost: a\r\n"); got != 200 {
		t.Fatalf("GET /api/a%%2Fb/c: %d", got)
	}
	if diff := cmp.Diff([]string{"/a%2Fb/c"}, apiRec.got()); diff != "" {
		t.Errorf("api upstream got (-want +got):\n%s", diff)
	}
}

// absoluteForm is what package forward's Director does with an
// absolute-form request, without its address check (this test's
// transport does not dial).
var absoluteForm = DirectorFunc(func(pr *ProxyRequest) error {
	if !pr.In.URL.IsAbs() {
		return ErrNoRoute
	}
	pr.Out.URL.Scheme, pr.Out.URL.Host = pr.In.URL.Scheme, pr.In.URL.Host
	pr.Out.Host = ""
	return nil
})

// forwardSetup is a forward proxy whose Authorizer refuses loopback
// hosts, the kind of policy (block 127.0.0.1, 169.254.169.254) that must
// see the host the request goes to; its transport records what it is
// asked to reach instead of dialing.
func forwardSetup(t *testing.T) (front string, authorized, reached func() []string) {
	t.Helper()
	var mu sync.Mutex
	var auth, reach []string
	logs := &logRecorder{}
	p := &Proxy{
		Logger:   logs.logger(),
		Director: absoluteForm,
		Authorizer: AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
			mu.Lock()
			auth = append(auth, pr.In.URL.String())
			mu.Unlock()
			if h := requestHost(pr.In); h == "127.0.0.1" || h == "localhost" {
				return Deny(http.StatusForbidden, "blocked\n"), nil
			}
			return Allow, nil
		}),
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			reach = append(reach, r.URL.Host)
			mu.Unlock()
			return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
		}),
	}
	f := newFront(t, p)
	t.Cleanup(f.Close)
	get := func(l *[]string) func() []string {
		return func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), *l...)
		}
	}
	return hostOf(f), get(&auth), get(&reach)
}

// A host whose last label is a number is an IPv4 address to browsers and
// to inet_aton-style resolvers (glibc, Go's cgo resolver, the default on
// macOS): "2130706433", "127.1", "0x7f.1" and "0177.0.0.1" reach
// 127.0.0.1. They were taken for names, so a policy on the address never
// saw it. They are refused now.
func TestAttackNumericHostRefused(t *testing.T) {
	leaktest.Check(t)
	front, _, reached := forwardSetup(t)
	for _, host := range []string{"2130706433", "127.1", "0x7f.1", "0177.0.0.1", "127.000.000.001", "0x7F000001"} {
		if got := statusOf(t, front, "GET http://"+host+"/ HTTP/1.1\r\nHost: "+host+"\r\n"); got != 400 {
			t.Errorf("GET http://%s/: %d, want 400", host, got)
		}
		if got := statusOf(t, front, "GET / HTTP/1.1\r\nHost: "+host+"\r\n"); got != 400 {
			t.Errorf("Host: %s: %d, want 400", host, got)
		}
	}
	if got := statusOf(t, front, "GET http://127.0.0.1/ HTTP/1.1\r\nHost: a\r\n"); got != 403 {
		t.Errorf("GET http://127.0.0.1/: %d, want 403", got)
	}
	if got := statusOf(t, front, "GET http://1.example/ HTTP/1.1\r\nHost: a\r\n"); got != 200 {
		t.Errorf("GET http://1.example/: %d, want 200", got)
	}
	if diff := cmp.Diff([]string{"1.example"}, reached()); diff != "" {
		t.Errorf("transport reached (-want +got):\n%s", diff)
	}
}

// Userinfo in an absolute-form target is refused (RFC 9110 §4.2.4): a
// helper or policy reading the URL as a string could take
// "http://127.0.0.1@allowed.example/" for a request to 127.0.0.1, or the
// other way round.
func TestAttackUserinfoRefused(t *testing.T) {
	leaktest.Check(t)
	front, authorized, reached := forwardSetup(t)
	for _, target := range []string{"http://allowed.example@127.0.0.1/", "http://u:p@localhost/x"} {
		if got := statusOf(t, front, "GET "+target+" HTTP/1.1\r\nHost: a\r\n"); got != 400 {
			t.Errorf("GET %s: %d, want 400", target, got)
		}
	}
	if len(authorized()) != 0 || len(reached()) != 0 {
		t.Errorf("hooks saw %q, transport reached %q", authorized(), reached())
	}
}

// Two different requests do not share a cached allow through a key that
// captures only part of what the auth service decided on. With two
// cookies of the key's name the key was the first, while an auth service
// that reads the last (Django does) decided on the other: the allow
// earned by "session=FORGED; session=GOOD" was then served from the cache
// to "session=FORGED" alone, which the service refuses.
func TestAttackAuthCacheKeyAmbiguous(t *testing.T) {
	leaktest.Check(t)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last := ""
		for _, c := range r.CookiesNamed("session") { // the last one wins, as in Django
			last = c.Value
		}
		if last != "GOOD" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-User", "alice")
	}))
	t.Cleanup(auth.Close)
	users := make(chan string, 4)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { users <- r.Header.Get("X-Auth-User") })
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.Authorizer = &AuthRequest{
			URL:                 auth.URL,
			AuthResponseHeaders: []string{"X-Auth-User"},
			CacheKey:            CookieKey("session"),
			CacheTTL:            time.Minute,
		}
	})
	if got := statusOf(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\nCookie: session=FORGED; session=GOOD\r\n"); got != 200 {
		t.Fatalf("two cookies: %d, want 200", got)
	}
	<-users
	if got := statusOf(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\nCookie: session=FORGED\r\n"); got != 401 {
		t.Errorf("session=FORGED: %d, want 401 (the auth service refuses it)", got)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Authorization", "Bearer a")
	r.Header.Add("Authorization", "Bearer b")
	if k := HeaderKey("Authorization")(r); k != "" {
		t.Errorf("HeaderKey with two Authorization fields: %q, want no key", k)
	}
	r.Header.Set("Cookie", "session=a; session=b")
	if k := CookieKey("session")(r); k != "" {
		t.Errorf("CookieKey with two session cookies: %q, want no key", k)
	}
}

// A POST with a method override (X-HTTP-Method-Override and its
// variants, or "_method" in the query) that would match another route is
// refused: Rails, Symfony and Laravel route "POST /items/1" with
// "X-HTTP-Method-Override: DELETE" to their DELETE handler, past a
// "DELETE /items/" guard.
func TestAttackMethodOverrideCannotSkipRoute(t *testing.T) {
	leaktest.Check(t)
	front, rec := guardedSetup(t, func(p *Proxy) {
		p.AddRoute(Route{Pattern: "DELETE /items/", Authorizer: denyAll})
		p.AddRoute(Route{Pattern: "/", Authorizer: allowAll})
	})
	for _, tc := range []struct {
		head string
		want int
	}{
		{"POST /items/1 HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: DELETE\r\n", 400},
		{"POST /items/1 HTTP/1.1\r\nHost: a\r\nX-Http-Method: delete\r\n", 400},
		{"POST /items/1 HTTP/1.1\r\nHost: a\r\nX_Method_Override: DELETE\r\n", 400},
		{"POST /items/1?_method=DELETE HTTP/1.1\r\nHost: a\r\n", 400},
		{"POST /items/1?x=1&_method=delete HTTP/1.1\r\nHost: a\r\n", 400},
		{"POST /items/1 HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: PATCH\r\n", 200}, // the same route either way
		{"POST /items/1?_method_x=DELETE HTTP/1.1\r\nHost: a\r\n", 200},
		{"POST /items/1 HTTP/1.1\r\nHost: a\r\n", 200},
	} {
		if got := statusOf(t, front, tc.head+"Content-Length: 0\r\n"); got != tc.want {
			t.Errorf("%q: %d, want %d", tc.head, got, tc.want)
		}
	}
	if diff := cmp.Diff([]string{"/items/1", "/items/1?_method_x=DELETE", "/items/1"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// The headers that Yii and Zend read as the request path instead of the
// request line (IIS rewrite modules' X-Rewrite-Url and X-Original-Url)
// never come from a client, trusted peer or not, in the header or a
// trailer: "GET /public" with "X-Rewrite-Url: /admin" was served as
// "/admin" past an "/admin/" guard.
func TestAttackTargetOverrideHeadersDropped(t *testing.T) {
	leaktest.Check(t)
	got := make(chan http.Header, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := r.Header.Clone()
		for k, vv := range r.Trailer {
			h[k] = append(h[k], vv...)
		}
		got <- h
	})
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	p.AddRoute(Route{Pattern: "/admin/", Authorizer: denyAll})
	resp := rawExchange(t, hostOf(px), "POST /public HTTP/1.1\r\nHost: a\r\nX-Rewrite-Url: /admin/\r\n"+
		"X-Original-URL: /admin/\r\nX_Original_Url: /admin/\r\nX-Original-URI: /admin/\r\n"+
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\na\r\n0\r\nX-Rewrite-Url: /admin/\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("%q", firstLine(resp))
	}
	h := <-got
	for k := range h {
		switch dashedName(k) {
		case "X-Rewrite-Url", "X-Original-Url", "X-Original-Uri":
			t.Errorf("upstream got %s: %q", k, h[k])
		}
	}
}

// A trusted proxy that names the client in Forwarded only (RFC 7239, no
// X-Forwarded-For) does not make the client look like that proxy: the
// client was the trusted peer itself, so AllowFrom(the proxies' network)
// let every client in, while the upstream read the real client from the
// Forwarded chain the Proxy extended.
func TestAttackForwardedOnlyClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct{ fwd, want string }{
		{"for=203.0.113.9", "203.0.113.9"},
		{`for="[2001:db8::1]:4711";proto=https`, "2001:db8::1"},
		{"For=203.0.113.9;by=10.0.0.1, for=10.0.0.7", "203.0.113.9"},
		{"for=unknown", "invalid IP"},
		{"for=_hidden", "invalid IP"},
		{"proto=https", "invalid IP"},
		{"for=10.0.0.7", "10.0.0.7"},
	} {
		r := &http.Request{RemoteAddr: "10.0.0.1:5", Header: http.Header{"Forwarded": {tc.fwd}}}
		if got := clientAddr(r, peerAddr(r), trusted).String(); got != tc.want {
			t.Errorf("Forwarded %q: client %s, want %s", tc.fwd, got, tc.want)
		}
	}
	up := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		p.Authorizer = AllowFrom(netip.MustParsePrefix("127.0.0.0/8"))
	})
	if got := statusOf(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=203.0.113.9\r\n"); got != 403 {
		t.Errorf("Forwarded: for=203.0.113.9 from a trusted peer: %d, want 403", got)
	}
	if got := statusOf(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\n"); got != 200 {
		t.Errorf("the trusted peer itself: %d, want 200", got)
	}
}
