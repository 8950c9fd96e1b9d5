package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/examples/internal/demotest"
	"github.com/sluiceproxy/sluice/identity"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"golang.org/x/net/websocket"
)

// startGateway runs sso-gateway as main does, until the test ends.
func startGateway(t *testing.T, cfg config) string {
	t.Helper()
	gw, _ := startGatewayApps(t, cfg)
	return gw
}

// startGatewayApps is startGateway that returns the gateway too.
func startGatewayApps(t *testing.T, cfg config) (string, *gateway) {
	t.Helper()
	if cfg.listen == "" {
		cfg.listen = "127.0.0.1:0"
	}
	if cfg.sessionTTL == 0 {
		cfg.sessionTTL = time.Hour
	}
	gc := make(chan *gateway, 1)
	gw := demotest.Run(t, func(ctx context.Context, ready func(string)) error {
		return run(ctx, cfg, func(addr string, g *gateway) { gc <- g; ready(addr) })
	})
	return gw, <-gc
}

// browser is a client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

type reply struct {
	status  int
	header  http.Header
	body    string
	cookies []string
}

func send(t *testing.T, c *http.Client, method, target string, header http.Header, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ck := range res.Cookies() {
		names = append(names, ck.Name)
	}
	slices.Sort(names)
	return reply{res.StatusCode, res.Header, string(b), names}
}

var html = http.Header{"Accept": {"text/html,application/xhtml+xml"}}

// login signs in through the gateway like a browser following the
// redirect to the form, and returns the session cookie.
func login(t *testing.T, c *http.Client, gw, name, next string) string {
	t.Helper()
	r := send(t, c, "POST", gw+"/sso/login", nil,
		strings.NewReader(url.Values{"user": {name}, "next": {next}}.Encode()))
	if r.status != http.StatusSeeOther || r.header.Get("Location") != next {
		t.Fatalf("login: %d Location %q, want 303 to %q", r.status, r.header.Get("Location"), next)
	}
	u, _ := url.Parse(gw)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			return ck.Value
		}
	}
	t.Fatal("no session cookie after login")
	return ""
}

