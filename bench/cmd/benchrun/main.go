// Command benchrun runs the sluice benchmark (see bench/README.md): it
// starts the upstreams, then for every scenario and repeat starts each
// system under test (a fresh process per measurement, pinned to the proxy
// CPUs), drives load at it from the load CPUs, reads the proxy's CPU time
// and memory from /proc, stops it, and at the end prints one table per
// scenario and writes results.json, results.tsv and tables.txt.
//
// bench/run.sh builds it and starts it. Every address is 127.0.0.1, every
// tool runs under a deadline, and the whole run under --max-runtime.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A candidate is a proxy given on the command line rather than a built-in
// peer: a command template for the plain scenarios and, optionally, one
// for the TLS scenarios F, G, H.
type candidate struct {
	name       string
	plain, tls string // command templates; "" = does not take part
}

type config struct {
	binDir, workDir, outRoot string
	note                     string
	scenarios                []string
	duration, warmup         time.Duration
	repeat                   int
	candidates               []candidate
	pin                      string
	proxyCPUs, loadCPUs      string
	systems                  []string
	smallUp                  string
	conns, threads           int
	bigConns                 int
	bigSize, streamSize      int64
	streamChunked            bool
	wsConns, wsSize          int
	idleConns, idleTunnels   int
	h2Conns, h2Streams       int
	hsConns                  int
	basePort                 int
	maxRuntime               time.Duration
	quietFactor              float64
	quietWait                time.Duration
}

// wantSystem reports whether --systems selects the system of this kind
// and name ("candidate" selects every candidate).
func (c *config) wantSystem(kind, name string) bool {
	return len(c.systems) == 0 || slices.Contains(c.systems, kind) || slices.Contains(c.systems, name)
}

func (c *config) candidateByName(name string) *candidate {
	for i := range c.candidates {
		if c.candidates[i].name == name {
			return &c.candidates[i]
		}
	}
	return nil
}

// placement says where processes run. With mode "split" the proxy under
// test runs on proxyCPUs and everything else (upstreams, load generators,
// this program) on loadCPUs; with "none" nothing is pinned.
type placement struct {
	mode                string
	proxyCPUs, loadCPUs string
	workers             int // threads or worker processes each proxy is told to use
}

// pin prefixes argv with taskset for cpus when pinning is on.
func (p placement) pin(cpus string, argv []string) []string {
	if p.mode == "none" || cpus == "" {
		return argv
	}
	return append([]string{"taskset", "-c", cpus}, argv...)
}

// seconds is a flag.Value for durations written "10s", "1m30s" or as a
// bare number of seconds.
type seconds struct{ d *time.Duration }

func (f seconds) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f seconds) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*f.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// bytesize is a flag.Value for sizes such as 1048576, 512K, 1M, 1MiB, 2G
// (binary multiples).
type bytesize struct{ n *int64 }

func (f bytesize) String() string {
	if f.n == nil {
		return ""
	}
	return strconv.FormatInt(*f.n, 10)
}

func (f bytesize) Set(s string) error {
	n, err := parseSize(s)
	if err == nil {
		*f.n = n
	}
	return err
}

func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := 1.0
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(v * mult), nil
}

// candidateFlag collects repeated --candidate or --candidate-tls values,
// each NAME=TEMPLATE or a bare TEMPLATE (named "candidate").
type candidateFlag struct {
	list *[]candidate
	tls  bool
}

// candidateName is how a NAME= prefix looks: lowercase, so that an
// environment assignment (GOGC=off ./proxy) is not taken for one.
var candidateName = regexp.MustCompile(`^([a-z0-9][a-z0-9._-]*)=(.*)$`)

func (f candidateFlag) String() string { return "" }

