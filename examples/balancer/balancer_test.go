package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
)

func testClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, url string) (int, string, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("X-Backend"), string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startBalancer runs the balancer in process until the test ends, and
// returns the base URLs of its client and admin listeners.
func startBalancer(t *testing.T, cfg config) (base, admin string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	urlc := make(chan [2]string, 1)
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx, cfg, func(base, admin string) { urlc <- [2]string{base, admin} })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case u := <-urlc:
		return u[0], u[1]
	case <-done:
		t.FailNow() // the cleanup reports the error
	}
	return "", ""
}

func defaultConfig() config {
	return config{
		listen: "127.0.0.1:0", admin: "127.0.0.1:0", redisPrefix: "sluice:test", policy: "round-robin",
		backends: 3, ttl: 10 * time.Second, maxTargets: balance.DefaultMaxTargets, healthPath: "/healthz",
		healthInterval: 20 * time.Millisecond, coolDown: 100 * time.Millisecond,
		timeout: 5 * time.Second, attempts: 3,
	}
}

func stats(t *testing.T, c *http.Client, base string) []balance.Stats {
	t.Helper()
	_, _, body := get(t, c, base+"/_balancer/stats")
	var s []balance.Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("stats %q: %v", body, err)
	}
	return s
}

func TestDemoRotationHealthAndRetries(t *testing.T) {
	leaktest.Check(t)
	base, admin := startBalancer(t, defaultConfig())
	c := testClient(t)
	eventually(t, "three demo backends registered", func() bool { return len(stats(t, c, admin)) == 3 })

	var seq []string
	for range 6 {
		status, backend, body := get(t, c, base+"/hello")
		if status != 200 || !strings.Contains(body, "GET /hello") {
			t.Fatalf("status %d body %q", status, body)
		}
		seq = append(seq, backend)
	}
	if diff := cmp.Diff([]string{"1", "2", "3", "1", "2", "3"}, seq); diff != "" {
		t.Errorf("rotation (-want +got):\n%s", diff)
	}

	// Kill backend 2: every request is still answered (retries), and the
	// health checks take it out.
	res, err := c.Post(admin+"/_balancer/demo/stop?n=2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for i := range 9 {
		if status, backend, _ := get(t, c, base+"/"); status != 200 || backend == "2" {
			t.Fatalf("request %d after the kill: status %d from backend %q", i, status, backend)
		}
	}
	eventually(t, "backend 2 marked down", func() bool {
		for _, s := range stats(t, c, admin) {
			if s.ID == "demo-2" {
				return !s.Healthy
			}
		}
		return false
	})
	// The page is another snapshot: the passive cool-down may end before
	// the active checks take over, so wait for a page showing it.
	eventually(t, "the status page showing demo-2 down and why", func() bool {
		_, _, page := get(t, c, admin+"/_balancer/")
		return strings.Contains(page, `<tr class="down"><td>demo-2</td>`) &&
			(strings.Contains(page, "passive health: too many failed requests") || strings.Contains(page, "connection refused"))
	})

	// Restarted, it comes back (after the passive cool-down).
	res, err = c.Post(admin+"/_balancer/demo/start?n=2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	eventually(t, "backend 2 serving again", func() bool {
		_, backend, _ := get(t, c, base+"/")
		return backend == "2"
	})
}

func TestRegisterEndpointAndNoTarget(t *testing.T) {
	leaktest.Check(t)
	cfg := defaultConfig()
	cfg.backends = 0
	cfg.secret = "k"
	base, admin := startBalancer(t, cfg)
	c := testClient(t)

	// No target: 503 with Retry-After.
	res, err := c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Errorf("empty pool: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "external "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	body := fmt.Sprintf(`{"url":%q,"ttl":5}`, up.URL)
	req, _ := http.NewRequest("POST", admin+"/register", strings.NewReader(body))
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("registration without the secret: %d, want 401", res.StatusCode)
	}
	req, _ = http.NewRequest("POST", admin+"/register", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("registration: %d", res.StatusCode)
	}
	if status, _, b := get(t, c, base+"/x"); status != 200 || b != "external /x" {
		t.Errorf("via the registered target: %d %q", status, b)
	}
}

