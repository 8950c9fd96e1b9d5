package faults

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a proxy under test running as a process of its own (nginx:
// a master and its workers), whose resources can be sampled.
type Process struct {
	// Name says what it is ("sluice", "nginx", ...).
	Name string
	cmd  *exec.Cmd
	// goroutines, if not empty, is a URL that tells the process's
	// goroutine count: a Prometheus text (go_goroutines) or a bare number.
	goroutines string
	// children: also count the process's children (nginx's workers).
	children bool
	done     chan error
}

// Sample is a process's resources at one moment.
type Sample struct {
	// Goroutines is -1 where unknown (nginx).
	Goroutines int
	// FDs is the number of open descriptors (/proc/PID/fd).
	FDs int
	// RSS is the resident set size in bytes (VmRSS of /proc/PID/status).
	RSS int64
}

// startProcess starts bin with args, its output in log, and waits until
// addr accepts connections.
func startProcess(name, bin string, args []string, logFile string, addr string, env ...string) (*Process, error) {
	out, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	// Gone with the harness, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); out.Close() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case err := <-p.done:
			p.done <- err
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("%s exited (%v): %s", name, err, lastLines(string(b), 10))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s does not listen on %s after 15s", name, addr)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Exited reports whether the process ended (a crash, if the harness did
// not stop it).
func (p *Process) Exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// Stop ends the process: SIGTERM, then SIGKILL after 5 s.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		p.done <- <-p.done
	}
}

// pids returns the process and, for nginx, its children.
func (p *Process) pids() []int {
	pid := p.cmd.Process.Pid
	pids := []int{pid}
	if !p.children {
		return pids
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut after ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// Sample reads the process's resources now.
func (p *Process) Sample() (Sample, error) {
	if p.Exited() {
		return Sample{}, fmt.Errorf("%s exited", p.Name)
	}
	s := Sample{Goroutines: -1}
	for _, pid := range p.pids() {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return Sample{}, err
		}
		s.FDs += len(fds)
		rss, err := vmRSS(pid)
		if err != nil {
			return Sample{}, err
		}
		s.RSS += rss
	}
	if p.goroutines != "" {
		n, err := scrapeGoroutines(p.goroutines)
		if err != nil {
			return Sample{}, err
		}
		s.Goroutines = n
	}
	return s, nil
}

// vmRSS reads VmRSS of /proc/PID/status, in bytes.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// scrapeClient asks for goroutine counts on a new connection each time,
// so that the scrape leaves no connection of its own behind.
var scrapeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// scrapeGoroutines reads go_goroutines from a Prometheus text, or a bare
// number.
func scrapeGoroutines(url string) (int, error) {
	res, err := scrapeClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			line = v
		} else if strings.HasPrefix(line, "#") || strings.Contains(line, " ") {
			continue
		}
		if n, err := strconv.Atoi(line); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("no goroutine count at %s", url)
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// StartSluice starts examples/passthrough (bin) in front of upstream
// (http:// or h2c://) with every bound at bound and its metrics (for the
// goroutine count) on an admin listener of its own; h2c also serves h2c
// with prior knowledge next to HTTP/1.1.
func StartSluice(name, bin, dir, upstream string, h2c bool, bound time.Duration) (*Process, string, error) {
	listen, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	metrics, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	args := []string{"-listen", listen, "-upstream", upstream, "-metrics", metrics,
		"-timeout", bound.String(), "-upstream-idle-timeout", bound.String(), "-client-timeout", bound.String()}
	if h2c {
		args = append(args, "-h2c")
	}
	p, err := startProcess(name, bin, args, filepath.Join(dir, name+".log"), listen)
	if err != nil {
		return nil, "", err
	}
	p.goroutines = "http://" + metrics + "/metrics"
	return p, listen, nil
}

// StartHTTPUtil starts the httputil.ReverseProxy of cmd/httputil (bin)
// with its bounds at bound; it reaches upstream for HTTP/1.1 and
// grpcUpstream (h2c) for gRPC, and tells its goroutine count on an
// admin listener.
func StartHTTPUtil(bin, dir, upstream, grpcUpstream string, bound time.Duration) (*Process, string, error) {
	listen, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	admin, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	args := []string{"-listen", listen, "-upstream", upstream, "-grpc-upstream", grpcUpstream, "-admin", admin,
		"-timeout", bound.String()}
	p, err := startProcess("httputil", bin, args, filepath.Join(dir, "httputil.log"), listen)
	if err != nil {
		return nil, "", err
	}
	p.goroutines = "http://" + admin + "/goroutines"
	return p, listen, nil
}

// StartNginx starts nginx (bin) in the foreground with the configuration
// of nginxConf under dir, every timeout at bound (whole seconds): HTTP/1.1
// on one listener (WebSocket upgrades, unbuffered uploads and event
// streams), gRPC (h2c) on another.
func StartNginx(bin, dir, upstream, grpcUpstream string, bound time.Duration) (p *Process, listen, grpcListen string, err error) {
	if listen, err = FreeAddr(); err != nil {
		return nil, "", "", err
	}
	if grpcListen, err = FreeAddr(); err != nil {
		return nil, "", "", err
	}
	run := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, "", "", err
	}
	conf := strings.NewReplacer("{RUNDIR}", run, "{LISTEN}", listen, "{GRPCLISTEN}", grpcListen,
		"{UPSTREAM}", upstream, "{GRPCUPSTREAM}", grpcUpstream, "{BOUND}", fmt.Sprintf("%ds", max(1, int(bound.Seconds())))).Replace(nginxConf)
	confFile := filepath.Join(run, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, "", "", err
	}
	p, err = startProcess("nginx", bin, []string{"-p", run, "-c", confFile, "-e", filepath.Join(run, "error.log")},
		filepath.Join(dir, "nginx.log"), listen)
	if err != nil {
		return nil, "", "", err
	}
	p.children = true
	return p, listen, grpcListen, nil
}

