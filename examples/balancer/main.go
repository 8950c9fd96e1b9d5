// Command balancer is a load balancer whose targets register themselves:
// a sluice.Proxy directed by a sluice.Pool, with POST /register on the
// balancer's own port, active and passive health checks, safe retries,
// 503 when no target is healthy and 504 when one is too slow, and a
// status page.
//
// With no flags it starts three embedded demo backends that register
// themselves, and prints the URL to open:
//
//	go run ./examples/balancer
//	curl -s http://127.0.0.1:8080/              # rotates over the backends
//	open http://127.0.0.1:8080/_balancer/       # status; stop/start backends
//
// Any HTTP server can join (and leaves when its heartbeats stop):
//
//	curl -X POST http://127.0.0.1:8080/register -d '{"url":"http://127.0.0.1:9000","ttl":30}'
//
// With -redis ADDR, instances share the pool through Redis: a target
// registered on one is used by all. -target adds static targets, e.g. for
// ../shared/bench:
//
//	balancer -listen {ADDR} -backends 0 -target {UPSTREAM} -health-path ''
//
//
//	go run ./examples/balancer -listen 127.0.0.1:8081 -backends 0 -redis 127.0.0.1:6379
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluiceproxy/sluice"
)

type config struct {
	listen         string
	redis          string
	redisPrefix    string
	policy         string
	backends       int
	secret         string
	ttl            time.Duration
	healthPath     string
	healthInterval time.Duration
	coolDown       time.Duration
	timeout        time.Duration
	stripPrefix    string
	attempts       int
	targets        string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.redis, "redis", "", "Redis address (host:port) to share the pool with other instances; default: in memory")
	flag.StringVar(&cfg.redisPrefix, "redis-prefix", "sluice:balancer", "key prefix of the shared pool in Redis")
	flag.StringVar(&cfg.policy, "policy", "round-robin", "round-robin, weighted, least-conn, two-choices, hash-ip, hash-header:NAME, hash-cookie:NAME or sticky")
	flag.IntVar(&cfg.backends, "backends", 3, "embedded demo backends to start (0 for none)")
	flag.StringVar(&cfg.secret, "secret", "", "shared secret registrations must send as a bearer token (default: none)")
	flag.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "longest registration lifetime without a heartbeat")
	flag.StringVar(&cfg.healthPath, "health-path", "/healthz", "path of the active health check (empty: passive health only)")
	flag.DurationVar(&cfg.healthInterval, "health-interval", 2*time.Second, "time between active health checks")
	flag.DurationVar(&cfg.coolDown, "cool-down", 5*time.Second, "how long a target that failed 3 times in 10s is left out")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "upstream response-header timeout (504 past it)")
	flag.StringVar(&cfg.stripPrefix, "strip-prefix", "", "path prefix removed before forwarding, e.g. /app")
	flag.IntVar(&cfg.attempts, "attempts", 3, "attempts per request, on different targets, when a retry is safe")
	flag.StringVar(&cfg.targets, "target", "", "comma-separated static target URLs, members without expiry (e.g. -backends 0 -target http://127.0.0.1:9000)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "balancer:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. ready, if not nil, gets the balancer's
// base URL once it listens.
func run(ctx context.Context, cfg config, ready func(url string)) error {
	policy, err := parsePolicy(cfg.policy)
	if err != nil {
		return err
	}
	pool := &sluice.Pool{
		Policy:      policy,
		StripPrefix: cfg.stripPrefix,
		Passive:     &sluice.PassiveHealth{Failures: 3, Window: 10 * time.Second, CoolDown: cfg.coolDown},
	}
	if cfg.healthPath != "" {
		pool.Health = &sluice.HealthCheck{Path: cfg.healthPath, Interval: cfg.healthInterval, Rise: 2, Fall: 2}
	}
	if cfg.redis != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.redis})
		defer rdb.Close()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("redis %s: %w", cfg.redis, err)
		}
		pool.Registry = &RedisRegistry{Client: rdb, Prefix: cfg.redisPrefix}
		pool.SyncInterval = 500 * time.Millisecond
	}

	for _, t := range strings.Split(cfg.targets, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if err := pool.Add(ctx, sluice.Member{URL: t}, 0); err != nil {
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
	registrar := &sluice.Registrar{Pool: pool, Secret: cfg.secret, TTL: cfg.ttl}
	proxy.Handle("/register", local(registrar))

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()

	var demos *demoSet
	if cfg.backends > 0 {
		demos = &demoSet{register: base + "/register", secret: cfg.secret, ttl: cfg.ttl}
		defer demos.closeAll()
	}
	proxy.Handle("/_balancer/", local(statusHandler(pool, demos)))

	defer ln.Close() // on early returns; Serve closes it otherwise
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
	// the balancer, which still serves), then the balancer drains.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	stopWatch := context.AfterFunc(ctx, func() {
		if demos != nil {
			demos.closeAll()
		}
		stopServing()
	})
	defer stopWatch()

	for i := range cfg.backends {
		if err := demos.start(i + 1); err != nil {
			return err
		}
	}
	slog.Info("balancer: listening", "url", base+"/", "status", base+"/_balancer/", "register", base+"/register",
		"policy", cfg.policy, "shared", cfg.redis != "")
	if ready != nil {
		ready(base)
	}
	srv := &sluice.Server{Handler: proxy}
	return sluice.Serve(serveCtx, srv, ln, 0, proxy)
}

// local serves a request on the balancer itself instead of forwarding it.
func local(h http.Handler) sluice.Interceptor {
	return sluice.InterceptorFunc(func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
		h.ServeHTTP(w, pr.In)
		return nil
	})
}

func parsePolicy(s string) (sluice.Policy, error) {
	name, arg, _ := strings.Cut(s, ":")
	switch name {
	case "round-robin", "rr":
		return sluice.RoundRobin(), nil
	case "weighted", "wrr":
		return sluice.WeightedRoundRobin(), nil
	case "least-conn":
		return sluice.LeastConnections(), nil
	case "two-choices", "p2c":
		return sluice.RandomTwoChoices(), nil
	case "hash-ip":
		return sluice.ConsistentHash(sluice.HashClientIP()), nil
	case "hash-header":
		if arg != "" {
			return sluice.ConsistentHash(sluice.HashHeader(arg)), nil
		}
	case "hash-cookie":
		if arg != "" {
			return sluice.ConsistentHash(sluice.HashCookie(arg)), nil
		}
	case "sticky":
		return sluice.StickyCookie("sluice_lb", sluice.RoundRobin()), nil
	}
	return nil, fmt.Errorf("unknown -policy %q", s)
}