func TestGatewayFlow(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{cacheTTL: time.Minute})
	c := browser(t)

	// Before login: browsers go to the form, API clients get 401, and
	// nothing reaches the tool.
	r := send(t, c, "GET", gw+"/tools/notebook/whoami?x=1", html, nil)
	if want := "/sso/login?next=" + url.QueryEscape("/tools/notebook/whoami?x=1"); r.status != http.StatusFound || r.header.Get("Location") != want {
		t.Errorf("browser before login: %d Location %q, want 302 %q", r.status, r.header.Get("Location"), want)
	}
	r = send(t, c, "GET", gw+"/tools/notebook/whoami", http.Header{"Accept": {"application/json"}, headerEmail: {"admin@evil"}}, nil)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "login required") {
		t.Errorf("API before login: %d %q, want 401", r.status, r.body)
	}
	r = send(t, c, "GET", gw+"/sso/login?next=/tools/notebook/", html, nil)
	if r.status != 200 || !strings.Contains(r.body, `value="/tools/notebook/"`) {
		t.Errorf("login form: %d %q", r.status, r.body)
	}
	if r := send(t, c, "GET", gw+"/sso/auth", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("/sso/auth from outside: %d, want 404", r.status)
	}

	login(t, c, gw, "alice", "/tools/notebook/")

	// After login (first request asks the IdP, the second hits the cache):
	// identity headers set by the gateway, signed, never the client's.
	spoof := http.Header{headerEmail: {"admin@evil"}, headerName: {"Admin"}, "X-Sluice-Identity-Signature": {"forged"}}
	want := "app=notebook email=alice@example.com name=Alice signature=valid\n"
	for i := range 2 {
		r = send(t, c, "GET", gw+"/tools/notebook/whoami", spoof, nil)
		if r.status != 200 || r.body != want {
			t.Errorf("whoami #%d: %d %q, want %q", i, r.status, r.body, want)
		}
	}
	// By host too.
	req, _ := http.NewRequest("GET", gw+"/whoami", nil)
	req.Host = "dashboard.localhost"
	for _, ck := range c.Jar.Cookies(mustURL(gw)) {
		req.AddCookie(ck)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := "app=dashboard email=alice@example.com name=Alice signature=valid\n"; string(b) != want {
		t.Errorf("by host: %d %q, want %q", res.StatusCode, b, want)
	}

	// The tool's page: its own cookie and the session refresh both arrive.
	r = send(t, c, "GET", gw+"/tools/notebook/", html, nil)
	if diff := cmp.Diff([]string{"notebook_visits", sessionCookie}, r.cookies); diff != "" {
		t.Errorf("Set-Cookie names (-want +got):\n%s", diff)
	}
	if !strings.Contains(r.body, "identity signature: valid") {
		t.Errorf("tool page does not show a valid identity: %q", r.body)
	}

	// Large bodies stream both ways.
	const size = 64 << 20
	res, err = c.Get(gw + fmt.Sprintf("/tools/dashboard/download?n=%d", size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || n != size || res.StatusCode != 200 {
		t.Errorf("download: status %d, %d bytes, err %v; want %d bytes", res.StatusCode, n, err, size)
	}
	r = send(t, c, "PUT", gw+"/tools/dashboard/upload", nil, io.LimitReader(zeros{}, size))
	if want := fmt.Sprintf("received %d bytes\n", size); r.body != want {
		t.Errorf("upload: %d %q, want %q", r.status, r.body, want)
	}

	// Logout ends the session at the IdP.
	r = send(t, c, "POST", gw+"/sso/logout", nil, nil)
	if r.status != http.StatusSeeOther {
		t.Errorf("logout: %d", r.status)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestGatewayWebSocket(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{})
	c := browser(t)
	session := login(t, c, gw, "bob", "/tools/notebook/")
	wsURL := "ws" + strings.TrimPrefix(gw, "http") + "/tools/notebook/ws"

	// Without a session the upgrade is refused.
	cfg, _ := websocket.NewConfig(wsURL, gw)
	if conn, err := websocket.DialConfig(cfg); err == nil {
		conn.Close()
		t.Fatal("WebSocket without session was accepted")
	}

	cfg, _ = websocket.NewConfig(wsURL, gw)
	cfg.Header = http.Header{"Cookie": {sessionCookie + "=" + session}}
	conn, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("WebSocket with session: %v", err)
	}
	defer conn.Close()
	for _, msg := range []string{"hello", strings.Repeat("x", 100000)} {
		if err := websocket.Message.Send(conn, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(conn, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo of %d bytes: got %d bytes", len(msg), len(got))
		}
	}
}

// TestGatewayRedis runs two gateways sharing sessions through a real
// redis-server: a login on one is valid on the other, a logout on one
// ends the session on both.
func TestGatewayRedis(t *testing.T) {
	leaktest.Check(t)
	rd := realserver.StartRedis(t)
	key := []byte("shared-signing-key-shared-signing-key")
	gwA := startGateway(t, config{redis: rd.Addr, signingKey: key})
	gwB := startGateway(t, config{redis: rd.Addr, signingKey: key})

	a := browser(t)
	session := login(t, a, gwA, "carol", "/tools/notebook/")
	cookie := http.Header{"Cookie": {sessionCookie + "=" + session}}
	b := browser(t)
	want := "app=notebook email=carol@example.com name=Carol signature=valid\n"
	if r := send(t, b, "GET", gwB+"/tools/notebook/whoami", cookie, nil); r.status != 200 || r.body != want {
		t.Fatalf("session from A on B: %d %q, want %q", r.status, r.body, want)
	}
	if r := send(t, a, "POST", gwA+"/sso/logout", nil, nil); r.status != http.StatusSeeOther {
		t.Fatalf("logout on A: %d", r.status)
	}
	// cacheTTL is 0 here: B asks the IdP, which finds no session.
	if r := send(t, b, "GET", gwB+"/tools/notebook/whoami", cookie, nil); r.status != http.StatusUnauthorized {
		t.Errorf("after logout on A, B answered %d %q, want 401", r.status, r.body)
	}
}

// TestLoginNextStaysOnSite: the redirect after login never leaves the
// gateway, whatever the spelling (browsers drop tabs and newlines from
// URLs and read a backslash as a slash: "/\t/evil.com" is "//evil.com").
func TestLoginNextStaysOnSite(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{})
	tests := []struct{ next, want string }{
		{"/tools/notebook/", "/tools/notebook/"},
		{"/tools/notebook/whoami?x=1&y=%2F", "/tools/notebook/whoami?x=1&y=%2F"},
		{"/", "/"},
		{"", "/"},
		{"//evil.com", "/"},
		{"/\\evil.com", "/"},
		{"/\t/evil.com", "/"},
		{"/\n/evil.com", "/"},
		{"/\r\n/evil.com", "/"},
		{"/\x00/evil.com", "/"},
		{"/\x7f/evil.com", "/"},
		{"\t//evil.com", "/"},
		{"/%09/evil.com", "/"},
		{"/%2F/evil.com", "/"},
		{"/%5Cevil.com", "/"},
		{"/a\\b", "/"},
		{"/a%5Cb", "/"},
		{"/%zz", "/"},
		{"https://evil.com/", "/"},
		{"evil.com", "/"},
		{"javascript:alert(1)", "/"},
	}
	for _, tt := range tests {
		c := browser(t)
		r := send(t, c, "POST", gw+"/sso/login", nil,
			strings.NewReader(url.Values{"user": {"eve"}, "next": {tt.next}}.Encode()))
		if got := r.header.Get("Location"); r.status != http.StatusSeeOther || got != tt.want {
			t.Errorf("next %q: %d Location %q, want 303 %q", tt.next, r.status, got, tt.want)
		}
		r = send(t, c, "GET", gw+"/sso/login?next="+url.QueryEscape(tt.next), html, nil)
		if !strings.Contains(r.body, `name="next" value="`+template.HTMLEscapeString(tt.want)+`"`) {
			t.Errorf("login form for next %q does not carry %q:\n%s", tt.next, tt.want, r.body)
		}
	}
}

// TestToolsDoNotGetGatewayCookies: the session cookie is the gateway's;
// a tool (which may be any user's code) gets its own cookies only.
func TestToolsDoNotGetGatewayCookies(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{})
	c := browser(t)
	session := login(t, c, gw, "alice", "/tools/notebook/")
	for _, cookie := range []string{
		sessionCookie + "=" + session + "; notebook_visits=3; theme=dark",
		"theme=dark; " + sessionCookie + "=" + session,
	} {
		r := send(t, c, "GET", gw+"/tools/notebook/request", http.Header{"Cookie": {cookie}}, nil)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var h http.Header
		if err := json.Unmarshal([]byte(r.body), &h); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(h.Values("Cookie"), "; ")
		if strings.Contains(got, sessionCookie) || strings.Contains(got, session) {
			t.Errorf("the tool received the session cookie: Cookie %q", got)
		}
		if !strings.Contains(got, "theme=dark") {
			t.Errorf("the tool lost its own cookies: Cookie %q", got)
		}
	}
}

// TestIdentityBoundToTool: the signed identity one tool receives does not
// verify at another (a tool's owner could otherwise replay it).
func TestIdentityBoundToTool(t *testing.T) {
	leaktest.Check(t)
	gw, g := startGatewayApps(t, config{})
	c := browser(t)
	login(t, c, gw, "alice", "/tools/notebook/")
	r := send(t, c, "GET", gw+"/tools/notebook/request", nil, nil)
	var got http.Header
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("%d %s: %v", r.status, r.body, err)
	}
	identity := http.Header{}
	for k, vv := range got {
		if strings.HasPrefix(k, "X-Sluice-") {
			identity[k] = vv
		}
	}
	for app, want := range map[string]string{
		"notebook":  "app=notebook email=alice@example.com name=Alice signature=valid\n",
		"dashboard": "app=dashboard email=alice@example.com name=Alice signature=invalid\n",
	} {
		direct := "http://" + g.apps[app].Addr + "/whoami"
		if r := send(t, c, "GET", direct, identity, nil); r.body != want {
			t.Errorf("notebook's identity replayed at %s: %q, want %q", app, r.body, want)
		}
	}
}

