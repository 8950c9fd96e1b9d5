// Command passthrough is the starter service of sluice: a transparent
// reverse proxy. With no flags it starts an embedded demo upstream (small
// responses, server-sent events, a large streamed download, an echo of
// uploads) and the proxy in front of it.
//
//	go run ./examples/passthrough
//	go run ./examples/passthrough -listen 127.0.0.1:8080 -upstream http://127.0.0.1:9000
//	go run ./examples/passthrough -deny /admin/ -deny 'POST /upload'
//	go run ./examples/passthrough -tls-cert cert.pem -tls-key key.pem   # HTTPS, HTTP/2 and HTTP/1.1
//	go run ./examples/passthrough -h2c                                  # HTTP/1.1 and h2c on one port
//	go run ./examples/passthrough -forward   # TEST MODE: also an open forward proxy (curl -x), loopback included
//	go run ./examples/passthrough -proxy-protocol 10.0.0.0/8            # behind an L4 load balancer sending PROXY headers
//	go run ./examples/passthrough -metrics 127.0.0.1:9464               # Prometheus metrics at http://127.0.0.1:9464/metrics
//	go run ./examples/passthrough -max-in-flight 1000 -max-per-client 20  # shed overload: 503 beyond 1000 requests, 429 beyond 20 per client
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
	"github.com/sluiceproxy/sluice/forward"
	"golang.org/x/net/netutil"
)

// config is what the flags set.
type config struct {
	upstream string        // "" starts the embedded demo upstream
	timeout  time.Duration // upstream response-header timeout
	netHTTP  bool          // serve with net/http's server instead of sluice's
	deny     []string      // route patterns answered 403

	// upstreamIdle bounds an upstream exchange without progress
	// (Proxy.UpstreamIdleTimeout); 0 leaves sluice's default.
	upstreamIdle time.Duration

	// tunnelIdle ends a tunnel (an upgraded connection or a CONNECT)
	// in which no byte moved either way for that long
	// (WebSocketConfig.IdleTimeout); 0 leaves sluice's defaults.
	tunnelIdle time.Duration

	// maxIdlePerHost bounds the idle upstream connections kept for
	// reuse (Proxy.MaxIdleConnsPerHost); 0 leaves sluice's default.
	maxIdlePerHost int

	// clientTimeout bounds the client: its request head from its first
	// byte (total), its request body and its reading of the response
	// (idle); 0 leaves sluice's defaults.
	clientTimeout time.Duration

	tlsCert, tlsKey string // serve TLS with this key pair (h2 and http/1.1 by ALPN)
	h2c             bool   // h2c with prior knowledge next to HTTP/1.1 on a plain listener
	tlsNoResume     bool   // no TLS session tickets

	// forward also makes the proxy an open forward proxy (absolute-form
	// requests and CONNECT) to any host and port, loopback and private
	// addresses included: a test mode for checks from outside.
	forward bool

	// proxyProtocol are the peers whose connections start with a PROXY
	// protocol header (sluice.Server.ProxyProtocol).
	proxyProtocol []netip.Prefix

	// accessLog is "", "slog" or "combined": an access log line per
	// exchange on standard output (package accesslog).
	accessLog string
	// requestID is the request ID header ("" for none).
	requestID string

	// maxConns, maxInFlight and maxPerClient are the overload bounds:
	// sluice.Server.MaxConns (netutil.LimitListener behind net/http),
	// Proxy.MaxInFlight and Proxy.MaxPerClient; 0 leaves sluice's
	// defaults.
	maxConns, maxInFlight, maxPerClient int

	// metrics is the address of the admin listener serving /metrics
	// ("" for none); metricsReady, if not nil, gets its URL once it
	// listens (for tests).
	metrics      string
	metricsReady func(url string)
}

// prefixes is a repeatable flag of comma-separated CIDR prefixes; a bare
// address is a prefix of its own (/32, /128).
type prefixes []netip.Prefix

