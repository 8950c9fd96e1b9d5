package balance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// countingBackend is an httptest upstream that answers its name and
// counts the requests it got.
type countingBackend struct {
	*httptest.Server
	name string
	hits atomic.Int32
}

func newBackend(t *testing.T, name string) *countingBackend {
	t.Helper()
	b := &countingBackend{name: name}
	b.Server = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s %s", name, r.URL.Path, body)
	})
	return b
}

// poolServer starts a Proxy directed by pool and returns its URL.
func poolServer(t *testing.T, pool *Pool, configure ...func(*sluice.Proxy)) string {
	t.Helper()
	p := &sluice.Proxy{Director: pool}
	for _, c := range configure {
		c(p)
	}
	return newProxyServer(t, p)
}

// lbDo sends a request and returns status, X-Backend and body; a transport
// error is reported as status 0 and its text.
func lbDo(c *http.Client, method, url, body string) (int, string, string) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, res.Header.Get("X-Backend"), "read error: " + err.Error()
	}
	return res.StatusCode, res.Header.Get("X-Backend"), string(b)
}

func TestPoolRoundRobinThroughProxy(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet()}
	for _, name := range []string{"a", "b", "c"} {
		mustAdd(t, pool, name, newBackend(t, name).URL)
	}
	px := poolServer(t, pool)
	c := client(t)
	var got []string
	for range 6 {
		status, backend, _ := lbDo(c, "GET", px+"/x", "")
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		got = append(got, backend)
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "a", "b", "c"}, got); diff != "" {
		t.Errorf("rotation (-want +got):\n%s", diff)
	}
	for _, s := range pool.Stats() {
		if s.Requests != 2 || s.InFlight != 0 || s.Failures != 0 || !s.Healthy || s.Latency <= 0 {
			t.Errorf("stats %+v: want 2 requests, none in flight or failed, a latency", s)
		}
	}
}

// TestPoolStripPrefixAndTargetPath: StripPrefix is removed at a segment
// boundary (its trailing slash ignored) before the target's path is
// joined in front; other paths are forwarded unchanged.
func TestPoolStripPrefixAndTargetPath(t *testing.T) {
	leaktest.Check(t)
	b := newBackend(t, "a")
	c := client(t)
	tests := []struct {
		prefix, path, want string
	}{
		{"/app", "/app/users", "a /v2/users "},
		{"/app", "/app", "a /v2/ "},
		{"/app", "/app/", "a /v2/ "},
		{"/app", "/other", "a /v2/other "},
		{"/app", "/application", "a /v2/application "},
		{"/app/", "/app/users", "a /v2/users "},
		{"/app/", "/app", "a /v2/ "},
		{"/app", "/app/a%20b", "a /v2/a b "},
		{"", "/app/users", "a /v2/app/users "},
	}
	for _, tt := range tests {
		pool := &Pool{Logger: quiet(), StripPrefix: tt.prefix}
		mustAdd(t, pool, "a", b.URL+"/v2")
		px := poolServer(t, pool)
		if _, _, body := lbDo(c, "GET", px+tt.path, ""); body != tt.want {
			t.Errorf("StripPrefix %q: GET %s reached %q, want %q", tt.prefix, tt.path, body, tt.want)
		}
	}
}