// TestWebSocketOriginAndLogout: upgrades from another site are refused,
// and an open WebSocket ends soon after its session does.
func TestWebSocketOriginAndLogout(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{wsReauth: 50 * time.Millisecond})
	c := browser(t)
	session := login(t, c, gw, "bob", "/tools/notebook/")
	wsURL := "ws" + strings.TrimPrefix(gw, "http") + "/tools/notebook/ws"
	cookie := http.Header{"Cookie": {sessionCookie + "=" + session}}

	for _, origin := range []string{"http://evil.test", "null", "http://127.0.0.1.evil.test"} {
		cfg, _ := websocket.NewConfig(wsURL, origin)
		cfg.Header = cookie
		if conn, err := websocket.DialConfig(cfg); err == nil {
			conn.Close()
			t.Errorf("WebSocket from Origin %s accepted", origin)
		}
	}

	cfg, _ := websocket.NewConfig(wsURL, gw)
	cfg.Header = cookie
	conn, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("same-origin WebSocket: %v", err)
	}
	defer conn.Close()
	if err := websocket.Message.Send(conn, "hi"); err != nil {
		t.Fatal(err)
	}
	var msg string
	if err := websocket.Message.Receive(conn, &msg); err != nil || msg != "hi" {
		t.Fatalf("echo %q, %v", msg, err)
	}

	if r := send(t, c, "POST", gw+"/sso/logout", nil, nil); r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	err = websocket.Message.Receive(conn, &msg)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("WebSocket still open 5 s after logout: %q, %v", msg, err)
	}
}

