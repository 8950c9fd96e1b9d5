package main

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/balance/register"
)

// demoSet runs the embedded demo backends. Each registers itself with the
// balancer through a register.Client, as a real backend would. A
// stopped backend's server is closed abruptly but its registration
// heartbeat goes on, as when a process hangs or its port dies: the
// balancer's health checks take it out, and retries hide it from clients.
type demoSet struct {
	register string
	secret   string
	ttl      time.Duration

	mu       sync.Mutex
	backends map[int]*demoBackend
}

type demoBackend struct {
	n      int
	addr   string
	srv    *http.Server // nil while stopped
	cancel context.CancelFunc
	done   chan struct{}
}

func demoHandler(n int, addr string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Backend", strconv.Itoa(n))
		fmt.Fprintf(w, "backend %d (%s): %s %s\n", n, addr, r.Method, r.URL.Path)
	})
	return mux
}

// start starts backend n, or restarts a stopped one on its old address.
func (d *demoSet) start(n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.backends == nil {
		d.backends = make(map[int]*demoBackend)
	}
	b := d.backends[n]
	addr := "127.0.0.1:0"
	if b != nil {
		if b.srv != nil {
			return nil
		}
		addr = b.addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo backend %d: %w", n, err)
	}
	if b == nil {
		b = &demoBackend{n: n, addr: ln.Addr().String()}
		d.backends[n] = b
		ctx, cancel := context.WithCancel(context.Background())
		b.cancel, b.done = cancel, make(chan struct{})
		reg := &register.Client{
			Endpoint: d.register,
			Secret:   d.secret,
			TTL:      d.ttl,
			ID:       "demo-" + strconv.Itoa(n),
			URL:      "http://" + b.addr,
		}
		go func() {
			defer close(b.done)
			_ = reg.Run(ctx)
		}()
	}
	b.srv = &http.Server{Handler: demoHandler(n, b.addr), ReadHeaderTimeout: 10 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(ln) }(b.srv)
	slog.Info("balancer: demo backend up", "n", n, "addr", b.addr)
	return nil
}

// stop closes backend n's server abruptly (open connections too).
func (d *demoSet) stop(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.backends[n]
	if b == nil || b.srv == nil {
		return false
	}
	_ = b.srv.Close()
	b.srv = nil
	slog.Info("balancer: demo backend stopped", "n", n, "addr", b.addr)
	return true
}

// closeAll stops every backend and ends its registration.
func (d *demoSet) closeAll() {
	d.mu.Lock()
	bs := make([]*demoBackend, 0, len(d.backends))
	for _, b := range d.backends {
		bs = append(bs, b)
	}
	d.backends = nil
	d.mu.Unlock()
	for _, b := range bs {
		b.cancel()
		<-b.done
		if b.srv != nil {
			_ = b.srv.Close()
		}
	}
}

type demoView struct {
	N    int
	Addr string
	Up   bool
}

func (d *demoSet) list() []demoView {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []demoView
	for _, b := range d.backends {
		out = append(out, demoView{b.n, b.addr, b.srv != nil})
	}
	slices.SortFunc(out, func(a, b demoView) int { return a.N - b.N })
	return out
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<meta charset="utf-8">
<meta http-equiv="refresh" content="1">
<title>sluice balancer</title>
<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}.down{color:#b00}</style>
<h1>sluice balancer</h1>
<p>Targets (refreshed every second; JSON at <a href="stats">stats</a>):</p>
<table>
<tr><th>id</th><th>url</th><th>weight</th><th>healthy</th><th>requests</th><th>failures</th><th>in flight</th><th>mean latency</th><th>why out</th></tr>
{{range .Stats}}<tr{{if not .Healthy}} class="down"{{end}}><td>{{.ID}}</td><td>{{.URL}}</td><td>{{.Weight}}</td><td>{{.Healthy}}{{if not .Member}} (draining){{end}}</td><td>{{.Requests}}</td><td>{{.Failures}}</td><td>{{.InFlight}}</td><td>{{.Latency}}</td><td>{{.DownReason}}</td></tr>
{{else}}<tr><td colspan="9">no targets: requests get 503</td></tr>{{end}}
</table>
<p>The same numbers are metrics, labelled sluice_target_id: sluice_pool_target_weight,
sluice_pool_target_healthy (1 or 0), sluice_pool_target_requests_total, sluice_pool_target_failures_total,
sluice_pool_target_in_flight and sluice_pool_target_latency_seconds{{if .Metrics}}, at <a href="{{.Metrics}}">{{.Metrics}}</a>{{else}}
(start with -metrics ADDR to serve them){{end}}.</p>
{{if .Demos}}<p>Embedded demo backends: stop one and watch health checks take it out while retries keep every request answered.</p>
<table>{{range .Demos}}<tr><td>backend {{.N}}</td><td>{{.Addr}}</td><td>{{if .Up}}up{{else}}<span class="down">stopped</span>{{end}}</td>
<td><form method="post" action="demo/{{if .Up}}stop{{else}}start{{end}}?n={{.N}}"><button>{{if .Up}}stop{{else}}start{{end}}</button></form></td></tr>{{end}}</table>{{end}}
`))

// statusHandler serves /_balancer/: the status page, the JSON statistics
// and the demo backends' stop/start buttons (which refuse cross-origin
// browser requests). metricsURL is where the same numbers are served as
// metrics, "" if they are not.
func statusHandler(pool *balance.Pool, demos *demoSet, metricsURL string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_balancer/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = statusPage.Execute(w, struct {
			Stats   []balance.Stats
			Demos   []demoView
			Metrics string
		}{pool.Stats(), demos.list(), metricsURL})
	})
	mux.Handle("GET /_balancer/stats", pool.Handler())
	mux.HandleFunc("POST /_balancer/demo/{action}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || demos == nil {
			http.Error(w, "want ?n=BACKEND", http.StatusBadRequest)
			return
		}
		switch r.PathValue("action") {
		case "stop":
			demos.stop(n)
		case "start":
			if err := demos.start(n); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		default:
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "/_balancer/", http.StatusSeeOther)
	})
	return http.NewCrossOriginProtection().Handler(mux)
}
