package sluice

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/canonical"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// uriRecorder is an upstream that records the request targets it got.
type uriRecorder struct {
	mu   sync.Mutex
	uris []string
}

func (u *uriRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.uris = append(u.uris, r.RequestURI)
	u.mu.Unlock()
	io.WriteString(w, "upstream "+r.RequestURI)
}

func (u *uriRecorder) got() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.uris...)
}

// What a route's Authorizer decided on is what the upstream gets: however
// the client spells a guarded path, the request is either refused or
// denied, and what reaches the upstream is the canonical target the
// route table and the Director saw.
func TestGuardedPathCannotBeBypassedBySpelling(t *testing.T) {
	leaktest.Check(t)
	rec := &uriRecorder{}
	up := newUpstream(t, rec.ServeHTTP)
	target, _ := url.Parse(up.URL)
	var directed []string
	var mu sync.Mutex
	routes := new(PrefixDirector).Add("/app/", target, PrefixOptions{StripPrefix: true}).Add("/", target, PrefixOptions{})
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.Director = DirectorFunc(func(pr *ProxyRequest) error {
			mu.Lock()
			directed = append(directed, pr.Out.URL.RequestURI())
			mu.Unlock()
			return routes.Direct(pr)
		})
	})
	deny := AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
		return Deny(http.StatusForbidden, "guarded\n"), nil
	})
	p.AddRoute(Route{Pattern: "/secret", Authorizer: deny})
	p.AddRoute(Route{Pattern: "/admin/", Authorizer: deny})
	p.AddRoute(Route{Pattern: "/app/", Authorizer: AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Allow, nil })})

	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/app/../secret", 403},
		{"/app/%2e%2e/secret", 403},
		{"/app/.%2E/secret", 403},
		{"/app/./../secret", 403},
		{"//secret", 403},
		{"/%73ecret", 403},
		{"/admin", 403}, // ServeMux would redirect it to "/admin/"
		{"/admin/", 403},
		{"/ADMIN/../admin/x", 403},
		{"/app/..%2Fsecret", 400},  // encoded slash
		{"/app/..%5Csecret", 400},  // encoded backslash
		{"/app/..\\secret", 400},   // backslash
		{"/app/%00/x", 400},        // encoded NUL
		{"/app/../../secret", 400}, // above the root
		{"/admin;x/users", 400},    // Java servers read "/admin/users"
		{"/admin;x", 400},
		{"/..;/admin/", 400},
	} {
		resp := rawExchange(t, hostOf(px), "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 "+strconv.Itoa(tc.status)) {
			t.Errorf("GET %s: %q, want %d", tc.path, firstLine(resp), tc.status)
		}
	}
	if got := rec.got(); len(got) != 0 {
		t.Errorf("guarded paths reached the upstream as %q", got)
	}

	// Requests that are allowed reach the upstream as the Director saw
	// them, in canonical form, with PrefixDirector's prefix stripped from that form.
	for _, tc := range []struct{ path, dir, up string }{
		{"/app/x/../y?q=%2e%2E", "/app/y?q=%2e%2E", "/y?q=%2e%2E"},
		{"/app//%7Euser/a%2db", "/app/~user/a-b", "/~user/a-b"},
		{"/app/caf%c3%a9", "/app/caf%C3%A9", "/caf%C3%A9"},
		{"/public/./a/", "/public/a/", "/public/a/"},
		{"/x;jsessionid=1", "/x;jsessionid=1", "/x;jsessionid=1"}, // parameters on an unguarded path pass
	} {
		mu.Lock()
		directed = nil
		mu.Unlock()
		n := len(rec.got())
		resp := rawExchange(t, hostOf(px), "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			t.Errorf("GET %s: %q, want 200", tc.path, firstLine(resp))
			continue
		}
		mu.Lock()
		d := directed
		mu.Unlock()
		if diff := cmp.Diff([]string{tc.dir}, d); diff != "" {
			t.Errorf("GET %s: the Director saw (-want +got):\n%s", tc.path, diff)
		}
		if got := rec.got()[n:]; !cmp.Equal(got, []string{tc.up}) {
			t.Errorf("GET %s: the upstream got %q, want %q", tc.path, got, tc.up)
		}
	}
}