func (p *prefixes) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixes) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		pr, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return fmt.Errorf("%q is neither a CIDR prefix nor an address", f)
			}
			pr = netip.PrefixFrom(a, a.BitLen())
		}
		*p = append(*p, pr.Masked())
	}
	return nil
}

// patterns is a repeatable flag.
type patterns []string

func (p *patterns) String() string { return strings.Join(*p, " ") }
func (p *patterns) Set(v string) error {
	if err := checkPattern(v); err != nil {
		return err
	}
	*p = append(*p, v)
	return nil
}

func main() {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `passthrough is sluice's transparent reverse proxy: every request goes to
the upstream unchanged but for the documented header edits, streaming both
ways. With no -upstream it starts an embedded demo upstream.

Usage: passthrough [flags]

`)
		flag.PrintDefaults()
	}
	var cfg config
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.upstream, "upstream", "", "upstream URL (default: an embedded demo upstream)")
	flag.DurationVar(&cfg.timeout, "timeout", sluice.DefaultResponseHeaderTimeout, "upstream response-header timeout")
	flag.DurationVar(&cfg.upstreamIdle, "upstream-idle-timeout", 0, "an upstream that takes no byte of the request, or sends no byte of "+
		"the response, for `D` in the middle of an exchange is cut (504 before the response started, the client connection "+
		"aborted after; as nginx's proxy_send_timeout and proxy_read_timeout); 0: sluice's default (60s)")
	flag.DurationVar(&cfg.tunnelIdle, "tunnel-idle-timeout", 0, "a tunnel (WebSocket or other upgraded connection, CONNECT) "+
		"in which no byte moved either way for `D` is closed; 0: sluice's defaults (upgrades: none, CONNECT: 15m)")
	flag.IntVar(&cfg.maxIdlePerHost, "max-idle-per-host", 0, "idle upstream connections kept for reuse "+
		"(sluice.Proxy.MaxIdleConnsPerHost; more are closed when their exchange ends); 0: sluice's default (256)")
	server := flag.String("server", "sluice", `client-side server: "sluice" (sluice.Server) or "net/http" (http.Server)`)
	flag.DurationVar(&cfg.clientTimeout, "client-timeout", 0, "a client silent for `D` in the middle of a request body, "+
		"not reading for D in the middle of a response, or not done with its request head D after it began, is "+
		"disconnected (the head bound is total, the body and response bounds idle); 0: sluice's defaults "+
		"(head 10s, body and response 60s)")
	flag.Var((*patterns)(&cfg.deny), "deny", "`PATTERN` (http.ServeMux syntax, e.g. /admin/) answered 403 Forbidden "+
		"however the client spells the path; repeatable")
	flag.StringVar(&cfg.tlsCert, "tls-cert", "", "serve TLS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate (needs -tls-key)")
	flag.StringVar(&cfg.tlsKey, "tls-key", "", "PEM private key for -tls-cert")
	flag.BoolVar(&cfg.h2c, "h2c", false, "accept cleartext HTTP/2 with prior knowledge (h2c) next to HTTP/1.1 on a plain listener")
	flag.BoolVar(&cfg.tlsNoResume, "tls-no-resume", false, "no TLS session resumption: no session tickets (Go keeps no session cache)")
	flag.BoolVar(&cfg.forward, "forward", false, "TEST MODE, never expose it: also act as an open forward proxy (curl -x; absolute-form "+
		"requests and CONNECT tunnels) to ANY host and port, loopback and private addresses included; "+
		"examples/url-filter is the filtering, safe-by-default forward proxy")
	flag.StringVar(&cfg.accessLog, "access-log", "", `an access log line per exchange on standard output: "slog" (structured, key=value) or "combined" (nginx's format)`)
	flag.StringVar(&cfg.requestID, "request-id", "", "request ID `HEADER` (e.g. X-Request-ID): made for each request (kept from -trusted peers), sent upstream and back, logged")
	flag.IntVar(&cfg.maxConns, "max-conns", 0, "client connections open at once (sluice.Server.MaxConns), of every kind: at the bound "+
		"the proxy stops accepting (new connections wait in the listen queue) and closes idle keep-alive ones to make room; "+
		"0: sluice's default (32768; none with -server net/http), negative: no bound")
	flag.IntVar(&cfg.maxInFlight, "max-in-flight", 0, "requests handled at once (sluice.Proxy.MaxInFlight); more are answered "+
		"503 with Retry-After at once; 0: sluice's default (16384), negative: no bound")
	flag.IntVar(&cfg.maxPerClient, "max-per-client", 0, "requests of one client address (its /64 for IPv6) handled at once "+
		"(sluice.Proxy.MaxPerClient); more are answered 429 with Retry-After; 0: no bound")
	flag.StringVar(&cfg.metrics, "metrics", "", telemetry.Usage)
	flag.Var((*prefixes)(&cfg.proxyProtocol), "proxy-protocol", "connections from `CIDR[,CIDR]` (an L4 load balancer: HAProxy with "+
		"send-proxy or send-proxy-v2, AWS NLB, ...; a bare address is a /32 or /128) start with a PROXY protocol header, "+
		"v1 or v2, before TLS if any, and the client address it gives is the one X-Forwarded-For names. From these peers "+
		"the header is required (a connection without it is closed), from any other it is refused (400); repeatable; "+
		"needs -server sluice")
	flag.Parse()
	if *server != "sluice" && *server != "net/http" {
		fmt.Fprintf(os.Stderr, "passthrough: bad -server %q: want sluice or net/http\n", *server)
		os.Exit(2)
	}
	if (cfg.tlsCert == "") != (cfg.tlsKey == "") || (cfg.tlsCert != "" && cfg.h2c) {
		fmt.Fprintln(os.Stderr, "passthrough: -tls-cert and -tls-key go together, and -h2c is for a plain listener (without them)")
		os.Exit(2)
	}
	cfg.netHTTP = *server == "net/http"
	if cfg.netHTTP && len(cfg.proxyProtocol) > 0 {
		fmt.Fprintln(os.Stderr, "passthrough: -proxy-protocol needs -server sluice (net/http's server does not read PROXY headers)")
		os.Exit(2)
	}
	if err := run(*listen, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "passthrough:", err)
		os.Exit(1)
	}
}

