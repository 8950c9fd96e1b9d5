package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a long-running child this run started (a proxy, an upstream).
// Only such processes are ever signalled, and only by their PID.
type proc struct {
	name string
	pid  int
	log  *os.File
	done chan struct{}
	err  error
}

var (
	liveMu sync.Mutex
	live   = map[*proc]bool{}
)

// startProc starts argv in dir with env added, its stdout and stderr
// appended to logPath, in a process group of its own (so that a Ctrl-C in
// the terminal reaches only benchrun, which then stops children in order).
func startProc(name string, argv, env []string, dir, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "# %s %q\n", time.Now().Format(time.RFC3339), argv)
	if len(env) > 0 {
		fmt.Fprintf(lf, "# environment: %q\n", env)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, pid: cmd.Process.Pid, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	liveMu.Lock()
	live[p] = true
	liveMu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 5 s, then SIGKILL; then it makes sure
// the descendants it had (nginx workers, a candidate's helpers) are gone
// too, each signalled by PID.
func (p *proc) stop() {
	if p == nil {
		return
	}
	kids := descendants(p.pid)
	if !p.exited() {
		syscall.Kill(p.pid, syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(p.pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, k := range kids {
		for alive(k) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(k) {
			syscall.Kill(k, syscall.SIGKILL)
		}
	}
	p.log.Close()
	liveMu.Lock()
	delete(live, p)
	liveMu.Unlock()
}

// stopAll stops every process this run started and has not stopped yet.
func stopAll() {
	liveMu.Lock()
	ps := make([]*proc, 0, len(live))
	for p := range live {
		ps = append(ps, p)
	}
	liveMu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != "Z"
}

type pstat struct {
	ppid  int
	state string
	ticks uint64 // utime + stime of all threads
}

func readStat(pid int) (pstat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pstat{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return pstat{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[11] and f[12]
	// fields 14 and 15 (utime, stime).
	if len(f) < 13 {
		return pstat{}, errors.New("short stat")
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return pstat{ppid: ppid, state: f[0], ticks: ut + st}, nil
}

// descendants lists the processes below root, not root itself.
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	var out []int
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// usage is the summed resource use of a process and its descendants.
type usage struct {
	procs int
	ticks uint64 // CPU time, 1/100 s
	rssKB uint64 // sum of VmRSS
	hwmKB uint64 // sum of VmHWM (peaks of each process; they need not coincide)
	at    time.Time
}

func sampleTree(root int) usage {
	u := usage{at: time.Now()}
	if root <= 0 {
		return u
	}
	for _, pid := range append([]int{root}, descendants(root)...) {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		u.procs++
		u.ticks += st.ticks
		rss, hwm := readMem(pid)
		u.rssKB += rss
		u.hwmKB += hwm
	}
	return u
}

func readMem(pid int) (rssKB, hwmKB uint64) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			rssKB, _ = strconv.ParseUint(fields[0], 10, 64)
		case "VmHWM":
			hwmKB, _ = strconv.ParseUint(fields[0], 10, 64)
		}
	}
	return rssKB, hwmKB
}

// cpuTimes holds busy and total jiffies per CPU from /proc/stat.
type cpuTimes struct{ busy, total []uint64 }

func readCPUTimes() cpuTimes {
	var ct cpuTimes
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ct
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "cpu") || strings.HasPrefix(line, "cpu ") {
			continue
		}
		var total, idle uint64
		for i, v := range strings.Fields(line)[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			switch i {
			case 8, 9: // guest and guest_nice are counted in user and nice already
				continue
			case 3, 4: // idle, iowait
				idle += n
			}
			total += n
		}
		ct.busy = append(ct.busy, total-idle)
		ct.total = append(ct.total, total)
	}
	return ct
}

// busyPct returns how busy each CPU was between two readings, in percent.
func busyPct(a, b cpuTimes) []float64 {
	out := make([]float64, len(b.busy))
	for i := range b.busy {
		if i >= len(a.busy) {
			break
		}
		if dt := float64(b.total[i] - a.total[i]); dt > 0 {
			out[i] = 100 * float64(b.busy[i]-a.busy[i]) / dt
		}
	}
	return out
}

// tcpCounters are the network namespace's TCP counters (/proc/net/snmp)
// that the scenarios read: connections opened (active = connect,
// passive = accept), segments and retransmissions.
type tcpCounters struct{ active, passive, inSegs, outSegs, retrans uint64 }

func readTCP() tcpCounters {
	var t tcpCounters
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return t
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil { // the header line comes first
			names = f
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			n, _ := strconv.ParseUint(f[i], 10, 64)
			switch names[i] {
			case "ActiveOpens":
				t.active = n
			case "PassiveOpens":
				t.passive = n
			case "InSegs":
				t.inSegs = n
			case "OutSegs":
				t.outSegs = n
			case "RetransSegs":
				t.retrans = n
			}
		}
	}
	return t
}

// establishedOn counts the ESTABLISHED TCP sockets whose local port is
// port: the server side of connections to a listener on that port.
func establishedOn(port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for _, p := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 3 && fs[3] == "01" && strings.HasSuffix(fs[1], want) {
				n++
			}
		}
		f.Close()
	}
	return n
}

// portBusy reports whether something accepts connections on port.
func portBusy(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// tailFile returns the last n bytes of a file, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

func mustMkdir(p string) string {
	if err := os.MkdirAll(p, 0o755); err != nil {
		fatalf("mkdir %s: %v", p, err)
	}
	abs, _ := filepath.Abs(p)
	return abs
}

// nofile is the open-files limit children inherit (run.sh raises the
// soft limit to the hard one).
func nofile() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<20 {
		return 1 << 20
	}
	return int(rl.Cur)
}

// workerConn is nginx's worker_connections: every connection, client or
// upstream, takes one descriptor; leave some for files and listeners.
func workerConn() int { return max(nofile()-256, 1024) }

// maxConn is HAProxy's maxconn, counted in client connections, each of
// which may hold an upstream connection too: about half the descriptors.
func maxConn() int { return max((nofile()-256)/2, 1024) }
