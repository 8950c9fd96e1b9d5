// Command sso-gateway puts analysis tools behind single sign-on, in the
// manner of Data Workspace's proxy: every request to a tool is checked
// with the identity provider (a subrequest, cached for a few seconds),
// unauthenticated browsers are sent to the login form and API clients get
// 401, and the tools receive the user's identity in signed headers that a
// client can never set itself. Multi-GB transfers stream through once
// authorized.
//
// Safe by default, because a tool may run anyone's code:
//
//   - the identity signature covers an audience header naming the tool
//     (X-Sluice-Audience), which each tool checks: what one tool received
//     does not verify at another;
//   - tools never receive the gateway's session cookie (their own
//     cookies pass);
//   - WebSocket upgrades must carry the gateway's own Origin (or none, as
//     non-browser clients do), and open WebSockets are authorized again
//     every -ws-reauthorize, so they end after a logout (within that
//     plus -auth-cache); they are relayed message by message, up to
//     1 MiB a message, without permessage-deflate;
//   - login and logout are POSTs that other sites cannot make
//     (http.CrossOriginProtection), and the page after login is always on
//     this site (next= must be a plain path);
//   - -cookie-secure marks the session cookie Secure, for a gateway
//     behind HTTPS.
//
// With no flags it runs an embedded demo identity provider and two demo
// tools, routed by path (/tools/notebook/, /tools/dashboard/) and by host
// (notebook.localhost, dashboard.localhost):
//
//	go run ./examples/sso-gateway
//	open http://127.0.0.1:8080/tools/notebook/
//
// With -redis ADDR, sessions live in Redis, so several gateway instances
// share them. -metrics ADDR serves Prometheus metrics at
// http://ADDR/metrics.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
	"github.com/sluiceproxy/sluice/identity"
	"github.com/sluiceproxy/sluice/wsmsg"
)

type config struct {
	listen     string
	redis      string        // Redis address; "" keeps sessions in memory
	sessionTTL time.Duration // idle session lifetime
	cacheTTL   time.Duration // how long an auth decision is reused; 0: never
	signingKey []byte        // identity signature key; nil: random
	wsReauth   time.Duration // how often open WebSockets are authorized again
	secure     bool          // Secure session cookie (behind TLS)
	metrics    string        // address serving /metrics; "" for none
}

// description is what -h prints before the flags.
const description = `sso-gateway: analysis tools behind single sign-on.

Every request to a tool (/tools/NAME/ or NAME.localhost) is checked with
the identity provider; browsers without a session go to the login form,
API clients get 401. Tools receive the user's identity in headers signed
for that tool alone, never the gateway's session cookie. WebSockets must
come from the gateway's own pages and end soon after a logout. With no
flags it runs a demo identity provider and two demo tools:

  go run ./examples/sso-gateway
  open http://127.0.0.1:8080/tools/notebook/

Flags:
`

// parseFlags parses the command line. With -h it prints the description
// and the flags to out and returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	var key string
	fs := flag.NewFlagSet("sso-gateway", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, description)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&cfg.redis, "redis", "", "Redis address (host:port) for sessions shared by several gateways (default: in memory)")
	fs.DurationVar(&cfg.sessionTTL, "session-ttl", 8*time.Hour, "idle session lifetime (at least 1m)")
	fs.DurationVar(&cfg.cacheTTL, "auth-cache", 5*time.Second, "how long an allow decision is reused (0 asks the identity provider every time)")
	fs.DurationVar(&cfg.wsReauth, "ws-reauthorize", defaultWSReauth, "how often open WebSockets are authorized again (they end within this plus -auth-cache after a logout)")
	fs.BoolVar(&cfg.secure, "cookie-secure", false, "mark the session cookie Secure: set it when clients reach the gateway over HTTPS (a TLS terminator in front)")
	fs.StringVar(&cfg.metrics, "metrics", "", telemetry.Usage)
	fs.StringVar(&key, "signing-key", "", "secret for the identity header signature, at least 32 bytes (default: random, so tools must run in this process)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: every setting is a flag (see -h)", fs.Arg(0))
	}
	if key != "" {
		cfg.signingKey = []byte(key)
	}
	return cfg, cfg.check()
}