func TestUpstreamTimeout504(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	cfg := defaultConfig()
	cfg.backends = 0
	cfg.timeout = 100 * time.Millisecond
	cfg.attempts = 1
	base, admin := startBalancer(t, cfg)
	c := testClient(t)
	res, err := c.Post(admin+"/register", "application/json", strings.NewReader(fmt.Sprintf(`{"url":%q}`, slow.URL)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if status, _, _ := get(t, c, base+"/slow"); status != 504 {
		t.Errorf("status %d, want 504", status)
	}
}

func newRedis(t *testing.T) *redis.Client {
	rs := realserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestRedisRegistry(t *testing.T) {
	rdb := newRedis(t)
	ctx := context.Background()
	reg := &RedisRegistry{Client: rdb, Prefix: "t"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := func() []string {
		ms, err := reg.Members(ctx)
		must(err)
		var out []string
		for _, m := range ms {
			s := m.ID
			if m.Down {
				s += " down"
			}
			out = append(out, s)
		}
		return out
	}
	must(reg.Put(ctx, balance.Member{ID: "a", URL: "http://127.0.0.1:1", Weight: 2}, 0))
	must(reg.Put(ctx, balance.Member{ID: "b", URL: "http://127.0.0.1:2"}, 100*time.Millisecond))
	must(reg.Put(ctx, balance.Member{URL: "http://127.0.0.1:3"}, time.Minute))
	if diff := cmp.Diff([]string{"a", "b", "http://127.0.0.1:3"}, ids()); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	ms, _ := reg.Members(ctx)
	if ms[0].Weight != 2 || ms[0].URL != "http://127.0.0.1:1" {
		t.Errorf("member a = %+v", ms[0])
	}
	must(reg.MarkDown(ctx, "a", time.Minute))
	eventually(t, "b expired", func() bool { return len(ids()) == 2 })
	if diff := cmp.Diff([]string{"a down", "http://127.0.0.1:3"}, ids()); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	if n := rdb.SCard(ctx, "t:members").Val(); n != 2 {
		t.Errorf("expired id still in the set: %d ids", n)
	}
	must(reg.MarkDown(ctx, "a", 0))
	must(reg.Delete(ctx, "http://127.0.0.1:3"))
	if diff := cmp.Diff([]string{"a"}, ids()); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
}

func TestTwoPoolsShareRedis(t *testing.T) {
	leaktest.Check(t)
	rdb := newRedis(t)
	newPool := func() *balance.Pool {
		p := &balance.Pool{Registry: &RedisRegistry{Client: rdb, Prefix: "shared"}, SyncInterval: 10 * time.Millisecond,
			Passive: &balance.PassiveHealth{Failures: 1, CoolDown: time.Minute}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return p
	}
	a, b := newPool(), newPool()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	t.Cleanup(up.Close)

	regA := httptest.NewServer(&balance.Registrar{Pool: a})
	t.Cleanup(regA.Close)
	proxyB := &sluice.Proxy{Director: b}
	srvB := httptest.NewServer(proxyB)
	t.Cleanup(func() { srvB.Close(); proxyB.CloseIdleConnections() })
	c := testClient(t)

	res, err := c.Post(regA.URL, "application/json", strings.NewReader(fmt.Sprintf(`{"id":"up","url":%q,"ttl":60}`, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	eventually(t, "b serving the target registered on a", func() bool {
		status, _, body := get(t, c, srvB.URL)
		return status == 200 && body == "up"
	})

	// Health is shared: the target fails on a, b stops using it.
	up.Close()
	proxyA := &sluice.Proxy{Director: a, Retry: &sluice.RetryPolicy{Attempts: 1}}
	srvA := httptest.NewServer(proxyA)
	t.Cleanup(func() { srvA.Close(); proxyA.CloseIdleConnections() })
	if status, _, _ := get(t, c, srvA.URL); status != 502 {
		t.Fatalf("dead target via a: %d, want 502", status)
	}
	eventually(t, "b sees the down mark", func() bool {
		status, _, _ := get(t, c, srvB.URL)
		return status == 503
	})
}

// TestTwoBalancerProcesses runs the example as two processes sharing a
// real redis-server: a target registered on one is used by the other.
func TestTwoBalancerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example binary")
	}
	rs := realserver.StartRedis(t)
	bin := filepath.Join(t.TempDir(), "balancer")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	start := func() (base, admin string) {
		cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-backends", "0", "-redis", rs.Addr, "-redis-prefix", "procs")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		urlc := make(chan [2]string, 1)
		go func() {
			defer close(exited)
			re := regexp.MustCompile(`balancer: listening url=(\S+)/ admin=(\S+)/ `)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					urlc <- [2]string{m[1], m[2]}
				}
			}
			_ = cmd.Wait()
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		select {
		case u := <-urlc:
			return u[0], u[1]
		case <-exited:
			t.Fatal("balancer exited before listening")
		case <-time.After(30 * time.Second):
			t.Fatal("balancer not listening after 30 s")
		}
		return "", ""
	}
	one, oneAdmin := start()
	two, twoAdmin := start()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "target "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	c := testClient(t)
	if status, _, _ := get(t, c, two+"/"); status != 503 {
		t.Fatalf("second instance before registration: %d, want 503", status)
	}
	res, err := c.Post(oneAdmin+"/register", "application/json", strings.NewReader(fmt.Sprintf(`{"url":%q,"ttl":60}`, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("registration on the first instance: %d", res.StatusCode)
	}
	eventually(t, "second instance using the target", func() bool {
		status, _, body := get(t, c, two+"/shared")
		return status == 200 && body == "target /shared"
	})
	// Deregistered on the second, gone from the first.
	req, _ := http.NewRequest("DELETE", twoAdmin+"/register?url="+up.URL, nil)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	eventually(t, "first instance without the target", func() bool {
		status, _, _ := get(t, c, one+"/")
		return status == 503
	})
}

func TestStaticTargetWithoutHealthChecks(t *testing.T) {
	leaktest.Check(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "static "+r.URL.Path) // no /healthz: 404 there
	}))
	t.Cleanup(up.Close)
	cfg := defaultConfig()
	cfg.backends, cfg.healthPath, cfg.targets = 0, "", up.URL
	base, _ := startBalancer(t, cfg)
	c := testClient(t)
	for range 3 {
		if status, _, body := get(t, c, base+"/small"); status != 200 || body != "static /small" {
			t.Fatalf("%d %q", status, body)
		}
	}
}

// TestRegistrationNotOnPublicPort: the port that serves clients must not
// let them add targets (the example once served POST /register there,
// without a secret by default).
func TestRegistrationNotOnPublicPort(t *testing.T) {
	leaktest.Check(t)
	cfg := defaultConfig()
	cfg.backends = 0
	base, _ := startBalancer(t, cfg)
	c := testClient(t)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "attacker's target")
	}))
	t.Cleanup(evil.Close)
	res, err := c.Post(base+"/register", "application/json", strings.NewReader(fmt.Sprintf(`{"url":%q}`, evil.URL)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if status, _, body := get(t, c, base+"/"); status != 503 {
		t.Errorf("after POST /register on the public port: %d %q, want 503 (no target)", status, body)
	}
}

func post(t *testing.T, c *http.Client, url, ctype, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestDocumentedRegistration runs the curl command of the doc comment:
// curl -d sends a form Content-Type with a JSON body, asks for more than
// the maximum TTL, and the target has no /healthz.
func TestDocumentedRegistration(t *testing.T) {
	leaktest.Check(t)
	checks := make(chan string, 100)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") == "sluice-health-check" {
			select {
			case checks <- r.URL.Path:
			default:
			}
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "no healthz here")
	}))
	t.Cleanup(up.Close)
	noHealthz := httptest.NewServer(up.Config.Handler)
	t.Cleanup(noHealthz.Close)
	cfg := defaultConfig()
	cfg.backends = 0
	base, admin := startBalancer(t, cfg)
	c := testClient(t)

	status, body := post(t, c, admin+"/register", "application/x-www-form-urlencoded",
		fmt.Sprintf(`{"url":%q,"ttl":30,"health_path":"/"}`, up.URL))
	if status != 200 || !strings.Contains(body, `"ttl": 10`) || !strings.Contains(body, "capped to 10 s") {
		t.Fatalf("documented registration: %d %s", status, body)
	}
	status, body = post(t, c, admin+"/register", "application/x-www-form-urlencoded",
		fmt.Sprintf(`{"id":"no-healthz","url":%q}`, noHealthz.URL))
	if status != 200 {
		t.Fatalf("second registration: %d %s", status, body)
	}
	// Three rounds of checks on "/" (only this target is checked there),
	// and it is still in.
	for n := 0; n < 3; {
		if <-checks == "/" {
			n++
		}
	}
	for _, s := range stats(t, c, admin) {
		if s.ID == up.URL && !s.Healthy {
			t.Errorf("target registered with health_path / taken out: %+v", s)
		}
	}
	if status, _, b := get(t, c, base+"/"); status != 200 || b != "no healthz here" {
		t.Errorf("via the targets: %d %q", status, b)
	}
	var why string
	eventually(t, "the target without /healthz out", func() bool {
		for _, s := range stats(t, c, admin) {
			if s.ID == "no-healthz" && !s.Healthy {
				why = s.DownReason
				return true
			}
		}
		return false
	})
	if !strings.Contains(why, "GET /healthz: 404 Not Found") {
		t.Errorf("down reason %q", why)
	}
	if _, _, page := get(t, c, admin+"/_balancer/"); !strings.Contains(page, "GET /healthz: 404 Not Found") {
		t.Errorf("the status page does not say why the target is out:\n%s", page)
	}
}