func TestPoolNoUpstream503(t *testing.T) {
	leaktest.Check(t)
	t.Run("empty", func(t *testing.T) {
		px := poolServer(t, &Pool{Logger: quiet()})
		res, err := client(t).Get(px + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 503 || res.Header.Get("Retry-After") != "1" {
			t.Errorf("status %d Retry-After %q, want 503 and 1", res.StatusCode, res.Header.Get("Retry-After"))
		}
	})
	t.Run("all down", func(t *testing.T) {
		pool := &Pool{Logger: quiet(), Passive: &PassiveHealth{Failures: 1, CoolDown: 30 * time.Second}}
		mustAdd(t, pool, "dead", "http://"+deadAddr(t))
		px := poolServer(t, pool, func(p *sluice.Proxy) { p.Retry = &sluice.RetryPolicy{Attempts: 1} })
		c := client(t)
		if status, _, _ := lbDo(c, "GET", px+"/", ""); status != 502 {
			t.Fatalf("first request: status %d, want 502", status)
		}
		res, err := c.Get(px + "/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		if res.StatusCode != 503 || ra < 2 || ra > 30 {
			t.Errorf("status %d Retry-After %q, want 503 and the cool-down left (2..30)", res.StatusCode, res.Header.Get("Retry-After"))
		}
	})
}

func TestPoolUpstreamTimeout504(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	var slowHits atomic.Int32
	slow := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	fast := newBackend(t, "fast")

	t.Run("single target", func(t *testing.T) {
		pool := &Pool{Logger: quiet()}
		mustAdd(t, pool, "a-slow", slow.URL)
		px := poolServer(t, pool, func(p *sluice.Proxy) { p.ResponseHeaderTimeout = 50 * time.Millisecond })
		if status, _, _ := lbDo(client(t), "GET", px+"/", ""); status != 504 {
			t.Errorf("status %d, want 504", status)
		}
		if s := statsOf(pool, "a-slow"); s.Failures != 1 || s.InFlight != 0 {
			t.Errorf("stats %+v, want one failure, none in flight", s)
		}
	})
	t.Run("idempotent retry moves on", func(t *testing.T) {
		pool := &Pool{Logger: quiet()}
		mustAdd(t, pool, "a-slow", slow.URL)
		mustAdd(t, pool, "b-fast", fast.URL)
		px := poolServer(t, pool, func(p *sluice.Proxy) {
			p.ResponseHeaderTimeout = 50 * time.Millisecond
			p.Retry = &sluice.RetryPolicy{Attempts: 2, Idempotent: true}
		})
		if status, backend, _ := lbDo(client(t), "GET", px+"/", ""); status != 200 || backend != "fast" {
			t.Errorf("status %d from %q, want 200 from the second target", status, backend)
		}
	})
}

// failingServer is a raw upstream that reads a request (and its body),
// counts it, optionally writes prefix, then resets the connection.
func failingServer(t *testing.T, prefix string) (*rawServer, *atomic.Int32) {
	var hits atomic.Int32
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		hits.Add(1)
		io.WriteString(c, prefix)
		c.(*net.TCPConn).SetLinger(0)
	})
	return s, &hits
}

func TestPoolRetrySafety(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name        string
		first       string // "reset" (after reading the request), "dead", "hints", "partial"
		method      string
		body        string
		replayLimit int64
		wantStatus  int
		wantFirst   int32 // requests the first target got
		wantSecond  int32
	}{
		{"POST with body never sent twice", "reset", "POST", "pay once", 0, 502, 1, 0},
		{"POST without body not retried after sent", "reset", "POST", "", 0, 502, 1, 0},
		{"PUT body replayed", "reset", "PUT", "idempotent body", 0, 200, 1, 1},
		{"PUT body over replay limit", "reset", "PUT", strings.Repeat("x", 100), 10, 502, 1, 0},
		{"GET retried", "reset", "GET", "", 0, 200, 1, 1},
		{"POST after connect failure", "dead", "POST", "not sent yet", 0, 200, 0, 1},
		{"no retry after 1xx reached the client", "hints", "GET", "", 0, 502, 1, 0},
		{"no retry after response started", "partial", "GET", "", 0, -1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			second := newBackend(t, "second")
			var firstURL string
			var firstHits *atomic.Int32
			switch tt.first {
			case "dead":
				firstURL, firstHits = "http://"+deadAddr(t), new(atomic.Int32)
			case "reset":
				var s *rawServer
				s, firstHits = failingServer(t, "")
				firstURL = s.URL()
			case "hints":
				var s *rawServer
				s, firstHits = failingServer(t, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
				firstURL = s.URL()
			case "partial":
				var s *rawServer
				s, firstHits = failingServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				firstURL = s.URL()
			}
			pool := &Pool{Logger: quiet()}
			mustAdd(t, pool, "a-first", firstURL)
			mustAdd(t, pool, "b-second", second.URL)
			px := poolServer(t, pool, func(p *sluice.Proxy) {
				p.Retry = &sluice.RetryPolicy{Attempts: 3, Idempotent: true, ReplayLimit: tt.replayLimit}
			})
			status, _, body := lbDo(client(t), tt.method, px+"/r", tt.body)
			if tt.wantStatus == -1 {
				// The response started: the client connection is
				// aborted, never a complete-looking response.
				if status != 0 && !strings.HasPrefix(body, "read error") {
					t.Errorf("status %d body %q, want an aborted response", status, body)
				}
			} else if status != tt.wantStatus {
				t.Errorf("status %d (%s), want %d", status, body, tt.wantStatus)
			}
			if status == 200 && tt.first != "partial" {
				if want := "second /r " + tt.body; body != want {
					t.Errorf("second target got %q, want %q", body, want)
				}
			}
			if got, want := [2]int32{firstHits.Load(), second.hits.Load()}, [2]int32{tt.wantFirst, tt.wantSecond}; got != want {
				t.Errorf("requests received by (first, second) = %v, want %v", got, want)
			}
		})
	}
}

