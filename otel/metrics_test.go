package sluiceotel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"go.opentelemetry.io/otel/trace"
)

// The HTTP metrics have the semantic conventions' names, units, types and
// attributes, with no prefix; requests are counted by outcome, and routes
// by pattern, never by path.
func TestMetricsScrape(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/bad":
			w.WriteHeader(http.StatusBadGateway)
		case r.URL.Path == "/slow":
			<-release
		default:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	})
	live := mustURL(t, up.URL)
	dead := &url.URL{Scheme: "http", Host: deadAddr(t)}
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: live}}
	p.AddRoute(sluice.Route{Pattern: "GET /items/{id}"})
	p.AddRoute(sluice.Route{Pattern: "/dead/", Director: &sluice.SingleHost{Target: dead}})
	p.AddRoute(sluice.Route{Pattern: "/private/", Authorizer: sluice.AuthorizerFunc(func(*sluice.ProxyRequest) (sluice.Decision, error) {
		return sluice.Deny(http.StatusForbidden, "no\n"), nil
	})})
	p.AddRoute(sluice.Route{Pattern: "/flaky/", Director: sluice.DirectorFunc(func(pr *sluice.ProxyRequest) error {
		if pr.Attempt() == 0 {
			pr.SetURL(dead) // refused: retried on the next pick
		} else {
			pr.SetURL(live)
		}
		return nil
	})})
	s := newStack(t, p, Config{})
	c := client(t)

	requests := []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/ok", "abcd", 200},
		{"POST", "/ok", "abcd", 200},
		{"POST", "/ok", "abcd", 200},
		{"GET", "/items/1", "", 200},
		{"GET", "/items/2", "", 200},
		{"GET", "/dead/x", "", 502},
		{"GET", "/private/x", "", 403},
		{"GET", "/flaky/x", "", 200},
		{"GET", "/bad", "", 502},
	}
	for _, r := range requests {
		if status, _ := do(t, c, r.method, s.url+r.path, r.body); status != r.status {
			t.Fatalf("%s %s: status %d, want %d", r.method, r.path, status, r.status)
		}
	}
	s.served.wait(t, len(requests))

	// One request under way: counted in http.server.active_requests.
	slow := make(chan int)
	go func() {
		status, _ := do(t, c, "GET", s.url+"/slow", "")
		slow <- status
	}()
	var fams families
	eventually(t, "the slow request counted as active", func() bool {
		fams = scrape(t, s.metrics)
		ms := fams.all("http_server_active_requests", "http_request_method", "GET", "url_scheme", "http")
		return len(ms) == 1 && number(ms[0]) == 1
	})
	close(release)
	if status := <-slow; status != 200 {
		t.Errorf("slow request: %d", status)
	}
	s.served.wait(t, len(requests)+1)
	fams = scrape(t, s.metrics)

	// Families: names, types, help (the conventions' descriptions).
	for _, f := range []struct {
		name string
		typ  dto.MetricType
		help string
	}{
		{"http_server_request_duration_seconds", dto.MetricType_HISTOGRAM, "Duration of HTTP server requests."},
		{"http_server_active_requests", dto.MetricType_GAUGE, "Number of active HTTP server requests."},
		{"http_server_request_body_size_bytes", dto.MetricType_HISTOGRAM, "Size of HTTP server request bodies."},
		{"http_server_response_body_size_bytes", dto.MetricType_HISTOGRAM, "Size of HTTP server response bodies."},
		{"http_client_request_duration_seconds", dto.MetricType_HISTOGRAM, "Duration of HTTP client requests."},
		{"sluice_upstream_retries_total", dto.MetricType_COUNTER, ""},
		{"sluice_policy_denials_total", dto.MetricType_COUNTER, ""},
		{"sluice_active_tunnels", dto.MetricType_GAUGE, ""},
	} {
		fam := fams[f.name]
		if fam == nil {
			t.Errorf("no family %s in the scrape: %s", f.name, fams.dump(f.name))
			continue
		}
		if fam.GetType() != f.typ || f.help != "" && fam.GetHelp() != f.help {
			t.Errorf("%s: type %v help %q, want %v %q", f.name, fam.GetType(), fam.GetHelp(), f.typ, f.help)
		}
		for _, m := range fam.Metric {
			if label(m, "otel_scope_name") != ScopeName {
				t.Errorf("%s: otel_scope_name %q", f.name, label(m, "otel_scope_name"))
			}
		}
	}

	const dur = "http_server_request_duration_seconds"
	base := []string{"url_scheme", "http", "network_protocol_name", "http", "network_protocol_version", "1.1"}
	for _, tc := range []struct {
		labels []string
		count  uint64
	}{
		{[]string{"http_request_method", "POST", "http_response_status_code", "200", "http_route", "", "error_type", ""}, 3},
		{[]string{"http_request_method", "GET", "http_response_status_code", "200", "http_route", "/items/{id}", "error_type", ""}, 2},
		{[]string{"http_request_method", "GET", "http_response_status_code", "502", "http_route", "/dead/", "error_type", "refused"}, 1},
		{[]string{"http_request_method", "GET", "http_response_status_code", "403", "http_route", "/private/", "error_type", "policy"}, 1},
		{[]string{"http_request_method", "GET", "http_response_status_code", "200", "http_route", "/flaky/", "error_type", ""}, 1},
		{[]string{"http_request_method", "GET", "http_response_status_code", "502", "http_route", "", "error_type", "502"}, 1},
		{[]string{"http_request_method", "GET", "http_response_status_code", "200", "http_route", "", "error_type", ""}, 1}, // /slow
	} {
		m := fams.find(t, dur, append(base, tc.labels...)...)
		if got := m.Histogram.GetSampleCount(); got != tc.count {
			t.Errorf("%s %v: count %d, want %d", dur, tc.labels, got, tc.count)
		}
		if m.Histogram.GetSampleSum() <= 0 {
			t.Errorf("%s %v: sum %g", dur, tc.labels, m.Histogram.GetSampleSum())
		}
	}
	if n := len(fams[dur].Metric); n != 7 {
		t.Errorf("%d series of %s, want 7:\n%s", n, dur, fams.dump(dur))
	}
	// Bounded cardinality: no label holds a raw path.
	for name, fam := range fams {
		for _, m := range fam.Metric {
			for _, l := range m.Label {
				if strings.HasPrefix(l.GetValue(), "/items/") && l.GetValue() != "/items/{id}" || strings.Contains(l.GetValue(), "/x") {
					t.Errorf("%s has a raw path in label %s=%q", name, l.GetName(), l.GetValue())
				}
			}
		}
	}

	// Body sizes, in bytes, for the three POSTs.
	post := []string{"http_request_method", "POST", "http_response_status_code", "200"}
	if m := fams.find(t, "http_server_request_body_size_bytes", post...); m.Histogram.GetSampleCount() != 3 || m.Histogram.GetSampleSum() != 12 {
		t.Errorf("request body size: %s, want count=3 sum=12", value(m))
	}
	if m := fams.find(t, "http_server_response_body_size_bytes", post...); m.Histogram.GetSampleCount() != 3 || m.Histogram.GetSampleSum() != 15 {
		t.Errorf("response body size: %s, want count=3 sum=15", value(m))
	}

	// Per attempt: the upstream's address and port, the outcome.
	const cl = "http_client_request_duration_seconds"
	livePort, deadPort := live.Port(), dead.Port()
	for _, tc := range []struct {
		labels []string
		count  uint64
	}{
		{[]string{"http_request_method", "POST", "server_port", livePort, "http_response_status_code", "200", "error_type", ""}, 3},
		{[]string{"http_request_method", "GET", "server_port", livePort, "http_response_status_code", "200", "error_type", ""}, 4}, // items x2, flaky, slow
		{[]string{"http_request_method", "GET", "server_port", livePort, "http_response_status_code", "502", "error_type", "502"}, 1},
		{[]string{"http_request_method", "GET", "server_port", deadPort, "http_response_status_code", "", "error_type", "refused"}, 3}, // dead x2, flaky's first
	} {
		m := fams.find(t, cl, append([]string{"server_address", "127.0.0.1"}, tc.labels...)...)
		if got := m.Histogram.GetSampleCount(); got != tc.count {
			t.Errorf("%s %v: count %d, want %d", cl, tc.labels, got, tc.count)
		}
	}

	// sluice's own.
	if m := fams.find(t, "sluice_upstream_retries_total", "error_type", "refused"); number(m) != 2 {
		t.Errorf("retries: %v, want 2 (the dead route's, the flaky one's)", number(m))
	}
	if m := fams.find(t, "sluice_policy_denials_total", "http_request_method", "GET", "http_response_status_code", "403", "http_route", "/private/"); number(m) != 1 {
		t.Errorf("denials: %v, want 1", number(m))
	}
	if m := fams.find(t, "http_server_active_requests", "http_request_method", "GET"); number(m) != 0 {
		t.Errorf("active requests once all ended: %v", number(m))
	}
	if m := fams.find(t, "sluice_active_tunnels"); number(m) != 0 {
		t.Errorf("tunnels: %v", number(m))
	}
}

