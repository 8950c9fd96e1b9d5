// Command url-filter is a filtering forward and reverse proxy in the
// manner of Squid and ExaProxy: every request is put to an external helper
// program over Squid's url_rewrite_program line protocol, which allows
// it, denies it, rewrites it to another URL or redirects the client.
// HTTPS is filtered too: a CONNECT goes to the helper as "host:port" (as
// Squid sends it), only to the ports of -connect-ports, and the tunnel's
// TLS ClientHello must ask for the host the helper allowed (-match-sni).
// Forwarded requests and tunnels never reach loopback, private or cloud
// metadata addresses (-allow-addrs to open some). X-Forwarded-For names
// the real requester (seen through trusted L7 load balancers with
// -trusted, or L4 ones sending the PROXY protocol with -proxy-protocol),
// and tracking cookies are stripped on the way.
//
// With no flags it runs the sample helper (./helper, built in) against an
// embedded demo backend:
//
//	go run ./examples/url-filter
//	curl http://127.0.0.1:8080/old/page                 # rewritten to /new/page
//	curl -x http://127.0.0.1:8080 http://ads.example/    # forward proxy: blocked
//	curl -x http://127.0.0.1:8080 https://ads.example/   # CONNECT: blocked too
//
// Any Squid url_rewrite helper works with -helper PATH (add -concurrency N
// if it understands channel IDs). -metrics ADDR serves Prometheus metrics
// at http://ADDR/metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
	"github.com/sluiceproxy/sluice/examples/url-filter/internal/rules"
	"github.com/sluiceproxy/sluice/forward"
	"github.com/sluiceproxy/sluice/squid"
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
	connectPorts []uint16
	allowAddrs   []netip.Prefix
	matchSNI     bool
	proxyProto   []netip.Prefix
	metrics      string // address serving /metrics; "" for none
}

// description is what -h prints before the flags.
const description = `url-filter: a filtering forward and reverse proxy, Squid style.

Every request is put to a url_rewrite helper program over Squid's line
protocol, which allows it, denies it (403), rewrites it to another URL or
redirects the client. Requests in absolute form (curl -x) are forward
proxied, HTTPS through CONNECT tunnels (the helper gets "host:port"); the
others go to -upstream. Forwarded requests never reach loopback, private
or link-local (cloud metadata) addresses unless -allow-addrs says so.
X-Forwarded-For names the real requester (-trusted for load balancers in
front) and tracking cookies are stripped. With no flags the built-in
sample helper filters an embedded demo backend:

  go run ./examples/url-filter
  curl http://127.0.0.1:8080/old/page
  curl -x http://127.0.0.1:8080 http://ads.example/
  curl -x http://127.0.0.1:8080 https://ads.example/

Flags:
`

// parseFlags parses the command line. With -h it prints the description
// and the flags to out and returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	var helperArgs, trusted, strip, ports, allow, pp string
	fs := flag.NewFlagSet("url-filter", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, description)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&cfg.upstream, "upstream", "", "reverse-proxy upstream URL for origin-form requests (default: an embedded demo backend)")
	fs.StringVar(&cfg.helper, "helper", "", "url_rewrite helper program (default: the built-in sample helper)")
	fs.StringVar(&helperArgs, "helper-args", "", "space-separated arguments of -helper")
	fs.IntVar(&cfg.children, "children", 4, "helper processes")
	fs.IntVar(&cfg.concurrency, "concurrency", 16, "requests in flight per helper (channel IDs); 0 for helpers without concurrency support")
	fs.IntVar(&cfg.queue, "queue", 0, "requests waiting for a helper before 503 (default: twice the helper slots)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "helper answer timeout")
	fs.BoolVar(&cfg.bypass, "bypass", false, "let requests through when the helper fails (default: 503)")
	fs.StringVar(&trusted, "trusted", "", "comma-separated CIDRs of load balancers whose X-Forwarded-For is believed")
	fs.StringVar(&strip, "strip-cookies", "_ga,_gid,_fbp", "comma-separated cookie names removed from requests")
	fs.StringVar(&ports, "connect-ports", "443", "comma-separated ports CONNECT tunnels may reach (Squid's SSL_ports)")
	fs.StringVar(&allow, "allow-addrs", "", "comma-separated CIDRs that forwarded requests may reach although not public (loopback, private, link-local are refused otherwise)")
	fs.StringVar(&pp, "proxy-protocol", "", "comma-separated CIDRs of L4 load balancers that send a PROXY protocol header (v1 or v2): the client address comes from it")
	fs.StringVar(&cfg.metrics, "metrics", "", telemetry.Usage)
	fs.BoolVar(&cfg.matchSNI, "match-sni", true, "close a tunnel whose TLS ClientHello asks for another server name than the CONNECT host (or that is not TLS)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: every setting is a flag (see -h)", fs.Arg(0))
	}
	var errs []error
	cfg.helperArgs = strings.Fields(helperArgs)
	if len(cfg.helperArgs) > 0 && cfg.helper == "" {
		errs = append(errs, errors.New("-helper-args without -helper: the built-in helper takes no arguments"))
	}
	for _, s := range splitList(trusted) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("-trusted %q: want CIDRs such as 10.0.0.0/8: %w", s, err))
			continue
		}
		cfg.trusted = append(cfg.trusted, p)
	}
	cfg.stripCookies = splitList(strip)
	for _, s := range splitList(ports) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			errs = append(errs, fmt.Errorf("-connect-ports %q: want port numbers such as 443,8443", s))
			continue
		}
		cfg.connectPorts = append(cfg.connectPorts, uint16(n))
	}
	if len(cfg.connectPorts) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("-connect-ports: want at least one port"))
	}
	for _, s := range splitList(pp) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("-proxy-protocol %q: want CIDRs such as 10.0.0.0/8: %w", s, err))
			continue
		}
		cfg.proxyProto = append(cfg.proxyProto, p)
	}
	for _, s := range splitList(allow) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("-allow-addrs %q: want CIDRs such as 10.1.0.0/16: %w", s, err))
			continue
		}
		cfg.allowAddrs = append(cfg.allowAddrs, p)
	}
	return cfg, errors.Join(append(errs, cfg.check())...)
}