func TestPoolMembershipChangesUnderLoad(t *testing.T) {
	leaktest.Check(t)
	backends := make([]*countingBackend, 5)
	for i := range backends {
		backends[i] = newBackend(t, "b"+strconv.Itoa(i))
	}
	for _, policy := range []struct {
		name string
		p    Policy
	}{
		{"round-robin", RoundRobin()},
		{"least-connections", LeastConnections()},
		{"two-choices", RandomTwoChoices()},
		{"consistent-hash", ConsistentHash(HashHeader("X-Key"))},
		{"weighted", WeightedRoundRobin()},
	} {
		t.Run(policy.name, func(t *testing.T) {
			pool := &Pool{Logger: quiet(), Policy: policy.p}
			mustAdd(t, pool, "stable", backends[0].URL)
			px := poolServer(t, pool)
			c := client(t)
			stop := make(chan struct{})
			var churn sync.WaitGroup
			churn.Add(1)
			go func() {
				defer churn.Done()
				ctx := context.Background()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b := backends[1+i%4]
					id := "churn-" + strconv.Itoa(i%4)
					if i%8 < 4 {
						_ = pool.Add(ctx, Member{ID: id, URL: b.URL, Weight: 1 + i%3})
					} else {
						_ = pool.Remove(ctx, id)
					}
				}
			}()
			var wg sync.WaitGroup
			errs := make(chan string, 1)
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 40 {
						req, _ := http.NewRequest("GET", px+"/load", nil)
						req.Header.Set("X-Key", strconv.Itoa(w*1000+i))
						res, err := c.Do(req)
						if err != nil {
							select {
							case errs <- err.Error():
							default:
							}
							return
						}
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != 200 {
							select {
							case errs <- res.Status:
							default:
							}
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			churn.Wait()
			select {
			case e := <-errs:
				t.Fatalf("request failed during membership churn: %s", e)
			default:
			}
			var total uint64
			for _, s := range pool.Stats() {
				total += s.Requests
				if s.InFlight != 0 {
					t.Errorf("%s: %d in flight after the load", s.ID, s.InFlight)
				}
			}
			if total == 0 {
				t.Error("no requests counted")
			}
		})
	}
}

func TestPoolActiveHealthFlapping(t *testing.T) {
	leaktest.Check(t)
	var sick atomic.Bool
	var flappyHits atomic.Int32
	flappy := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		flappyHits.Add(1)
		w.Header().Set("X-Backend", "flappy")
	})
	steady := newBackend(t, "steady")
	pool := &Pool{Logger: quiet(), Health: &HealthCheck{Path: "/healthz", Interval: 10 * time.Millisecond, Timeout: 5 * time.Second, Rise: 2, Fall: 2, Jitter: -1}}
	mustAdd(t, pool, "flappy", flappy.URL)
	mustAdd(t, pool, "steady", steady.URL)
	runPool(t, pool)
	px := poolServer(t, pool)
	c := client(t)
	for round := range 3 {
		sick.Store(true)
		eventually(t, "flappy marked down", func() bool { return !statsOf(pool, "flappy").Healthy })
		before := flappyHits.Load()
		for range 6 {
			if status, backend, _ := lbDo(c, "GET", px+"/", ""); status != 200 || backend != "steady" {
				t.Fatalf("round %d: status %d from %q while flappy is down", round, status, backend)
			}
		}
		if flappyHits.Load() != before {
			t.Fatalf("round %d: a down target got requests", round)
		}
		sick.Store(false)
		eventually(t, "flappy back up", func() bool { return statsOf(pool, "flappy").Healthy })
		eventually(t, "flappy serving again", func() bool {
			lbDo(c, "GET", px+"/", "")
			return flappyHits.Load() > before
		})
	}
}

