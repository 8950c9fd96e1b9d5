package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

type column struct {
	key    string // metric; "bound" is computed from the busy metrics
	head   string
	digits int
	spread bool   // add a spread column after this one
	ratio  string // "httputil" or "nginx": this metric over that system's
	prefix string // of the busy metrics, for "bound" ("dl_", "ul_")
}

// bound names the side that was CPU-saturated (>= 95 % busy).
func bound(proxyBusy, loadBusy float64) string {
	if math.IsNaN(proxyBusy) || math.IsNaN(loadBusy) {
		return "-"
	}
	switch p, l := proxyBusy >= 95, loadBusy >= 95; {
	case p && l:
		return "both"
	case p:
		return "proxy"
	case l:
		return "load"
	}
	return "none"
}

type tableDef struct {
	headline string // the metric the compare command leads with
	cols     []column
	legend   string
}

// ratios are the two columns comparing a headline with the Go baseline and
// with nginx.
func ratios(key string) []column {
	return []column{
		{key: key, head: "vs httputil", digits: 2, ratio: "httputil"},
		{key: key, head: "vs nginx", digits: 2, ratio: "nginx"},
	}
}

// busyCols are the CPU columns of the load scenarios.
var busyCols = []column{
	{key: "proxy_cpu_pct", head: "proxy CPU%"},
	{key: "cpu0_busy_pct", head: "cpu0%"},
	{key: "cpu1_busy_pct", head: "cpu1%"},
	{key: "bound", head: "saturated"},
}

func cols(parts ...[]column) []column { return slices.Concat(parts...) }

