package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/forward"
	"github.com/sluiceproxy/sluice/wsmsg"
)

var discardLog = log.New(io.Discard, "", 0)

// ProxyConfig is what the proxy process is told by the driver.
type ProxyConfig struct {
	// Targets are the pool's members (host:port), reached over HTTP/1.1
	// by most routes and over h2c by /h2up/.
	Targets []string
	// Solo is the one upstream of the /solo/ route, which has no pool:
	// while it is down, its requests fail with 502.
	Solo string
	// CertFile and KeyFile serve the TLS listener (h2 and http/1.1).
	CertFile, KeyFile string
	// Fault plants a defect, for the soak's own tests: "leak" leaks a
	// goroutine and a descriptor per GET /small; "truncate" answers
	// GET /download with half the body, ending cleanly. Empty for none.
	Fault string
}

// ProxyAddrs is what the proxy process prints, as one JSON line on its
// standard output, once it serves.
type ProxyAddrs struct {
	// HTTP serves HTTP/1.1 and h2c; TLS serves h2 and http/1.1 by ALPN.
	HTTP, TLS string
	// Admin serves GET /stats and POST /quiesce.
	Admin string
}

// Stats is what the proxy's admin listener reports at /stats.
type Stats struct {
	Goroutines int
	HeapInuse  uint64
	// Exchanges counts the Records the Proxy handed to OnExchange, by
	// error class ("" for none).
	Exchanges int64
	ByClass   map[string]int64
	Tunnels   int
	// Healthy is the number of healthy members of each pool.
	Healthy map[string]int
}

// forwardPool is the Proxy's Director: forward.Director for absolute-form
// requests and CONNECT, the pool for the rest. It passes the pool the
// outcome of every attempt (sluice.Observer), which forward.Director
// itself does not know about.
type forwardPool struct {
	forward.Director
	pool *balance.Pool
}

func (d *forwardPool) Observe(pr *sluice.ProxyRequest, res sluice.Result) { d.pool.Observe(pr, res) }