func TestPoolPassiveHealth(t *testing.T) {
	leaktest.Check(t)
	var broken atomic.Bool
	broken.Store(true)
	var hits atomic.Int32
	flaky := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			hits.Add(1)
			if broken.Load() {
				c.(*net.TCPConn).SetLinger(0)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Backend: flaky\r\nContent-Length: 0\r\n\r\n")
		}
	})
	steady := newBackend(t, "steady")
	logs := &logRecorder{}
	pool := &Pool{Logger: logs.logger(), Passive: &PassiveHealth{Failures: 2, Window: time.Minute, CoolDown: 50 * time.Millisecond}}
	mustAdd(t, pool, "flaky", flaky.URL())
	mustAdd(t, pool, "steady", steady.URL)
	px := poolServer(t, pool, func(p *sluice.Proxy) { p.Retry = &sluice.RetryPolicy{Attempts: 2, Idempotent: true} })
	c := client(t)
	// Every request succeeds (retried on steady) while flaky fails twice
	// and is taken out.
	for i := 0; statsOf(pool, "flaky").Healthy; i++ {
		if status, _, _ := lbDo(c, "GET", px+"/", ""); status != 200 {
			t.Fatalf("request %d: status %d", i, status)
		}
		if i > 10 {
			t.Fatal("flaky never taken out")
		}
	}
	if s := statsOf(pool, "flaky"); s.Failures != 2 {
		t.Errorf("flaky failures = %d, want 2", s.Failures)
	}
	// After the cool-down it is tried again: fixed now, it serves.
	broken.Store(false)
	eventually(t, "flaky back after cool-down", func() bool {
		_, backend, _ := lbDo(c, "GET", px+"/", "")
		return backend == "flaky"
	})
	// Both changes are logged: down, and back.
	for _, want := range []string{"target down (passive)", "target back (passive cool-down over)"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// A Pool with active health checks whose Run never started says so,
// once, after its grace.
func TestPoolWarnsWithoutRun(t *testing.T) {
	logs := &logRecorder{}
	pool := &Pool{Logger: logs.logger(), Health: &HealthCheck{Path: "/health"}}
	mustAdd(t, pool, "a", "http://127.0.0.1:1")
	pr := &sluice.ProxyRequest{In: httptest.NewRequest("GET", "/", nil)}
	pr.Out = pr.In.Clone(pr.In.Context())
	pool.Direct(pr)
	if strings.Contains(logs.String(), "Run is not running") {
		t.Fatal("warned within the grace")
	}
	pool.epoch = pool.epoch.Add(-runGrace - time.Second)
	pool.Direct(pr)
	pool.Direct(pr)
	if n := strings.Count(logs.String(), "Run is not running"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, logs.String())
	}
}

func TestPoolWebSocketThroughObserver(t *testing.T) {
	leaktest.Check(t)
	ws := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		io.Copy(c, br) // echo
	})
	pool := &Pool{Logger: quiet()}
	mustAdd(t, pool, "ws", ws.URL())
	px := poolServer(t, pool)
	conn, err := net.Dial("tcp", strings.TrimPrefix(px, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nhello")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 101 {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if s := statsOf(pool, "ws"); s.InFlight != 1 {
		t.Errorf("open tunnel: %d in flight, want 1", s.InFlight)
	}
	conn.Close()
	eventually(t, "tunnel end observed", func() bool { return statsOf(pool, "ws").InFlight == 0 })
}

