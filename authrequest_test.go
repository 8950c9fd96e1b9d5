package sluice

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// headerEcho is an upstream that answers with the request headers it got
// as JSON, and the body length.
func headerEcho(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Body-Len", strconv.FormatInt(n, 10))
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(s.Close)
	return s
}

// authService is a test auth service: session "alice" is allowed with
// X-Auth-User: alice, anything else is redirected to /login. It counts
// calls and can be made to block on a session.
type authService struct {
	*httptest.Server
	calls   atomic.Int32
	block   chan struct{} // closed to release blocked calls
	blockOn string
	last    atomic.Pointer[http.Request]
	body    atomic.Pointer[string]
}

func newAuthService(t *testing.T) *authService {
	t.Helper()
	a := &authService{block: make(chan struct{})}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		a.last.Store(r)
		b, _ := io.ReadAll(r.Body)
		s := string(b)
		a.body.Store(&s)
		c, _ := r.Cookie("session")
		if c != nil && a.blockOn != "" && c.Value == a.blockOn {
			select {
			case <-a.block:
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case c != nil && (c.Value == "alice" || c.Value == "slow" || c.Value == "fast"):
			w.Header().Set("X-Auth-User", c.Value)
			w.Header().Set("Connection", "X-Secret")
			w.Header().Set("X-Secret", "hop")
			w.Header().Add("Set-Cookie", "session="+c.Value+"; Path=/; Max-Age=3600")
			w.WriteHeader(http.StatusOK)
		case r.Header.Get("Accept") == "application/json":
			w.Header().Set("WWW-Authenticate", `Bearer realm="demo"`)
			w.Header().Set("Connection", "X-Secret")
			w.Header().Set("X-Secret", "hop")
			http.Error(w, "login required", http.StatusUnauthorized)
		default:
			http.Redirect(w, r, "/login?rd="+url.QueryEscape(r.Header.Get("X-Forwarded-Uri")), http.StatusFound)
		}
	}))
	t.Cleanup(a.Close)
	t.Cleanup(func() {
		select {
		case <-a.block:
		default:
			close(a.block)
		}
	})
	return a
}

type authSetup struct {
	proxy    *Proxy
	front    *httptest.Server
	auth     *authService
	ar       *AuthRequest
	upstream *httptest.Server
}

func newAuthSetup(t *testing.T, configure func(*AuthRequest)) *authSetup {
	t.Helper()
	up := headerEcho(t)
	as := newAuthService(t)
	ar := &AuthRequest{
		URL:                   as.URL + "/auth",
		RequestHeaders:        []string{"Cookie", "Accept"},
		Cookies:               []string{"session"},
		AuthResponseHeaders:   []string{"X-Auth-User", "X-Secret"},
		ClientResponseHeaders: []string{"Set-Cookie"},
	}
	if configure != nil {
		configure(ar)
	}
	target, _ := url.Parse(up.URL)
	p := &Proxy{
		Director:        &SingleHost{Target: target},
		IdentityHeaders: []string{"X-Sluice-*", "X-Auth-User"},
	}
	p.AddRoute(Route{Pattern: "/private/", Authorizer: Chain(ar, AuthorizerFunc(func(pr *ProxyRequest) (Decision, error) {
		pr.Out.Header.Set("X-Sluice-User", pr.Out.Header.Get("X-Auth-User"))
		return Allow, nil
	}))})
	front := newFront(t, p)
	t.Cleanup(front.Close)
	t.Cleanup(p.CloseIdleConnections)
	return &authSetup{proxy: p, front: front, auth: as, ar: ar, upstream: up}
}

type result struct {
	status  int
	header  http.Header
	body    string
	echoed  http.Header
	cookies []string
}

func do(t *testing.T, c *http.Client, req *http.Request) result {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := result{status: res.StatusCode, header: res.Header, body: string(b), cookies: res.Header.Values("Set-Cookie")}
	if res.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &r.echoed); err != nil {
			t.Fatalf("bad echo %q: %v", b, err)
		}
	}
	return r
}

