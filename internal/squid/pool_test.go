package squid

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// TestMain lets the test binary act as a helper program when
// SQUID_TEST_HELPER is set ("1": with channel IDs, "0": without).
func TestMain(m *testing.M) {
	if mode := os.Getenv("SQUID_TEST_HELPER"); mode != "" {
		testHelper(mode == "1")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testHelper answers by the URL (the first field): see the cases below.
func testHelper(channels bool) {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	var held []string // channel IDs of /wait requests
	for in.Scan() {
		f := strings.Fields(in.Text())
		id := ""
		if channels {
			id, f = f[0]+" ", f[1:]
		}
		url := f[0]
		switch {
		case strings.Contains(url, "/block"):
			fmt.Fprintf(out, "%sERR message=\"blocked by policy\"\n", id)
		case strings.Contains(url, "/rewrite"):
			fmt.Fprintf(out, "%sOK rewrite-url=http://rewritten.example/\n", id)
		case strings.Contains(url, "/redirect"):
			fmt.Fprintf(out, "%sOK status=302 url=\"http://login.example/?u=%s\"\n", id, url)
		case strings.Contains(url, "/bh"):
			fmt.Fprintf(out, "%sBH message=\"cannot decide\"\n", id)
		case strings.Contains(url, "/garbage"):
			fmt.Fprintf(out, "%sWHAT?\n", id)
		case strings.Contains(url, "/desync"):
			fmt.Fprintf(out, "no channel here\n")
		case strings.Contains(url, "/crash"):
			out.Flush()
			os.Exit(3)
		case strings.Contains(url, "/hang"):
			// never answered
		case strings.Contains(url, "/wait"):
			held = append(held, id)
			continue
		case strings.Contains(url, "/release"):
			fmt.Fprintf(out, "%sOK tag=release\n", id)
			for _, h := range held {
				fmt.Fprintf(out, "%sOK tag=held\n", h)
			}
			held = nil
		case strings.Contains(url, "/pid"):
			fmt.Fprintf(out, "%sOK pid=%d\n", id, os.Getpid())
		default:
			fmt.Fprintf(out, "%sOK\n", id)
		}
		out.Flush()
	}
}

func startPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path = exe
	mode := "0"
	if cfg.Concurrency > 0 {
		mode = "1"
	}
	cfg.Env = append(os.Environ(), "SQUID_TEST_HELPER="+mode)
	cfg.Stderr = io.Discard
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPoolReplies(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		url     string
		want    Result
		pairs   []Pair
		wantErr error
	}{
		{"http://a/ok", OK, nil, nil},
		{"http://a/block", ERR, []Pair{{"message", "blocked by policy"}}, nil},
		{"http://a/rewrite", OK, []Pair{{"rewrite-url", "http://rewritten.example/"}}, nil},
		{"http://a/redirect", OK, []Pair{{"status", "302"}, {"url", "http://login.example/?u=http://a/redirect"}}, nil},
		{"http://a/bh", BH, []Pair{{"message", "cannot decide"}}, nil},
		{"http://a/garbage", 0, nil, ErrSyntax},
	}
	for _, conc := range []int{0, 4} {
		t.Run(fmt.Sprint("concurrency=", conc), func(t *testing.T) {
			p := startPool(t, Config{Children: 2, Concurrency: conc, Timeout: 10 * time.Second})
			for _, tt := range tests {
				r, err := p.Do(context.Background(), tt.url, "127.0.0.1/-", "-", "GET")
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("%s: err = %v, want %v", tt.url, err, tt.wantErr)
					continue
				}
				if err != nil {
					continue
				}
				if r.Result != tt.want {
					t.Errorf("%s: result %v, want %v", tt.url, r.Result, tt.want)
				}
				if diff := cmp.Diff(tt.pairs, r.Pairs); diff != "" {
					t.Errorf("%s: pairs (-want +got):\n%s", tt.url, diff)
				}
			}
			if _, err := p.Do(context.Background(), "bad url"); !errors.Is(err, ErrBadField) {
				t.Errorf("field with space: err = %v, want ErrBadField", err)
			}
		})
	}
}