// KeepEncodedSlashes lets an encoded slash through as data: the upstream
// gets it encoded, and routes match it inside its segment.
func TestKeepEncodedSlashes(t *testing.T) {
	leaktest.Check(t)
	rec := &uriRecorder{}
	up := newUpstream(t, rec.ServeHTTP)
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) { p.KeepEncodedSlashes = true })
	p.AddRoute(Route{Pattern: "/admin/", Authorizer: AuthorizerFunc(func(*ProxyRequest) (Decision, error) {
		return Deny(http.StatusForbidden, "guarded\n"), nil
	})})
	resp := rawExchange(t, hostOf(px), "GET /bucket/a%2f..%2Fadmin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response %q", firstLine(resp))
	}
	if diff := cmp.Diff([]string{"/bucket/a%2F..%2Fadmin/x"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// The host every decision is made on is canonical, and so is the one a
// preserved Host header forwards.
func TestCanonicalHost(t *testing.T) {
	leaktest.Check(t)
	hosts := make(chan string, 8)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })
	target, _ := url.Parse(up.URL)
	px, p, _ := newProxy(t, up.URL, func(p *Proxy) { p.Director = &SingleHost{Target: target, PreserveHost: true} })
	p.AddRoute(Route{Pattern: "admin.example.com/", Authorizer: AuthorizerFunc(func(*ProxyRequest) (Decision, error) {
		return Deny(http.StatusForbidden, "guarded\n"), nil
	})})
	for _, h := range []string{"ADMIN.example.COM", "admin.example.com.", "admin.example.com:80", "admin.example.com.:0080"} {
		resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: "+h+"\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 403") {
			t.Errorf("Host %s: %q, want 403", h, firstLine(resp))
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"XN--BCHER-KVA.Example.", "xn--bcher-kva.example"},
		{"[2001:DB8::0:1]:8080", "[2001:db8::1]:8080"},
		{"www.example.com:80", "www.example.com"},
	} {
		resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: "+tc.in+"\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			t.Errorf("Host %s: %q, want 200", tc.in, firstLine(resp))
			continue
		}
		if got := <-hosts; got != tc.want {
			t.Errorf("Host %s reached the upstream as %q, want %q", tc.in, got, tc.want)
		}
	}
	resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a..b\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 400") {
		t.Errorf("Host a..b: %q, want 400", firstLine(resp))
	}
}

// The auth subrequest decides on the canonical target: X-Forwarded-Uri
// names what the upstream will serve.
func TestAuthRequestSeesCanonicalURI(t *testing.T) {
	leaktest.Check(t)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("X-Forwarded-Uri"), "/public/") {
			return // 200: allowed
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	t.Cleanup(auth.Close)
	rec := &uriRecorder{}
	up := newUpstream(t, rec.ServeHTTP)
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) { p.Authorizer = &AuthRequest{URL: auth.URL} })
	for path, want := range map[string]string{
		"/public/a.txt":          "200",
		"/public/../private.txt": "403",
		"/public/%2e%2e/private": "403",
		"/public//../private":    "403",
	} {
		resp := rawExchange(t, hostOf(px), "GET "+path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 "+want) {
			t.Errorf("GET %s: %q, want %s", path, firstLine(resp), want)
		}
	}
	if diff := cmp.Diff([]string{"/public/a.txt"}, rec.got()); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// Fallback and Local handlers get the request as safe as forwarding would
// have made it: no forged identity, forwarding headers set by the proxy,
// the Authorizer's additions kept, the canonical target.
func TestLocalHandlersGetSanitizedRequest(t *testing.T) {
	leaktest.Check(t)
	type seen struct {
		uri, user, xff, via string
	}
	got := make(chan seen, 2)
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.RequestURI, r.Header.Get("X-User"), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Sluice-Via")}
	})
	p := &Proxy{
		Fallback:        record,
		IdentityHeaders: []string{"X-User", "X-Sluice-*"},
		Authorizer: AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
			pr.Out.Header.Set("X-User", "alice")
			return Allow, nil
		}),
	}
	p.Handle("/local/", Local(record))
	front := newFront(t, p)
	t.Cleanup(front.Close)
	for _, path := range []string{"/app/../x", "/local/../local/y"} {
		resp := rawExchange(t, hostOf(front), "GET "+path+" HTTP/1.1\r\nHost: a\r\nX-User: mallory\r\nX_User: mallory\r\n"+
			"X-Sluice-Via: forged\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			t.Fatalf("GET %s: %q", path, firstLine(resp))
		}
		s := <-got
		want := seen{uri: "/x", user: "alice", xff: "127.0.0.1"}
		if strings.HasPrefix(path, "/local/") {
			want.uri = "/local/y"
		}
		if diff := cmp.Diff(want, s, cmp.AllowUnexported(seen{})); diff != "" {
			t.Errorf("GET %s: the local handler saw (-want +got):\n%s", path, diff)
		}
	}
}