func noRedirect() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func TestAuthRequestSpoofedIdentity(t *testing.T) {
	leaktest.Check(t)
	s := newAuthSetup(t, func(ar *AuthRequest) {
		ar.CacheKey = CookieKey("session")
		ar.CacheTTL = time.Hour
	})
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	tests := []struct {
		name      string
		path      string
		cookie    string
		wantUser  []string // X-Auth-User at the upstream
		wantSluic []string // X-Sluice-User at the upstream
		wantCalls int32
	}{
		{"public path", "/public", "", nil, nil, 0},
		{"public path with session", "/public", "alice", nil, nil, 0},
		{"after auth", "/private/x", "alice", []string{"alice"}, []string{"alice"}, 1},
		{"after cache hit", "/private/y", "alice", []string{"alice"}, []string{"alice"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.front.URL+tt.path, nil)
			req.Header.Set("X-Auth-User", "mallory")
			req.Header.Add("X-Auth-User", "root")
			req.Header.Set("X-Sluice-User", "mallory")
			req.Header.Set("X-Sluice-User-Email", "mallory@evil")
			req.Header.Set("x-sluice-groups", "admin")
			req.Header["X-Auth_user"] = []string{"mallory"} // read as X-Auth-User by CGI-style apps
			if tt.cookie != "" {
				req.AddCookie(&http.Cookie{Name: "session", Value: tt.cookie})
			}
			r := do(t, c, req)
			if r.status != http.StatusOK {
				t.Fatalf("status %d, body %q", r.status, r.body)
			}
			got := map[string][]string{
				"X-Auth-User":         r.echoed["X-Auth-User"],
				"X-Sluice-User":       r.echoed["X-Sluice-User"],
				"X-Sluice-User-Email": r.echoed["X-Sluice-User-Email"],
				"X-Sluice-Groups":     r.echoed["X-Sluice-Groups"],
				"X-Secret":            r.echoed["X-Secret"],
				"X-Auth_user":         r.echoed["X-Auth_user"],
			}
			want := map[string][]string{
				"X-Auth_user":         nil,
				"X-Auth-User":         tt.wantUser,
				"X-Sluice-User":       tt.wantSluic,
				"X-Sluice-User-Email": nil,
				"X-Sluice-Groups":     nil,
				"X-Secret":            nil,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("identity at upstream (-want +got):\n%s", diff)
			}
			if n := s.auth.calls.Load(); n != tt.wantCalls {
				t.Errorf("auth calls = %d, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestAuthRequestDenials(t *testing.T) {
	leaktest.Check(t)
	s := newAuthSetup(t, nil)
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	tests := []struct {
		name       string
		accept     string
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{"browser", "text/html", http.StatusFound,
			map[string]string{"Location": "/login?rd=%2Fprivate%2Fdoc%3Fa%3D1", "X-Secret": "", "Connection": ""}, ""},
		{"api", "application/json", http.StatusUnauthorized,
			map[string]string{"Www-Authenticate": `Bearer realm="demo"`, "X-Secret": "", "Connection": ""}, "login required\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.front.URL+"/private/doc?a=1", nil)
			req.Header.Set("Accept", tt.accept)
			req.AddCookie(&http.Cookie{Name: "session", Value: "bob"})
			req.AddCookie(&http.Cookie{Name: "tracking", Value: "xyz"})
			r := do(t, c, req)
			if r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", r.status, tt.wantStatus)
			}
			got := map[string]string{}
			for k := range tt.wantHeader {
				got[k] = r.header.Get(k)
			}
			if diff := cmp.Diff(tt.wantHeader, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if tt.wantBody != "" && r.body != tt.wantBody {
				t.Errorf("body = %q, want %q", r.body, tt.wantBody)
			}
			last := s.auth.last.Load()
			sent := map[string]string{
				"Cookie":             last.Header.Get("Cookie"),
				"X-Forwarded-Method": last.Header.Get("X-Forwarded-Method"),
				"X-Forwarded-Uri":    last.Header.Get("X-Forwarded-Uri"),
				"X-Forwarded-For":    last.Header.Get("X-Forwarded-For"),
				"Method":             last.Method,
			}
			wantSent := map[string]string{
				"Cookie":             "session=bob",
				"X-Forwarded-Method": "GET",
				"X-Forwarded-Uri":    "/private/doc?a=1",
				"X-Forwarded-For":    "127.0.0.1",
				"Method":             "GET",
			}
			if diff := cmp.Diff(wantSent, sent); diff != "" {
				t.Errorf("subrequest (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCookieMerge checks that a Set-Cookie from the auth service (session
// refresh) and the upstream's both reach the client.
func TestCookieMerge(t *testing.T) {
	leaktest.Check(t)
	s := newAuthSetup(t, nil)
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	req, _ := http.NewRequest("GET", s.front.URL+"/private/", nil)
	req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
	r := do(t, c, req)
	got := slices.Sorted(slices.Values(r.cookies))
	want := []string{"app=1; Path=/", "session=alice; Path=/; Max-Age=3600"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Set-Cookie (-want +got):\n%s", diff)
	}
}

func TestAuthRequestFailClosed(t *testing.T) {
	leaktest.Check(t)
	up := headerEcho(t)
	target, _ := url.Parse(up.URL)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String() + "/auth"
	ln.Close() // nothing listens there now

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang) })

	tests := []struct {
		name string
		auth Authorizer
		want int
	}{
		{"down", &AuthRequest{URL: downURL}, http.StatusServiceUnavailable},
		{"timeout", &AuthRequest{URL: slow.URL, Timeout: 50 * time.Millisecond}, http.StatusServiceUnavailable},
		{"bad url", &AuthRequest{URL: "/relative"}, http.StatusInternalServerError},
		{"down, fail open", FailOpen(&AuthRequest{URL: downURL}, nil), http.StatusOK},
		{"plain error", AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Allow, errors.New("boom") }), http.StatusInternalServerError},
		{"zero decision", AuthorizerFunc(func(*ProxyRequest) (Decision, error) { return Decision{}, nil }), http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{Director: &SingleHost{Target: target}, Authorizer: tt.auth}
			front := newFront(t, p)
			defer front.Close()
			defer p.CloseIdleConnections()
			c := noRedirect()
			defer c.CloseIdleConnections()
			req, _ := http.NewRequest("GET", front.URL+"/", nil)
			r := do(t, c, req)
			if r.status != tt.want {
				t.Errorf("status = %d, want %d (body %q)", r.status, tt.want, r.body)
			}
		})
	}
}

// TestAuthRequestSingleFlight sends a burst of requests with one session:
// the auth service sees one call, and a slow session does not hold up
// another one.
func TestAuthRequestSingleFlight(t *testing.T) {
	leaktest.Check(t)
	s := newAuthSetup(t, func(ar *AuthRequest) {
		ar.CacheKey = CookieKey("session")
		ar.CacheTTL = time.Hour
	})
	s.auth.blockOn = "slow"
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 20}}
	t.Cleanup(c.CloseIdleConnections)
	get := func(session string) result {
		req, _ := http.NewRequest("GET", s.front.URL+"/private/", nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: session})
		return do(t, c, req)
	}
	const n = 8
	results := make(chan result, n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); results <- get("slow") }()
	deadline := time.Now().Add(10 * time.Second)
	for s.auth.calls.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("first auth call never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	for range n - 1 {
		wg.Add(1)
		go func() { defer wg.Done(); results <- get("slow") }()
	}
	for s.ar.cache.Waiting("slow") < n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d waiters", s.ar.cache.Waiting("slow"))
		}
		time.Sleep(time.Millisecond)
	}
	// Another session goes through while "slow" is stuck.
	if r := get("fast"); r.status != http.StatusOK || r.echoed.Get("X-Auth-User") != "fast" {
		t.Errorf("fast session during slow auth: status %d user %q", r.status, r.echoed.Get("X-Auth-User"))
	}
	close(s.auth.block)
	wg.Wait()
	close(results)
	for r := range results {
		if r.status != http.StatusOK || r.echoed.Get("X-Auth-User") != "slow" {
			t.Errorf("burst request: status %d user %q", r.status, r.echoed.Get("X-Auth-User"))
		}
	}
	if got := s.auth.calls.Load(); got != 2 { // one for the burst, one for "fast"
		t.Errorf("auth calls = %d, want 2", got)
	}
}