var tables = map[string]tableDef{
	"A": {"rps", cols(
		[]column{{key: "rps", head: "req/s", spread: true}}, ratios("rps"),
		[]column{{key: "p50_ms", head: "p50 ms", digits: 3}, {key: "p99_ms", head: "p99 ms", digits: 3},
			{key: "proxy_cpu_us_per_req", head: "CPU us/req", digits: 1}},
		busyCols, []column{{key: "errors", head: "errors"}}),
		"req/s, p50, p99: wrk (closed loop, 64 connections). CPU us/req: the proxy's process tree's user+system CPU time / requests."},
	"B": {"MBps", cols(
		[]column{{key: "MBps", head: "MB/s", spread: true}}, ratios("MBps"),
		[]column{{key: "rps", head: "req/s"}, {key: "p99_ms", head: "p99 ms", digits: 2},
			{key: "proxy_cpu_ms_per_GB", head: "CPU ms/GB"}},
		busyCols, []column{{key: "errors", head: "errors"}}),
		"MB/s: 10^6 bytes/s of responses (head and body) as wrk counts them. CPU ms/GB: the proxy's CPU time per 10^9 bytes."},
	"C": {"dl_MBps", []column{
		{key: "dl_MBps", head: "down MB/s", spread: true},
		{key: "dl_peak_rss_mb", head: "down peak RSS MB", digits: 1},
		{key: "dl_proxy_cpu_ms_per_GB", head: "down CPU ms/GB"},
		{key: "ul_MBps", head: "up MB/s", spread: true},
		{key: "ul_peak_rss_mb", head: "up peak RSS MB", digits: 1},
		{key: "ul_proxy_cpu_ms_per_GB", head: "up CPU ms/GB"},
		{key: "bound", head: "down sat.", prefix: "dl_"},
		{key: "bound", head: "up sat.", prefix: "ul_"},
		{key: "dl_idle_rss_mb", head: "idle RSS MB", digits: 1},
	}, "One curl transfer each way through a freshly started proxy. peak RSS: VmHWM summed over the proxy's processes (start-up plus this one transfer). The upload is chunked (curl -T - from a dd pipe)."},
	"D": {"rt_per_s", cols(
		[]column{{key: "rt_per_s", head: "round trips/s", spread: true}}, ratios("rt_per_s"),
		[]column{{key: "p50_us", head: "p50 us"}, {key: "p99_us", head: "p99 us"},
			{key: "proxy_cpu_us_per_rt", head: "CPU us/rt", digits: 1}},
		busyCols, []column{{key: "errors", head: "errors"}}),
		"wsload: each connection sends a masked binary message and waits for its echo (closed loop); every echo is compared. CPU us/rt: the proxy's CPU time / round trips (warm-up included in both)."},
	"E": {"rss_kb_per_conn", cols(
		[]column{{key: "rss_kb_per_conn", head: "KiB/conn", digits: 2, spread: true}}, ratios("rss_kb_per_conn"),
		[]column{{key: "opened", head: "opened"}, {key: "established", head: "established"},
			{key: "alive_at_end", head: "alive at end"}, {key: "rss_before_mb", head: "RSS before MB", digits: 1},
			{key: "rss_after_mb", head: "RSS after MB", digits: 1}, {key: "open_s", head: "open s", digits: 2}}),
		"KiB/conn = (proxy RSS with every connection idle - RSS before) / connections opened; each connection made one GET /small first. established: server-side ESTABLISHED sockets on the proxy's port, alive at end: connections the proxy still held when they were released."},
	"E-ws": {"rss_kb_per_conn", cols(
		[]column{{key: "rss_kb_per_conn", head: "KiB/tunnel", digits: 2, spread: true}}, ratios("rss_kb_per_conn"),
		[]column{{key: "opened", head: "opened"}, {key: "established", head: "established"},
			{key: "upstream_established", head: "upstream conns"}, {key: "alive_at_end", head: "alive at end"},
			{key: "rss_before_mb", head: "RSS before MB", digits: 1}, {key: "rss_after_mb", head: "RSS after MB", digits: 1},
			{key: "open_s", head: "open s", digits: 2}}),
		"KiB/tunnel = (proxy RSS with every tunnel idle - RSS before) / tunnels opened; each tunnel was upgraded (101 with the right Sec-WebSocket-Accept) and carried one echoed message both ways first. established: client-side connections on the proxy's port; upstream conns: new ESTABLISHED connections at the upstream (one per tunnel)."},
	"F": {"rps", cols(
		[]column{{key: "rps", head: "req/s", spread: true}}, ratios("rps"),
		[]column{{key: "p50_ms", head: "p50 ms", digits: 3}, {key: "p99_ms", head: "p99 ms", digits: 3},
			{key: "proxy_cpu_us_per_req", head: "CPU us/req", digits: 1}},
		busyCols, []column{{key: "errors", head: "errors"}}),
		"A over TLS: wrk keeps its connections (a handshake each at the start only). Compare CPU us/req with A for what TLS costs."},
	"G": {"rps", cols(
		[]column{{key: "rps", head: "req/s", spread: true}}, ratios("rps"),
		[]column{{key: "mean_ms", head: "mean ms", digits: 2}, {key: "proxy_cpu_us_per_req", head: "CPU us/req", digits: 1}},
		busyCols, []column{{key: "errors", head: "errors"}}),
		"req/s: 2xx responses per second of the h2load run; mean ms: h2load's mean request time (closed loop). errors: requests not ending in a 2xx. A row fails unless h2 was negotiated and every body had its 100 bytes."},
	"H": {"hs_per_s", cols(
		[]column{{key: "hs_per_s", head: "handshakes/s", spread: true}}, ratios("hs_per_s"),
		[]column{{key: "proxy_cpu_us_per_hs", head: "CPU us/hs", digits: 1}},
		busyCols, []column{{key: "new_conns_per_req", head: "TCP conns/req", digits: 2}, {key: "errors", head: "errors"}}),
		"handshakes/s: 2xx responses per second, each on a new connection with a full handshake. CPU us/hs: the proxy's CPU per connection (handshake and its one request). TCP conns/req: connections accepted in the network namespace / requests (>= 1; other local traffic can only raise it). A row fails if the server resumes TLS sessions or keeps connections open."},
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is (max-min)/median, NaN for fewer than two values.
func spread(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	m := median(xs)
	if m == 0 {
		return math.NaN()
	}
	return (slices.Max(xs) - slices.Min(xs)) / m
}

// values collects the metrics of the successful repeats of a scenario,
// per system, and counts the failed ones.
func values(rows []row, id string) (map[string]map[string][]float64, map[string]int) {
	vals := map[string]map[string][]float64{}
	fails := map[string]int{}
	for _, rw := range rows {
		if rw.Scenario != id {
			continue
		}
		if vals[rw.System] == nil {
			vals[rw.System] = map[string][]float64{}
		}
		if rw.Err != "" {
			fails[rw.System]++
			continue
		}
		for k, v := range rw.Metrics {
			vals[rw.System][k] = append(vals[rw.System][k], v)
		}
	}
	return vals, fails
}

func fmtNum(v float64, digits int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f", digits, v)
}

// table renders a scenario's table: medians per system, with notes,
// errors and the speed probe's range below it.
func (r *runner) table(id string) string {
	r.mu.Lock()
	rows := slices.Clone(r.rows)
	r.mu.Unlock()
	def := tables[id]
	vals, fails := values(rows, id)
	var order []string
	for _, s := range r.systemList() {
		if vals[s.name] != nil {
			order = append(order, s.name)
		}
	}
	med := func(sys, key string) float64 { return median(vals[sys][key]) }

	head := []string{"system"}
	for _, c := range def.cols {
		head = append(head, c.head)
		if c.spread {
			head = append(head, "spread")
		}
	}
	grid := [][]string{head}
	for _, sys := range order {
		line := []string{sys}
		for _, c := range def.cols {
			switch {
			case c.key == "bound":
				line = append(line, bound(med(sys, c.prefix+"proxy_cpus_busy_pct"), med(sys, c.prefix+"load_cpus_busy_pct")))
			case c.ratio != "":
				line = append(line, fmtNum(med(sys, c.key)/med(c.ratio, c.key), c.digits))
			default:
				line = append(line, fmtNum(med(sys, c.key), c.digits))
			}
			if c.spread {
				sp := "-"
				if v := spread(vals[sys][c.key]); !math.IsNaN(v) {
					sp = fmtNum(100*v, 1) + "%"
				}
				line = append(line, sp)
			}
		}
		grid = append(grid, line)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n## Scenario %s: %s\n", id, scenarios[id].title)
	fmt.Fprintf(&b, "# %s\n", r.setup(id))
	writeGrid(&b, grid)
	fmt.Fprintf(&b, "# medians of %d repeat(s); spread = (max-min)/median. %s\n", r.cfg.repeat, def.legend)
	negotiated(&b, rows, id, order)
	if r.place.mode == "split" && !scenarios[id].memory {
		fmt.Fprintf(&b, "# saturated: the side >= 95%% busy (proxy CPUs %s, load CPUs %s). Where it says load or both, the load side capped throughput: compare the CPU-per-unit column.\n", r.place.proxyCPUs, r.place.loadCPUs)
	}
	for _, rw := range rows {
		if rw.Scenario != id {
			continue
		}
		if rw.Err != "" {
			fmt.Fprintf(&b, "# ERROR %s rep %d: %s\n", rw.System, rw.Rep, oneLine(rw.Err, 300))
		}
		for _, n := range rw.Notes {
			fmt.Fprintf(&b, "# note %s rep %d: %s\n", rw.System, rw.Rep, oneLine(n, 300))
		}
	}
	probeSummary(&b, rows, id)
	for _, sys := range order {
		if n := fails[sys]; n > 0 {
			fmt.Fprintf(&b, "# %s: %d of %d repeats failed and are left out of the medians\n", sys, n, r.cfg.repeat)
		}
	}
	return b.String()
}

func writeGrid(b *strings.Builder, grid [][]string) {
	widths := make([]int, len(grid[0]))
	for _, l := range grid {
		for i, c := range l {
			widths[i] = max(widths[i], len(c))
		}
	}
	for li, l := range grid {
		for i, c := range l {
			if i == 0 {
				fmt.Fprintf(b, "%-*s", widths[i], c)
			} else {
				fmt.Fprintf(b, "  %*s", widths[i], c)
			}
		}
		b.WriteString("\n")
		if li == 0 {
			total := 0
			for _, w := range widths {
				total += w + 2
			}
			b.WriteString(strings.Repeat("-", total-2) + "\n")
		}
	}
}

// negotiated prints what each system negotiated with h2load (F-H).
func negotiated(b *strings.Builder, rows []row, id string, order []string) {
	seen := map[string]string{}
	for _, rw := range rows {
		if rw.Scenario == id && rw.Err == "" && rw.Info["tls"] != "" && seen[rw.System] == "" {
			seen[rw.System] = rw.Info["tls"]
		}
	}
	var parts []string
	for _, sys := range order {
		if v := seen[sys]; v != "" {
			parts = append(parts, sys+" "+v)
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, "# negotiated with h2load (protocol, cipher, key exchange, ALPN): %s\n", strings.Join(parts, "; "))
	}
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// setup describes how a scenario was run, for the line above its table.
func (r *runner) setup(id string) string {
	c := r.cfg
	pin := fmt.Sprintf("no pinning, proxies use %d workers", r.place.workers)
	if r.place.mode == "split" {
		pin = fmt.Sprintf("proxy on CPU %s (%d worker), upstream and load on CPU %s", r.place.proxyCPUs, r.place.workers, r.place.loadCPUs)
	}
	up := "Go upstream /small"
	if c.smallUp == "nginx" {
		up = "nginx 'return 200' upstream (the same 100 bytes)"
	}
	tlsSetup := "TLS 1.3, ECDSA P-256, no resumption; upstream plain HTTP/1.1: " + up + "; direct = the upstream's own TLS listener on the load CPU (not a ceiling)"
	switch id {
	case "A":
		return fmt.Sprintf("wrk -t%d -c%d -d%v GET /small (100-byte body); upstream: %s; %s", c.threads, c.conns, c.duration, up, pin)
	case "B":
		return fmt.Sprintf("wrk -t%d -c%d -d%v GET /bytes?n=%d (Content-Length); Go upstream; %s", c.threads, c.bigConns, c.duration, c.bigSize, pin)
	case "C":
		return fmt.Sprintf("curl, %d bytes down (%s) and %d up (chunked); Go upstream; %s", c.streamSize, pick(c.streamChunked, "chunked", "Content-Length"), c.streamSize, pin)
	case "D":
		return fmt.Sprintf("wsload -c %d, %d-byte messages, %v; Go upstream (gobwas/ws echo); %s", c.wsConns, c.wsSize, c.duration, pin)
	case "E":
		return fmt.Sprintf("%d idle HTTP/1.1 keep-alive client connections; Go upstream; %s", c.idleConns, pin)
	case "E-ws":
		return fmt.Sprintf("%d idle WebSocket tunnels (client - proxy - Go upstream echo); %s", c.idleTunnels, pin)
	case "F":
		return fmt.Sprintf("wrk -t%d -c%d -d%v GET https://.../small (HTTP/1.1 keep-alive); %s; %s", c.threads, c.conns, c.duration, tlsSetup, pin)
	case "G":
		return fmt.Sprintf("h2load -t1 -c%d -m%d GET https://.../small over h2, -n sized for about %v; %s; %s", c.h2Conns, c.h2Streams, c.duration, tlsSetup, pin)
	case "H":
		return fmt.Sprintf("h2load --h1 -t1 -c%d -H 'Connection: close' GET https://.../small, one request per connection, -n sized for about %v; %s; %s", c.hsConns, c.duration, tlsSetup, pin)
	}
	return ""
}

// probeSummary says how far the CPU speed probe moved during a scenario.
func probeSummary(b *strings.Builder, rows []row, id string) {
	var parts []string
	worst := 0.0
	for _, k := range []string{"probe_proxy_cpus_ms", "probe_load_cpus_ms", "probe_ms"} {
		var xs []float64
		for _, rw := range rows {
			if v, ok := rw.Metrics[k]; ok && rw.Scenario == id {
				xs = append(xs, v)
			}
		}
		if len(xs) == 0 {
			continue
		}
		sp := 0.0
		if len(xs) > 1 {
			sp = 100 * spread(xs)
		}
		worst = math.Max(worst, sp)
		name := strings.TrimSuffix(strings.TrimPrefix(k, "probe_"), "_ms")
		parts = append(parts, fmt.Sprintf("%s median %.1f ms, range %.1f-%.1f (%.0f%%)", name, median(xs), slices.Min(xs), slices.Max(xs), sp))
	}
	if len(parts) == 0 {
		return
	}
	fmt.Fprintf(b, "# CPU speed probe before each measurement (fixed work, lower is faster): %s\n", strings.Join(parts, "; "))
	retried, slow := 0, 0
	for _, rw := range rows {
		if rw.Scenario == id {
			retried += int(rw.Metrics["retried"])
			slow += int(rw.Metrics["slow_after"])
		}
	}
	if retried > 0 {
		fmt.Fprintf(b, "# %d measurement(s) were taken again because the machine slowed down during the first attempt\n", retried)
	}
	if slow > 0 {
		fmt.Fprintf(b, "# %d measurement(s) ended with a slow CPU speed probe even after a retry (see the notes)\n", slow)
	}
	if worst > 10 {
		fmt.Fprintf(b, "# WARNING: the CPU speed varied by %.0f%% during this scenario: trust ratios within the run and medians over more repeats, not single absolute numbers\n", worst)
	}
}

type resultsFile struct {
	Meta    map[string]any                           `json:"meta"`
	Rows    []row                                    `json:"rows"`
	Summary map[string]map[string]map[string]float64 `json:"summary"` // scenario, system, metric: median
}

// writeResults writes results.json and results.tsv and points latest at
// this run.
func (r *runner) writeResults() {
	r.mu.Lock()
	rows := slices.Clone(r.rows)
	r.mu.Unlock()
	sum := map[string]map[string]map[string]float64{}
	for _, id := range r.cfg.scenarios {
		vals, _ := values(rows, id)
		for sys, ms := range vals {
			for k, xs := range ms {
				if sum[id] == nil {
					sum[id] = map[string]map[string]float64{}
				}
				if sum[id][sys] == nil {
					sum[id][sys] = map[string]float64{}
				}
				sum[id][sys][k] = median(xs)
			}
		}
	}
	if b, err := json.MarshalIndent(resultsFile{Meta: r.meta, Rows: rows, Summary: sum}, "", "  "); err == nil {
		os.WriteFile(filepath.Join(r.outDir, "results.json"), b, 0o644)
	}
	var t strings.Builder
	t.WriteString("run_id\tscenario\tsystem\tkind\trep\tmetric\tvalue\n")
	for _, rw := range rows {
		keys := make([]string, 0, len(rw.Metrics))
		for k := range rw.Metrics {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&t, "%s\t%s\t%s\t%s\t%d\t%s\t%g\n", r.runID, rw.Scenario, rw.System, rw.Kind, rw.Rep, k, rw.Metrics[k])
		}
		if rw.Err != "" {
			fmt.Fprintf(&t, "%s\t%s\t%s\t%s\t%d\terror\t%q\n", r.runID, rw.Scenario, rw.System, rw.Kind, rw.Rep, oneLine(rw.Err, 500))
		}
	}
	os.WriteFile(filepath.Join(r.outDir, "results.tsv"), []byte(t.String()), 0o644)
	latest := filepath.Join(r.cfg.outRoot, "latest")
	os.Remove(latest)
	os.Symlink(r.runID, latest)
}

// compareExtra are the metrics compare shows after each headline.
var compareExtra = map[string][]string{
	"A":    {"p99_ms", "proxy_cpu_us_per_req"},
	"B":    {"proxy_cpu_ms_per_GB"},
	"C":    {"dl_proxy_cpu_ms_per_GB", "ul_MBps", "ul_proxy_cpu_ms_per_GB", "dl_peak_rss_mb", "ul_peak_rss_mb"},
	"D":    {"p99_us", "proxy_cpu_us_per_rt"},
	"F":    {"p99_ms", "proxy_cpu_us_per_req"},
	"G":    {"proxy_cpu_us_per_req"},
	"H":    {"proxy_cpu_us_per_hs"},
	"E":    {},
	"E-ws": {},
}

// compare prints the headline metrics of two result directories side by
// side and returns the exit code.
func compare(w io.Writer, dirA, dirB string) int {
	load := func(dir string) (*resultsFile, error) {
		b, err := os.ReadFile(filepath.Join(dir, "results.json"))
		if err != nil {
			return nil, err
		}
		var rf resultsFile
		return &rf, json.Unmarshal(b, &rf)
	}
	a, err := load(dirA)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	b, err := load(dirB)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		return 1
	}
	fmt.Fprintf(w, "%-5s %-14s %-24s %12s %12s %8s\n", "sc", "system", "metric", "A", "B", "B/A-1")
	for _, id := range scenarioOrder {
		sa, sb := a.Summary[id], b.Summary[id]
		var systems []string
		for s := range sa {
			if sb[s] != nil {
				systems = append(systems, s)
			}
		}
		sort.Strings(systems)
		for _, s := range systems {
			for _, m := range append([]string{tables[id].headline}, compareExtra[id]...) {
				va, oka := sa[s][m]
				vb, okb := sb[s][m]
				if !oka || !okb {
					continue
				}
				d := "-"
				if va != 0 {
					d = fmt.Sprintf("%+.1f%%", 100*(vb/va-1))
				}
				fmt.Fprintf(w, "%-5s %-14s %-24s %12.2f %12.2f %8s\n", id, s, m, va, vb, d)
			}
		}
	}
	return 0
}
