package soak

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proxyEnv is the environment variable that makes the soak's executable
// the proxy process: it holds the ProxyConfig as JSON.
const proxyEnv = "SLUICE_SOAK_PROXY"

// ProxyMain runs the proxy and exits if this process was started as the
// soak's proxy (see Run); it returns otherwise. Call it first in main (or
// in TestMain).
func ProxyMain() {
	v, ok := os.LookupEnv(proxyEnv)
	if !ok {
		return
	}
	var cfg ProxyConfig
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "soak proxy:", err)
		os.Exit(2)
	}
	ctx, stop := signalContext()
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := RunProxy(ctx, cfg, logger, func(a ProxyAddrs) {
		b, _ := json.Marshal(a)
		os.Stdout.Write(append(b, '\n'))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak proxy:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Config configures a soak run.
type Config struct {
	// Duration is how long the load runs.
	Duration time.Duration
	// SampleEvery is the time between samples. If zero, 10 s, or 1 s for
	// a load of 5 minutes or less.
	SampleEvery time.Duration
	// Warmup is the start of the load that Flat ignores. If zero, a sixth
	// of Duration.
	Warmup time.Duration
	// Workers are the concurrent clients: over HTTP/1.1, h2c and HTTP/2
	// over TLS. If all zero, 8, 2 and 2.
	H1Workers, H2CWorkers, TLSWorkers int
	// Dir receives soak.csv, proxy.log and the TLS key pair.
	Dir string
	// PNG, if not empty, is where the picture of the run is drawn.
	PNG string
	// Exe is the executable started as the proxy (with the environment
	// that makes ProxyMain run it). If empty, this process's executable.
	Exe string
	// Settle bounds the wait, after the load, for the proxy's goroutines
	// and descriptors to come back to their baseline. If zero,
	// SettleTimeout.
	Settle time.Duration
	// Fault plants a defect in the proxy (see ProxyConfig.Fault), for the
	// soak's own tests.
	Fault string
	// Seed seeds the clients' choices. If zero, a random seed.
	Seed uint64
	// Log receives progress and the summary. If nil, os.Stdout.
	Log io.Writer
}

func (c *Config) defaults() {
	if c.SampleEvery == 0 {
		c.SampleEvery = 10 * time.Second
		if c.Duration <= 5*time.Minute {
			c.SampleEvery = time.Second
		}
	}
	if c.Warmup == 0 {
		c.Warmup = c.Duration / 6
	}
	if c.H1Workers == 0 && c.H2CWorkers == 0 && c.TLSWorkers == 0 {
		c.H1Workers, c.H2CWorkers, c.TLSWorkers = 8, 2, 2
	}
	if c.Settle == 0 {
		c.Settle = SettleTimeout
	}
	if c.Seed == 0 {
		c.Seed = mrand.Uint64()
	}
	if c.Log == nil {
		c.Log = os.Stdout
	}
}

// The flapping: each pool target is down 6 s out of every 30 s, one after
// the other (never two at once); the solo target 4 s out of every 20 s.
var (
	poolSchedule = func(i int) Schedule {
		return Schedule{Period: 30 * time.Second, Down: 6 * time.Second, Offset: time.Duration(5+10*i) * time.Second}
	}
	soloSchedule = Schedule{Period: 20 * time.Second, Down: 4 * time.Second, Offset: 8 * time.Second}
)

// Report is what a run found.
type Report struct {
	Kinds      map[string]*KindCount
	Injected   map[string]int64 // by form: "502 before headers", "aborted after headers", ...
	Violations []string         // the first ones, with details
	NViolation int64
	Outages    int
	Baseline   Sample
	After      Sample
	Problems   []error // violations of the criteria, the run's own errors
	Samples    []Sample
	Exchanges  int64
	Elapsed    time.Duration
	// ProxyExchanges counts the proxy's Records by error class.
	ProxyExchanges map[string]int64
}

// KindCount counts the exchanges of one kind by how they ended.
type KindCount struct {
	OK, Abandoned, Injected, Violations int64
}

// recorder collects the results of the exchanges.
type recorder struct {
	flap          *Flapper
	pool, solo    []*Target
	exchanges     atomic.Int64
	injected, bad atomic.Int64

	logf func(format string, a ...any)

	mu         sync.Mutex
	kinds      map[string]*KindCount
	forms      map[string]int64
	violations []string
}

func (r *recorder) add(k kind, id string, res outcome, err error, start, end time.Time) {
	r.exchanges.Add(1)
	if res == outClear {
		explained := false
		switch k.reach {
		case reachPool:
			explained = r.flap.explains(r.pool, true, start, end)
		case reachSolo:
			explained = r.flap.explains(r.solo, false, start, end)
		}
		if !explained {
			res = outBad
			err = fmt.Errorf("clear failure that no outage explains: %w", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.kinds[k.Name]
	if c == nil {
		c = new(KindCount)
		r.kinds[k.Name] = c
	}
	switch res {
	case outOK:
		c.OK++
	case outAbandoned:
		c.Abandoned++
	case outClear:
		c.Injected++
		r.injected.Add(1)
		form := "aborted after the response headers"
		var es *errStatus
		var nh *errNoHead
		switch {
		case errors.As(err, &es):
			form = fmt.Sprintf("%d before the response headers", es.got)
		case errors.As(err, &nh):
			form = "connection closed before any response byte"
		}
		r.forms[k.Name+": "+form]++
	case outBad:
		c.Violations++
		r.bad.Add(1)
		if len(r.violations) < 100 {
			v := fmt.Sprintf("%s %s [%s .. %s]: %v", k.Name, id, start.Format("15:04:05.000"), end.Format("15:04:05.000"), err)
			r.violations = append(r.violations, v)
			r.logf("soak: VIOLATION %s", v)
		}
	}
}

// Run runs a soak: it starts the targets, the origin and the proxy
// process, runs the load for cfg.Duration while the targets flap, then
// checks that the proxy's resources settle, stops it and judges the run.
// The returned error lists every violation; the Report has the figures
// either way.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	rep := &Report{}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return rep, err
	}
	var logMu sync.Mutex // the sampler logs too
	logf := func(format string, a ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(cfg.Log, format+"\n", a...)
	}

	// Upstreams.
	var pool []*Target
	for i := range 3 {
		t, err := NewTarget(fmt.Sprintf("target-%d", i+1))
		if err != nil {
			return rep, err
		}
		defer t.Close()
		pool = append(pool, t)
	}
	solo, err := NewTarget("solo")
	if err != nil {
		return rep, err
	}
	defer solo.Close()
	origin, err := NewOrigin()
	if err != nil {
		return rep, err
	}
	defer origin.Close()

	// The proxy process.
	certPEM, certFile, keyFile, err := writeKeyPair(cfg.Dir)
	if err != nil {
		return rep, err
	}
	roots, err := parseCert(certPEM)
	if err != nil {
		return rep, err
	}
	pcfg := ProxyConfig{Solo: solo.Addr, CertFile: certFile, KeyFile: keyFile, Fault: cfg.Fault}
	for _, t := range pool {
		pcfg.Targets = append(pcfg.Targets, t.Addr)
	}
	px, err := startProxy(cfg.Exe, pcfg, filepath.Join(cfg.Dir, "proxy.log"))
	if err != nil {
		return rep, err
	}
	defer px.kill()
	logf("soak: proxy pid %d on %s (h1, h2c), %s (TLS), admin %s; targets %s, solo %s, origin %s; seed %d; output in %s",
		px.cmd.Process.Pid, px.addrs.HTTP, px.addrs.TLS, px.addrs.Admin, strings.Join(pcfg.Targets, " "), solo.Addr, origin.Addr, cfg.Seed, cfg.Dir)

	// Baseline: every pool member healthy, the server's lazily started
	// parts started (HTTP/2 over h2c and TLS, the parking of idle
	// HTTP/1.1 connections), idle connections closed.
	if err := px.waitHealthy(ctx, 30*time.Second); err != nil {
		return rep, err
	}
	cl := newClients(px.addrs, origin.Addr, roots)
	defer cl.closeIdle()
	if err := cl.prime(ctx); err != nil {
		return rep, err
	}
	base, err := px.settle(ctx, nil, 5*time.Second)
	if err != nil {
		return rep, err
	}
	rep.Baseline = base
	baseFDs, err := describeFDs(px.cmd.Process.Pid)
	if err != nil {
		return rep, err
	}
	px.dumpGoroutines(ctx, filepath.Join(cfg.Dir, "goroutines-baseline.txt"))
	logf("soak: baseline goroutines %d, descriptors %d, RSS %.1f MiB", base.Goroutines, base.FDs, float64(base.RSSKiB)/1024)

	csvFile, err := os.Create(filepath.Join(cfg.Dir, "soak.csv"))
	if err != nil {
		return rep, err
	}
	defer csvFile.Close()
	cw := csv.NewWriter(csvFile)
	cw.Write(csvHeader)

	flap := new(Flapper)
	rec := &recorder{flap: flap, logf: logf, pool: pool, solo: []*Target{solo}, kinds: map[string]*KindCount{}, forms: map[string]int64{}}
	loadStart := time.Now()
	loadCtx, stopLoad := context.WithDeadline(ctx, loadStart.Add(cfg.Duration))
	defer stopLoad()
	var loading atomic.Bool
	loading.Store(true)

	// The sampler runs through the load and the settling after it.
	sampleCtx, stopSampling := context.WithCancel(context.WithoutCancel(ctx))
	var samplerDone sync.WaitGroup
	var samplesMu sync.Mutex
	var sampleErrs []error
	samplerDone.Go(func() {
		t := time.NewTicker(cfg.SampleEvery)
		defer t.Stop()
		var prevN int64
		prevT := loadStart
		for {
			select {
			case <-sampleCtx.Done():
				return
			case now := <-t.C:
				s, err := px.sample(sampleCtx)
				if err != nil {
					if sampleCtx.Err() == nil {
						samplesMu.Lock()
						sampleErrs = append(sampleErrs, err)
						samplesMu.Unlock()
					}
					continue
				}
				n := rec.exchanges.Load()
				s.Elapsed = now.Sub(loadStart)
				s.Load = loading.Load()
				s.Exchanges, s.Rate = n, float64(n-prevN)/now.Sub(prevT).Seconds()
				prevN, prevT = n, now
				s.Injected, s.Violations = rec.injected.Load(), rec.bad.Load()
				s.Down, _ = flap.downCount(append(slices.Clone(pool), solo))
				samplesMu.Lock()
				rep.Samples = append(rep.Samples, s)
				samplesMu.Unlock()
				cw.Write(s.record())
				cw.Flush()
				logf("soak: %6.0fs load=%-5v goroutines %4d  fds %4d  rss %6.1f MiB  heap %6.1f MiB  %6.0f ex/s  injected %d  violations %d  down %d  tunnels %d",
					s.Elapsed.Seconds(), s.Load, s.Goroutines, s.FDs, float64(s.RSSKiB)/1024, float64(s.HeapKiB)/1024,
					s.Rate, s.Injected, s.Violations, s.Down, s.Tunnels)
			}
		}
	})
	defer func() {
		stopSampling()
		samplerDone.Wait()
	}()

	// The flapping.
	sched := map[*Target]Schedule{solo: soloSchedule}
	for i, t := range pool {
		sched[t] = poolSchedule(i)
	}
	flapCtx, stopFlap := context.WithCancel(loadCtx)
	var flapDone sync.WaitGroup
	flapDone.Go(func() { flap.flap(flapCtx, sched, 100*time.Millisecond) })

	// The load.
	var workers sync.WaitGroup
	worker := func(n int, kinds []kind, hc *http.Client, base string) {
		rng := mrand.New(mrand.NewPCG(cfg.Seed, uint64(n)))
		for seq := 0; loadCtx.Err() == nil; seq++ {
			k := pick(kinds, rng)
			id := fmt.Sprintf("%s-%d-%d", k.Name, n, seq)
			x := &exchange{c: cl, hc: hc, base: base, id: id, user: fmt.Sprintf("w%d", n), rng: rng}
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cl.deadline)
			start := time.Now()
			res, err := k.run(ectx, x)
			end := time.Now()
			if res != outOK && res != outAbandoned && errors.Is(ectx.Err(), context.DeadlineExceeded) {
				res, err = outBad, fmt.Errorf("hung: no end within the client's %v deadline: %w", cl.deadline, err)
			}
			cancel()
			rec.add(k, id, res, err, start, end)
		}
	}
	n := 0
	for _, w := range []struct {
		count int
		kinds []kind
		hc    *http.Client
		base  string
	}{
		{cfg.H1Workers, h1Kinds, cl.h1, cl.base},
		{cfg.H2CWorkers, h2Kinds, cl.h2c, cl.base},
		{cfg.TLSWorkers, h2Kinds, cl.h2tls, cl.tlsBase},
	} {
		for range w.count {
			n++
			id := n
			workers.Go(func() { worker(id, w.kinds, w.hc, w.base) })
		}
	}
	logf("soak: load for %v with %d+%d+%d workers (HTTP/1.1, h2c, TLS), sampling every %v, warm-up %v",
		cfg.Duration, cfg.H1Workers, cfg.H2CWorkers, cfg.TLSWorkers, cfg.SampleEvery, cfg.Warmup)
	<-loadCtx.Done()
	workers.Wait()
	loading.Store(false)
	stopFlap()
	flapDone.Wait()
	rep.Elapsed = time.Since(loadStart)
	_, rep.Outages = flap.downCount(append(slices.Clone(pool), solo))
	logf("soak: load done after %v: %d exchanges, %d outages; settling", rep.Elapsed.Round(time.Millisecond), rec.exchanges.Load(), rep.Outages)

	// Settling: targets up and healthy, idle connections closed. An
	// interrupt ended the load; what follows runs to its end.
	ctx = context.WithoutCancel(ctx)
	var problems []error
	problems = append(problems, flap.err()...)
	cl.closeIdle()
	if err := px.waitHealthy(ctx, 30*time.Second); err != nil {
		problems = append(problems, err)
	}
	after, err := px.settle(ctx, &base, cfg.Settle)
	rep.After = after
	if err != nil {
		problems = append(problems, err)
	}
	logf("soak: after the load goroutines %d (baseline %d), descriptors %d (baseline %d), RSS %.1f MiB",
		after.Goroutines, base.Goroutines, after.FDs, base.FDs, float64(after.RSSKiB)/1024)
	if now, err := describeFDs(px.cmd.Process.Pid); err == nil {
		for _, d := range extra(baseFDs, now) {
			logf("soak: descriptor not in the baseline: %s", d)
		}
	}
	px.dumpGoroutines(ctx, filepath.Join(cfg.Dir, "goroutines-after.txt"))
	stopSampling()
	samplerDone.Wait()
	cw.Flush()
	if err := cw.Error(); err != nil {
		problems = append(problems, err)
	}

	if st, err := px.stats(ctx); err == nil {
		rep.ProxyExchanges = st.ByClass
	} else {
		problems = append(problems, err)
	}
	if err := px.stop(20 * time.Second); err != nil {
		problems = append(problems, err)
	}

	// Judgement.
	rep.Kinds, rep.Injected, rep.Exchanges = rec.kinds, rec.forms, rec.exchanges.Load()
	rep.Violations, rep.NViolation = rec.violations, rec.bad.Load()
	if rep.NViolation > 0 {
		problems = append(problems, fmt.Errorf("%d failed exchanges that no outage explains", rep.NViolation))
	}
	problems = append(problems, sampleErrs...)
	problems = append(problems, Flat(rep.Samples, cfg.Warmup)...)
	for _, k := range append(slices.Clone(h1Kinds), h2Kinds...) {
		if c := rec.kinds[k.Name]; c == nil || c.OK+c.Abandoned == 0 {
			problems = append(problems, fmt.Errorf("kind %s: no exchange succeeded", k.Name))
		}
	}
	rep.Problems = problems
	rep.print(cfg.Log, filepath.Join(cfg.Dir, "proxy.log"))
	if cfg.PNG != "" {
		if err := Plot(rep.Samples, cfg.Warmup, cfg.PNG); err != nil {
			problems = append(problems, err)
		} else {
			logf("soak: picture in %s", cfg.PNG)
		}
	}
	return rep, errors.Join(problems...)
}

func (rep *Report) print(w io.Writer, proxyLog string) {
	fmt.Fprintf(w, "\nsoak: %d exchanges in %v (%.0f/s), %d outages\n", rep.Exchanges, rep.Elapsed.Round(time.Second),
		float64(rep.Exchanges)/rep.Elapsed.Seconds(), rep.Outages)
	names := make([]string, 0, len(rep.Kinds))
	for k := range rep.Kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "%-20s %9s %9s %9s %10s\n", "kind", "ok", "abandoned", "injected", "violations")
	var tot KindCount
	for _, k := range names {
		c := rep.Kinds[k]
		fmt.Fprintf(w, "%-20s %9d %9d %9d %10d\n", k, c.OK, c.Abandoned, c.Injected, c.Violations)
		tot.OK += c.OK
		tot.Abandoned += c.Abandoned
		tot.Injected += c.Injected
		tot.Violations += c.Violations
	}
	fmt.Fprintf(w, "%-20s %9d %9d %9d %10d\n", "total", tot.OK, tot.Abandoned, tot.Injected, tot.Violations)
	if len(rep.Injected) > 0 {
		fmt.Fprintln(w, "injected failures, as the clients saw them:")
		forms := make([]string, 0, len(rep.Injected))
		for f := range rep.Injected {
			forms = append(forms, f)
		}
		sort.Strings(forms)
		for _, f := range forms {
			fmt.Fprintf(w, "  %6d  %s\n", rep.Injected[f], f)
		}
	}
	if len(rep.Samples) > 0 {
		var g, fd, rss Sample
		for _, s := range rep.Samples {
			g.Goroutines = max(g.Goroutines, s.Goroutines)
			fd.FDs = max(fd.FDs, s.FDs)
			rss.RSSKiB = max(rss.RSSKiB, s.RSSKiB)
		}
		fmt.Fprintf(w, "proxy peaks under load: goroutines %d, descriptors %d, RSS %.1f MiB; baseline %d / %d / %.1f MiB; after %d / %d / %.1f MiB\n",
			g.Goroutines, fd.FDs, float64(rss.RSSKiB)/1024, rep.Baseline.Goroutines, rep.Baseline.FDs, float64(rep.Baseline.RSSKiB)/1024,
			rep.After.Goroutines, rep.After.FDs, float64(rep.After.RSSKiB)/1024)
	}
	if len(rep.ProxyExchanges) > 0 {
		classes := make([]string, 0, len(rep.ProxyExchanges))
		for c := range rep.ProxyExchanges {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		fmt.Fprint(w, "the proxy's records (OnExchange) by error class:")
		for _, c := range classes {
			name := c
			if name == "" {
				name = "none"
			}
			fmt.Fprintf(w, " %s %d", name, rep.ProxyExchanges[c])
		}
		fmt.Fprintln(w)
	}
	var ids []string
	for _, v := range rep.Violations {
		fmt.Fprintln(w, "VIOLATION:", v)
		ids = append(ids, strings.Fields(v)[1])
	}
	if len(ids) > 0 {
		// What the proxy logged about them (it logs every failed
		// exchange with its request ID).
		if b, err := os.ReadFile(proxyLog); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				for _, id := range ids {
					if strings.Contains(line, "request_id="+id+" ") || strings.Contains(line, "request_id="+id+"-") ||
						strings.HasSuffix(line, "request_id="+id) {
						fmt.Fprintln(w, "  proxy.log:", line)
						break
					}
				}
			}
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "PROBLEM:", p)
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintln(w, "soak: PASS")
	} else {
		fmt.Fprintln(w, "soak: FAIL")
	}
}

