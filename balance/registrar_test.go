package balance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/balance/register"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestRegistrar(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet()}
	reg := &Registrar{Pool: pool, Secret: "s3cret", TTL: time.Minute, Allow: func(u *url.URL) error {
		if u.Hostname() != "127.0.0.1" {
			return errors.New("targets must be on loopback")
		}
		return nil
	}}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	c := client(t)
	auth := "Bearer s3cret"

	tests := []struct {
		name       string
		method     string
		query      string
		ctype      string
		body       string
		auth       string
		wantStatus int
		wantBody   string // substring
		wantIDs    []string
	}{
		{"no secret", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001"}`, "", 401, "secret", nil},
		{"wrong secret", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001"}`, "Bearer s3cres", 401, "secret", nil},
		{"json", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001","weight":2}`, auth, 200, `"ttl": 60`, []string{"http://127.0.0.1:9001"}},
		{"ttl shortened", "POST", "", "", `{"id":"b","url":"http://127.0.0.1:9002","ttl":5}`, auth, 200, `"ttl": 5`, []string{"b", "http://127.0.0.1:9001"}},
		{"query", "POST", "?url=http://127.0.0.1:9003&id=c", "", "", auth, 200, `"id": "c"`, []string{"b", "c", "http://127.0.0.1:9001"}},
		{"form", "POST", "", "application/x-www-form-urlencoded", "url=http%3A%2F%2F127.0.0.1%3A9004&id=d&weight=3", auth, 200, `"weight": 3`, []string{"b", "c", "d", "http://127.0.0.1:9001"}},
		{"not allowed", "POST", "", "", `{"url":"http://10.1.1.1:80"}`, auth, 403, "loopback", nil},
		{"bad scheme", "POST", "", "", `{"url":"ftp://127.0.0.1"}`, auth, 400, "scheme", nil},
		{"unknown field", "POST", "", "", `{"url":"http://127.0.0.1:1","color":"red"}`, auth, 400, "unknown field", nil},
		{"trailing data", "POST", "", "", `{"url":"http://127.0.0.1:1"} {}`, auth, 400, "trailing", nil},
		{"too large", "POST", "", "", `{"url":"http://127.0.0.1:1","id":"` + strings.Repeat("x", 5000) + `"}`, auth, 400, "4 KiB", nil},
		{"negative ttl", "POST", "", "", `{"url":"http://127.0.0.1:1","ttl":-1}`, auth, 400, "negative", nil},
		{"delete by id", "DELETE", "?id=c", "", "", auth, 204, "", []string{"b", "d", "http://127.0.0.1:9001"}},
		{"delete by json url", "DELETE", "", "", `{"url":"http://127.0.0.1:9001"}`, auth, 204, "", []string{"b", "d"}},
		{"delete without id", "DELETE", "", "", "", auth, 400, "want id", nil},
		{"list", "GET", "", "", "", auth, 200, `"id": "b"`, []string{"b", "d"}},
		{"method", "PATCH", "", "", "", auth, 405, "not allowed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+"/register"+tt.query, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus || !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("%d %s, want %d with %q", res.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if tt.wantIDs != nil {
				var ids []string
				for _, s := range pool.Stats() {
					ids = append(ids, s.ID)
				}
				if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
					t.Errorf("members (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestRegisterClientHeartbeatAndDeregister: a register.Client keeps its
// registration with a Registrar alive past several TTLs, and removes it
// when its context ends.
func TestRegisterClientHeartbeatAndDeregister(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet(), SyncInterval: 5 * time.Millisecond}
	runPool(t, pool)
	// A 1 s TTL: the client renews every ~333 ms.
	srv := httptest.NewServer(&Registrar{Pool: pool, Secret: "k", TTL: time.Second})
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	r := &register.Client{Endpoint: srv.URL, Secret: "k", ID: "self", URL: "http://127.0.0.1:9", Logger: quiet()}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	eventually(t, "registration", func() bool { return len(pool.Stats()) == 1 })
	// Past several TTLs, the heartbeats keep it.
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if len(pool.Stats()) != 1 {
			t.Fatal("registration lapsed despite heartbeats")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(pool.Stats()); n != 0 {
		t.Errorf("%d members after the client stopped, want 0 (deregistered)", n)
	}
}

func FuzzParseRegistration(f *testing.F) {
	f.Add([]byte(`{"url":"http://127.0.0.1:9001","weight":2,"ttl":30,"id":"a"}`))
	f.Add([]byte(`{"url":""}`))
	f.Add([]byte(`{"url":"http://h"} x`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"ttl":-5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, err := parseRegistration(body)
		if err != nil {
			return
		}
		if reg.TTLSeconds < 0 || len(reg.URL) > 2048 {
			t.Fatalf("accepted %+v", reg)
		}
		// What parses re-encodes and parses to the same value.
		b, _ := json.Marshal(reg)
		again, err := parseRegistration(b)
		if err != nil || again != reg {
			t.Fatalf("round trip: %+v -> %s -> %+v, %v", reg, b, again, err)
		}
		m := Member{ID: reg.ID, URL: reg.URL, Weight: reg.Weight}
		if u, err := m.normalize(); err == nil {
			if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || m.Weight < 1 || m.Weight > MaxWeight {
				t.Fatalf("normalize accepted %+v", m)
			}
		}
	})
}

// registerOnce sends one request to h and returns the status and body.
func registerOnce(h http.Handler, method, ctype, body string, hdr ...string) (int, string) {
	req := httptest.NewRequest(method, "http://lb.test/register", strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestRegistrarMaxTargets: registrations of new IDs stop at MaxTargets
// (default DefaultMaxTargets) with 503; heartbeats of members go on.
func TestRegistrarMaxTargets(t *testing.T) {
	reg := func(h http.Handler, id string, port int) (int, string) {
		return registerOnce(h, "POST", "application/json", fmt.Sprintf(`{"id":%q,"url":"http://127.0.0.1:%d"}`, id, port))
	}
	t.Run("set", func(t *testing.T) {
		pool := &Pool{Logger: quiet()}
		h := &Registrar{Pool: pool, MaxTargets: 2}
		for i, want := range []int{200, 200, 503} {
			if code, body := reg(h, fmt.Sprint("t", i), 9000+i); code != want || (code == 503 && !strings.Contains(body, "pool is full")) {
				t.Fatalf("registration %d: %d %s, want %d", i, code, body, want)
			}
		}
		if code, body := reg(h, "t0", 9000); code != 200 {
			t.Fatalf("heartbeat of a member at the cap: %d %s", code, body)
		}
		if code, _ := registerOnce(h, "DELETE", "", `{"id":"t0"}`); code != 204 {
			t.Fatalf("delete: %d", code)
		}
		if code, body := reg(h, "t2", 9002); code != 200 {
			t.Fatalf("registration after a delete: %d %s", code, body)
		}
	})
	t.Run("default", func(t *testing.T) {
		pool := &Pool{Logger: quiet()}
		h := &Registrar{Pool: pool}
		for i := range DefaultMaxTargets {
			if code, body := reg(h, fmt.Sprint("t", i), 10000+i); code != 200 {
				t.Fatalf("registration %d: %d %s", i, code, body)
			}
		}
		if code, body := reg(h, "one-more", 20000); code != http.StatusServiceUnavailable {
			t.Fatalf("registration past the default cap: %d %s, want 503", code, body)
		}
		if n := len(pool.Stats()); n != DefaultMaxTargets {
			t.Errorf("%d members, want %d", n, DefaultMaxTargets)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		pool := &Pool{Logger: quiet()}
		h := &Registrar{Pool: pool, MaxTargets: -1}
		for i := range DefaultMaxTargets + 1 {
			if code, body := reg(h, fmt.Sprint("t", i), 10000+i); code != 200 {
				t.Fatalf("registration %d: %d %s", i, code, body)
			}
		}
	})
}

// TestRegistrarRefusesLinkLocalAndMetadata: a registration must not point
// the pool at the cloud metadata service (or anything link-local) unless
// the Registrar allows it, whatever the spelling of the address.
func TestRegistrarRefusesLinkLocalAndMetadata(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "rebind.test":
			return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("169.254.169.254")}, nil
		case "fine.test":
			return []netip.Addr{netip.MustParseAddr("10.0.0.2")}, nil
		}
		return nil, errors.New("no such host")
	}
	tests := []struct {
		url           string
		want, allowed int // status by default, and with AllowLinkLocal
	}{
		{"http://169.254.169.254/", 403, 200},
		{"http://169.254.169.254:80/latest", 403, 200},
		{"http://169.254.1.1:8080", 403, 200},
		{"http://[fe80::1]:8080", 403, 200},
		{"http://[fe80::1%25eth0]:8080", 403, 200},
		{"http://[febf::1]:8080", 403, 200},
		{"http://[fd00:ec2::254]/", 403, 200},
		{"http://[::ffff:169.254.169.254]/", 403, 200},
		{"http://100.100.100.200/", 403, 200},
		{"http://metadata.google.internal/", 403, 200},
		{"http://METADATA.google.internal./", 403, 200},
		{"http://rebind.test:8080", 403, 200},
		// Never targets, allowed or not.
		{"http://0.0.0.0:8080", 403, 403},
		{"http://[::]:8080", 403, 403},
		{"http://224.0.0.1:8080", 403, 403},
		{"http://255.255.255.255:8080", 403, 403},
		// Numbers that resolvers read as 169.254.169.254.
		{"http://2852039166/", 403, 403},
		{"http://0xa9fea9fe/", 403, 403},
		{"http://0251.0376.0251.0376/", 403, 403},
		{"http://169.254.169.254./", 403, 200},
		// Fine.
		{"http://127.0.0.1:8080", 200, 200},
		{"http://10.1.2.3:8080", 200, 200},
		{"http://[fd00::1]:8080", 200, 200},
		{"http://[::1]:8080", 200, 200},
		{"http://fine.test:8080", 200, 200},
		{"http://unresolved.test:8080", 200, 200},
		{"http://169.254.example:8080", 200, 200},
	}
	for _, tt := range tests {
		for _, allow := range []bool{false, true} {
			h := &Registrar{Pool: &Pool{Logger: quiet()}, AllowLinkLocal: allow, lookup: lookup}
			code, body := registerOnce(h, "POST", "application/json", fmt.Sprintf(`{"url":%q}`, tt.url))
			want := tt.want
			if allow {
				want = tt.allowed
			}
			if code != want {
				t.Errorf("AllowLinkLocal=%v %s: %d %s, want %d", allow, tt.url, code, strings.TrimSpace(body), want)
			}
		}
	}
}

// TestRegistrarRequestForms: what newcomers send gets registered, or an
// error that says what is wrong.
func TestRegistrarRequestForms(t *testing.T) {
	tests := []struct {
		name, ctype, body string
		hdr               []string
		wantStatus        int
		wantBody          []string
	}{
		// curl -d sends application/x-www-form-urlencoded.
		{"json sent as a form", "application/x-www-form-urlencoded", `{"url":"http://127.0.0.1:9001","ttl":5}`, nil, 200, []string{`"ttl": 5`}},
		{"json as text/plain", "text/plain", ` {"url":"http://127.0.0.1:9001"}`, nil, 200, []string{`"url": "http://127.0.0.1:9001"`}},
		{"no url", "application/json", `{"id":"x"}`, nil, 400, []string{"no url"}},
		{"empty form", "application/x-www-form-urlencoded", `id=x`, nil, 400, []string{"no url"}},
		{"ttl over the cap", "application/json", `{"url":"http://127.0.0.1:9001","ttl":30}`, nil, 200, []string{`"ttl": 10`, `"warning": "ttl 30 s capped to 10 s`}},
		{"health path", "application/json", `{"url":"http://127.0.0.1:9001","health_path":"/status"}`, nil, 200, []string{`"health_path": "/status"`}},
		{"relative health path", "application/json", `{"url":"http://127.0.0.1:9001","health_path":"status"}`, nil, 400, []string{"health path"}},
		{"health path with a query", "application/json", `{"url":"http://127.0.0.1:9001","health_path":"/s?x=1"}`, nil, 400, []string{"health path"}},
		{"health path with a control", "application/json", `{"url":"http://127.0.0.1:9001","health_path":"/s\r\nX: y"}`, nil, 400, []string{"health path"}},
		{"cross-site browser post", "text/plain", `{"url":"http://127.0.0.1:9001"}`, []string{"Sec-Fetch-Site", "cross-site"}, 403, []string{"cross-origin"}},
		{"cross-origin browser post", "text/plain", `{"url":"http://127.0.0.1:9001"}`, []string{"Origin", "http://evil.test"}, 403, []string{"cross-origin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Registrar{Pool: &Pool{Logger: quiet()}, TTL: 10 * time.Second}
			code, body := registerOnce(h, "POST", tt.ctype, tt.body, tt.hdr...)
			if code != tt.wantStatus {
				t.Errorf("status %d %s, want %d", code, body, tt.wantStatus)
			}
			for _, s := range tt.wantBody {
				if !strings.Contains(body, s) {
					t.Errorf("body %s, want %q in it", body, s)
				}
			}
		})
	}
}

// TestRegisteredHealthPath: a target registered with its own health path
// is checked there, and a target taken out says why.
func TestRegisteredHealthPath(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	checks := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		checks[r.Host+" "+r.URL.Path]++
		mu.Unlock()
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(up.Close)
	other := httptest.NewServer(up.Config.Handler)
	t.Cleanup(other.Close)
	logs := &logRecorder{}
	pool := &Pool{Logger: logs.logger(), SyncInterval: 5 * time.Millisecond,
		Health: &HealthCheck{Path: "/healthz", Interval: 5 * time.Millisecond, Timeout: 5 * time.Second, Jitter: -1, Fall: 2, Rise: 1}}
	h := &Registrar{Pool: pool}
	if code, body := registerOnce(h, "POST", "", fmt.Sprintf(`{"id":"own","url":%q,"health_path":"/status"}`, up.URL)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if code, body := registerOnce(h, "POST", "", fmt.Sprintf(`{"id":"default","url":%q}`, other.URL)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	runPool(t, pool)
	eventually(t, "the target without /healthz taken out", func() bool { return !statsOf(pool, "default").Healthy })
	host := strings.TrimPrefix(up.URL, "http://")
	eventually(t, "three checks of /status", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return checks[host+" /status"] >= 3
	})
	if s := statsOf(pool, "own"); !s.Healthy || s.DownReason != "" {
		t.Errorf("target checked on its own health path: %+v", s)
	}
	mu.Lock()
	if n := checks[host+" /healthz"]; n != 0 {
		t.Errorf("%d checks of /healthz on the target registered with /status", n)
	}
	mu.Unlock()
	s := statsOf(pool, "default")
	if !strings.Contains(s.DownReason, "/healthz") || !strings.Contains(s.DownReason, "404") {
		t.Errorf("down reason %q, want the check path and its status", s.DownReason)
	}
	if !strings.Contains(logs.String(), "404") {
		t.Errorf("the log does not say why the target went down:\n%s", logs.String())
	}
}