func TestAuthRequestCacheTTL(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	s := newAuthSetup(t, func(ar *AuthRequest) {
		ar.CacheKey = CookieKey("session")
		ar.CacheTTL = 30 * time.Second
		ar.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	steps := []struct {
		advance   time.Duration
		wantCalls int32
	}{
		{0, 1},
		{29 * time.Second, 1},
		{time.Second, 2}, // exactly TTL after the first call: expired
		{10 * time.Second, 2},
		{20 * time.Second, 3},
	}
	for i, st := range steps {
		mu.Lock()
		now = now.Add(st.advance)
		mu.Unlock()
		req, _ := http.NewRequest("GET", s.front.URL+"/private/", nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
		if r := do(t, c, req); r.status != http.StatusOK {
			t.Fatalf("step %d: status %d", i, r.status)
		}
		if got := s.auth.calls.Load(); got != st.wantCalls {
			t.Errorf("step %d: auth calls = %d, want %d", i, got, st.wantCalls)
		}
	}
	// A denial is never cached.
	for i := range 2 {
		req, _ := http.NewRequest("GET", s.front.URL+"/private/", nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: "bob"})
		if r := do(t, c, req); r.status != http.StatusFound {
			t.Fatalf("denied request %d: status %d", i, r.status)
		}
	}
	if got := s.auth.calls.Load(); got != 5 {
		t.Errorf("after two denials: auth calls = %d, want 5", got)
	}
}

func TestAuthRequestBody(t *testing.T) {
	leaktest.Check(t)
	s := newAuthSetup(t, func(ar *AuthRequest) {
		ar.SendBody = true
		ar.MaxBody = 16
	})
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	tests := []struct {
		name       string
		body       string
		chunked    bool
		wantStatus int
		wantAuth   string // body the auth service saw
		wantLen    string // body length at the upstream
		wantCalls  int32
	}{
		{"small", "hello world", false, http.StatusOK, "hello world", "11", 1},
		{"small chunked", "hello", true, http.StatusOK, "hello", "5", 2},
		{"too large", strings.Repeat("x", 17), false, http.StatusRequestEntityTooLarge, "", "", 2},
		{"too large chunked", strings.Repeat("x", 100), true, http.StatusRequestEntityTooLarge, "", "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // unknown length
			}
			req, _ := http.NewRequest("POST", s.front.URL+"/private/upload", body)
			req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
			r := do(t, c, req)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", r.status, tt.wantStatus)
			}
			if got := s.auth.calls.Load(); got != tt.wantCalls {
				t.Errorf("auth calls = %d, want %d", got, tt.wantCalls)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			if got := *s.auth.body.Load(); got != tt.wantAuth {
				t.Errorf("auth saw body %q, want %q", got, tt.wantAuth)
			}
			if m := s.auth.last.Load().Method; m != "POST" {
				t.Errorf("auth method %s, want POST", m)
			}
			if got := r.header.Get("X-Body-Len"); got != tt.wantLen {
				t.Errorf("upstream body length %s, want %s", got, tt.wantLen)
			}
		})
	}
}

