// Command balancer is a load balancer whose targets register themselves:
// a sluice.Proxy directed by a balance.Pool, with active and passive health
// checks, safe retries, 503 when no target is healthy and 504 when one is
// too slow. Registration (POST /register) and the status page
// (/_balancer/) are served on a separate admin listener, by default on
// loopback only (-admin 127.0.0.1:8079), never on the port that serves
// clients. An admin listener off loopback must have -secret: then every
// registration carries it as a bearer token. Targets on link-local and
// cloud metadata addresses are refused (-allow-link-local lets them in),
// and the pool holds at most -max-targets members.
//
// With no flags it starts three embedded demo backends that register
// themselves, and prints the URLs to open:
//
//	go run ./examples/balancer
//	curl -s http://127.0.0.1:8080/              # rotates over the backends
//	open http://127.0.0.1:8079/_balancer/       # status; stop/start backends
//
// Any HTTP server can join (and leaves when its heartbeats stop; -ttl is
// the longest lifetime granted, 10 s by default, and the answer says when
// it capped the one asked for). It is health-checked on -health-path
// unless it registers its own "health_path"; the status page says why a
// target is out:
//
//	curl -X POST http://127.0.0.1:8079/register -d '{"url":"http://127.0.0.1:9000","ttl":10,"health_path":"/"}'
//
// With -redis ADDR, instances share the pool through Redis: a target
// registered on one is used by all. -target adds static targets, e.g. in
// bench/run.sh (SLUICE_BENCH=balancer):
//
//	balancer -listen {ADDR} -backends 0 -target {UPSTREAM} -health-path ''
//
//	go run ./examples/balancer -listen 127.0.0.1:8081 -admin 127.0.0.1:8078 -backends 0 -redis 127.0.0.1:6379
//
// With -metrics ADDR, Prometheus metrics are served at http://ADDR/metrics
// on a listener of their own: the HTTP ones of OpenTelemetry's
// conventions, and each target's numbers of the status page
// (sluice_pool_target_*).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/examples/internal/telemetry"
)

// description is what -h prints before the flags.
const description = `balancer: a load balancer whose targets register themselves.

Clients are served on -listen and spread over the pool's healthy targets
(-policy), with health checks, safe retries, 503 when no target is
healthy and 504 past -timeout. Targets join with POST /register on the
admin listener (-admin, loopback only unless -secret is set), which also
serves the status page /_balancer/. With no flags, three embedded demo
backends register themselves:

  go run ./examples/balancer
  curl -s http://127.0.0.1:8080/
  curl -X POST http://127.0.0.1:8079/register -d '{"url":"http://127.0.0.1:9000","health_path":"/"}'

Flags:
`

type config struct {
	listen         string
	admin          string
	redis          string
	redisPrefix    string
	policy         string
	backends       int
	secret         string
	ttl            time.Duration
	maxTargets     int
	allowLinkLocal bool
	healthPath     string
	healthInterval time.Duration
	coolDown       time.Duration
	timeout        time.Duration
	stripPrefix    string
	attempts       int
	targets        string

	// metrics is the address serving /metrics ("" for none);
	// metricsReady, if not nil, gets its URL once it listens (for tests).
	metrics      string
	metricsReady func(url string)
}

// parseFlags parses the command line. With -h it prints the description
// and the flags to out and returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, description)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address serving clients")
	fs.StringVar(&cfg.admin, "admin", "127.0.0.1:8079", "address serving POST /register and the status page /_balancer/; off loopback it needs -secret")
	fs.StringVar(&cfg.redis, "redis", "", "Redis address (host:port) to share the pool with other instances; default: in memory")
	fs.StringVar(&cfg.redisPrefix, "redis-prefix", "sluice:balancer", "key prefix of the shared pool in Redis")
	fs.StringVar(&cfg.policy, "policy", "round-robin", "round-robin, weighted, least-conn, two-choices, hash-ip, hash-header:NAME, hash-cookie:NAME or sticky")
	fs.IntVar(&cfg.backends, "backends", 3, "embedded demo backends to start (0 for none)")
	fs.StringVar(&cfg.secret, "secret", "", "shared secret registrations must send as a bearer token (required when -admin is off loopback)")
	fs.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "longest registration lifetime without a heartbeat (at least 1s)")
	fs.IntVar(&cfg.maxTargets, "max-targets", balance.DefaultMaxTargets, "most targets the pool holds; registrations past it get 503")
	fs.BoolVar(&cfg.allowLinkLocal, "allow-link-local", false, "accept targets on link-local addresses and cloud metadata services (refused by default)")
	fs.StringVar(&cfg.healthPath, "health-path", "/healthz", "path of the active health check, unless a target registers its own (empty: passive health only)")
	fs.DurationVar(&cfg.healthInterval, "health-interval", 2*time.Second, "time between active health checks")
	fs.DurationVar(&cfg.coolDown, "cool-down", 5*time.Second, "how long a target that failed 3 times in 10s is left out")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "upstream response-header timeout (504 past it)")
	fs.StringVar(&cfg.stripPrefix, "strip-prefix", "", "path prefix removed before forwarding, e.g. /app")
	fs.IntVar(&cfg.attempts, "attempts", 3, "attempts per request, on different targets, when a retry is safe")
	fs.StringVar(&cfg.metrics, "metrics", "", telemetry.Usage)
	fs.StringVar(&cfg.targets, "target", "", "comma-separated static target URLs, members without expiry (e.g. -backends 0 -target http://127.0.0.1:9000)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: every setting is a flag (see -h)", fs.Arg(0))
	}
	return cfg, cfg.check()
}

