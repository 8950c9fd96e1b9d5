// Command overload runs sluice's overload measurements on this machine
// (loopback only) and prints their tables; docs/robustness.md
// has the figures and the exact commands.
//
//	go run ./robustness/overload/cmd/overload -mode keepalive -clients 10000 -duration 20s -think 1s
//	go run ./robustness/overload/cmd/overload -mode beyond -clients 2000 -limit 100 -upstream-delay 50ms -think 100ms -duration 20s
//
// keepalive: that many keep-alive clients, each making requests with a
// think time between, through examples/passthrough (default limits) in
// front of a fast upstream in this process: errors, latency, memory per
// connection. beyond: more clients than the proxy may serve at once
// (sluice's -max-in-flight, nginx's limit_conn, both -limit) in front of
// a slow upstream: successes, refusals and their latency, errors, memory,
// CPU and log lines, for sluice and nginx one after the other. conns:
// more keep-alive clients than the proxy may hold connections (sluice's
// -max-conns, nginx's worker_connections with one worker, both -limit).
//
// Run it from inside the repository: it builds examples/passthrough.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/robustness/overload"
)

func main() {
	mode := flag.String("mode", "keepalive", "keepalive, beyond or conns (upstream: the upstream process it starts)")
	clients := flag.Int("clients", 10000, "keep-alive client connections")
	duration := flag.Duration("duration", 20*time.Second, "how long the clients make requests")
	think := flag.Duration("think", time.Second, "mean pause between a client's requests (uniform in [0, 2x])")
	limit := flag.Int("limit", 100, "beyond: requests in flight the proxy may serve (sluice -max-in-flight, nginx limit_conn), 0: the proxies' defaults (sluice 16384, nginx none); conns: connections (sluice -max-conns, nginx worker_connections)")
	delay := flag.Duration("upstream-delay", 0, "the upstream's time per request")
	workers := flag.Int("upstream-workers", 0, "requests the upstream works on at once, the others queue (0: no bound)")
	peers := flag.String("proxies", "sluice,nginx", "proxies to run, in order: sluice, nginx")
	nginxWorkers := flag.Int("nginx-workers", 2, "nginx worker processes")
	flag.StringVar(&passthroughBin, "passthrough", "", "a passthrough binary to run (default: build examples/passthrough)")
	flag.StringVar(&passthroughFlags, "passthrough-flags", "", "more flags for passthrough, space-separated")
	flag.Parse()
	if *mode == "upstream" {
		if err := overload.ServeUpstreamProcess(*delay, *workers); err != nil {
			fmt.Fprintln(os.Stderr, "overload upstream:", err)
			os.Exit(1)
		}
		return
	}
	upstreamWorkers = *workers
	if err := run(*mode, *clients, *duration, *think, *limit, *delay, strings.Split(*peers, ","), *nginxWorkers); err != nil {
		fmt.Fprintln(os.Stderr, "overload:", err)
		os.Exit(1)
	}
}

var (
	passthroughBin, passthroughFlags string
	upstreamWorkers                  int
)