// check refuses settings that cannot work, naming the flag.
func (cfg *config) check() error {
	var errs []error
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: want host:port: %w", cfg.listen, err))
	}
	if cfg.redis != "" {
		if _, _, err := net.SplitHostPort(cfg.redis); err != nil {
			errs = append(errs, fmt.Errorf("-redis %q: want host:port: %w", cfg.redis, err))
		}
	}
	if err := telemetry.CheckAddr(cfg.metrics); err != nil {
		errs = append(errs, err)
	}
	if cfg.sessionTTL < time.Minute {
		errs = append(errs, fmt.Errorf("-session-ttl %s: want at least 1m", cfg.sessionTTL))
	}
	if cfg.cacheTTL < 0 {
		errs = append(errs, fmt.Errorf("-auth-cache %s: want 0 (no cache) or a positive duration", cfg.cacheTTL))
	}
	if cfg.wsReauth <= 0 {
		errs = append(errs, fmt.Errorf("-ws-reauthorize %s: want a positive duration", cfg.wsReauth))
	}
	if cfg.signingKey != nil && len(cfg.signingKey) < 32 {
		errs = append(errs, fmt.Errorf("-signing-key: %d bytes, want at least 32 (random)", len(cfg.signingKey)))
	}
	return errors.Join(errs...)
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sso-gateway:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sso-gateway:", err)
		os.Exit(1)
	}
}

// gateway is the proxy and everything embedded behind it.
type gateway struct {
	proxy   *sluice.Proxy
	apps    map[string]*demoApp
	closers []func() error
}

func (g *gateway) Close() error {
	g.proxy.CloseIdleConnections()
	var errs []error
	for i := len(g.closers) - 1; i >= 0; i-- {
		errs = append(errs, g.closers[i]())
	}
	return errors.Join(errs...)
}

func newGateway(ctx context.Context, cfg config) (g *gateway, err error) {
	g = &gateway{}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	g.proxy = &sluice.Proxy{IdentityHeaders: []string{"X-Sluice-*"}}

	var store sessionStore
	if cfg.redis != "" {
		rs := newRedisStore(cfg.redis, cfg.sessionTTL)
		g.closers = append(g.closers, rs.Close)
		if err := rs.Ping(ctx); err != nil {
			return g, fmt.Errorf("-redis %s: %w", cfg.redis, err)
		}
		store = rs
	} else {
		store = newMemoryStore(cfg.sessionTTL)
	}

	// The identity provider, on its own loopback port as a real one would be.
	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return g, err
	}
	idpSrv := &http.Server{Handler: (&idp{store: store, ttl: cfg.sessionTTL, secure: cfg.secure}).handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = idpSrv.Serve(idpLn) }()
	g.closers = append(g.closers, idpSrv.Close)
	idpURL := &url.URL{Scheme: "http", Host: idpLn.Addr().String()}

	key := cfg.signingKey
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	// The signature covers the audience, the tool the identity is for:
	// a tool cannot replay what it received at another.
	signer := &identity.Signer{
		Header: identity.DefaultSignatureHeader,
		Names:  []string{headerEmail, headerName, headerAudience},
		Keys:   []identity.Key{{ID: "k1", Secret: key}},
	}
	sign := sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		return sluice.Allow, signer.Sign(pr.Out.Header) // an error fails closed
	})

	// The tools trust only what the gateway signed.
	tools := []string{"notebook", "dashboard"}
	var routes sluice.PrefixDirector
	for _, name := range tools {
		app, err := startApp(name, signer)
		if err != nil {
			return g, err
		}
		g.closers = append(g.closers, app.Close)
		if g.apps == nil {
			g.apps = map[string]*demoApp{}
		}
		g.apps[name] = app
		target := &url.URL{Scheme: "http", Host: app.Addr}
		routes.Add("/tools/"+name+"/", target, sluice.PrefixOptions{StripPrefix: true})
		routes.Add(name+".localhost/", target, sluice.PrefixOptions{})
	}
	g.proxy.Director = &routes
	g.proxy.Fallback = landingPage()

	// Who may see a tool: a live session, checked by a subrequest to the
	// identity provider (cached, one call per burst), then signed for
	// that tool. WebSocket upgrades must come from the gateway's own
	// pages, and open WebSockets are authorized again every wsReauth, so
	// that they end after a logout (within wsReauth + cacheTTL).
	session := &sluice.AuthRequest{
		URL:                   idpURL.String() + "/sso/auth",
		RequestHeaders:        []string{"Cookie", "Accept", "X-Requested-With"},
		Cookies:               []string{sessionCookie},
		AuthResponseHeaders:   []string{headerEmail, headerName},
		ClientResponseHeaders: []string{"Set-Cookie"},
		CacheKey:              sluice.CookieKey(sessionCookie),
		CacheTTL:              cfg.cacheTTL,
		Timeout:               5 * time.Second,
	}
	reauth := cfg.wsReauth
	if reauth <= 0 {
		reauth = defaultWSReauth
	}
	websockets := &wsmsg.Interceptor{ReauthorizeInterval: reauth}
	toolRoute := func(pattern, tool string) sluice.Route {
		return sluice.Route{
			Pattern:     pattern,
			Authorizer:  sluice.Chain(sameOriginUpgrade, session, forTool(tool), sign),
			Interceptor: websockets,
		}
	}

	// Routes: the first match wins. The identity provider's pages are
	// public (its /sso/auth is for the gateway only); tools need a session.
	g.proxy.HandleFunc("/sso/auth", func(w http.ResponseWriter, _ *sluice.ProxyRequest) error {
		http.NotFound(w, nil)
		return nil
	})
	g.proxy.AddRoute(sluice.Route{Pattern: "/sso/", Director: &sluice.SingleHost{Target: idpURL, PreserveHost: true}})
	// Host routes first: the Director prefers them too, so a request is
	// signed for the tool it reaches.
	for _, name := range tools {
		g.proxy.AddRoute(toolRoute(name+".localhost/", name))
	}
	for _, name := range tools {
		g.proxy.AddRoute(toolRoute("/tools/"+name+"/", name))
	}
	g.proxy.AddRoute(sluice.Route{Pattern: "/tools/", Authorizer: sluice.Chain(sameOriginUpgrade, session)})
	return g, nil
}

