package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/bench/conf"
)

// row is one measurement: one system in one scenario and repeat.
type row struct {
	Scenario string             `json:"scenario"`
	System   string             `json:"system"`
	Kind     string             `json:"kind"`
	Rep      int                `json:"rep"`
	Metrics  map[string]float64 `json:"metrics"`
	Info     map[string]string  `json:"info,omitempty"` // such as the negotiated TLS parameters
	Notes    []string           `json:"notes,omitempty"`
	Err      string             `json:"error,omitempty"`
}

// set records a metric; NaN and infinities are left out.
func (rw *row) set(k string, v float64) {
	if rw.Metrics == nil {
		rw.Metrics = map[string]float64{}
	}
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		rw.Metrics[k] = v
	}
}

func (rw *row) note(format string, a ...any) { rw.Notes = append(rw.Notes, fmt.Sprintf(format, a...)) }

func (rw *row) info(k, v string) {
	if rw.Info == nil {
		rw.Info = map[string]string{}
	}
	rw.Info[k] = v
}

type scenario struct {
	title  string
	direct bool // a "direct" row (no proxy) makes sense
	tls    bool // clients speak HTTPS to the proxy; the upstream leg stays plain HTTP/1.1
	memory bool // measures memory, not speed: no retry on a slow CPU probe
	run    func(r *runner, sys system, tag string) row
}

// scenarioOrder is the order scenarios run and print in.
var scenarioOrder = []string{"A", "B", "C", "D", "E", "E-ws", "F", "G", "H"}

// defaultScenarios run when --scenarios is not given: all but the TLS ones.
var defaultScenarios = []string{"A", "B", "C", "D", "E", "E-ws"}

var scenarios map[string]scenario

func init() {
	scenarios = map[string]scenario{
		"A":    {"small GET, keep-alive", true, false, false, (*runner).scenA},
		"B":    {"1 MiB GET bodies", true, false, false, (*runner).scenB},
		"C":    {"big streaming download and upload (curl)", true, false, false, (*runner).scenC},
		"D":    {"WebSocket echo round trips", true, false, false, (*runner).scenD},
		"E":    {"idle keep-alive connections: proxy memory per connection", false, false, true, (*runner).scenE},
		"E-ws": {"idle WebSocket tunnels: proxy memory per tunnel", false, false, true, (*runner).scenEws},
		"F":    {"small GET over TLS, HTTP/1.1 keep-alive", true, true, false, (*runner).scenF},
		"G":    {"small GET over TLS, HTTP/2 multiplexed", true, true, false, (*runner).scenG},
		"H":    {"new TLS connections: one full handshake per request", true, true, false, (*runner).scenH},
	}
}