// TestRegistrationBounds: the pool has a size bound, refuses link-local
// and metadata targets unless told otherwise, and refuses browsers.
func TestRegistrationBounds(t *testing.T) {
	leaktest.Check(t)
	for _, allow := range []bool{false, true} {
		cfg := defaultConfig()
		cfg.backends, cfg.healthPath, cfg.maxTargets, cfg.allowLinkLocal = 0, "", 2, allow
		_, admin := startBalancer(t, cfg)
		c := testClient(t)
		wantMeta := 403
		if allow {
			wantMeta = 200
		}
		tests := []struct {
			body       string
			hdr        []string
			wantStatus int
			wantBody   string
		}{
			{`{"url":"http://169.254.169.254/"}`, nil, wantMeta, ""},
			{`{"url":"http://[fd00:ec2::254]/"}`, nil, wantMeta, ""},
			{`{"url":"http://127.0.0.1:1"}`, []string{"Sec-Fetch-Site", "cross-site"}, 403, "cross-origin"},
			{`{"url":"http://127.0.0.1:1"}`, nil, 200, ""},
			{`{"url":"http://127.0.0.1:2"}`, nil, 200, ""},
			{`{"url":"http://127.0.0.1:3"}`, nil, 503, "pool is full"},
			{`{"url":"http://127.0.0.1:1"}`, nil, 200, ""}, // a heartbeat
		}
		if allow {
			tests = tests[:1] // two of the three seats taken
		}
		for _, tt := range tests {
			status, body := post(t, c, admin+"/register", "application/json", tt.body, tt.hdr...)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("allow-link-local=%v %s: %d %s, want %d %q", allow, tt.body, status, body, tt.wantStatus, tt.wantBody)
			}
		}
	}
}

