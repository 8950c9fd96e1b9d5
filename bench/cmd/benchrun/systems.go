package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sluiceproxy/sluice/bench/conf"
	"github.com/sluiceproxy/sluice/bench/internal/origin"
)

// A system is what a scenario sends its load through: "direct" (no
// proxy: straight to the upstream), a peer, or a candidate.
type system struct {
	name string // row label
	kind string // direct, httputil, nginx, haproxy, caddy or candidate
	port int    // where a proxy listens
}

// peerKinds are the built-in systems, in table order.
var peerKinds = []string{"direct", "httputil", "nginx", "haproxy", "caddy"}

// systemList returns the selected systems in table order: the peers, then
// the candidates in the order given. Ports: base+91 onwards.
func (r *runner) systemList() []system {
	var out []system
	for i, k := range peerKinds {
		if r.cfg.wantSystem(k, k) {
			out = append(out, system{name: k, kind: k, port: r.cfg.basePort + 91 + i})
		}
	}
	for i, c := range r.cfg.candidates {
		if r.cfg.wantSystem("candidate", c.name) {
			out = append(out, system{name: c.name, kind: "candidate", port: r.cfg.basePort + 91 + len(peerKinds) + i})
		}
	}
	return out
}

// template returns sys's command template for a plain or TLS scenario, ""
// when it does not take part (candidates only).
func (r *runner) template(sys system, tls bool) string {
	c := r.cfg.candidateByName(sys.name)
	switch {
	case c == nil:
		return ""
	case tls:
		return c.tls
	}
	return c.plain
}

// instance is a started system.
type instance struct {
	sys  system
	p    *proc // nil for direct
	port int   // where the load goes
	tls  bool  // serves HTTPS (and h2 by ALPN)
}

func (in *instance) url(path string) string {
	scheme := "http"
	if in.tls {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, in.port, path)
}

func (in *instance) pid() int {
	if in.p == nil {
		return 0
	}
	return in.p.pid
}

func (in *instance) stop() {
	if in != nil && in.p != nil {
		in.p.stop()
	}
}

// vars are the placeholders of a command template or a peer's config.
func (r *runner) vars(port, uport int, rundir string) map[string]string {
	v := map[string]string{
		"PORT":       strconv.Itoa(port),
		"ADDR":       fmt.Sprintf("127.0.0.1:%d", port),
		"UPORT":      strconv.Itoa(uport),
		"UADDR":      fmt.Sprintf("127.0.0.1:%d", uport),
		"UPSTREAM":   fmt.Sprintf("http://127.0.0.1:%d", uport),
		"WORKERS":    strconv.Itoa(r.place.workers),
		"RUNDIR":     rundir,
		"NOFILE":     strconv.Itoa(nofile()),
		"MAXCONN":    strconv.Itoa(maxConn()),
		"WORKERCONN": strconv.Itoa(workerConn()),
		"SMALLBODY":  origin.SmallBody,
	}
	if r.tls != nil {
		v["CERT"], v["KEY"], v["CERTKEY"] = r.tls.cert, r.tls.key, r.tls.certKey
	}
	return v
}

// writeConf renders the embedded config name into dir and returns its path.
func writeConf(name, dir string, vars map[string]string) (string, error) {
	text, err := conf.Read(name)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, name)
	if ext := filepath.Ext(name); ext == ".tmpl" {
		dst = dst[:len(dst)-len(ext)]
	}
	return dst, os.WriteFile(dst, []byte(conf.Render(text, vars)), 0o644)
}