// TestHealthCheckDefaults: the zero values of HealthCheck and what an
// explicit Timeout means (a check may outlast a short Interval: a
// loaded machine must not take healthy targets out).
func TestHealthCheckDefaults(t *testing.T) {
	tests := []struct {
		hc                HealthCheck
		interval, timeout time.Duration
		jitter            float64
	}{
		{HealthCheck{}, 5 * time.Second, 2 * time.Second, 0.1},
		{HealthCheck{Interval: time.Second}, time.Second, time.Second, 0.1},
		{HealthCheck{Interval: 10 * time.Millisecond, Timeout: 5 * time.Second}, 10 * time.Millisecond, 5 * time.Second, 0.1},
		{HealthCheck{Timeout: 300 * time.Millisecond, Jitter: -1}, 5 * time.Second, 300 * time.Millisecond, 0},
		{HealthCheck{Jitter: 3}, 5 * time.Second, 2 * time.Second, 1},
	}
	for _, tt := range tests {
		if got, want := [3]any{tt.hc.interval(), tt.hc.timeout(), tt.hc.jitter()}, [3]any{tt.interval, tt.timeout, tt.jitter}; got != want {
			t.Errorf("%+v: (interval, timeout, jitter) = %v, want %v", tt.hc, got, want)
		}
	}
}

func TestMemberValidation(t *testing.T) {
	tests := []struct {
		m       Member
		wantErr bool
		want    Member
	}{
		{Member{URL: "http://10.0.0.1:80"}, false, Member{ID: "http://10.0.0.1:80", URL: "http://10.0.0.1:80", Weight: 1}},
		{Member{ID: "x", URL: "https://h/p", Weight: 5000}, false, Member{ID: "x", URL: "https://h/p", Weight: MaxWeight}},
		{Member{URL: "ftp://h"}, true, Member{}},
		{Member{URL: "http://"}, true, Member{}},
		{Member{URL: "http://u:p@h"}, true, Member{}},
		{Member{URL: "http://h?q=1"}, true, Member{}},
		{Member{URL: "http://h", Weight: -1}, true, Member{}},
		{Member{URL: "h:80"}, true, Member{}},
	}
	for _, tt := range tests {
		m := tt.m
		_, err := m.normalize()
		if (err != nil) != tt.wantErr {
			t.Errorf("%+v: err %v, want error %v", tt.m, err, tt.wantErr)
			continue
		}
		if err == nil {
			if diff := cmp.Diff(tt.want, m); diff != "" {
				t.Errorf("%+v normalized (-want +got):\n%s", tt.m, diff)
			}
		}
	}
}

func TestSharedRegistryTwoPools(t *testing.T) {
	leaktest.Check(t)
	reg := &MemoryRegistry{}
	a := &Pool{Logger: quiet(), Registry: reg, SyncInterval: 5 * time.Millisecond, Passive: &PassiveHealth{Failures: 1, CoolDown: time.Minute}}
	b := &Pool{Logger: quiet(), Registry: reg, SyncInterval: 5 * time.Millisecond}
	runPool(t, a)
	runPool(t, b)
	backend := newBackend(t, "shared")
	mustAdd(t, a, "shared", backend.URL)
	eventually(t, "member seen by the other pool", func() bool { return statsOf(b, "shared").Healthy })
	if status, name, _ := lbDo(client(t), "GET", poolServer(t, b)+"/", ""); status != 200 || name != "shared" {
		t.Errorf("via the other pool: status %d from %q", status, name)
	}
	// A passive failure seen by a is shared with b.
	withRequest(t, nil, "", func(pr *sluice.ProxyRequest) {
		if err := a.Direct(pr); err != nil {
			t.Fatal(err)
		}
		a.Observe(pr, sluice.Result{Upstream: pr.Out.URL.Host, Err: fmt.Errorf("dial: %w", syscallRefused)})
	})
	eventually(t, "down mark seen by the other pool", func() bool { return !statsOf(b, "shared").Healthy })
	// Removal too.
	if err := b.Remove(context.Background(), "shared"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "removal seen", func() bool { return len(a.Stats()) == 0 })
}

var syscallRefused = &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connection refused")}