// sluice.active_tunnels counts WebSocket sessions and CONNECT tunnels
// while they are open; their requests are counted when they end, as 101
// and 200.
func TestMetricsTunnels(t *testing.T) {
	leaktest.Check(t)
	echo := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			msg, op, err := wsutil.ReadClientData(c)
			if err != nil {
				return
			}
			if err := wsutil.WriteServerMessage(c, op, msg); err != nil {
				return
			}
		}
	})
	tcp := tcpEcho(t)
	u := mustURL(t, echo.URL)
	p := &sluice.Proxy{Director: sluice.DirectorFunc(func(pr *sluice.ProxyRequest) error {
		if pr.In.Method == http.MethodConnect {
			pr.Out.URL = &url.URL{Scheme: "tcp", Host: pr.In.Host}
			return nil
		}
		pr.SetURL(u)
		return nil
	})}
	s := newStack(t, p, Config{})
	tunnels := func() float64 {
		return number(scrape(t, s.metrics).find(t, "sluice_active_tunnels"))
	}

	conn, _, _, err := ws.Dial(context.Background(), "ws://"+strings.TrimPrefix(s.url, "http://")+"/chat")
	if err != nil {
		t.Fatal(err)
	}
	if err := wsutil.WriteClientText(conn, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if msg, err := wsutil.ReadServerText(conn); err != nil || string(msg) != "hello" {
		t.Fatalf("echo %q, %v", msg, err)
	}
	// A message went both ways: the tunnel runs.
	fams := scrape(t, s.metrics)
	if n := number(fams.find(t, "sluice_active_tunnels")); n != 1 {
		t.Errorf("tunnels with a WebSocket open: %v, want 1", n)
	}
	// A session is an active request until it ends, as it is one
	// request in http.server.request.duration.
	if n := number(fams.find(t, "http_server_active_requests", "http_request_method", "GET")); n != 1 {
		t.Errorf("active requests with a WebSocket open: %v, want 1", n)
	}

	tc, br := connect(t, strings.TrimPrefix(s.url, "http://"), tcp)
	io.WriteString(tc, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the tunnel: %q, %v", buf, err)
	}
	if n := tunnels(); n != 2 {
		t.Errorf("tunnels with a WebSocket and a CONNECT tunnel open: %v, want 2", n)
	}

	conn.Close()
	tc.Close()
	s.served.wait(t, 2)
	fams = scrape(t, s.metrics)
	if n := number(fams.find(t, "sluice_active_tunnels")); n != 0 {
		t.Errorf("tunnels once both ended: %v", n)
	}
	for _, m := range fams.all("http_server_active_requests") {
		if number(m) != 0 {
			t.Errorf("active requests once both ended: %s", fams.dump("http_server_active_requests"))
		}
	}
	for _, want := range [][]string{
		{"http_request_method", "GET", "http_response_status_code", "101"},
		{"http_request_method", "CONNECT", "http_response_status_code", "200"},
	} {
		if m := fams.find(t, "http_server_request_duration_seconds", want...); m.Histogram.GetSampleCount() != 1 {
			t.Errorf("%v: %s, want count=1", want, value(m))
		}
	}
	// The WebSocket's upstream attempt ends with the tunnel.
	if m := fams.find(t, "http_client_request_duration_seconds", "http_response_status_code", "101"); m.Histogram.GetSampleCount() != 1 {
		t.Errorf("101 attempt: %s", value(m))
	}

	// Their spans end with them: the session's server span with its
	// attempt as child, both 101; the CONNECT's server span with its dial
	// as child, both 200.
	type span struct {
		Kind         trace.SpanKind
		Name, Status string
		Parent       bool // a child of the other span of the list
	}
	var got []span
	ended := s.spans.Ended()
	ids := make(map[trace.SpanID]bool)
	for _, sp := range ended {
		ids[sp.SpanContext().SpanID()] = true
	}
	for _, sp := range ended {
		got = append(got, span{sp.SpanKind(), sp.Name(), attrs(sp)["http.response.status_code"], ids[sp.Parent().SpanID()]})
	}
	slices.SortFunc(got, func(a, b span) int { return strings.Compare(a.Name+a.Kind.String(), b.Name+b.Kind.String()) })
	want := []span{
		{trace.SpanKindClient, "CONNECT", "200", true}, // the dial, the tunnel's attempt
		{trace.SpanKindServer, "CONNECT", "200", false},
		{trace.SpanKindClient, "GET", "101", true},
		{trace.SpanKindServer, "GET", "101", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tunnel spans (-want +got):\n%s", diff)
	}
}

// tcpEcho is a TCP server that echoes until the test ends; it returns
// its address.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// connect opens a CONNECT tunnel to target through the proxy at addr.
func connect(t *testing.T, addr, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", res.Status)
	}
	return c, br
}

