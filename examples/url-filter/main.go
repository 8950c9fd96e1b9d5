// Command url-filter is a filtering forward and reverse proxy in the
// manner of Squid and ExaProxy: every request is put to an external helper
// program over Squid's url_rewrite_program line protocol, which allows
// it, denies it, rewrites it to another URL or redirects the client.
// X-Forwarded-For names the real requester (seen through trusted load
// balancers with -trusted), and tracking cookies are stripped on the way.
//
// With no flags it runs the sample helper (./helper, built in) against an
// embedded demo backend:
//
//	go run ./examples/url-filter
//	curl http://127.0.0.1:8080/old/page              # rewritten to /new/page
//	curl -x http://127.0.0.1:8080 http://ads.example/ # forward proxy: blocked
//
// Any Squid url_rewrite helper works with -helper PATH (add -concurrency N
// if it understands channel IDs). HTTPS forward proxying (CONNECT) is not
// supported.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/url-filter/internal/rules"
)

// builtinHelperEnv makes the url-filter binary act as the sample helper,
// which is how it runs the helper when -helper is not given.
const builtinHelperEnv = "URLFILTER_BUILTIN_HELPER"

type config struct {
	listen       string
	upstream     string   // reverse-proxy target; "" = embedded demo
	helper       string   // helper program; "" = built in
	helperArgs   []string // its arguments
	children     int
	concurrency  int
	queue        int
	timeout      time.Duration
	bypass       bool
	trusted      []netip.Prefix
	stripCookies []string
}

func main() {
	if mode := os.Getenv(builtinHelperEnv); mode != "" {
		r := rules.Default
		r.Channels = mode == "channels"
		if err := r.Serve(os.Stdin, os.Stdout); err != nil {
			os.Exit(1)
		}
		return
	}
	var cfg config
	var helperArgs, trusted, strip string
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.upstream, "upstream", "", "reverse-proxy upstream URL for origin-form requests (default: an embedded demo backend)")
	flag.StringVar(&cfg.helper, "helper", "", "url_rewrite helper program (default: the built-in sample helper)")
	flag.StringVar(&helperArgs, "helper-args", "", "space-separated arguments of -helper")
	flag.IntVar(&cfg.children, "children", 4, "helper processes")
	flag.IntVar(&cfg.concurrency, "concurrency", 16, "requests in flight per helper (channel IDs); 0 for helpers without concurrency support")
	flag.IntVar(&cfg.queue, "queue", 0, "requests waiting for a helper before 503 (default: twice the helper slots)")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "helper answer timeout")
	flag.BoolVar(&cfg.bypass, "bypass", false, "let requests through when the helper fails (default: 503)")
	flag.StringVar(&trusted, "trusted", "", "comma-separated CIDRs of load balancers whose X-Forwarded-For is believed")
	flag.StringVar(&strip, "strip-cookies", "_ga,_gid,_fbp", "comma-separated cookie names removed from requests")
	flag.Parse()
	cfg.helperArgs = strings.Fields(helperArgs)
	for _, s := range splitList(trusted) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "url-filter: bad -trusted:", err)
			os.Exit(2)
		}
		cfg.trusted = append(cfg.trusted, p)
	}
	cfg.stripCookies = splitList(strip)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "url-filter:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// filter is a running url-filter proxy.
type filter struct {
	proxy  *sluice.Proxy
	helper *sluice.Helper
}

// newFilter starts the helpers and builds the proxy: the helper decides,
// then tracking cookies are stripped; absolute-form requests are forward
// proxied, the others go to upstream, unless the helper rewrote them.
func newFilter(cfg config, upstream *url.URL) (*filter, error) {
	hc := sluice.HelperConfig{
		Command:     cfg.helper,
		Args:        cfg.helperArgs,
		Children:    cfg.children,
		Concurrency: cfg.concurrency,
		QueueSize:   cfg.queue,
		Timeout:     cfg.timeout,
		Bypass:      cfg.bypass,
	}
	if hc.Command == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		mode := "sequential"
		if cfg.concurrency > 0 {
			mode = "channels"
		}
		hc.Command, hc.Env = exe, append(os.Environ(), builtinHelperEnv+"="+mode)
	}
	h, err := sluice.NewHelper(hc)
	if err != nil {
		return nil, err
	}
	p := &sluice.Proxy{
		Authorizer:     sluice.Chain(h, stripCookies(cfg.stripCookies)),
		Director:       h.Director(sluice.ForwardProxy(sluice.SingleHost(upstream, false))),
		TrustedProxies: cfg.trusted,
		Via:            "url-filter",
	}
	return &filter{proxy: p, helper: h}, nil
}

func (f *filter) Close() error {
	f.proxy.CloseIdleConnections()
	return f.helper.Close()
}

// stripCookies removes the named cookies from the outbound request: the
// request manipulation Squid's helpers cannot do.
func stripCookies(names []string) sluice.Authorizer {
	drop := make(map[string]bool, len(names))
	for _, n := range names {
		drop[n] = true
	}
	return sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		if len(drop) == 0 || pr.Out.Header.Get("Cookie") == "" {
			return sluice.Allow, nil
		}
		var kept []string
		for _, c := range pr.Out.Cookies() {
			if !drop[c.Name] {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
		pr.Out.Header.Del("Cookie")
		if len(kept) > 0 {
			pr.Out.Header.Set("Cookie", strings.Join(kept, "; "))
		}
		return sluice.Allow, nil
	})
}

// run serves until ctx ends. ready, if not nil, gets the listening address.
func run(ctx context.Context, cfg config, ready func(addr string)) error {
	if cfg.upstream == "" {
		demo, err := startDemo()
		if err != nil {
			return err
		}
		defer demo.Close()
		cfg.upstream = "http://" + demo.Addr
	}
	target, err := url.Parse(cfg.upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("bad -upstream %q: want a URL like http://127.0.0.1:9000", cfg.upstream)
	}
	f, err := newFilter(cfg, target)
	if err != nil {
		return err
	}
	defer f.Close()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	srv := &sluice.Server{Handler: f.proxy}
	addr := ln.Addr().String()
	slog.Info("url-filter: listening", "url", "http://"+addr+"/", "upstream", cfg.upstream,
		"try", "curl http://"+addr+"/old/page ; curl -x http://"+addr+" http://ads.example/")
	if ready != nil {
		ready(addr)
	}
	return sluice.Serve(ctx, srv, ln, 0, f.proxy)
}
