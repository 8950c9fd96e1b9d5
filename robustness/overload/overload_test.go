package overload

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The short runs are CI's; the flags make the full ones:
//
//	go test ./overload -run TestKeepAliveClients -v -clients 10000 -duration 20s -think 10s
var (
	clientsFlag  = flag.Int("clients", 2000, "TestKeepAliveClients: keep-alive clients")
	durationFlag = flag.Duration("duration", 5*time.Second, "TestKeepAliveClients: how long they make requests")
	thinkFlag    = flag.Duration("think", time.Second, "TestKeepAliveClients: mean pause between a client's requests")
)

// TestMain makes the test binary the upstream process when asked to (see
// startUpstream).
func TestMain(m *testing.M) {
	if d, ok := os.LookupEnv("OVERLOAD_UPSTREAM_DELAY"); ok {
		delay, err := time.ParseDuration(d)
		if err == nil {
			err = ServeUpstreamProcess(delay, 0)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startUpstream(t *testing.T, delay time.Duration) *UpstreamProc {
	t.Helper()
	u, err := StartUpstreamProcess([]string{os.Args[0]}, "OVERLOAD_UPSTREAM_DELAY="+delay.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	return u
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// passthrough builds examples/passthrough once for the package's tests.
func passthrough(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "overload-bin")
		if err != nil {
			buildErr = err
			return
		}
		built, buildErr = BuildPassthrough(dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func startProxy(t *testing.T, upstream string, flags ...string) *Proc {
	t.Helper()
	p, err := StartPassthrough(passthrough(t), upstream, flags...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// TestKeepAliveClients: many keep-alive clients making requests through
// passthrough with its default limits all get their 200s: no error, no
// refusal. It logs the latency and the memory per connection.
func TestKeepAliveClients(t *testing.T) {
	n := *clientsFlag
	if _, err := RaiseFileLimit(uint64(n) + 1024); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, 0)
	p := startProxy(t, up.Addr)
	before, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cs, err := Connect(ctx, Load{Addr: p.Addr, Clients: n, Think: *thinkFlag})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	time.Sleep(time.Second) // let the connections settle into their idle state
	idle, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	accepted := up.Accepted()
	out := cs.Run(ctx, *durationFlag)
	after, _ := p.Stat()
	t.Logf("\n%s", KeepAliveTable([]Row{{Proxy: "sluice", Out: out, Before: before, Idle: idle, After: after, Clients: n,
		UpstreamConns: up.Accepted() - accepted}}))
	if out.Errs() != 0 || out.Status[200] != out.Requests || out.Requests == 0 {
		t.Errorf("%d requests: statuses %s, errors %s; want only 200s", out.Requests, Statuses(out), Errors(out))
	}
}

// TestBeyondCapacity: with more clients than -max-in-flight lets through
// to a slow upstream, the excess is answered 503 at once, nothing fails,
// and the refusals are logged a few lines a second, not one each.
func TestBeyondCapacity(t *testing.T) {
	const (
		clients  = 200
		limit    = 20
		delay    = 50 * time.Millisecond
		duration = 3 * time.Second
	)
	if _, err := RaiseFileLimit(clients + 1024); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t, delay)
	p := startProxy(t, up.Addr, "-max-in-flight", strconv.Itoa(limit))
	ctx := context.Background()
	cs, err := Connect(ctx, Load{Addr: p.Addr, Clients: clients, Think: 20 * time.Millisecond, AnyStatusWarmUp: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	idle, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	logBefore := len(p.Log())
	out := cs.Run(ctx, duration)
	logs := p.Log()[logBefore:]
	after, _ := p.Stat()
	t.Logf("\n%s", BeyondTable([]Row{{Proxy: "sluice", Out: out, Clients: clients, LogLines: len(logs), Idle: idle, After: after}}))
	if out.Errs() != 0 {
		t.Errorf("errors: %s", Errors(out))
	}
	if out.Status[200] == 0 || out.Status[503] == 0 || out.Status[200]+out.Status[503] != out.Requests {
		t.Errorf("statuses %s: want 200s and 503s only", Statuses(out))
	}
	// The upstream alone takes 50 ms; a refusal waits for nothing.
	if p99 := out.ShedLat.Quantile(0.99); p99 >= 500*time.Millisecond {
		t.Errorf("99th percentile of the refusals: %v", p99)
	}
	refusalLines := 0
	for _, l := range logs {
		if strings.Contains(l, "requests refused with 503") {
			refusalLines++
		}
	}
	if max := int(duration/time.Second) + 3; refusalLines == 0 || refusalLines > max {
		t.Errorf("%d log lines about %d refusals in %v, want 1 to %d:\n%s", refusalLines, out.Status[503], duration, max, strings.Join(logs, "\n"))
	}
}