func (f candidateFlag) Set(s string) error {
	name, tmpl := "candidate", s
	if m := candidateName.FindStringSubmatch(s); m != nil {
		name, tmpl = m[1], m[2]
	}
	if !strings.Contains(tmpl, "{PORT}") && !strings.Contains(tmpl, "{ADDR}") {
		return fmt.Errorf("template %q must contain {PORT} or {ADDR}, where the proxy must listen", tmpl)
	}
	if slices.Contains(peerKinds, name) {
		return fmt.Errorf("candidate name %q is a peer's", name)
	}
	i := slices.IndexFunc(*f.list, func(c candidate) bool { return c.name == name })
	if i < 0 {
		*f.list = append(*f.list, candidate{name: name})
		i = len(*f.list) - 1
	}
	c := &(*f.list)[i]
	if f.tls {
		c.tls = tmpl
	} else {
		c.plain = tmpl
	}
	return nil
}

// cpuList expands a taskset list such as "0-2,5".
func cpuList(list string) []int {
	var out []int
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseScenarios turns a comma list (any case; "all" for every scenario)
// into scenario IDs in the order given.
func parseScenarios(s string) ([]string, error) {
	var out []string
	for _, p := range splitList(s) {
		if strings.EqualFold(p, "all") {
			out = append(out, scenarioOrder...)
			continue
		}
		i := slices.IndexFunc(scenarioOrder, func(id string) bool { return strings.EqualFold(id, p) })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q (want %s or all)", p, strings.Join(scenarioOrder, ","))
		}
		out = append(out, scenarioOrder[i])
	}
	slices.Sort(out)
	out = slices.Compact(out)
	slices.SortFunc(out, func(a, b string) int { return slices.Index(scenarioOrder, a) - slices.Index(scenarioOrder, b) })
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario selected")
	}
	return out, nil
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchrun: "+format+"\n", a...)
	stopAll()
	os.Exit(1)
}