// proxyProc is the proxy process and its admin client.
type proxyProc struct {
	cmd    *exec.Cmd
	addrs  ProxyAddrs
	admin  *http.Client
	log    *os.File
	waited chan error
}

func startProxy(exe string, cfg ProxyConfig, logPath string) (*proxyProc, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), proxyEnv+"="+string(b))
	cmd.Stderr = logFile
	cmd.SysProcAttr = procAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proxyProc{cmd: cmd, log: logFile, waited: make(chan error, 1),
		admin: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}}
	line := make(chan error, 1)
	go func() {
		br := bufio.NewReader(out)
		s, err := br.ReadString('\n')
		if err == nil {
			err = json.Unmarshal([]byte(s), &p.addrs)
		}
		line <- err
		io.Copy(io.Discard, br)
		p.waited <- cmd.Wait()
	}()
	select {
	case err = <-line:
	case <-time.After(30 * time.Second):
		err = errors.New("no address line within 30 s")
	}
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("starting the proxy (log in %s): %w", logPath, err)
	}
	return p, nil
}

// kill ends the process if it still runs (on early returns).
func (p *proxyProc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
	}
	p.log.Close()
}

// stop asks the proxy to shut down gracefully and checks that it did,
// within grace.
func (p *proxyProc) stop(grace time.Duration) error {
	p.admin.CloseIdleConnections()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping the proxy: %w", err)
	}
	select {
	case err := <-p.waited:
		if err != nil {
			return fmt.Errorf("the proxy's graceful shutdown: %w (see proxy.log)", err)
		}
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		return fmt.Errorf("the proxy did not stop within %v of SIGTERM", grace)
	}
}