// RunProxy serves the soak's proxy until ctx ends, then shuts it down
// gracefully. ready gets the listeners' addresses once they serve.
// Everything sluice offers that the soak exercises is wired here:
//
//   - a balance.Pool of Targets with active (1 s) and passive health
//     checks and safe retries (3 attempts, idempotent requests replayed),
//     the Proxy's Director;
//   - the same targets over h2c (HTTP/2 to the upstream) under /h2up/;
//   - /solo/ to one target without a pool (a route with its own Director);
//   - an Authorizer refusing requests with X-Soak-Deny and setting the
//     identity header (a client's own is stripped: IdentityHeaders);
//   - /capture/ rewritten by a ResponseTransform (an Interceptor);
//   - GET /status answered by the proxy (Local);
//   - /wsmsg/ relayed message by message (wsmsg), dropping "drop:" messages
//     to the upstream; other WebSockets tunnelled byte for byte;
//   - absolute-form requests and CONNECT tunnels (forward) to loopback;
//   - sluice.Server with HTTP/1.1 and h2c on one listener, h2 and
//     HTTP/1.1 over TLS on another; request IDs; OnExchange records.
func RunProxy(ctx context.Context, cfg ProxyConfig, logger *slog.Logger, ready func(ProxyAddrs)) error {
	pools := map[string]*balance.Pool{}
	newPool := func(name, scheme, strip string) (*balance.Pool, error) {
		p := &balance.Pool{
			Policy:      balance.RoundRobin(),
			StripPrefix: strip,
			// A target that is down refuses connections: Fall checks a
			// second apart take it out. The timeout is long, so that a
			// machine too busy to answer within a second (two cores
			// shared with other work) does not take healthy targets out.
			Health:  &balance.HealthCheck{Path: "/health", Interval: time.Second, Timeout: 3 * time.Second, Rise: 2, Fall: 3},
			Passive: &balance.PassiveHealth{Failures: 3, Window: 5 * time.Second, CoolDown: 3 * time.Second},
			Logger:  logger,
		}
		for _, t := range cfg.Targets {
			if err := p.Add(ctx, balance.Member{URL: scheme + "://" + t}); err != nil {
				return nil, err
			}
		}
		pools[name] = p
		return p, nil
	}
	pool, err := newPool("h1", "http", "")
	if err != nil {
		return err
	}
	h2pool, err := newPool("h2c", "h2c", "/h2up")
	if err != nil {
		return err
	}
	solo, err := url.Parse("http://" + cfg.Solo)
	if err != nil {
		return err
	}

	// The proxy's own count of its exchanges, by error class; failed ones
	// are logged (with their request ID) by the Proxy itself.
	var exchanges atomic.Int64
	var mu sync.Mutex
	byClass := map[string]int64{}
	onExchange := func(rec *sluice.Record) {
		exchanges.Add(1)
		mu.Lock()
		byClass[rec.ErrorClass]++
		mu.Unlock()
	}

	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	proxy := &sluice.Proxy{
		Director: &forwardPool{Director: forward.Director{Next: pool, AnyPort: true, AllowAddrs: loopback}, pool: pool},
		Authorizer: sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
			if pr.In.Header.Get(headerDeny) != "" {
				return sluice.Deny(http.StatusForbidden, "denied by the soak's Authorizer\n"), nil
			}
			if u := pr.In.Header.Get(headerUser); u != "" {
				pr.Out.Header.Set(headerIdentity, "user:"+u)
			}
			return sluice.Allow, nil
		}),
		IdentityHeaders:       []string{headerIdentity},
		Retry:                 &sluice.RetryPolicy{Attempts: 3, Idempotent: true, Duration: 10 * time.Second},
		ResponseHeaderTimeout: 10 * time.Second,
		RequestIDHeader:       "X-Request-ID",
		TrustedProxies:        loopback,
		WebSocket:             &sluice.WebSocketConfig{IdleTimeout: 30 * time.Second},
		OnExchange:            onExchange,
		Logger:                logger,
	}
	proxy.Handle("GET /status", sluice.Local(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "proxy ok\n")
	})))
	proxy.Handle("/capture/", &sluice.ResponseTransform{MaxBody: 64 << 10, Func: capture})
	proxy.Handle("/wsmsg/", &wsmsg.Interceptor{
		OnMessage: func(s *wsmsg.Session, m *wsmsg.Message) error {
			if m.Direction == wsmsg.ToUpstream && bytes.HasPrefix(m.Data, []byte("drop:")) {
				return wsmsg.ErrDrop
			}
			return nil
		},
	})
	proxy.AddRoute(sluice.Route{Pattern: "/solo/", Director: &sluice.SingleHost{Target: solo}})
	if err := plantFault(proxy, cfg.Fault); err != nil {
		return err
	}
	proxy.AddRoute(sluice.Route{Pattern: "/h2up/", Director: h2pool})

	// The pools' health checks.
	poolCtx, stopPools := context.WithCancel(context.WithoutCancel(ctx))
	var poolsDone sync.WaitGroup
	for _, p := range pools {
		poolsDone.Go(func() { p.Run(poolCtx) })
	}
	defer func() {
		stopPools()
		poolsDone.Wait()
	}()
	defer proxy.CloseIdleConnections()

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &sluice.Server{Handler: proxy, Protocols: protocols, Logger: logger}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rawTLS, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return err
	}
	tln, err := srv.TLSListener(rawTLS, cfg.CertFile, cfg.KeyFile)
	if err != nil {
		ln.Close()
		rawTLS.Close()
		return err
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		rawTLS.Close()
		return err
	}

	admin := http.NewServeMux()
	admin.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := Stats{Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse, Exchanges: exchanges.Load(),
			Tunnels: proxy.OpenTunnels(), Healthy: map[string]int{}, ByClass: map[string]int64{}}
		mu.Lock()
		for k, v := range byClass {
			st.ByClass[k] = v
		}
		mu.Unlock()
		for name, p := range pools {
			for _, s := range p.Stats() {
				if s.Healthy {
					st.Healthy[name]++
				}
			}
		}
		json.NewEncoder(w).Encode(st)
	})
	// Quiescing drops what is kept for reuse: idle upstream connections,
	// and the pipes Go's splice(2) keeps in a sync.Pool (two collections
	// empty it; the pipes close in their finalizers).
	admin.HandleFunc("POST /quiesce", func(w http.ResponseWriter, r *http.Request) {
		proxy.CloseIdleConnections()
		runtime.GC()
		runtime.GC()
		w.WriteHeader(http.StatusNoContent)
	})
	// Profiles of the proxy, to look into a resource that grows.
	admin.HandleFunc("/debug/pprof/", pprof.Index)
	admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}

	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- srv.Serve(tln) }()
	go func() { errc <- adminSrv.Serve(adminLn) }()
	ready(ProxyAddrs{HTTP: ln.Addr().String(), TLS: rawTLS.Addr().String(), Admin: adminLn.Addr().String()})

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		serveErr = fmt.Errorf("a listener stopped: %w", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(serveErr, srv.Shutdown(sctx), proxy.Shutdown(sctx), adminSrv.Shutdown(sctx))
	for range 3 {
		if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) && !errors.Is(e, net.ErrClosed) {
			err = errors.Join(err, e)
		}
	}
	return err
}

// capture is the ResponseTransform of /capture/: it marks the upstream's
// JSON as captured and doubles its number, so that a client can tell a
// transformed body from a passed-through one.
func capture(res *http.Response, body []byte) ([]byte, error) {
	var v struct {
		N      int    `json:"n"`
		Target string `json:"target"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	return fmt.Appendf(nil, `{"captured":true,"double":%d,"target":%q}`, 2*v.N, strings.ToUpper(v.Target)), nil
}

// plantFault adds the defect named by fault to the proxy.
func plantFault(proxy *sluice.Proxy, fault string) error {
	switch fault {
	case "":
	case "leak":
		block := make(chan struct{}) // never closed
		proxy.AddRoute(sluice.Route{Pattern: "GET /small", Interceptor: sluice.InterceptorFunc(func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
			go func() { <-block }()
			if f, err := os.Open(os.DevNull); err == nil {
				leakedMu.Lock()
				leaked = append(leaked, f)
				leakedMu.Unlock()
			}
			return pr.Forward(w)
		})})
	case "truncate":
		proxy.Handle("GET /download", sluice.InterceptorFunc(func(w http.ResponseWriter, pr *sluice.ProxyRequest) error {
			size, _ := strconv.ParseInt(pr.In.URL.Query().Get("size"), 10, 64)
			seed, _ := strconv.ParseUint(pr.In.URL.Query().Get("seed"), 10, 64)
			io.Copy(w, io.LimitReader(newStream(seed), size/2))
			return nil
		}))
	default:
		return fmt.Errorf("unknown fault %q", fault)
	}
	return nil
}

// leaked keeps the descriptors of the "leak" fault open.
var (
	leakedMu sync.Mutex
	leaked   []*os.File
)
