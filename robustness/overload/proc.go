package overload

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RaiseFileLimit raises this process's soft limit of open files to its
// hard limit, and fails clearly if that is below need. (Go raises it at
// startup already; this also says what the limit is.)
func RaiseFileLimit(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", rl.Max, err)
		}
	}
	if rl.Cur < need {
		return rl.Cur, fmt.Errorf("the open-files limit is %d (hard limit %d), this run needs %d: raise it (ulimit -Hn, or LimitNOFILE= under systemd)",
			rl.Cur, rl.Max, need)
	}
	return rl.Cur, nil
}

// BuildPassthrough builds examples/passthrough into dir and returns the
// binary's path. It runs the go command in the current directory, which
// must be inside the repository (its go.work puts the examples module in
// the workspace).
func BuildPassthrough(dir string) (string, error) {
	bin := filepath.Join(dir, "passthrough")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/sluiceproxy/sluice/examples/passthrough").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building examples/passthrough: %w\n%s", err, out)
	}
	return bin, nil
}

// Proc is a proxy running in a process of its own.
type Proc struct {
	Name string
	Addr string // where it listens
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []string // of standard error
}

var urlRE = regexp.MustCompile(`url=https?://([0-9.]+:[0-9]+)/`)

// StartPassthrough runs the passthrough binary on a free loopback port in
// front of upstream (host:port) with the extra flags, and waits until it
// listens.
func StartPassthrough(bin, upstream string, flags ...string) (*Proc, error) {
	args := append([]string{"-listen", "127.0.0.1:0", "-upstream", "http://" + upstream}, flags...)
	cmd := exec.Command(bin, args...)
	p := &Proc{Name: "sluice", cmd: cmd, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			if m := urlRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p.Addr = <-addr:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("passthrough exited: %s", strings.Join(p.Log(), "\n"))
	case <-time.After(30 * time.Second):
		p.Stop()
		return nil, errors.New("passthrough did not start within 30 s")
	}
}

// NginxConfig is what StartNginx varies.
type NginxConfig struct {
	Workers           int
	WorkerConnections int    // counts client and upstream connections
	Extra             string // directives added to the server block (limit_conn ...)
	HTTPExtra         string // directives added to the http block (limit_conn_zone ...)
}

// StartNginx runs nginx (from the PATH or /usr/sbin) in the foreground
// with a temporary prefix in dir, as a reverse proxy to upstream on a free
// loopback port, configured like bench/conf/nginx-proxy.conf.tmpl
// (keep-alive both sides, no access log).
func StartNginx(dir, upstream string, cfg NginxConfig) (*Proc, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("nginx not found (apt-get install nginx)")
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := fmt.Sprintf(`worker_processes %d;
worker_rlimit_nofile %d;
daemon off;
master_process on;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log warn;
events { worker_connections %[4]d; }
http {
    access_log off;
    client_body_temp_path %[3]s/client_body;
    proxy_temp_path %[3]s/proxy_temp;
    fastcgi_temp_path %[3]s/fastcgi_temp;
    uwsgi_temp_path %[3]s/uwsgi_temp;
    scgi_temp_path %[3]s/scgi_temp;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream backend {
        server %[5]s;
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    %[6]s
    server {
        listen %[7]s backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 32k;
            proxy_buffers 8 32k;
            %[8]s
        }
    }
}
`, max(cfg.Workers, 1), 2*cfg.WorkerConnections+64, dir, cfg.WorkerConnections, upstream, cfg.HTTPExtra, addr, cfg.Extra)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", cf, "-e", filepath.Join(dir, "error.log"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	p := &Proc{Name: "nginx", Addr: addr, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx exited: %s%s", out.String(), b)
		default:
		}
		if c, err := dialQuick(addr); err == nil {
			c.Close()
			return p, nil
		}
	}
	p.Stop()
	return nil, errors.New("nginx did not listen within 10 s")
}

// Log returns the lines the process wrote to standard error so far
// (passthrough's log).
func (p *Proc) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for
// it.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Mem is a process's memory and CPU, with its children's (nginx's
// workers).
type Mem struct {
	RSS, HWM int64         // resident set, now and at its peak, bytes
	CPU      time.Duration // user and system time so far
}

// Stat reads /proc for the process and its children.
func (p *Proc) Stat() (Mem, error) {
	pids := append([]int{p.cmd.Process.Pid}, children(p.cmd.Process.Pid)...)
	var m Mem
	for _, pid := range pids {
		st, err := procStatus(pid)
		if err != nil {
			return Mem{}, err
		}
		m.RSS += st.RSS
		m.HWM += st.HWM
		m.CPU += st.CPU
	}
	return m, nil
}

func procStatus(pid int) (Mem, error) {
	var m Mem
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = kb << 10
		case "VmHWM":
			m.HWM = kb << 10
		}
	}
	b, err = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return m, err
	}
	// Fields after the command (which may hold spaces) start at ") ".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) > 12 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)         // utime, field 14
		st, _ := strconv.ParseInt(f[12], 10, 64)         // stime, field 15
		m.CPU = time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return m, nil
}

// children returns the PIDs of pid's children.
func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var kids []int
	for _, f := range strings.Fields(string(b)) {
		if k, err := strconv.Atoi(f); err == nil {
			kids = append(kids, k)
		}
	}
	return kids
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func dialQuick(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