func run(mode string, clients int, duration, think time.Duration, limit int, delay time.Duration, proxies []string, nginxWorkers int) error {
	// Client connections and the upstream's side of the proxy's.
	fds, err := overload.RaiseFileLimit(uint64(clients) + 1024)
	if err != nil {
		return err
	}
	if mode != "keepalive" && mode != "beyond" && mode != "conns" {
		return fmt.Errorf("-mode %q: want keepalive, beyond or conns", mode)
	}
	dir, err := os.MkdirTemp("", "overload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := passthroughBin
	if bin == "" {
		if bin, err = overload.BuildPassthrough(dir); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	up, err := overload.StartUpstreamProcess([]string{self, "-mode", "upstream", "-upstream-delay", delay.String(),
		"-upstream-workers", strconv.Itoa(upstreamWorkers)})
	if err != nil {
		return err
	}
	defer up.Close()
	fmt.Fprintf(os.Stderr, "open-files limit %d; upstream %s (delay %v)\n", fds, up.Addr, delay)

	ctx := context.Background()
	var rows []overload.Row
	for _, name := range proxies {
		var p *overload.Proc
		switch name {
		case "sluice":
			flags := strings.Fields(passthroughFlags)
			switch {
			case mode == "beyond" && limit > 0:
				flags = append(flags, "-max-in-flight", strconv.Itoa(limit))
			case mode == "conns":
				flags = append(flags, "-max-conns", strconv.Itoa(limit))
			}
			p, err = overload.StartPassthrough(bin, up.Addr, flags...)
		case "nginx":
			ndir := filepath.Join(dir, "nginx")
			if err := os.MkdirAll(ndir, 0o755); err != nil {
				return err
			}
			cfg := overload.NginxConfig{Workers: nginxWorkers, WorkerConnections: clients + 2048}
			if mode == "conns" {
				// One worker, so that worker_connections is the proxy's
				// bound; it also counts the listener and the upstream
				// connections, hence the margin.
				cfg.Workers, cfg.WorkerConnections = 1, limit+64
			}
			if mode == "beyond" && limit > 0 {
				// limit_conn with one key for every request: the requests
				// being processed at once, 503 beyond (the default
				// limit_conn_status).
				cfg.HTTPExtra = "map $host $all { default all; }\n    limit_conn_zone $all zone=all:1m;"
				cfg.Extra = "limit_conn all " + strconv.Itoa(limit) + ";"
			}
			p, err = overload.StartNginx(ndir, up.Addr, cfg)
		default:
			return fmt.Errorf("unknown proxy %q", name)
		}
		if err != nil {
			return err
		}
		row, err := measure(ctx, mode, p, up, clients, duration, think)
		if name == "nginx" {
			row.LogLines = countLines(filepath.Join(dir, "nginx", "error.log"))
			summarizeLog(filepath.Join(dir, "nginx", "error.log"))
		}
		p.Stop()
		if f := os.Getenv("OVERLOAD_PROXY_LOG"); f != "" {
			os.WriteFile(f+"."+name, []byte(strings.Join(p.Log(), "\n")), 0o644)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "%s done\n", name)
	}
	fmt.Printf("mode %s, %d clients, think %v, %v, upstream delay %v, upstream workers %d", mode, clients, think, duration, delay, upstreamWorkers)
	if mode != "keepalive" {
		fmt.Printf(", limit %d", limit)
	}
	fmt.Printf("\n\n")
	if mode == "keepalive" || mode == "conns" {
		fmt.Print(overload.KeepAliveTable(rows))
	} else {
		fmt.Print(overload.BeyondTable(rows))
	}
	return nil
}

func measure(ctx context.Context, mode string, p *overload.Proc, up *overload.UpstreamProc, clients int, duration, think time.Duration) (overload.Row, error) {
	row := overload.Row{Proxy: p.Name, Clients: clients}
	var err error
	if row.Before, err = p.Stat(); err != nil {
		return row, err
	}
	load := overload.Load{Addr: p.Addr, Clients: clients, Think: think, AnyStatusWarmUp: mode == "beyond"}
	if mode == "conns" {
		// Connections are opened one after the other: beyond the
		// proxy's bound, each waits in the listen queue until the proxy
		// makes room.
		load.Ramp = 1
	}
	cs, err := overload.Connect(ctx, load)
	if err != nil {
		return row, err
	}
	defer cs.Close()
	time.Sleep(time.Second) // let the connections settle into their idle state
	if row.Idle, err = p.Stat(); err != nil {
		return row, err
	}
	logBefore := len(p.Log())
	accepted := up.Accepted()
	row.Out = cs.Run(ctx, duration)
	row.UpstreamConns = up.Accepted() - accepted
	row.LogLines = len(p.Log()) - logBefore
	row.After, err = p.Stat()
	return row, err
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "\n")
}

// summarizeLog writes the kinds of lines of nginx's error log, with their
// counts, to standard error.
func summarizeLog(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	kinds := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		// "2026/12/06 06:01:02 [error] 123#123: *45 limiting connections by zone "all", client: ..."
		if i := strings.Index(line, "] "); i >= 0 {
			line = line[i+2:]
		}
		if i := strings.Index(line, ": "); i >= 0 {
			line = line[i+2:]
		}
		if strings.HasPrefix(line, "*") {
			if i := strings.IndexByte(line, ' '); i >= 0 {
				line = line[i+1:]
			}
		}
		if i := strings.Index(line, ", client"); i >= 0 {
			line = line[:i]
		}
		if line != "" {
			kinds[line]++
		}
	}
	for k, n := range kinds {
		fmt.Fprintf(os.Stderr, "nginx error.log: %d x %s\n", n, k)
	}
}