func TestChain(t *testing.T) {
	var order []string
	mk := func(name string, d Decision, err error) Authorizer {
		return AuthorizerFunc(func(*ProxyRequest) (Decision, error) {
			order = append(order, name)
			return d, err
		})
	}
	boom := errors.New("boom")
	tests := []struct {
		name      string
		chain     Authorizer
		wantAllow bool
		wantErr   error
		wantOrder []string
	}{
		{"empty", Chain(), true, nil, nil},
		{"all allow", Chain(mk("a", Allow, nil), nil, mk("b", Allow, nil)), true, nil, []string{"a", "b"}},
		{"first deny wins", Chain(mk("a", Allow, nil), mk("b", Deny(401, "no"), nil), mk("c", Allow, nil)), false, nil, []string{"a", "b"}},
		{"error stops", Chain(mk("a", Allow, boom), mk("b", Allow, nil)), true, boom, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order = nil
			d, err := tt.chain.Authorize(&ProxyRequest{})
			if err != tt.wantErr {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && d.Allow != tt.wantAllow {
				t.Errorf("allow = %v, want %v", d.Allow, tt.wantAllow)
			}
			if diff := cmp.Diff(tt.wantOrder, order); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAllowFromAndRouteAuthorizer(t *testing.T) {
	leaktest.Check(t)
	up := headerEcho(t)
	target, _ := url.Parse(up.URL)
	p := &Proxy{Director: &SingleHost{Target: target}}
	p.AddRoute(Route{Pattern: "/lan/", Authorizer: AllowFrom(mustPrefix("127.0.0.0/8"))})
	p.AddRoute(Route{Pattern: "/other/", Authorizer: AllowFrom(mustPrefix("10.0.0.0/8"))})
	front := newFront(t, p)
	t.Cleanup(front.Close)
	t.Cleanup(p.CloseIdleConnections)
	c := noRedirect()
	t.Cleanup(c.CloseIdleConnections)
	for path, want := range map[string]int{"/lan/x": 200, "/other/x": 403, "/open": 200} {
		req, _ := http.NewRequest("GET", front.URL+path, nil)
		if r := do(t, c, req); r.status != want {
			t.Errorf("%s: status %d, want %d", path, r.status, want)
		}
	}
}

func BenchmarkAuthorizer(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth-User", "alice")
	}))
	defer auth.Close()
	target, _ := url.Parse(up.URL)
	for _, bc := range []struct {
		name string
		auth Authorizer
	}{
		{"none", nil},
		{"cached-allow", &AuthRequest{URL: auth.URL, AuthResponseHeaders: []string{"X-Auth-User"},
			CacheKey: CookieKey("session"), CacheTTL: time.Hour}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := &Proxy{Director: &SingleHost{Target: target}, Authorizer: bc.auth, IdentityHeaders: []string{"X-Auth-User"}}
			defer p.CloseIdleConnections()
			req := httptest.NewRequest("GET", "http://proxy/x", nil)
			req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
			req.RemoteAddr = "127.0.0.1:1234"
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				p.ServeHTTP(w, req.WithContext(context.Background()))
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}

// BenchmarkAuthRequestCached measures the Authorize call alone for a
// cached allow: cache key, lookup, header copy.
func BenchmarkAuthRequestCached(b *testing.B) {
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth-User", "alice")
	}))
	defer auth.Close()
	ar := &AuthRequest{URL: auth.URL, AuthResponseHeaders: []string{"X-Auth-User"},
		CacheKey: CookieKey("session"), CacheTTL: time.Hour}
	p := &Proxy{IdentityHeaders: []string{"X-Auth-User"}}
	defer p.CloseIdleConnections()
	p.init()
	req := httptest.NewRequest("GET", "http://proxy/x", nil)
	req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
	pr := p.newProxyRequest(req)
	if d, err := ar.Authorize(pr); err != nil || !d.Allow {
		b.Fatalf("first call: %v %v", d, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d, err := ar.Authorize(pr)
		if err != nil || !d.Allow {
			b.Fatal("denied")
		}
	}
}