// check refuses settings that cannot work, naming the flag.
func (cfg *config) check() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		bad("-listen %q: want host:port: %w", cfg.listen, err)
	}
	if host, _, err := net.SplitHostPort(cfg.admin); err != nil {
		bad("-admin %q: want host:port: %w", cfg.admin, err)
	} else if !isLoopback(host) && cfg.secret == "" {
		bad("-admin %q is not a loopback address: set -secret, or anyone who reaches it can point the pool anywhere", cfg.admin)
	}
	if err := telemetry.CheckAddr(cfg.metrics); err != nil {
		bad("%w", err)
	} else if cfg.metrics != "" {
		if (cfg.metrics == cfg.listen || cfg.metrics == cfg.admin) && !strings.HasSuffix(cfg.metrics, ":0") {
			bad("-metrics %q: want a listener of its own, not -listen's or -admin's", cfg.metrics)
		}
	}
	if cfg.admin == cfg.listen && !strings.HasSuffix(cfg.admin, ":0") {
		bad("-admin and -listen are both %q: registration must not be served on the clients' port", cfg.admin)
	}
	if _, err := parsePolicy(cfg.policy); err != nil {
		bad("%w", err)
	}
	if cfg.backends < 0 || cfg.backends > 100 {
		bad("-backends %d: want 0 to 100", cfg.backends)
	}
	if cfg.ttl < time.Second {
		bad("-ttl %s: want at least 1s (lifetimes are granted in whole seconds)", cfg.ttl)
	}
	if cfg.maxTargets < 1 {
		bad("-max-targets %d: want at least 1", cfg.maxTargets)
	}
	if cfg.healthPath != "" && !strings.HasPrefix(cfg.healthPath, "/") {
		bad("-health-path %q: want an absolute path such as /healthz, or '' for none", cfg.healthPath)
	}
	if cfg.healthPath != "" && cfg.healthInterval <= 0 {
		bad("-health-interval %s: want a positive duration", cfg.healthInterval)
	}
	if cfg.coolDown <= 0 {
		bad("-cool-down %s: want a positive duration", cfg.coolDown)
	}
	if cfg.timeout <= 0 {
		bad("-timeout %s: want a positive duration", cfg.timeout)
	}
	if cfg.stripPrefix != "" && !strings.HasPrefix(cfg.stripPrefix, "/") {
		bad("-strip-prefix %q: want a path starting with /", cfg.stripPrefix)
	}
	if cfg.attempts < 1 {
		bad("-attempts %d: want at least 1", cfg.attempts)
	}
	if cfg.redis != "" && cfg.redisPrefix == "" {
		bad("-redis-prefix is empty: instances sharing Redis need a key prefix")
	}
	return errors.Join(errs...)
}

