package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/examples/internal/demotest"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"golang.org/x/net/websocket"
)

// startGateway runs sso-gateway as main does, until the test ends.
func startGateway(t *testing.T, cfg config) string {
	t.Helper()
	if cfg.listen == "" {
		cfg.listen = "127.0.0.1:0"
	}
	if cfg.sessionTTL == 0 {
		cfg.sessionTTL = time.Hour
	}
	return demotest.Run(t, func(ctx context.Context, ready func(string)) error { return run(ctx, cfg, ready) })
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