// check refuses settings that cannot work, naming the flag.
func (cfg *config) check() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		bad("-listen %q: want host:port: %w", cfg.listen, err)
	}
	if cfg.upstream != "" {
		if u, err := url.Parse(cfg.upstream); err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			bad("-upstream %q: want a URL like http://127.0.0.1:9000", cfg.upstream)
		}
	}
	if cfg.helper != "" {
		if _, err := exec.LookPath(cfg.helper); err != nil {
			bad("-helper %q: %w", cfg.helper, err)
		}
	}
	if cfg.children < 1 || cfg.children > 1000 {
		bad("-children %d: want 1 to 1000", cfg.children)
	}
	if cfg.concurrency < 0 || cfg.concurrency > 10000 {
		bad("-concurrency %d: want 0 (no channel IDs) to 10000", cfg.concurrency)
	}
	if cfg.queue < 0 {
		bad("-queue %d: want 0 (twice the helper slots) or more", cfg.queue)
	}
	if cfg.timeout <= 0 {
		bad("-timeout %s: want a positive duration", cfg.timeout)
	}
	if err := telemetry.CheckAddr(cfg.metrics); err != nil {
		bad("%w", err)
	}
	return errors.Join(errs...)
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
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "url-filter:", err)
		os.Exit(2)
	}
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
	helper *squid.Helper
}

// newFilter starts the helpers and builds the proxy: the helper decides,
// then tracking cookies are stripped; absolute-form requests are forward
// proxied, the others go to upstream, unless the helper rewrote them.
func newFilter(cfg config, upstream *url.URL) (*filter, error) {
	hc := squid.Config{
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
	h, err := squid.Start(hc)
	if err != nil {
		return nil, err
	}
	fwd := &forward.Director{
		Next:         &sluice.SingleHost{Target: upstream},
		ConnectPorts: cfg.connectPorts,
		AllowAddrs:   cfg.allowAddrs,
	}
	if cfg.matchSNI {
		fwd.CheckHello = forward.MatchServerName
	}
	p := &sluice.Proxy{
		Authorizer:     sluice.Chain(h, stripCookies(cfg.stripCookies)),
		Director:       h.Director(fwd),
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
		return fmt.Errorf("-upstream %q: want a URL like http://127.0.0.1:9000", cfg.upstream)
	}
	f, err := newFilter(cfg, target)
	if err != nil {
		return err
	}
	defer f.Close()
	metrics, err := telemetry.Start(cfg.metrics, f.proxy, nil)
	if err != nil {
		return err
	}
	defer metrics.Close()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	srv := &sluice.Server{Handler: metrics.Handler, ProxyProtocol: cfg.proxyProto}
	addr := ln.Addr().String()
	slog.Info("url-filter: listening", "url", "http://"+addr+"/", "upstream", cfg.upstream,
		"try", "curl http://"+addr+"/old/page ; curl -x http://"+addr+" http://ads.example/", "metrics", metrics.URL())
	if ready != nil {
		ready(addr)
	}
	return sluice.Serve(ctx, srv, ln, 0)
}