// TestPoolChannels has the helper answer out of order: channel IDs must
// route each reply to its request.
func TestPoolChannels(t *testing.T) {
	leaktest.Check(t)
	p := startPool(t, Config{Children: 1, Concurrency: 8, Timeout: 10 * time.Second})
	const n = 5
	var wg sync.WaitGroup
	tags := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.Do(context.Background(), "http://a/wait")
			if err != nil {
				t.Error(err)
				return
			}
			v, _ := r.Get("tag")
			tags <- v
		}()
	}
	waitPending(t, p, n)
	r, err := p.Do(context.Background(), "http://a/release")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Get("tag"); v != "release" {
		t.Errorf("release got tag %q", v)
	}
	wg.Wait()
	close(tags)
	for v := range tags {
		if v != "held" {
			t.Errorf("held request got tag %q", v)
		}
	}
}

// waitPending polls until n requests are in the helpers' hands.
func waitPending(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		p.mu.Lock()
		for pr := range p.live {
			pr.mu.Lock()
			got += len(pr.pending)
			pr.mu.Unlock()
		}
		p.mu.Unlock()
		if got >= n && len(p.queue) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests pending after 10s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func pidOf(t *testing.T, p *Pool) string {
	t.Helper()
	r, err := p.Do(context.Background(), "http://a/pid")
	if err != nil {
		t.Fatalf("pid request: %v", err)
	}
	v, _ := r.Get("pid")
	return v
}

// eventually retries a request until it succeeds, while a helper restarts.
func eventually(t *testing.T, p *Pool) Reply {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := p.Do(context.Background(), "http://a/pid")
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper never came back: %v", err)
		}
	}
}

func TestPoolCrashRestart(t *testing.T) {
	leaktest.Check(t)
	p := startPool(t, Config{Children: 1, Timeout: 5 * time.Second})
	before := pidOf(t, p)
	if _, err := p.Do(context.Background(), "http://a/crash"); !errors.Is(err, ErrHelperDied) {
		t.Fatalf("crash: err = %v, want ErrHelperDied", err)
	}
	r := eventually(t, p)
	if after, _ := r.Get("pid"); after == before {
		t.Errorf("same helper pid %s after crash", after)
	}
}

func TestPoolDesyncRestart(t *testing.T) {
	leaktest.Check(t)
	p := startPool(t, Config{Children: 1, Concurrency: 2, Timeout: 5 * time.Second})
	before := pidOf(t, p)
	if _, err := p.Do(context.Background(), "http://a/desync"); !errors.Is(err, ErrHelperDied) {
		t.Fatalf("desync: err = %v, want ErrHelperDied", err)
	}
	r := eventually(t, p)
	if after, _ := r.Get("pid"); after == before {
		t.Errorf("same helper pid %s after desync", after)
	}
}

func TestPoolTimeoutAndHung(t *testing.T) {
	leaktest.Check(t)
	p := startPool(t, Config{Children: 1, Timeout: 200 * time.Millisecond})
	// A race-instrumented helper can take longer than the timeout to
	// start on a loaded machine: wait until one answers.
	r0 := eventually(t, p)
	before, _ := r0.Get("pid")
	if _, err := p.Do(context.Background(), "http://a/hang"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("hang: err = %v, want ErrTimeout", err)
	}
	// The only helper is stuck on the hung request: it is restarted after
	// one more timeout and serves again.
	r := eventually(t, p)
	if after, _ := r.Get("pid"); after == before {
		t.Errorf("hung helper %s was not restarted", after)
	}
}

func TestPoolOverload(t *testing.T) {
	leaktest.Check(t)
	p := startPool(t, Config{Children: 1, Concurrency: 1, QueueSize: 1, Timeout: 10 * time.Second})
	errs := make(chan error, 2)
	go func() { _, err := p.Do(context.Background(), "http://a/wait"); errs <- err }()
	waitPending(t, p, 1)
	go func() { _, err := p.Do(context.Background(), "http://a/queued"); errs <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.queue) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("second request never queued")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := p.Do(context.Background(), "http://a/third"); !errors.Is(err, ErrOverloaded) {
		t.Errorf("third request: err = %v, want ErrOverloaded", err)
	}
	p.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrHelperDied) {
			t.Errorf("request at close: err = %v", err)
		}
	}
	if _, err := p.Do(context.Background(), "http://a/"); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: err = %v, want ErrClosed", err)
	}
}

func TestStartMissingProgram(t *testing.T) {
	if _, err := Start(Config{Path: "/nonexistent/helper"}); err == nil {
		t.Error("Start of a missing program succeeded")
	}
}
