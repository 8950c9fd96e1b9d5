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