func parseFlags(args []string) (*config, error) {
	c := &config{
		duration: 10 * time.Second, warmup: 2 * time.Second,
		bigSize: 1 << 20, streamSize: 2 << 30,
		maxRuntime: 3 * time.Hour, quietWait: 20 * time.Second,
	}
	exe, _ := os.Executable()
	wd, _ := os.Getwd()
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	var scen, systems string
	fs.StringVar(&c.binDir, "bin-dir", filepath.Dir(exe), "directory of the built harness programs (upstream, httputil, wsload, idleconns)")
	fs.StringVar(&c.workDir, "work-dir", wd, "directory the candidate commands run in")
	fs.StringVar(&c.outRoot, "out", filepath.Join(os.TempDir(), "sluice-bench"), "results root; each run gets a timestamped directory, and latest links to the newest")
	fs.StringVar(&c.note, "note", "", "free text recorded with the results and printed above the tables (run.sh puts the git revision here)")
	fs.StringVar(&scen, "scenarios", strings.Join(defaultScenarios, ","), "comma list of scenarios ("+strings.Join(scenarioOrder, ",")+"), or all")
	fs.Var(seconds{&c.duration}, "duration", "measured time of each load run in A, B, D, F, G, H (10s or 10)")
	fs.Var(seconds{&c.warmup}, "warmup", "unmeasured load before each measured run")
	fs.IntVar(&c.repeat, "repeat", 1, "measure every system this many times per scenario, interleaved")
	fs.Var(candidateFlag{&c.candidates, false}, "candidate", "candidate proxy, NAME=TEMPLATE or TEMPLATE (named candidate); repeatable. Placeholders {PORT} {ADDR} {UPORT} {UADDR} {UPSTREAM} {WORKERS}")
	fs.Var(candidateFlag{&c.candidates, true}, "candidate-tls", "the same candidate's command in the TLS scenarios F, G, H (NAME=TEMPLATE; also {CERT} {KEY} {CERTKEY}); without it the candidate sits those out")
	fs.StringVar(&c.pin, "pin", "split", "CPU placement: split (proxy on --proxy-cpus, the rest on --load-cpus) or none")
	fs.StringVar(&c.proxyCPUs, "proxy-cpus", "0", "CPUs of the proxy under test with --pin split (taskset list)")
	fs.StringVar(&c.loadCPUs, "load-cpus", "1", "CPUs of the upstreams, load generators and this runner with --pin split")
	fs.StringVar(&systems, "systems", "", "only these systems: comma list of direct,httputil,nginx,haproxy,caddy, candidate names, or candidate (all of them)")
	fs.StringVar(&c.smallUp, "small-upstream", "nginx", "upstream of A and F-H: nginx (return 200 from memory) or go")
	fs.IntVar(&c.conns, "conns", 64, "A, F: wrk connections")
	fs.IntVar(&c.threads, "threads", 1, "A, B, F: wrk threads")
	fs.IntVar(&c.bigConns, "big-conns", 16, "B: wrk connections")
	fs.Var(bytesize{&c.bigSize}, "big-size", "B: response body size")
	fs.Var(bytesize{&c.streamSize}, "stream-size", "C: bytes downloaded and uploaded (2G)")
	fs.BoolVar(&c.streamChunked, "stream-chunked", false, "C: download with chunked coding instead of Content-Length")
	fs.IntVar(&c.wsConns, "ws-conns", 64, "D: WebSocket connections")
	fs.IntVar(&c.wsSize, "ws-size", 128, "D: message size in bytes")
	fs.IntVar(&c.idleConns, "idle-conns", 5000, "E: idle keep-alive connections")
	fs.IntVar(&c.idleTunnels, "idle-tunnels", 5000, "E-ws: idle WebSocket tunnels")
	fs.IntVar(&c.h2Conns, "h2-conns", 16, "G: h2load connections")
	fs.IntVar(&c.h2Streams, "h2-streams", 16, "G: concurrent streams per connection")
	fs.IntVar(&c.hsConns, "hs-conns", 16, "H: concurrent h2load connections, one request each")
	fs.IntVar(&c.basePort, "base-port", 19000, "ports: base+80 Go upstream, +81 nginx upstream, +82 TLS upstream, +91.. proxies")
	fs.Var(seconds{&c.maxRuntime}, "max-runtime", "stop everything after this long")
	fs.Float64Var(&c.quietFactor, "quiet-factor", 1.15, "the CPU speed probe must be within this factor of the run's best before a measurement (and after it, else the measurement is taken again); 0 turns it off")
	fs.Var(seconds{&c.quietWait}, "quiet-wait", "longest wait for the CPU speed probe to recover before a measurement")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: bench/run.sh [options]
       bench/run.sh compare RESULTS_DIR_A RESULTS_DIR_B

Scenarios: A small GET, B 1 MiB GET bodies, C 2 GiB streams, D WebSocket
echo, E idle keep-alive connections, E-ws idle WebSocket tunnels (the
default set); F small GET over TLS, G HTTP/2 over TLS, H a TLS handshake
per request (name them, or use --scenarios all).

options:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.scenarios, err = parseScenarios(scen); err != nil {
		return nil, err
	}
	c.systems = splitList(strings.ToLower(systems))
	switch {
	case c.repeat < 1 || c.duration < time.Second || c.warmup < 0:
		return nil, fmt.Errorf("need --repeat >= 1, --duration >= 1s, --warmup >= 0")
	case c.pin != "split" && c.pin != "none":
		return nil, fmt.Errorf("--pin must be split or none")
	case c.smallUp != "nginx" && c.smallUp != "go":
		return nil, fmt.Errorf("--small-upstream must be nginx or go")
	case c.h2Conns < 1 || c.h2Streams < 1 || c.hsConns < 1 || c.idleConns < 1 || c.idleTunnels < 1:
		return nil, fmt.Errorf("connection counts must be >= 1")
	}
	return c, nil
}

// anyTLS reports whether a TLS scenario is selected.
func (c *config) anyTLS() bool {
	return slices.ContainsFunc(c.scenarios, func(s string) bool { return scenarios[s].tls })
}