func (p *proxyProc) get(ctx context.Context, path string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addrs.Admin+path, nil)
	res, err := p.admin.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("admin %s: %s", path, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

func (p *proxyProc) stats(ctx context.Context) (Stats, error) {
	var st Stats
	return st, p.get(ctx, "/stats", &st)
}

// dumpGoroutines writes the proxy's goroutines (pprof's debug=1 text:
// stacks with their counts) to path, to compare the baseline with what
// is left after the load.
func (p *proxyProc) dumpGoroutines(ctx context.Context, path string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addrs.Admin+"/debug/pprof/goroutine?debug=1", nil)
	res, err := p.admin.Do(req)
	if err != nil {
		return
	}
	defer res.Body.Close()
	if b, err := io.ReadAll(res.Body); err == nil {
		os.WriteFile(path, b, 0o644)
	}
}

// sample reads the proxy's resources.
func (p *proxyProc) sample(ctx context.Context) (Sample, error) {
	st, err := p.stats(ctx)
	if err != nil {
		return Sample{}, err
	}
	pid := p.cmd.Process.Pid
	fds, err := countFDs(pid)
	if err != nil {
		return Sample{}, err
	}
	rss, err := rssKiB(pid)
	if err != nil {
		return Sample{}, err
	}
	return Sample{Goroutines: st.Goroutines, FDs: fds, RSSKiB: rss, HeapKiB: int64(st.HeapInuse / 1024), Tunnels: st.Tunnels}, nil
}