// With a balance.Pool, the scrape has each target's numbers, the same as
// Pool.Stats (what Pool.Handler and the balancer's status page show).
func TestMetricsPool(t *testing.T) {
	leaktest.Check(t)
	a := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") })
	b := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	pool := &balance.Pool{Policy: balance.RoundRobin()}
	ctx := context.Background()
	for i, m := range []balance.Member{{ID: "a", URL: a.URL}, {ID: "b", URL: b.URL, Weight: 3}, {ID: "dead", URL: "http://" + deadAddr(t)}} {
		if err := pool.Add(ctx, m); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	p := &sluice.Proxy{Director: pool, Retry: &sluice.RetryPolicy{Attempts: 3}}
	s := newStack(t, p, Config{Pool: pool})
	c := client(t)
	const n = 6
	for range n {
		if status, _ := do(t, c, "GET", s.url+"/", ""); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	s.served.wait(t, n)
	fams := scrape(t, s.metrics)
	stats := pool.Stats()
	type target struct {
		Healthy, InFlight, Requests, Failures, Weight float64
		Latency                                       float64
	}
	var fromStats, fromMetrics []target
	for _, st := range stats {
		h := 0.0
		if st.Healthy {
			h = 1
		}
		fromStats = append(fromStats, target{h, float64(st.InFlight), float64(st.Requests), float64(st.Failures), float64(st.Weight), st.Latency.Seconds()})
		id := []string{"sluice_target_id", st.ID}
		fromMetrics = append(fromMetrics, target{
			number(fams.find(t, "sluice_pool_target_healthy", id...)),
			number(fams.find(t, "sluice_pool_target_in_flight", id...)),
			number(fams.find(t, "sluice_pool_target_requests_total", id...)),
			number(fams.find(t, "sluice_pool_target_failures_total", id...)),
			number(fams.find(t, "sluice_pool_target_weight", id...)),
			number(fams.find(t, "sluice_pool_target_latency_seconds", id...)),
		})
		u := mustURL(t, st.URL)
		if m := fams.find(t, "sluice_pool_target_requests_total", id...); label(m, "server_address") != u.Hostname() || label(m, "server_port") != u.Port() {
			t.Errorf("target %s: server_address %q server_port %q, want %s", st.ID, label(m, "server_address"), label(m, "server_port"), u.Host)
		}
	}
	if diff := cmp.Diff(fromStats, fromMetrics); diff != "" {
		t.Errorf("metrics disagree with Pool.Stats (-stats +metrics):\n%s", diff)
	}
	// The numbers themselves: every request reached a live target, the
	// dead one was tried (and failed) at least once.
	var requests, failures float64
	for _, tg := range fromStats {
		requests += tg.Requests
		failures += tg.Failures
	}
	if requests < n+1 || failures < 1 || fromStats[0].Weight != 1 || fromStats[1].Weight != 3 {
		t.Errorf("pool numbers: %+v", fromStats)
	}
}