func TestRegistrationExpires(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet(), SyncInterval: 5 * time.Millisecond}
	runPool(t, pool)
	ctx := context.Background()
	if err := pool.Register(ctx, Member{ID: "short", URL: "http://127.0.0.1:1"}, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := pool.Add(ctx, Member{ID: "static", URL: "http://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if n := len(pool.Stats()); n != 2 {
		t.Fatalf("%d members right after Add, want 2", n)
	}
	eventually(t, "registration expiry", func() bool { return len(pool.Stats()) == 1 })
	if s := pool.Stats()[0]; s.ID != "static" {
		t.Errorf("remaining member %q, want static", s.ID)
	}
}

// TestRegisterNeedsTTL: a registration without a positive TTL is refused
// (a member without expiry is added with Add), and nothing is added.
func TestRegisterNeedsTTL(t *testing.T) {
	pool := &Pool{Logger: quiet()}
	for _, ttl := range []time.Duration{0, -time.Second} {
		err := pool.Register(context.Background(), Member{ID: "x", URL: "http://127.0.0.1:1"}, ttl)
		if err == nil || !strings.Contains(err.Error(), "Add") {
			t.Errorf("Register with ttl %v: %v, want an error pointing to Add", ttl, err)
		}
	}
	if n := len(pool.Stats()); n != 0 {
		t.Errorf("%d members after refused registrations", n)
	}
}

// TestAddMakesARegistrationPermanent: Add of a registered member's ID
// replaces its registration with one that does not expire.
func TestAddMakesARegistrationPermanent(t *testing.T) {
	pool := &Pool{Logger: quiet()}
	ctx := context.Background()
	m := Member{ID: "m", URL: "http://127.0.0.1:1"}
	if err := pool.Register(ctx, m, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := pool.Add(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Once the old TTL has run out, a reload still finds it.
	time.Sleep(40 * time.Millisecond)
	if err := pool.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(pool.Stats()); n != 1 {
		t.Errorf("%d members past the old TTL, want 1", n)
	}
}

// TestReplayWhileClientStillSending: the first target fails while the
// client is still sending a PUT body; the retry gets the whole body,
// what the abandoned attempt read included.
func TestReplayWhileClientStillSending(t *testing.T) {
	leaktest.Check(t)
	firstHit := make(chan struct{}, 1)
	first := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		firstHit <- struct{}{}
		c.(*net.TCPConn).SetLinger(0)
	})
	second := newBackend(t, "second")
	pool := &Pool{Logger: quiet()}
	mustAdd(t, pool, "a-first", first.URL())
	mustAdd(t, pool, "b-second", second.URL)
	px := poolServer(t, pool, func(p *sluice.Proxy) { p.Retry = &sluice.RetryPolicy{Attempts: 2, Idempotent: true} })

	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "part1-")
		<-firstHit
		io.WriteString(pw, "part2")
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", px+"/doc", pr)
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "second /doc part1-part2" {
		t.Errorf("%d %q, want the whole body on the second target", res.StatusCode, b)
	}
}

// Clients that leave an event stream are no failures of its target: the
// passive health must not take a healthy target out because its readers
// went away (found by the soak: a few closed streams emptied the pool).
func TestPoolPassiveHealthIgnoresClientsLeavingStreams(t *testing.T) {
	leaktest.Check(t)
	events := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	pool := &Pool{Logger: quiet(), Passive: &PassiveHealth{Failures: 1, Window: time.Minute, CoolDown: time.Minute}}
	mustAdd(t, pool, "events", events.URL)
	px := poolServer(t, pool)
	c := client(t)
	for i := range 3 {
		res, err := c.Get(px + "/events")
		if err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil || line != "data: 1\n" {
			t.Fatalf("stream %d: first line %q, %v", i, line, err)
		}
		res.Body.Close() // the client leaves
		eventually(t, "the proxy ends the attempt", func() bool { return statsOf(pool, "events").InFlight == 0 })
		if s := statsOf(pool, "events"); s.Failures != 0 || !s.Healthy {
			t.Fatalf("after %d streams left by their clients: failures %d, healthy %v (%s)", i+1, s.Failures, s.Healthy, s.DownReason)
		}
	}
}