func run(listen string, cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return serve(ctx, ln, cfg)
}

// checkPattern reports whether p is a route pattern the Proxy accepts.
func checkPattern(p string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bad pattern %q: %v", p, r)
		}
	}()
	new(sluice.Proxy).Handle(p, nil)
	return nil
}

// serve runs the proxy on ln until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, cfg config) error {
	defer ln.Close()
	if cfg.clientTimeout < 0 {
		return fmt.Errorf("-client-timeout %v: must not be negative", cfg.clientTimeout)
	}
	if cfg.netHTTP && len(cfg.proxyProtocol) > 0 {
		return errors.New("-proxy-protocol needs -server sluice")
	}
	upstream := cfg.upstream
	if upstream == "" {
		demo, err := startDemo()
		if err != nil {
			return err
		}
		defer demo.Close()
		upstream = "http://" + demo.Addr
	}
	target, err := url.Parse(upstream)
	if err != nil || target.Host == "" || (target.Scheme != "http" && target.Scheme != "https" && target.Scheme != "h2c") {
		return fmt.Errorf("bad -upstream %q: want a URL like http://127.0.0.1:9000 (or https://, or h2c:// for HTTP/2 over cleartext)", upstream)
	}
	if cfg.upstreamIdle < 0 {
		return fmt.Errorf("-upstream-idle-timeout %v: must not be negative", cfg.upstreamIdle)
	}
	if cfg.tunnelIdle < 0 {
		return fmt.Errorf("-tunnel-idle-timeout %v: must not be negative", cfg.tunnelIdle)
	}
	if cfg.maxIdlePerHost < 0 {
		return fmt.Errorf("-max-idle-per-host %d: must not be negative", cfg.maxIdlePerHost)
	}
	var director sluice.Director = &sluice.SingleHost{Target: target}
	if cfg.forward {
		director = &forward.Director{
			Next:       director,
			AnyPort:    true,
			AllowAddrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		}
	}
	var onExchange func(*sluice.Record)
	switch cfg.accessLog {
	case "":
	case "slog":
		onExchange = accesslog.Slog(slog.New(slog.NewTextHandler(os.Stdout, nil)))
	case "combined":
		onExchange = accesslog.Combined(os.Stdout)
	default:
		return fmt.Errorf("-access-log %q: want slog or combined", cfg.accessLog)
	}
	proxy := &sluice.Proxy{
		Director:              director,
		OnExchange:            onExchange,
		RequestIDHeader:       cfg.requestID,
		ResponseHeaderTimeout: cfg.timeout,
		UpstreamIdleTimeout:   cfg.upstreamIdle,
		ClientIdleTimeout:     cfg.clientTimeout, // behind net/http
		MaxInFlight:           cfg.maxInFlight,
		MaxPerClient:          cfg.maxPerClient,
		MaxIdleConnsPerHost:   cfg.maxIdlePerHost,
	}
	if cfg.tunnelIdle > 0 {
		proxy.WebSocket = &sluice.WebSocketConfig{IdleTimeout: cfg.tunnelIdle}
	}
	for _, p := range cfg.deny {
		if err := checkPattern(p); err != nil {
			return fmt.Errorf("-deny: %w", err)
		}
		proxy.Handle(p, sluice.Local(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "403 forbidden", http.StatusForbidden)
		})))
	}
	defer proxy.CloseIdleConnections()
	metrics, err := telemetry.Start(cfg.metrics, proxy, nil)
	if err != nil {
		return err
	}
	defer metrics.Close()
	if metrics.Addr != "" {
		slog.Info("passthrough: metrics", "url", metrics.URL())
		if cfg.metricsReady != nil {
			cfg.metricsReady(metrics.URL())
		}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(cfg.h2c)
	s := &sluice.Server{
		Handler:           metrics.Handler,
		ReadHeaderTimeout: cfg.clientTimeout,
		BodyIdleTimeout:   cfg.clientTimeout,
		WriteIdleTimeout:  cfg.clientTimeout,
		Protocols:         protocols,
		TLSConfig:         &tls.Config{SessionTicketsDisabled: cfg.tlsNoResume},
		ProxyProtocol:     cfg.proxyProtocol,
		MaxConns:          cfg.maxConns,
	}
	var srv sluice.HTTPServer = s
	if cfg.netHTTP {
		head := sluice.DefaultReadHeaderTimeout
		if cfg.clientTimeout > 0 {
			head = cfg.clientTimeout
		}
		srv = &http.Server{Handler: metrics.Handler, ReadHeaderTimeout: head, Protocols: protocols}
		if cfg.maxConns > 0 {
			// net/http has no bound of its own: this one counts the
			// same connections (until closed, hijacked ones included),
			// without closing idle ones to make room.
			ln = netutil.LimitListener(ln, cfg.maxConns)
		}
	}
	scheme := "http"
	if cfg.tlsCert != "" {
		// The same TLS listener (ALPN h2, http/1.1) for both servers.
		if ln, err = s.TLSListener(ln, cfg.tlsCert, cfg.tlsKey); err != nil {
			return err
		}
		scheme = "https"
	}
	slog.Info("passthrough: proxying", "url", scheme+"://"+ln.Addr().String()+"/", "upstream", upstream, "h2c", cfg.h2c, "forward", cfg.forward,
		"proxy_protocol", (*prefixes)(&cfg.proxyProtocol).String())
	if cfg.forward {
		slog.Warn("passthrough: -forward: an open forward proxy to any host, loopback and private addresses included (test mode)")
	}

	return sluice.Serve(ctx, srv, ln, 0)
}