// waitHealthy waits until every member of both pools is healthy.
func (p *proxyProc) waitHealthy(ctx context.Context, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		st, err := p.stats(ctx)
		if err == nil && st.Healthy["h1"] == 3 && st.Healthy["h2c"] == 3 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pools not all healthy within %v: %v %v", bound, st.Healthy, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settle asks the proxy to close its idle upstream connections and reads
// its resources until they are back to base (within the tolerances) or
// bound passes; with a nil base, until two readings 500 ms apart agree.
// It returns the last reading.
func (p *proxyProc) settle(ctx context.Context, base *Sample, bound time.Duration) (Sample, error) {
	deadline := time.Now().Add(bound)
	var prev Sample
	for i := 0; ; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.addrs.Admin+"/quiesce", nil)
		if res, err := p.admin.Do(req); err == nil {
			res.Body.Close()
		}
		s, err := p.sample(ctx)
		if err != nil {
			return s, err
		}
		switch {
		case base == nil && i > 0 && s.Goroutines == prev.Goroutines && s.FDs == prev.FDs:
			return s, nil
		case base != nil && s.Goroutines <= base.Goroutines+ToleranceGoroutines && s.FDs <= base.FDs+ToleranceFDs:
			return s, nil
		}
		if time.Now().After(deadline) {
			if base == nil {
				return s, nil
			}
			return s, fmt.Errorf("the proxy did not settle within %v: goroutines %d (baseline %d + %d), descriptors %d (baseline %d + %d)",
				bound, s.Goroutines, base.Goroutines, ToleranceGoroutines, s.FDs, base.FDs, ToleranceFDs)
		}
		prev = s
		time.Sleep(500 * time.Millisecond)
	}
}

// writeKeyPair writes a self-signed certificate for 127.0.0.1 and its key.
func writeKeyPair(dir string) (certPEM []byte, certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice soak"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, "", "", err
	}
	return certPEM, certFile, keyFile, nil
}