// runScenario measures every selected system repeat times, interleaved:
// repeats are the outer loop, and the order of systems rotates by one each
// repeat, so that a slow drift of the machine spreads over all systems.
func (r *runner) runScenario(id string) {
	sc := scenarios[id]
	systems := r.systemList()
	fmt.Fprintf(os.Stderr, "\n== scenario %s: %s ==\n", id, sc.title)
	for rep := 1; rep <= r.cfg.repeat; rep++ {
		for i := range systems {
			sys := systems[(i+rep-1)%len(systems)]
			if sys.kind == "direct" && !sc.direct {
				continue
			}
			if sys.kind == "candidate" && r.template(sys, sc.tls) == "" {
				continue
			}
			if r.ctx.Err() != nil {
				return
			}
			t0 := time.Now()
			rw := r.measureQuiet(id, sys, rep)
			rw.Scenario, rw.System, rw.Kind, rw.Rep = id, sys.name, sys.kind, rep
			r.mu.Lock()
			r.rows = append(r.rows, rw)
			r.mu.Unlock()
			fmt.Fprintf(os.Stderr, "  [%s rep %d] %-12s %s (%.1fs)\n", id, rep, sys.name, progress(id, rw), time.Since(t0).Seconds())
		}
	}
	t := r.table(id)
	fmt.Print(t)
	if f, err := os.OpenFile(filepath.Join(r.outDir, "tables.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.WriteString(t)
		f.Close()
	}
}

// measureQuiet takes one measurement while the CPU speed probe says the
// machine runs at its normal speed: it waits (bounded by --quiet-wait)
// for a slow phase to pass first, and measures once more when the probe
// right after the measurement shows that the machine slowed down during
// it (not in the memory scenarios, which a slow CPU does not change).
func (r *runner) measureQuiet(id string, sys system, rep int) (rw row) {
	retried := false
	for attempt := 1; ; attempt++ {
		waited, before := r.waitQuiet()
		rw = r.measure(id, sys, rep)
		after := r.probe()
		for k, v := range before {
			rw.set(k, v)
		}
		for k, v := range after {
			rw.set(strings.Replace(k, "probe_", "probe_after_", 1), v)
		}
		rw.set("quiet_wait_s", waited.Seconds())
		if waited > 0 {
			rw.note("waited %.0f s for the CPU speed probe to return to normal", waited.Seconds())
		}
		if retried {
			rw.set("retried", 1)
		}
		slow := r.slowest(after)
		if r.cfg.quietFactor <= 0 || slow <= r.cfg.quietFactor || rw.Err != "" || scenarios[id].memory {
			return rw
		}
		if attempt == 2 {
			rw.set("slow_after", 1)
			rw.note("the CPU speed probe after the measurement was %.0f%% slower than normal (kept after one retry)", 100*(slow-1))
			return rw
		}
		fmt.Fprintf(os.Stderr, "  [%s rep %d] %-12s probe after the run %.0f%% slower than normal: measuring again\n", id, rep, sys.name, 100*(slow-1))
		retried = true
	}
}

func (r *runner) measure(id string, sys system, rep int) (rw row) {
	defer func() {
		if p := recover(); p != nil {
			rw.Err = fmt.Sprint("panic: ", p)
		}
	}()
	return scenarios[id].run(r, sys, fmt.Sprintf("%s-%s-r%d", id, sys.name, rep))
}

// spin does a fixed amount of dependent integer work and returns how long
// it took: how fast a CPU is right now. On a shared virtual machine this
// drifts, and there are no hardware counters to tell.
func spin() time.Duration {
	t0 := time.Now()
	x := uint64(0x9E3779B97F4A7C15)
	for range 20_000_000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	if x == 0 { // never (xorshift keeps a nonzero state); keeps the loop from being dropped
		panic("spin: zero state")
	}
	return time.Since(t0)
}

// probe times spin on the proxy CPUs and on the load CPUs (on any CPU when
// nothing is pinned), in milliseconds, and remembers the fastest of each.
func (r *runner) probe() map[string]float64 {
	out := map[string]float64{}
	exe, _ := os.Executable()
	run := func(key, cpus string) {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		argv := r.place.pin(cpus, []string{exe, "spin"})
		b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		ns, perr := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		if err != nil || perr != nil {
			return
		}
		out[key] = ns / 1e6
		r.mu.Lock()
		if best, ok := r.probeBest[key]; !ok || out[key] < best {
			r.probeBest[key] = out[key]
		}
		r.mu.Unlock()
	}
	if r.place.mode == "split" {
		run("probe_proxy_cpus_ms", r.place.proxyCPUs)
		run("probe_load_cpus_ms", r.place.loadCPUs)
	} else {
		run("probe_ms", "")
	}
	return out
}

// slowest returns the largest ratio of a probe reading to its best.
func (r *runner) slowest(p map[string]float64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	worst := 0.0
	for k, v := range p {
		if best := r.probeBest[k]; best > 0 {
			worst = math.Max(worst, v/best)
		}
	}
	return worst
}

// waitQuiet probes until every reading is within --quiet-factor of the
// best, for at most --quiet-wait, and returns how long it waited (0 when
// under a second) and the last readings.
func (r *runner) waitQuiet() (time.Duration, map[string]float64) {
	t0 := time.Now()
	for {
		p := r.probe()
		if r.cfg.quietFactor <= 0 || r.slowest(p) <= r.cfg.quietFactor || time.Since(t0) >= r.cfg.quietWait || r.ctx.Err() != nil {
			if w := time.Since(t0); w > time.Second {
				return w, p
			}
			return 0, p
		}
		time.Sleep(2 * time.Second)
	}
}

func (r *runner) logPath(tag, tool string) string {
	return filepath.Join(mustMkdir(filepath.Join(r.outDir, "run", tag)), tool+".log")
}

// runTool runs a load generator on the load CPUs under a deadline and
// returns its stdout; its command, stdout and stderr go to logFile.
func (r *runner) runTool(argv []string, limit time.Duration, logFile string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, limit)
	defer cancel()
	argv = r.place.pin(r.place.loadCPUs, argv)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	os.WriteFile(logFile, fmt.Appendf(nil, "# %q\n%s\n--- stderr ---\n%s", argv, so.String(), se.String()), 0o644)
	if ctx.Err() == context.DeadlineExceeded {
		return so.String(), fmt.Errorf("%s timed out after %v", filepath.Base(argv[0]), limit)
	}
	if err != nil {
		return so.String(), fmt.Errorf("%s: %v: %s", filepath.Base(argv[len(argv)-1]), err, lastLine(se.String()))
	}
	return so.String(), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// wrkResult is the summary line of conf/wrk-report.lua.
type wrkResult struct {
	Requests   float64 `json:"requests"`
	DurationUs float64 `json:"duration_us"`
	Bytes      float64 `json:"bytes"`
	ErrConnect float64 `json:"err_connect"`
	ErrRead    float64 `json:"err_read"`
	ErrWrite   float64 `json:"err_write"`
	ErrStatus  float64 `json:"err_status"`
	ErrTimeout float64 `json:"err_timeout"`
	LatMeanUs  float64 `json:"lat_mean_us"`
	LatP50Us   float64 `json:"lat_p50_us"`
	LatP90Us   float64 `json:"lat_p90_us"`
	LatP99Us   float64 `json:"lat_p99_us"`
	LatMaxUs   float64 `json:"lat_max_us"`
}

func (w wrkResult) errors() float64 {
	return w.ErrConnect + w.ErrRead + w.ErrWrite + w.ErrStatus + w.ErrTimeout
}

func parseWrk(out string) (wrkResult, error) {
	var res wrkResult
	for _, l := range strings.Split(out, "\n") {
		if j, ok := strings.CutPrefix(l, "WRKJSON "); ok {
			if err := json.Unmarshal([]byte(j), &res); err != nil {
				return res, fmt.Errorf("wrk summary: %v", err)
			}
			return res, nil
		}
	}
	return res, errors.New("wrk printed no summary line")
}

// wrk runs wrk for d (whole seconds) with a kill timer of d + 30 s.
func (r *runner) wrk(url string, conns int, d time.Duration, logFile string) (wrkResult, error) {
	secs := max(int(math.Ceil(d.Seconds())), 1)
	script := filepath.Join(r.outDir, "wrk-report.lua")
	if _, err := os.Stat(script); err != nil {
		text, _ := conf.Read("wrk-report.lua")
		if err := os.WriteFile(script, []byte(text), 0o644); err != nil {
			return wrkResult{}, err
		}
	}
	out, err := r.runTool([]string{"wrk", "-t", strconv.Itoa(r.cfg.threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs) + "s", "--timeout", "5s", "-s", script, url},
		time.Duration(secs)*time.Second+30*time.Second, logFile)
	if err != nil {
		return wrkResult{}, err
	}
	return parseWrk(out)
}

// window brackets a measured interval: the proxy tree's CPU time and
// memory, each CPU's busy time and the TCP counters, before and after.
type window struct {
	pid    int
	u0, u1 usage
	c0, c1 cpuTimes
	t0, t1 tcpCounters
}

func begin(pid int) *window {
	return &window{pid: pid, u0: sampleTree(pid), c0: readCPUTimes(), t0: readTCP()}
}

func (w *window) end() {
	w.u1, w.c1, w.t1 = sampleTree(w.pid), readCPUTimes(), readTCP()
}

func (w *window) wall() time.Duration { return w.u1.at.Sub(w.u0.at) }

// cpuSeconds is the proxy tree's CPU time (user + system) in the window.
func (w *window) cpuSeconds() float64 { return float64(w.u1.ticks-w.u0.ticks) / clockTicks }

func avgBusy(busy []float64, list string) float64 {
	var sum float64
	n := 0
	for _, c := range cpuList(list) {
		if c < len(busy) {
			sum += busy[c]
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// record adds the window's generic metrics to rw, their names prefixed
// with prefix (C measures two transfers in one row).
func (w *window) record(rw *row, pl placement, prefix string) {
	busy := busyPct(w.c0, w.c1)
	for i, b := range busy {
		rw.set(fmt.Sprintf("%scpu%d_busy_pct", prefix, i), b)
	}
	if pl.mode == "split" {
		rw.set(prefix+"proxy_cpus_busy_pct", avgBusy(busy, pl.proxyCPUs))
		rw.set(prefix+"load_cpus_busy_pct", avgBusy(busy, pl.loadCPUs))
	}
	rw.set(prefix+"tcp_out_segs", float64(w.t1.outSegs-w.t0.outSegs))
	rw.set(prefix+"tcp_retrans_segs", float64(w.t1.retrans-w.t0.retrans))
	if w.pid <= 0 {
		return
	}
	proxyPct := 100 * w.cpuSeconds() / w.wall().Seconds()
	rw.set(prefix+"proxy_cpu_pct", proxyPct)
	rw.set(prefix+"proxy_rss_mb", float64(w.u1.rssKB)/1024)
	rw.set(prefix+"proxy_procs", float64(w.u1.procs))
	if pl.mode != "split" {
		return
	}
	// Busy time of the proxy CPUs that the proxy did not use: kernel
	// network work in softirq context (a few to ~20 points) and, on a
	// shared machine, other processes, which make the row unreliable.
	other := avgBusy(busy, pl.proxyCPUs) - proxyPct/float64(len(cpuList(pl.proxyCPUs)))
	rw.set(prefix+"proxy_cpus_other_pct", other)
	if other > otherWorkLimit {
		rw.note("%sthe proxy CPUs were %.0f%% busy with work other than the proxy's own (kernel network work alone stays under about %d%%): other processes probably shared them, so read this row with care", strings.TrimSuffix(prefix, "_")+pick(prefix != "", ": ", ""), other, otherWorkLimit)
	}
}

// otherWorkLimit is the share of the proxy CPUs (percentage points) busy
// with other work above which a row gets a note.
const otherWorkLimit = 30

// ---------- A, B: wrk ----------

func (r *runner) smallUpstreamPort() int {
	if r.cfg.smallUp == "nginx" {
		return r.ngUpPort
	}
	return r.goUpPort
}

func (r *runner) scenA(sys system, tag string) row {
	return r.wrkScenario(sys, tag, r.smallUpstreamPort(), "/small", r.cfg.conns, false)
}

func (r *runner) scenB(sys system, tag string) row {
	return r.wrkScenario(sys, tag, r.goUpPort, fmt.Sprintf("/bytes?n=%d", r.cfg.bigSize), r.cfg.bigConns, false)
}

func (r *runner) wrkScenario(sys system, tag string, uport int, path string, conns int, tls bool) (rw row) {
	in, err := r.startSystem(sys, uport, tag, tls)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	defer in.stop()
	if r.cfg.warmup > 0 {
		if _, err := r.wrk(in.url(path), conns, r.cfg.warmup, r.logPath(tag, "wrk-warmup")); err != nil {
			rw.Err = "warm-up: " + err.Error()
			return
		}
	}
	w := begin(in.pid())
	res, err := r.wrk(in.url(path), conns, r.cfg.duration, r.logPath(tag, "wrk"))
	w.end()
	if err != nil {
		rw.Err = err.Error()
		return
	}
	secs := res.DurationUs / 1e6
	rw.set("requests", res.Requests)
	rw.set("rps", res.Requests/secs)
	rw.set("MBps", res.Bytes/secs/1e6)
	rw.set("p50_ms", res.LatP50Us/1e3)
	rw.set("p90_ms", res.LatP90Us/1e3)
	rw.set("p99_ms", res.LatP99Us/1e3)
	rw.set("max_ms", res.LatMaxUs/1e3)
	rw.set("errors", res.errors())
	w.record(&rw, r.place, "")
	if res.Requests > 0 {
		rw.set("tcp_segs_per_req", float64(w.t1.outSegs-w.t0.outSegs)/res.Requests)
	}
	if in.pid() > 0 && res.Requests > 0 {
		cpu := w.cpuSeconds()
		rw.set("proxy_cpu_us_per_req", cpu*1e6/res.Requests)
		if res.Bytes > 0 {
			rw.set("proxy_cpu_ms_per_GB", cpu*1e3/(res.Bytes/1e9))
		}
	}
	if res.errors() > 0 {
		rw.note("wrk errors: connect %v, read %v, write %v, status %v, timeout %v",
			res.ErrConnect, res.ErrRead, res.ErrWrite, res.ErrStatus, res.ErrTimeout)
	}
	return
}

// ---------- C: big streams ----------

func (r *runner) scenC(sys system, tag string) (rw row) {
	var errs []string
	if err := r.stream(sys, tag+"-dl", "dl", &rw); err != nil {
		errs = append(errs, "download: "+err.Error())
	}
	if r.ctx.Err() == nil {
		if err := r.stream(sys, tag+"-ul", "ul", &rw); err != nil {
			errs = append(errs, "upload: "+err.Error())
		}
	}
	rw.Err = strings.Join(errs, "; ")
	return
}

// streamLimit bounds one transfer: 30 s plus its time at 20 MB/s.
func (r *runner) streamLimit() time.Duration {
	return 30*time.Second + time.Duration(float64(r.cfg.streamSize)/20e6*float64(time.Second))
}

// stream makes one --stream-size transfer ("dl" or "ul") through a fresh
// instance, so that the kernel's peak RSS (VmHWM) covers only it.
func (r *runner) stream(sys system, tag, dir string, rw *row) error {
	in, err := r.startSystem(sys, r.goUpPort, tag, false)
	if err != nil {
		return err
	}
	defer in.stop()
	n := r.cfg.streamSize
	idle := sampleTree(in.pid())
	limit := r.streamLimit()
	maxTime := strconv.Itoa(int(limit.Seconds()) - 5)
	w := begin(in.pid())
	var out string
	if dir == "dl" {
		q := fmt.Sprintf("/bytes?n=%d", n)
		if r.cfg.streamChunked {
			q += "&chunked=1"
		}
		out, err = r.runTool([]string{"curl", "-sS", "--max-time", maxTime, "-o", "/dev/null",
			"-w", "CURLSTAT %{http_code} %{size_download} %{time_total}\n", in.url(q)}, limit, r.logPath(tag, "curl"))
	} else {
		out, err = r.upload(in.url("/sink"), n, maxTime, limit, r.logPath(tag, "curl"))
	}
	w.end()
	if err != nil {
		return err
	}
	i := strings.LastIndex(out, "CURLSTAT ")
	if i < 0 {
		return errors.New("curl printed no statistics")
	}
	var code int
	var size, secs float64
	if _, err := fmt.Sscanf(out[i:], "CURLSTAT %d %g %g", &code, &size, &secs); err != nil {
		return fmt.Errorf("curl statistics: %v", err)
	}
	if code != 200 {
		return fmt.Errorf("status %d", code)
	}
	if dir == "dl" && int64(size) != n {
		return fmt.Errorf("downloaded %v bytes, want %d", size, n)
	}
	if dir == "ul" {
		// The upstream says how many body bytes reached it (curl's
		// size_upload counts the chunk framing too).
		var sink struct{ Bytes int64 }
		if err := json.Unmarshal([]byte(strings.TrimSpace(out[:i])), &sink); err != nil || sink.Bytes != n {
			return fmt.Errorf("the upstream received %d bytes, want %d (%v)", sink.Bytes, n, err)
		}
	}
	rw.set(dir+"_MBps", float64(n)/secs/1e6)
	rw.set(dir+"_secs", secs)
	w.record(rw, r.place, dir+"_")
	if in.pid() > 0 {
		rw.set(dir+"_peak_rss_mb", float64(w.u1.hwmKB)/1024)
		rw.set(dir+"_idle_rss_mb", float64(idle.rssKB)/1024)
		rw.set(dir+"_proxy_cpu_ms_per_GB", w.cpuSeconds()*1e3/(float64(n)/1e9))
	}
	return nil
}

// upload sends n zero bytes from dd through a pipe as curl's request body
// (chunked: curl does not know the length in advance).
func (r *runner) upload(url string, n int64, maxTime string, limit time.Duration, logFile string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, limit)
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", err
	}
	ddArgv := r.place.pin(r.place.loadCPUs, []string{"dd", "if=/dev/zero", "bs=1M",
		"count=" + strconv.FormatInt(n, 10), "iflag=count_bytes", "status=none"})
	curlArgv := r.place.pin(r.place.loadCPUs, []string{"curl", "-sS", "--max-time", maxTime,
		"-H", "Expect:", "-T", "-", "-o", "-", "-w", "\nCURLSTAT %{http_code} %{size_upload} %{time_total}\n", url})
	dd := exec.CommandContext(ctx, ddArgv[0], ddArgv[1:]...)
	dd.Stdout = pw
	curl := exec.CommandContext(ctx, curlArgv[0], curlArgv[1:]...)
	curl.Stdin = pr
	var so, se bytes.Buffer
	curl.Stdout, curl.Stderr = &so, &se
	curl.WaitDelay, dd.WaitDelay = 5*time.Second, 5*time.Second
	err = curl.Start()
	if err == nil {
		if err = dd.Start(); err != nil {
			pr.Close()
			pw.Close()
			curl.Wait()
			return "", err
		}
	}
	pr.Close()
	pw.Close()
	if err != nil {
		return "", err
	}
	cerr, derr := curl.Wait(), dd.Wait()
	os.WriteFile(logFile, fmt.Appendf(nil, "# %q | %q\n%s\n--- stderr ---\n%s", ddArgv, curlArgv, so.String(), se.String()), 0o644)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return "", fmt.Errorf("upload timed out after %v", limit)
	case cerr != nil:
		return so.String(), fmt.Errorf("curl: %v: %s", cerr, strings.TrimSpace(se.String()))
	case derr != nil:
		return so.String(), fmt.Errorf("dd: %v", derr)
	}
	return so.String(), nil
}

// ---------- D: WebSocket echo ----------

// wsResult is wsload's report.
type wsResult struct {
	ConnsOK    float64 `json:"conns_ok"`
	DialErrors float64 `json:"dial_errors"`
	IOErrors   float64 `json:"io_errors"`
	Mismatches float64 `json:"mismatches"`
	RoundTrips float64 `json:"round_trips"`
	AllRT      float64 `json:"total_round_trips"`
	RTPerSec   float64 `json:"rt_per_s"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	FirstDial  string  `json:"first_dial_error"`
	FirstIO    string  `json:"first_io_error"`
}

// wsload runs bin/wsload against in and parses its report.
func (r *runner) wsload(in *instance, conns int, d, warmup time.Duration, logFile string) (wsResult, error) {
	out, err := r.runTool([]string{filepath.Join(r.cfg.binDir, "wsload"),
		"-url", fmt.Sprintf("ws://127.0.0.1:%d/ws", in.port), "-c", strconv.Itoa(conns),
		"-size", strconv.Itoa(r.cfg.wsSize), "-d", d.String(), "-warmup", warmup.String()},
		d+warmup+60*time.Second, logFile)
	var res wsResult
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(out)), &res); jerr != nil && err == nil {
		err = jerr
	}
	return res, err
}

func (r *runner) scenD(sys system, tag string) (rw row) {
	in, err := r.startSystem(sys, r.goUpPort, tag, false)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	defer in.stop()
	w := begin(in.pid())
	res, err := r.wsload(in, r.cfg.wsConns, r.cfg.duration, r.cfg.warmup, r.logPath(tag, "wsload"))
	w.end()
	rw.set("rt_per_s", res.RTPerSec)
	rw.set("p50_us", res.P50us)
	rw.set("p99_us", res.P99us)
	rw.set("conns_ok", res.ConnsOK)
	rw.set("errors", res.DialErrors+res.IOErrors+res.Mismatches)
	w.record(&rw, r.place, "")
	if in.pid() > 0 && res.AllRT > 0 {
		// The window covers warm-up and measured round trips alike.
		rw.set("proxy_cpu_us_per_rt", w.cpuSeconds()*1e6/res.AllRT)
	}
	if res.FirstDial != "" {
		rw.note("first dial error: %s", res.FirstDial)
	}
	if res.FirstIO != "" {
		rw.note("first I/O error: %s", res.FirstIO)
	}
	switch {
	case err != nil:
		rw.Err = err.Error()
	case res.ConnsOK < float64(r.cfg.wsConns):
		rw.Err = fmt.Sprintf("only %v of %d connections upgraded", res.ConnsOK, r.cfg.wsConns)
	case res.Mismatches > 0:
		rw.Err = fmt.Sprintf("%v echoes differed from what was sent", res.Mismatches)
	}
	return
}

// ---------- E, E-ws: idle memory ----------

func (r *runner) scenE(sys system, tag string) row {
	return r.idleScenario(sys, tag, "http", r.cfg.idleConns)
}

func (r *runner) scenEws(sys system, tag string) row {
	return r.idleScenario(sys, tag, "ws", r.cfg.idleTunnels)
}

// idleScenario measures the proxy's memory per idle connection: after a
// short warm-up of the same kind of traffic (pools and lazily allocated
// buffers in place) and a 1 s settle, it reads the proxy's RSS, has
// bin/idleconns open n connections (mode http: one keep-alive GET each;
// mode ws: a WebSocket upgrade and one echo each) and leave them idle,
// waits 2 s, and reads RSS again.
func (r *runner) idleScenario(sys system, tag, mode string, n int) (rw row) {
	in, err := r.startSystem(sys, r.goUpPort, tag, false)
	if err != nil {
		rw.Err = err.Error()
		return
	}
	defer in.stop()
	if mode == "ws" {
		_, err = r.wsload(in, 8, time.Second, 0, r.logPath(tag, "wsload-warmup"))
	} else {
		_, err = r.wrk(in.url("/small"), 8, time.Second, r.logPath(tag, "wrk-warmup"))
	}
	if err != nil {
		rw.Err = "warm-up: " + err.Error()
		return
	}
	time.Sleep(time.Second)
	before := sampleTree(in.pid())
	estBefore, upBefore := establishedOn(in.port), establishedOn(r.goUpPort)

	hold := 60*time.Second + time.Duration(n)*2*time.Millisecond
	argv := r.place.pin(r.place.loadCPUs, []string{filepath.Join(r.cfg.binDir, "idleconns"),
		"-addr", fmt.Sprintf("127.0.0.1:%d", in.port), "-mode", mode, "-n", strconv.Itoa(n), "-hold", hold.String()})
	ctx, cancel := context.WithTimeout(r.ctx, hold+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		rw.Err = err.Error()
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		rw.Err = err.Error()
		return
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		rw.Err = err.Error()
		return
	}
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log strings.Builder
	var opened struct {
		Opened, Failed float64
		OpenS          float64 `json:"open_s"`
		FirstError     string  `json:"first_error"`
	}
	defer func() {
		// Release the connections, read the final report, and keep the log.
		stdin.Close()
		for l := range lines {
			log.WriteString(l + "\n")
			var d struct {
				Phase string
				Alive float64
			}
			if json.Unmarshal([]byte(l), &d) == nil && d.Phase == "done" {
				rw.set("alive_at_end", d.Alive)
				if rw.Err == "" && d.Alive < opened.Opened {
					rw.note("%v of %v connections were closed by the proxy before the end of the measurement", opened.Opened-d.Alive, opened.Opened)
				}
			}
		}
		cmd.Wait()
		os.WriteFile(r.logPath(tag, "idleconns"), fmt.Appendf(nil, "# %q\n%s--- stderr ---\n%s", argv, log.String(), stderr.String()), 0o644)
	}()

	select {
	case l, ok := <-lines:
		if !ok {
			rw.Err = "idleconns ended early: " + lastLine(stderr.String())
			return
		}
		log.WriteString(l + "\n")
		if err := json.Unmarshal([]byte(l), &opened); err != nil {
			rw.Err = "idleconns printed " + l
			return
		}
	case <-ctx.Done():
		rw.Err = "timed out opening connections"
		return
	}
	time.Sleep(2 * time.Second) // let the proxy settle: garbage collection, buffers released
	after := sampleTree(in.pid())
	rw.set("opened", opened.Opened)
	rw.set("failed", opened.Failed)
	rw.set("open_s", opened.OpenS)
	rw.set("established", float64(establishedOn(in.port)-estBefore))
	rw.set("upstream_established", float64(establishedOn(r.goUpPort)-upBefore))
	rw.set("rss_before_mb", float64(before.rssKB)/1024)
	rw.set("rss_after_mb", float64(after.rssKB)/1024)
	if opened.Opened > 0 {
		rw.set("rss_kb_per_conn", (float64(after.rssKB)-float64(before.rssKB))/opened.Opened)
	}
	if opened.Failed > 0 {
		rw.note("%v connections failed, the first with: %s", opened.Failed, opened.FirstError)
	}
	if opened.Opened < float64(n) {
		rw.Err = fmt.Sprintf("only %v of %d connections opened", opened.Opened, n)
	}
	return
}

// progress is the one-line summary printed after each measurement.
func progress(id string, rw row) string {
	if rw.Err != "" {
		return "ERROR: " + rw.Err
	}
	m := rw.Metrics
	switch id {
	case "A", "F":
		return fmt.Sprintf("%.0f req/s, p99 %.2f ms, %.1f us CPU/req", m["rps"], m["p99_ms"], m["proxy_cpu_us_per_req"])
	case "B":
		return fmt.Sprintf("%.0f MB/s, %.0f ms CPU/GB", m["MBps"], m["proxy_cpu_ms_per_GB"])
	case "C":
		return fmt.Sprintf("down %.0f MB/s, up %.0f MB/s", m["dl_MBps"], m["ul_MBps"])
	case "D":
		return fmt.Sprintf("%.0f round trips/s, %.1f us CPU/rt", m["rt_per_s"], m["proxy_cpu_us_per_rt"])
	case "E":
		return fmt.Sprintf("%.2f KiB/conn (%v open)", m["rss_kb_per_conn"], m["opened"])
	case "E-ws":
		return fmt.Sprintf("%.2f KiB/tunnel (%v open)", m["rss_kb_per_conn"], m["opened"])
	case "G":
		return fmt.Sprintf("%.0f req/s, %.1f us CPU/req", m["rps"], m["proxy_cpu_us_per_req"])
	case "H":
		return fmt.Sprintf("%.0f handshakes/s, %.1f us CPU/hs", m["hs_per_s"], m["proxy_cpu_us_per_hs"])
	}
	return ""
}