// TestSessionCSRF: another site cannot sign a visitor in (login CSRF) or
// out; logout is a POST.
func TestSessionCSRF(t *testing.T) {
	leaktest.Check(t)
	gw := startGateway(t, config{})
	c := browser(t)
	session := login(t, c, gw, "alice", "/tools/notebook/")
	alive := func() bool {
		r := send(t, c, "GET", gw+"/tools/notebook/whoami", http.Header{"Cookie": {sessionCookie + "=" + session}}, nil)
		return r.status == 200
	}

	if r := send(t, c, "GET", gw+"/sso/logout", html, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /sso/logout: %d, want 405", r.status)
	}
	for _, h := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}},
		{"Origin": {"http://evil.test"}},
	} {
		if r := send(t, c, "POST", gw+"/sso/logout", h, nil); r.status != http.StatusForbidden {
			t.Errorf("cross-site logout %v: %d, want 403", h, r.status)
		}
		body := url.Values{"user": {"mallory"}, "next": {"/"}}.Encode()
		other := browser(t)
		if r := send(t, other, "POST", gw+"/sso/login", h, strings.NewReader(body)); r.status != http.StatusForbidden || len(r.cookies) != 0 {
			t.Errorf("cross-site login %v: %d cookies %v, want 403 and none", h, r.status, r.cookies)
		}
	}
	if !alive() {
		t.Fatal("session ended by a refused logout")
	}
	h := http.Header{"Origin": {gw}, "Sec-Fetch-Site": {"same-origin"}}
	if r := send(t, c, "POST", gw+"/sso/logout", h, nil); r.status != http.StatusSeeOther {
		t.Fatalf("same-origin logout: %d", r.status)
	}
	if alive() {
		t.Error("session alive after logout")
	}
}

// TestCookieSecureAndDemoPage: -cookie-secure sets Secure; the demo page
// names every identity header it shows.
func TestCookieSecureAndDemoPage(t *testing.T) {
	leaktest.Check(t)
	for _, secure := range []bool{false, true} {
		gw := startGateway(t, config{secure: secure})
		r := send(t, browser(t), "POST", gw+"/sso/login", nil, strings.NewReader("user=alice&next=/"))
		var got *http.Cookie
		for _, ck := range (&http.Response{Header: r.header}).Cookies() {
			if ck.Name == sessionCookie {
				got = ck
			}
		}
		if got == nil || got.Secure != secure || !got.HttpOnly || got.SameSite != http.SameSiteLaxMode {
			t.Errorf("secure=%v: session cookie %+v", secure, got)
		}
	}
	gw := startGateway(t, config{})
	c := browser(t)
	login(t, c, gw, "alice", "/tools/notebook/")
	r := send(t, c, "GET", gw+"/tools/notebook/", html, nil)
	if strings.Contains(r.body, "\n: ") || !strings.Contains(r.body, "\n"+identity.DefaultSignatureHeader+": v1;") {
		t.Errorf("identity headers on the demo page:\n%s", r.body)
	}
}

// TestFlags: settings that cannot work are refused at start, naming the
// flag; -h says what the program is before the flags.
func TestFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-cookie-secure", "-session-ttl", "30m", "-auth-cache", "0", "-signing-key", strings.Repeat("k", 32)}, ""},
		{[]string{"-session-ttl", "-1s"}, "-session-ttl -1s"},
		{[]string{"-session-ttl", "0"}, "-session-ttl"},
		{[]string{"-auth-cache", "-5s"}, "-auth-cache"},
		{[]string{"-ws-reauthorize", "0"}, "-ws-reauthorize"},
		{[]string{"-signing-key", "short"}, "-signing-key"},
		{[]string{"-listen", "8080"}, "-listen"},
		{[]string{"-redis", "localhost"}, "-redis"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var out strings.Builder
		_, err := parseFlags(tt.args, &out)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%q: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	var out strings.Builder
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.HasPrefix(out.String(), "sso-gateway: analysis tools behind single sign-on.\n") || !strings.Contains(out.String(), "-cookie-secure") {
		t.Errorf("-h prints:\n%s", out.String())
	}
}