// TestAdminListenerHost: with no secret, the admin listener answers only
// requests addressed to an IP address or localhost (DNS rebinding).
func TestAdminListenerHost(t *testing.T) {
	leaktest.Check(t)
	for _, secret := range []string{"", "k"} {
		cfg := defaultConfig()
		cfg.backends, cfg.secret = 0, secret
		_, admin := startBalancer(t, cfg)
		c := testClient(t)
		port := admin[strings.LastIndexByte(admin, ':')+1:]
		for host, want := range map[string]int{"127.0.0.1:" + port: 200, "localhost:" + port: 200, "evil.test:" + port: 421} {
			if secret != "" {
				want = 200
			}
			req, _ := http.NewRequest("GET", admin+"/_balancer/stats", nil)
			req.Host = host
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Errorf("secret %q, Host %s: %d, want %d", secret, host, res.StatusCode, want)
			}
		}
	}
}

// TestFlags: settings that cannot work are refused at start, naming the
// flag; -h says what the program is before the flags.
func TestFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-admin", "10.0.0.1:8079", "-secret", "s3cret", "-policy", "hash-header:X-User", "-health-path", "", "-health-interval", "0"}, ""},
		{[]string{"-admin", "0.0.0.0:8079"}, "-admin \"0.0.0.0:8079\" is not a loopback address: set -secret"},
		{[]string{"-admin", ":8079"}, "-admin"},
		{[]string{"-admin", "127.0.0.1:8080"}, "-admin and -listen"},
		{[]string{"-listen", "8080"}, "-listen"},
		{[]string{"-policy", "fastest"}, "-policy"},
		{[]string{"-policy", "hash-header"}, "-policy"},
		{[]string{"-backends", "-1"}, "-backends"},
		{[]string{"-ttl", "500ms"}, "-ttl 500ms"},
		{[]string{"-ttl", "-1s"}, "-ttl"},
		{[]string{"-max-targets", "0"}, "-max-targets"},
		{[]string{"-health-path", "healthz"}, "-health-path"},
		{[]string{"-health-interval", "0"}, "-health-interval"},
		{[]string{"-cool-down", "-1s"}, "-cool-down"},
		{[]string{"-timeout", "0"}, "-timeout"},
		{[]string{"-strip-prefix", "app"}, "-strip-prefix"},
		{[]string{"-attempts", "0"}, "-attempts"},
		{[]string{"-redis", "127.0.0.1:6379", "-redis-prefix", ""}, "-redis-prefix"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var out strings.Builder
		_, err := parseFlags(tt.args, &out)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%q: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	var out strings.Builder
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.HasPrefix(out.String(), "balancer: a load balancer whose targets register themselves.\n") || !strings.Contains(out.String(), "-admin") {
		t.Errorf("-h prints:\n%s", out.String())
	}
}