// nginxConf is nginx as a user would configure it in front of this
// upstream: keep-alive to the upstream, WebSocket upgrades passed,
// uploads streamed (proxy_request_buffering off), event streams
// unbuffered (proxy_buffering off on /sse), no temporary files, every
// timeout at the matrix's bound, gRPC (grpc_pass) on an h2c listener of
// its own. One worker: the machine has two cores.
const nginxConf = `worker_processes 1;
daemon off;
master_process on;
pid {RUNDIR}/nginx.pid;
error_log {RUNDIR}/error.log warn;

events {
    worker_connections 1024;
}

http {
    access_log off;
    client_body_temp_path {RUNDIR}/client_body;
    proxy_temp_path {RUNDIR}/proxy_temp;
    fastcgi_temp_path {RUNDIR}/fastcgi_temp;
    uwsgi_temp_path {RUNDIR}/uwsgi_temp;
    scgi_temp_path {RUNDIR}/scgi_temp;

    client_max_body_size 0;
    client_header_timeout {BOUND};
    client_body_timeout {BOUND};
    send_timeout {BOUND};
    keepalive_timeout 60s;

    upstream backend {
        server {UPSTREAM};
        keepalive 32;
    }
    upstream grpc_backend {
        server {GRPCUPSTREAM};
        keepalive 32;
    }

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    server {
        listen {LISTEN};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_request_buffering off;
        proxy_max_temp_file_size 0;
        proxy_buffer_size 32k;
        proxy_buffers 8 32k;
        proxy_busy_buffers_size 64k;
        proxy_connect_timeout {BOUND};
        proxy_read_timeout {BOUND};
        proxy_send_timeout {BOUND};

        location / {
            proxy_pass http://backend;
        }
        location /sse {
            proxy_pass http://backend;
            proxy_buffering off;
        }
    }

    server {
        listen {GRPCLISTEN} http2;
        location / {
            grpc_pass grpc://grpc_backend;
            grpc_connect_timeout {BOUND};
            grpc_read_timeout {BOUND};
            grpc_send_timeout {BOUND};
        }
    }
}
`