// isLoopback reports whether host (of host:port) names only loopback.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancer:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "balancer:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. ready, if not nil, gets the base URLs of
// the balancer and of its admin listener once they listen.
func run(ctx context.Context, cfg config, ready func(base, admin string)) error {
	if err := cfg.check(); err != nil {
		return err
	}
	policy, err := parsePolicy(cfg.policy)
	if err != nil {
		return err
	}
	pool := &balance.Pool{
		Policy:      policy,
		StripPrefix: cfg.stripPrefix,
		Passive:     &balance.PassiveHealth{Failures: 3, Window: 10 * time.Second, CoolDown: cfg.coolDown},
	}
	if cfg.healthPath != "" {
		// A check gets 2 s whatever the interval: a short -health-interval
		// or a busy machine must not take healthy targets out.
		pool.Health = &balance.HealthCheck{Path: cfg.healthPath, Interval: cfg.healthInterval, Timeout: 2 * time.Second, Rise: 2, Fall: 2}
	}
	if cfg.redis != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.redis})
		defer rdb.Close()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("-redis %s: %w", cfg.redis, err)
		}
		pool.Registry = &RedisRegistry{Client: rdb, Prefix: cfg.redisPrefix}
		pool.SyncInterval = 500 * time.Millisecond
	}

	for _, t := range strings.Split(cfg.targets, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if err := pool.Add(ctx, balance.Member{URL: t}); err != nil {
			return fmt.Errorf("-target: %w", err)
		}
	}

	proxy := &sluice.Proxy{
		Director:              pool,
		ResponseHeaderTimeout: cfg.timeout,
		Via:                   "sluice-balancer",
		Retry: &sluice.RetryPolicy{
			Attempts:   cfg.attempts,
			Duration:   cfg.timeout,
			Idempotent: true,
		},
	}
	metrics, err := telemetry.Start(cfg.metrics, proxy, pool)
	if err != nil {
		return err
	}
	defer metrics.Close()
	metricsURL := metrics.URL()
	if metricsURL != "" && cfg.metricsReady != nil {
		cfg.metricsReady(metricsURL)
	}
	registrar := &balance.Registrar{Pool: pool, Secret: cfg.secret, TTL: cfg.ttl,
		MaxTargets: cfg.maxTargets, AllowLinkLocal: cfg.allowLinkLocal}

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	defer ln.Close() // on early returns; Serve closes it otherwise
	adminLn, err := net.Listen("tcp", cfg.admin)
	if err != nil {
		return fmt.Errorf("-admin: %w", err)
	}
	defer adminLn.Close()
	base, adminBase := "http://"+ln.Addr().String(), "http://"+adminLn.Addr().String()

	var demos *demoSet
	if cfg.backends > 0 {
		demos = &demoSet{register: adminBase + "/register", secret: cfg.secret, ttl: cfg.ttl}
		defer demos.closeAll()
	}
	admin := adminHandler(registrar, statusHandler(pool, demos, metricsURL), cfg.secret == "")

	defer proxy.CloseIdleConnections()

	poolCtx, stopPool := context.WithCancel(context.Background())
	poolDone := make(chan struct{})
	go func() {
		defer close(poolDone)
		pool.Run(poolCtx)
	}()
	defer func() {
		stopPool()
		<-poolDone
	}()

	// On shutdown the demo backends leave first (deregistering through
	// the admin listener, which still serves), then both listeners drain.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	stopWatch := context.AfterFunc(ctx, func() {
		if demos != nil {
			demos.closeAll()
		}
		stopServing()
	})
	defer stopWatch()

	adminDone := make(chan error, 1)
	go func() {
		adminDone <- sluice.Serve(serveCtx, &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}, adminLn, 0)
	}()
	defer func() {
		stopServing()
		<-adminDone
	}()

	for i := range cfg.backends {
		if err := demos.start(i + 1); err != nil {
			return err
		}
	}
	slog.Info("balancer: listening", "url", base+"/", "admin", adminBase+"/", "status", adminBase+"/_balancer/",
		"register", adminBase+"/register", "policy", cfg.policy, "shared", cfg.redis != "", "secret", cfg.secret != "", "metrics", metricsURL)
	if ready != nil {
		ready(base, adminBase)
	}
	srv := &sluice.Server{Handler: metrics.Handler}
	return sluice.Serve(serveCtx, srv, ln, 0)
}

// adminHandler serves the admin listener: /register and the status page.
// Without a secret it answers only requests addressed to an IP address or
// localhost, so that a web page whose name is made to resolve to the
// admin address (DNS rebinding) cannot reach it from a browser.
func adminHandler(registrar http.Handler, status http.Handler, checkHost bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/register", registrar)
	mux.Handle("/_balancer/", status)
	mux.Handle("GET /{$}", http.RedirectHandler("/_balancer/", http.StatusFound))
	if !checkHost {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		host = strings.Trim(host, "[]")
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			http.Error(w, "the admin listener answers requests addressed to an IP address or localhost only (set -secret to lift this)", http.StatusMisdirectedRequest)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func parsePolicy(s string) (balance.Policy, error) {
	name, arg, _ := strings.Cut(s, ":")
	switch name {
	case "round-robin", "rr":
		return balance.RoundRobin(), nil
	case "weighted", "wrr":
		return balance.WeightedRoundRobin(), nil
	case "least-conn":
		return balance.LeastConnections(), nil
	case "two-choices", "p2c":
		return balance.RandomTwoChoices(), nil
	case "hash-ip":
		return balance.ConsistentHash(balance.HashClientIP()), nil
	case "hash-header":
		if arg != "" {
			return balance.ConsistentHash(balance.HashHeader(arg)), nil
		}
	case "hash-cookie":
		if arg != "" {
			return balance.ConsistentHash(balance.HashCookie(arg)), nil
		}
	case "sticky":
		return balance.StickyCookie("sluice_lb", balance.RoundRobin()), nil
	}
	return nil, fmt.Errorf("unknown -policy %q", s)
}
