package balance

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// serveOn serves h on ln until the test ends. protocols, if not nil,
// says what the server speaks.
func serveOn(t *testing.T, ln net.Listener, h http.Handler, protocols *http.Protocols) {
	t.Helper()
	srv := &http.Server{Handler: h, Protocols: protocols}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// whoAmI answers with the protocol and Host it was reached with.
func whoAmI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("X-Host", r.Host)
}

func TestH2CAndUnixMembers(t *testing.T) {
	leaktest.Check(t)
	sock := filepath.Join(t.TempDir(), "app.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, uln, http.HandlerFunc(whoAmI), nil)
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2only := new(http.Protocols)
	h2only.SetUnencryptedHTTP2(true) // a gRPC-like upstream: HTTP/1.1 health checks would fail
	serveOn(t, hln, http.HandlerFunc(whoAmI), h2only)

	pool := &Pool{Logger: quiet(), Health: &HealthCheck{Path: "/healthz", Interval: 10 * time.Millisecond, Timeout: 5 * time.Second, Rise: 1, Fall: 1, Jitter: -1}}
	mustAdd(t, pool, "unix", "unix://"+sock)
	mustAdd(t, pool, "h2c", "h2c://"+hln.Addr().String())
	mustAdd(t, pool, "missing", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	runPool(t, pool)
	healthy := func() map[string]bool {
		m := map[string]bool{}
		for _, s := range pool.Stats() {
			m[s.ID] = s.Healthy
		}
		return m
	}
	want := map[string]bool{"unix": true, "h2c": true, "missing": false}
	eventually(t, "the health checks' verdict", func() bool { return cmp.Equal(want, healthy()) })

	px := newProxyServer(t, &sluice.Proxy{Director: pool})
	got := map[string]bool{}
	for range 4 {
		res, err := client(t).Get(px + "/p")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		got[res.Header.Get("X-Proto")+" "+res.Header.Get("X-Host")] = true
	}
	wantReached := map[string]bool{"HTTP/1.1 localhost": true, "HTTP/2.0 " + hln.Addr().String(): true}
	if diff := cmp.Diff(wantReached, got); diff != "" {
		t.Errorf("upstreams reached (-want +got):\n%s", diff)
	}
}

func TestMemberSchemes(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://10.0.0.1:80", true},
		{"https://10.0.0.1", true},
		{"h2c://10.0.0.1:50051", true},
		{"unix:///run/app.sock", true},
		{"unix:/run/app.sock", true},
		{"unix://host/run/app.sock", false},
		{"unix:relative.sock", false},
		{"unix:///run/app.sock?x=1", false},
		{"unix:///run/a\x01b", false},
		{"ftp://h", false},
	} {
		m := Member{URL: tc.url}
		if _, err := m.normalize(); (err == nil) != tc.ok {
			t.Errorf("member %q: err %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestRegistrarRefusesUnixTargets(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet()}
	srv := httptest.NewServer(&Registrar{Pool: pool, Secret: "s"})
	t.Cleanup(srv.Close)
	for _, body := range []string{`{"url":"unix:///var/run/docker.sock"}`, `{"url":"unix:/var/run/docker.sock"}`} {
		req, _ := http.NewRequest("POST", srv.URL+"/register", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s")
		res, err := client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "unix") {
			t.Errorf("%s: %d %s, want 403 naming unix", body, res.StatusCode, b)
		}
	}
	if n := len(pool.Stats()); n != 0 {
		t.Errorf("%d members, want none", n)
	}
}
