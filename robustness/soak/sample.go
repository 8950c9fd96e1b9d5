package soak

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sample is one reading of the proxy's resources and of the load.
type Sample struct {
	// Elapsed is the time since the load started (negative before).
	Elapsed time.Duration
	// Load tells whether the load was running.
	Load bool

	Goroutines int   // the proxy's runtime.NumGoroutine
	FDs        int   // entries of /proc/PID/fd
	RSSKiB     int64 // VmRSS of /proc/PID/status
	HeapKiB    int64 // the proxy's heap in use (runtime.MemStats.HeapInuse)

	Exchanges  int64   // exchanges the clients finished, cumulative
	Rate       float64 // exchanges per second since the previous sample
	Injected   int64   // cumulative
	Violations int64   // cumulative
	Down       int     // targets down at the time
	Tunnels    int     // the proxy's open tunnels (WebSocket, CONNECT)
}

var csvHeader = []string{"elapsed_s", "load", "goroutines", "fds", "rss_kib", "heap_inuse_kib",
	"exchanges", "exchanges_per_s", "injected", "violations", "targets_down", "tunnels"}

func (s Sample) record() []string {
	load := "0"
	if s.Load {
		load = "1"
	}
	return []string{
		strconv.FormatFloat(s.Elapsed.Seconds(), 'f', 1, 64), load,
		strconv.Itoa(s.Goroutines), strconv.Itoa(s.FDs),
		strconv.FormatInt(s.RSSKiB, 10), strconv.FormatInt(s.HeapKiB, 10),
		strconv.FormatInt(s.Exchanges, 10), strconv.FormatFloat(s.Rate, 'f', 1, 64),
		strconv.FormatInt(s.Injected, 10), strconv.FormatInt(s.Violations, 10),
		strconv.Itoa(s.Down), strconv.Itoa(s.Tunnels),
	}
}

// ReadCSV reads the samples a run wrote.
func ReadCSV(r io.Reader) ([]Sample, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		return nil, errors.New("not a soak CSV: the header differs")
	}
	var out []Sample
	for i, row := range rows[1:] {
		var s Sample
		var errs []error
		f := func(j int) float64 {
			v, err := strconv.ParseFloat(row[j], 64)
			errs = append(errs, err)
			return v
		}
		s.Elapsed = time.Duration(f(0) * float64(time.Second))
		s.Load = row[1] == "1"
		s.Goroutines, s.FDs = int(f(2)), int(f(3))
		s.RSSKiB, s.HeapKiB = int64(f(4)), int64(f(5))
		s.Exchanges, s.Rate = int64(f(6)), f(7)
		s.Injected, s.Violations = int64(f(8)), int64(f(9))
		s.Down, s.Tunnels = int(f(10)), int(f(11))
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("row %d: %w", i+2, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// countFDs returns the number of open descriptors of process pid.
func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// rssKiB returns the resident set size of process pid.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// describeFDs returns what each open descriptor of process pid is: the
// link target of /proc/PID/fd/N, and for a TCP socket its addresses and
// state from /proc/PID/net/tcp{,6} ("tcp 127.0.0.1:80 127.0.0.1:5000
// 01"), so that descriptors left after the load can be named.
func describeFDs(pid int) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	sockets := map[string]string{} // inode -> description
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fl := strings.Fields(line)
			if len(fl) < 10 {
				continue
			}
			sockets[fl[9]] = fmt.Sprintf("tcp %s %s state %s", hexAddr(fl[1]), hexAddr(fl[2]), fl[3])
		}
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			if d, ok := sockets[strings.TrimSuffix(inode, "]")]; ok {
				target = d
			}
		}
		out = append(out, target)
	}
	return out, nil
}

// hexAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080"
// (IPv4; IPv6 addresses are left as they are).
func hexAddr(s string) string {
	ip, port, ok := strings.Cut(s, ":")
	p, err := strconv.ParseUint(port, 16, 16)
	if !ok || err != nil || len(ip) != 8 {
		return s
	}
	v, err := strconv.ParseUint(ip, 16, 32)
	if err != nil {
		return s
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", byte(v), byte(v>>8), byte(v>>16), byte(v>>24), p)
}

// extra returns the entries of now that are not in base (as multisets),
// with ports of connections replaced by "*" so that a new connection
// between the same peers matches an old one.
func extra(base, now []string) []string {
	norm := func(s string) string {
		f := strings.Fields(s)
		if len(f) == 5 && f[0] == "tcp" {
			// Keep the listening side's port, drop the ephemeral one.
			l, r := f[1], f[2]
			if i := strings.LastIndexByte(r, ':'); i > 0 && f[4] != "0A" {
				r = r[:i] + ":*"
			}
			if i := strings.LastIndexByte(l, ':'); i > 0 && f[4] != "0A" {
				l = l[:i] + ":*"
			}
			return strings.Join([]string{"tcp", l, r, f[3], f[4]}, " ")
		}
		return s
	}
	count := map[string]int{}
	for _, s := range base {
		count[norm(s)]++
	}
	var out []string
	for _, s := range now {
		if count[norm(s)] > 0 {
			count[norm(s)]--
			continue
		}
		out = append(out, s)
	}
	return out
}
