// Command sso-gateway puts analysis tools behind single sign-on, in the
// manner of Data Workspace's proxy: every request to a tool is checked
// with the identity provider (a subrequest, cached for a few seconds),
// unauthenticated browsers are sent to the login form and API clients get
// 401, and the tools receive the user's identity in signed headers that a
// client can never set itself. WebSockets and multi-GB transfers pass
// through untouched once authorized.
//
// With no flags it runs an embedded demo identity provider and two demo
// tools, routed by path (/tools/notebook/, /tools/dashboard/) and by host
// (notebook.localhost, dashboard.localhost):
//
//	go run ./examples/sso-gateway
//	open http://127.0.0.1:8080/tools/notebook/
//
// With -redis ADDR, sessions live in Redis, so several gateway instances
// share them.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
)

type config struct {
	listen     string
	redis      string        // Redis address; "" keeps sessions in memory
	sessionTTL time.Duration // idle session lifetime
	cacheTTL   time.Duration // how long an auth decision is reused; 0: never
	signingKey []byte        // identity signature key; nil: random
}

func main() {
	var cfg config
	var key string
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.redis, "redis", "", "Redis address (host:port) for sessions shared by several gateways (default: in memory)")
	flag.DurationVar(&cfg.sessionTTL, "session-ttl", 8*time.Hour, "idle session lifetime")
	flag.DurationVar(&cfg.cacheTTL, "auth-cache", 5*time.Second, "how long an allow decision is reused (0 asks the identity provider every time)")
	flag.StringVar(&key, "signing-key", "", "secret for the identity header signature (default: random)")
	flag.Parse()
	if key != "" {
		cfg.signingKey = []byte(key)
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
			return g, fmt.Errorf("redis %s: %w", cfg.redis, err)
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
	idpSrv := &http.Server{Handler: (&idp{store: store, ttl: cfg.sessionTTL}).handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = idpSrv.Serve(idpLn) }()
	g.closers = append(g.closers, idpSrv.Close)
	idpURL := &url.URL{Scheme: "http", Host: idpLn.Addr().String()}

	key := cfg.signingKey
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	signer := &sluice.IdentitySigner{
		Names: []string{headerEmail, headerName},
		Keys:  []sluice.SigningKey{{ID: "k1", Secret: key}},
	}

	// The tools trust only what the gateway signed.
	var routes sluice.Routes
	for _, name := range []string{"notebook", "dashboard"} {
		app, err := startApp(name, signer)
		if err != nil {
			return g, err
		}
		g.closers = append(g.closers, app.Close)
		target := &url.URL{Scheme: "http", Host: app.Addr}
		routes.Add("/tools/"+name+"/", target, sluice.RouteOptions{StripPrefix: true})
		routes.Add(name+".localhost/", target, sluice.RouteOptions{})
	}
	g.proxy.Director = &routes
	g.proxy.Fallback = landingPage()

	// Who may see a tool: a live session, checked by a subrequest to the
	// identity provider (cached, one call per burst), then signed.
	check := sluice.Chain(&sluice.AuthRequest{
		URL:                   idpURL.String() + "/sso/auth",
		RequestHeaders:        []string{"Cookie", "Accept", "X-Requested-With"},
		Cookies:               []string{sessionCookie},
		AuthResponseHeaders:   []string{headerEmail, headerName},
		ClientResponseHeaders: []string{"Set-Cookie"},
		CacheKey:              sluice.CookieKey(sessionCookie),
		CacheTTL:              cfg.cacheTTL,
		Timeout:               5 * time.Second,
	}, signer)

	// Routes: the first match wins. The identity provider's pages are
	// public (its /sso/auth is for the gateway only); tools need a session.
	g.proxy.HandleFunc("/sso/auth", func(w http.ResponseWriter, _ *sluice.ProxyRequest) error {
		http.NotFound(w, nil)
		return nil
	})
	g.proxy.AddRoute(sluice.Route{Pattern: "/sso/", Director: sluice.SingleHost(idpURL, true)})
	g.proxy.AddRoute(sluice.Route{Pattern: "/tools/", Authorizer: check})
	g.proxy.AddRoute(sluice.Route{Pattern: "notebook.localhost/", Authorizer: check})
	g.proxy.AddRoute(sluice.Route{Pattern: "dashboard.localhost/", Authorizer: check})
	return g, nil
}

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

// run serves until ctx ends. ready, if not nil, gets the listening address.
func run(ctx context.Context, cfg config, ready func(addr string)) error {
	g, err := newGateway(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	srv := &sluice.Server{Handler: g.proxy}
	addr := ln.Addr().String()
	sessions := "memory"
	if cfg.redis != "" {
		sessions = "redis " + cfg.redis
	}
	slog.Info("sso-gateway: listening", "url", "http://"+addr+"/tools/notebook/", "sessions", sessions)
	if ready != nil {
		ready(addr)
	}
	return sluice.Serve(ctx, srv, ln, 0, g.proxy)
}