// defaultWSReauth is how often open WebSockets are authorized again.
const defaultWSReauth = 10 * time.Second

// forTool names the tool a request is for in the audience header (which
// the signature covers), and removes the gateway's own cookies from what
// the tool receives: a tool may run anyone's code, and must never see
// the session that opens every other tool.
func forTool(tool string) sluice.Authorizer {
	return sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		pr.Out.Header.Set(headerAudience, tool)
		stripCookie(pr.Out.Header, sessionCookie)
		return sluice.Allow, nil
	})
}

// stripCookie removes the cookie name from the Cookie headers of h,
// keeping the other cookies byte for byte.
func stripCookie(h http.Header, name string) {
	var out []string
	for _, v := range h.Values("Cookie") {
		var keep []string
		for part := range strings.SplitSeq(v, ";") {
			n, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if n != name && strings.TrimSpace(part) != "" {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, "; "))
		}
	}
	if len(out) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = out
}

// sameOriginUpgrade refuses WebSocket (and other) upgrades whose Origin
// is not the gateway's own (the host the request was sent to): without
// it, any web page could open a WebSocket to a tool with its visitor's
// session cookie (cross-site WebSocket hijacking). Clients that send no
// Origin are not browsers and pass.
var sameOriginUpgrade = sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
	if pr.In.Header.Get("Upgrade") == "" {
		return sluice.Allow, nil
	}
	origins := pr.In.Header.Values("Origin")
	if len(origins) == 0 {
		return sluice.Allow, nil
	}
	if len(origins) == 1 {
		if u, err := url.Parse(origins[0]); err == nil && (u.Scheme == "http" || u.Scheme == "https") &&
			u.Opaque == "" && u.User == nil && (u.Path == "" || u.Path == "/") && strings.EqualFold(u.Host, pr.In.Host) {
			return sluice.Allow, nil
		}
	}
	return sluice.Deny(http.StatusForbidden, "cross-origin WebSocket refused: open it from the tool's own page\n"), nil
})

func landingPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html>
<title>sso-gateway</title>
<h1>Analysis tools</h1>
<ul>
<li><a href="/tools/notebook/">notebook</a> (or http://notebook.localhost:PORT/)</li>
<li><a href="/tools/dashboard/">dashboard</a> (or http://dashboard.localhost:PORT/)</li>
</ul>
<form method="post" action="/sso/logout"><button>Sign out</button></form>
`)
	})
}

// run serves until ctx ends. ready, if not nil, gets the listening
// address and the gateway.
func run(ctx context.Context, cfg config, ready func(addr string, g *gateway)) error {
	g, err := newGateway(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	metrics, err := telemetry.Start(cfg.metrics, g.proxy, nil)
	if err != nil {
		return err
	}
	defer metrics.Close()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	srv := &sluice.Server{Handler: metrics.Handler}
	addr := ln.Addr().String()
	sessions := "memory"
	if cfg.redis != "" {
		sessions = "redis " + cfg.redis
	}
	slog.Info("sso-gateway: listening", "url", "http://"+addr+"/tools/notebook/", "sessions", sessions, "metrics", metrics.URL())
	if ready != nil {
		ready(addr, g)
	}
	return sluice.Serve(ctx, srv, ln, 0)
}