// An X-Forwarded-For entry that is not an address never makes the client
// look like the trusted proxy that passed the request on.
func TestForwardedForEntries(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct{ xff, want string }{
		{"1.2.3.4", "1.2.3.4"},
		{"1.2.3.4:5678", "1.2.3.4"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"2001:db8::1", "2001:db8::1"},
		{"::ffff:1.2.3.4", "1.2.3.4"},
		{" 1.2.3.4 , 10.0.0.7", "1.2.3.4"},
		{"unknown", "invalid IP"},
		{"1.2.3.4, unknown", "invalid IP"},
		{"unknown, 10.0.0.7", "invalid IP"},
		{"_hidden", "invalid IP"},
		{"example.com", "invalid IP"},
		{"1.2.3.4:99999", "invalid IP"},
		{"", "invalid IP"},
		{"10.0.0.7", "10.0.0.7"}, // a chain of trusted proxies only
	} {
		r := &http.Request{RemoteAddr: "10.0.0.1:5", Header: http.Header{"X-Forwarded-For": {tc.xff}}}
		if got := clientAddr(r, peerAddr(r), trusted).String(); got != tc.want {
			t.Errorf("X-Forwarded-For %q: client %s, want %s", tc.xff, got, tc.want)
		}
	}

	// End to end: AllowFrom the trusted network does not let "unknown" in.
	up := newUpstream(t, func(http.ResponseWriter, *http.Request) {})
	px, _, _ := newProxy(t, up.URL, func(p *Proxy) {
		p.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		p.Authorizer = AllowFrom(netip.MustParsePrefix("127.0.0.0/8"))
	})
	for xff, want := range map[string]string{"unknown": "403", "127.0.0.5": "200", "[::1]:80": "403", "9.9.9.9:1": "403"} {
		resp := rawExchange(t, hostOf(px), "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: "+xff+"\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 "+want) {
			t.Errorf("X-Forwarded-For %s: %q, want %s", xff, firstLine(resp), want)
		}
	}
}

// roundTripFunc is an http.RoundTripper from a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzCanonicalTarget checks the invariant of docs/security.md directly:
// for any request target, the path the route table matched on, the path
// the Director saw and the path the upstream received are the same, and
// canonical, or the request was refused.
func FuzzCanonicalTarget(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x//y/", "/%2e%2E/", "/a%2Fb", "/a;b/..;/c", "/a%zz",
		"/caf%C3%A9/./x/", "/x?y=/../z", "/admin", "/admin;x/y", "http://Host./a/../b?c", "/a/%2e/b/.."} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, target string, keep bool) {
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n")))
		if err != nil {
			return // the server refuses it before the Proxy sees it
		}
		in.RemoteAddr = "192.0.2.1:1"
		var matched, directed, upstream string
		p := &Proxy{
			KeepEncodedSlashes: keep,
			Director: DirectorFunc(func(pr *ProxyRequest) error {
				directed = pr.Out.URL.EscapedPath()
				pr.SetURL(&url.URL{Scheme: "http", Host: "up"})
				return nil
			}),
			Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				upstream = r.URL.EscapedPath()
				return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
			}),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		p.HandleFunc("/{p...}", func(w http.ResponseWriter, pr *ProxyRequest) error {
			matched = "/" + pr.In.PathValue("p")
			return pr.Forward(w)
		})
		w := httptest.NewRecorder()
		p.ServeHTTP(w, in)
		if w.Code != 200 {
			if w.Code != 400 {
				t.Fatalf("%q: status %d", target, w.Code)
			}
			if matched != "" || directed != "" || upstream != "" {
				t.Fatalf("%q: refused, yet seen by a hook or the upstream", target)
			}
			return
		}
		dec, err := url.PathUnescape(directed)
		if err != nil || dec != matched || directed != upstream {
			t.Fatalf("%q: route matched %q, Director saw %q, upstream got %q", target, matched, directed, upstream)
		}
		if c, err := canonical.Path(upstream, keep); err != nil || c != upstream {
			t.Fatalf("%q: upstream got %q, not canonical (%q, %v)", target, upstream, c, err)
		}
	})
}