// startSystem starts sys in front of the upstream on uport, pinned to the
// proxy CPUs, and waits until GET /small through it returns the upstream's
// exact body. With tls it must serve HTTPS with the run's certificate
// (direct then means the upstream's own TLS listener).
func (r *runner) startSystem(sys system, uport int, tag string, tls bool) (*instance, error) {
	in := &instance{sys: sys, port: sys.port, tls: tls}
	if tls && r.tls == nil {
		return nil, fmt.Errorf("no TLS certificate was made")
	}
	if sys.kind == "direct" {
		in.port = uport
		if tls {
			if r.upTLS == nil {
				return nil, fmt.Errorf("no TLS upstream was started")
			}
			in.port = r.tlsUpPort
		}
		return in, r.waitReady(in, 5*time.Second)
	}
	if portBusy(sys.port) {
		return nil, fmt.Errorf("port %d is taken by a process this run did not start; pick another --base-port", sys.port)
	}
	rundir := mustMkdir(filepath.Join(r.outDir, "run", tag))
	logf := filepath.Join(rundir, "output.log")
	v := r.vars(sys.port, uport, rundir)
	var argv, env []string
	dir := rundir
	switch sys.kind {
	case "httputil":
		argv = []string{filepath.Join(r.cfg.binDir, "httputil"), "-listen", v["ADDR"], "-upstream", v["UPSTREAM"]}
		if tls {
			argv = append(argv, "-tls-cert", v["CERT"], "-tls-key", v["KEY"])
		}
	case "nginx":
		cf, err := writeConf(pick(tls, "nginx-proxy-tls.conf.tmpl", "nginx-proxy.conf.tmpl"), rundir, v)
		if err != nil {
			return nil, err
		}
		argv = []string{"nginx", "-p", rundir + "/", "-c", cf, "-e", filepath.Join(rundir, "error.log")}
	case "haproxy":
		cf, err := writeConf(pick(tls, "haproxy-tls.cfg.tmpl", "haproxy.cfg.tmpl"), rundir, v)
		if err != nil {
			return nil, err
		}
		argv = []string{"haproxy", "-db", "-f", cf}
		if tls {
			ssl, err := writeConf("haproxy-tls-openssl.cnf", rundir, v)
			if err != nil {
				return nil, err
			}
			env = []string{"OPENSSL_CONF=" + ssl}
		}
	case "caddy":
		// Only Caddy's JSON config can turn session tickets off, so the
		// TLS variant is JSON rather than a Caddyfile.
		if tls {
			cf, err := writeConf("caddy-tls.json.tmpl", rundir, v)
			if err != nil {
				return nil, err
			}
			argv = []string{"caddy", "run", "--config", cf}
		} else {
			cf, err := writeConf("Caddyfile.tmpl", rundir, v)
			if err != nil {
				return nil, err
			}
			argv = []string{"caddy", "run", "--config", cf, "--adapter", "caddyfile"}
		}
		env = []string{"HOME=" + rundir, "XDG_CONFIG_HOME=" + rundir, "XDG_DATA_HOME=" + rundir}
	case "candidate":
		line := conf.Render(r.template(sys, tls), v)
		os.WriteFile(filepath.Join(rundir, "command.txt"), []byte(line+"\n"), 0o644)
		argv = []string{"/bin/sh", "-c", "exec " + line}
		env = []string{"BENCH_PORT=" + v["PORT"], "BENCH_UPSTREAM=" + v["UPSTREAM"], "BENCH_WORKERS=" + v["WORKERS"]}
		if tls {
			env = append(env, "BENCH_TLS_CERT="+v["CERT"], "BENCH_TLS_KEY="+v["KEY"])
		}
		dir = r.cfg.workDir
	default:
		return nil, fmt.Errorf("unknown kind of system %q", sys.kind)
	}
	p, err := startProc(sys.name, r.place.pin(r.place.proxyCPUs, argv), env, dir, logf)
	if err != nil {
		return nil, err
	}
	in.p = p
	if err := r.waitReady(in, 15*time.Second); err != nil {
		in.stop()
		return nil, fmt.Errorf("%s did not become ready: %v; log: %s", sys.name, err, tailFile(logf, 600))
	}
	return in, nil
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

var plainClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitReady polls GET /small until it returns exactly the upstream's body
// (over TLS, from a server presenting the run's certificate).
func (r *runner) waitReady(in *instance, limit time.Duration) error {
	client := plainClient
	if in.tls {
		client = r.tls.client
	}
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		if in.p != nil && in.p.exited() {
			return fmt.Errorf("it exited: %v", in.p.err)
		}
		resp, err := client.Get(in.url("/small"))
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(b) == origin.SmallBody {
				return nil
			}
			err = fmt.Errorf("GET /small: status %d, %d-byte body", resp.StatusCode, len(b))
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	if last == nil {
		last = r.ctx.Err()
	}
	return last
}

// startUpstreams starts the Go upstream and, when needed, the nginx
// upstream and the small upstream's TLS listener (direct in F-H), all on
// the load CPUs. They live for the whole run.
func (r *runner) startUpstreams(needNginx, needTLS bool) error {
	start := func(name string, port int, tls bool, argv []string, errLog string) (*instance, error) {
		if portBusy(port) {
			return nil, fmt.Errorf("port %d is taken; pick another --base-port", port)
		}
		dir := mustMkdir(filepath.Join(r.outDir, "run", name))
		p, err := startProc(name, r.place.pin(r.place.loadCPUs, argv), nil, dir, filepath.Join(dir, "output.log"))
		if err != nil {
			return nil, err
		}
		in := &instance{sys: system{name: name}, p: p, port: port, tls: tls}
		if err := r.waitReady(in, 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %v; %s", name, err, tailFile(filepath.Join(dir, errLog), 400))
		}
		return in, nil
	}
	if _, err := start("upstream-go", r.goUpPort, false, []string{filepath.Join(r.cfg.binDir, "upstream"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", r.goUpPort)}, "output.log"); err != nil {
		return err
	}
	if needNginx {
		dir := mustMkdir(filepath.Join(r.outDir, "run", "upstream-nginx"))
		cf, err := writeConf("nginx-upstream.conf.tmpl", dir, r.vars(r.ngUpPort, 0, dir))
		if err != nil {
			return err
		}
		if _, err := start("upstream-nginx", r.ngUpPort, false, []string{"nginx", "-p", dir + "/", "-c", cf,
			"-e", filepath.Join(dir, "error.log")}, "error.log"); err != nil {
			return err
		}
	}
	if needTLS {
		dir := mustMkdir(filepath.Join(r.outDir, "run", "upstream-tls"))
		argv := []string{filepath.Join(r.cfg.binDir, "upstream"), "-listen", fmt.Sprintf("127.0.0.1:%d", r.tlsUpPort),
			"-tls-cert", r.tls.cert, "-tls-key", r.tls.key}
		errLog := "output.log"
		if r.cfg.smallUp == "nginx" {
			cf, err := writeConf("nginx-upstream-tls.conf.tmpl", dir, r.vars(r.tlsUpPort, 0, dir))
			if err != nil {
				return err
			}
			argv, errLog = []string{"nginx", "-p", dir + "/", "-c", cf, "-e", filepath.Join(dir, "error.log")}, "error.log"
		}
		in, err := start("upstream-tls", r.tlsUpPort, true, argv, errLog)
		if err != nil {
			return err
		}
		r.upTLS = in
	}
	return nil
}