type runner struct {
	cfg     *config
	place   placement
	ctx     context.Context
	cancel  context.CancelFunc
	outDir  string
	runID   string
	started time.Time
	meta    map[string]any

	goUpPort, ngUpPort, tlsUpPort int
	upTLS                         *instance // the small upstream's TLS listener (direct in F-H)
	tls                           *tlsFiles // the run's certificate, when a TLS scenario runs

	mu        sync.Mutex
	rows      []row
	probeBest map[string]float64 // fastest CPU speed probe seen, per key
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "spin" {
		fmt.Println(spin().Nanoseconds())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "compare" {
		if len(os.Args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: bench/run.sh compare RESULTS_DIR_A RESULTS_DIR_B")
			os.Exit(2)
		}
		os.Exit(compare(os.Stdout, os.Args[2], os.Args[3]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err != nil {
		fatalf("%v", err)
	}

	ncpu := len(readCPUTimes().busy) // online CPUs, whatever our affinity
	pl := placement{mode: cfg.pin, workers: ncpu}
	if cfg.pin == "split" {
		if ncpu < 2 {
			fatalf("--pin split needs 2 CPUs or more; use --pin none")
		}
		pl.proxyCPUs, pl.loadCPUs, pl.workers = cfg.proxyCPUs, cfg.loadCPUs, len(cpuList(cfg.proxyCPUs))
		// Move this runner, and so everything it starts unpinned, onto
		// the load CPUs by running again under taskset.
		if os.Getenv("SLUICE_BENCHRUN_PINNED") != cfg.loadCPUs {
			ts, err := exec.LookPath("taskset")
			if err != nil {
				fatalf("taskset not found (package util-linux)")
			}
			exe, _ := os.Executable()
			env := append(os.Environ(), "SLUICE_BENCHRUN_PINNED="+cfg.loadCPUs)
			err = syscall.Exec(ts, append([]string{"taskset", "-c", cfg.loadCPUs, exe}, os.Args[1:]...), env)
			fatalf("run again under taskset: %v", err)
		}
	}

	r := &runner{cfg: cfg, place: pl, started: time.Now(), probeBest: map[string]float64{}}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.runID = r.started.Format("20060102-150405")
	r.outDir = mustMkdir(filepath.Join(cfg.outRoot, r.runID))
	r.goUpPort, r.ngUpPort, r.tlsUpPort = cfg.basePort+80, cfg.basePort+81, cfg.basePort+82

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbenchrun: %v: stopping what this run started\n", s)
		r.abort(130)
	}()
	time.AfterFunc(cfg.maxRuntime, func() {
		fmt.Fprintf(os.Stderr, "\nbenchrun: --max-runtime %v passed: stopping\n", cfg.maxRuntime)
		r.abort(3)
	})

	r.preflight()
	r.meta = r.collectMeta()
	fmt.Fprintf(os.Stderr, "benchrun: results in %s\n", r.outDir)
	fmt.Printf("# sluice benchmark %s  pin=%s proxy-cpus=%s load-cpus=%s workers=%d duration=%v warmup=%v repeat=%d\n",
		r.runID, pl.mode, orDash(pl.proxyCPUs), orDash(pl.loadCPUs), pl.workers, cfg.duration, cfg.warmup, cfg.repeat)
	if cfg.note != "" {
		fmt.Printf("# %s\n", cfg.note)
	}
	for _, c := range cfg.candidates {
		fmt.Printf("# candidate %s: %s | TLS: %s\n", c.name, orDash(c.plain), orDash(c.tls))
	}

	// Calibrate the speed probe: the best of a few readings is "normal".
	for range 5 {
		r.probe()
	}
	if cfg.anyTLS() {
		if r.tls, err = makeCert(mustMkdir(filepath.Join(r.outDir, "tls"))); err != nil {
			fatalf("TLS certificate: %v", err)
		}
	}
	needNginx := cfg.smallUp == "nginx" && (slices.Contains(cfg.scenarios, "A") || cfg.anyTLS())
	needTLS := cfg.anyTLS() && cfg.wantSystem("direct", "direct")
	if err := r.startUpstreams(needNginx, needTLS); err != nil {
		fatalf("%v", err)
	}
	for _, sc := range cfg.scenarios {
		r.runScenario(sc)
		r.writeResults()
	}
	stopAll()
	r.writeResults()
	fmt.Printf("\n# results: %s/{results.json,results.tsv,tables.txt}  logs: %s/run/\n", r.outDir, r.outDir)
}

var abortOnce sync.Once

func (r *runner) abort(code int) {
	abortOnce.Do(func() {
		r.cancel()
		stopAll()
		r.writeResults()
		os.Exit(code)
	})
}

// preflight checks that every program the selected scenarios and systems
// need is there, before anything starts.
func (r *runner) preflight() {
	need := []string{"wrk", "curl", "dd"}
	if r.place.mode == "split" {
		need = append(need, "taskset")
	}
	for _, k := range []string{"nginx", "haproxy", "caddy"} {
		if r.cfg.wantSystem(k, k) {
			need = append(need, k)
		}
	}
	if r.cfg.smallUp == "nginx" {
		need = append(need, "nginx")
	}
	if slices.Contains(r.cfg.scenarios, "G") || slices.Contains(r.cfg.scenarios, "H") {
		need = append(need, "h2load")
	}
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			fatalf("%s not found: run bench/install.sh", t)
		}
	}
	for _, b := range []string{"upstream", "httputil", "wsload", "idleconns"} {
		if _, err := os.Stat(filepath.Join(r.cfg.binDir, b)); err != nil {
			fatalf("%s not in %s: run bench/install.sh (or bench/run.sh, which builds it)", b, r.cfg.binDir)
		}
	}
	if len(r.systemList()) == 0 {
		fatalf("--systems selects no system")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *runner) collectMeta() map[string]any {
	first := func(argv ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		return s
	}
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	c := r.cfg
	cands := map[string]map[string]string{}
	for _, cd := range c.candidates {
		cands[cd.name] = map[string]string{"plain": cd.plain, "tls": cd.tls}
	}
	return map[string]any{
		"run_id": r.runID, "started": r.started.Format(time.RFC3339), "note": c.note,
		"kernel": first("uname", "-r"), "cpu_model": cpu, "ncpu": len(readCPUTimes().busy),
		"versions": map[string]string{
			"nginx": first("nginx", "-v"), "haproxy": first("haproxy", "-v"), "caddy": first("caddy", "version"),
			"wrk": first("wrk", "-v"), "curl": first("curl", "--version"), "h2load": first("h2load", "--version"),
			"openssl": first("openssl", "version"), "go (harness)": runtime.Version(),
		},
		"candidates": cands,
		"config": map[string]any{
			"scenarios": c.scenarios, "duration_s": c.duration.Seconds(), "warmup_s": c.warmup.Seconds(),
			"repeat": c.repeat, "pin": c.pin, "proxy_cpus": r.place.proxyCPUs, "load_cpus": r.place.loadCPUs,
			"workers": r.place.workers, "small_upstream": c.smallUp, "conns": c.conns, "threads": c.threads,
			"big_conns": c.bigConns, "big_size": c.bigSize, "stream_size": c.streamSize, "stream_chunked": c.streamChunked,
			"ws_conns": c.wsConns, "ws_size": c.wsSize, "idle_conns": c.idleConns, "idle_tunnels": c.idleTunnels,
			"h2_conns": c.h2Conns, "h2_streams": c.h2Streams, "hs_conns": c.hsConns, "base_port": c.basePort,
			"quiet_factor": c.quietFactor, "quiet_wait_s": c.quietWait.Seconds(),
		},
	}
}
