package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1M": 1 << 20, "1MiB": 1 << 20, "1mb": 1 << 20, "2G": 2 << 30, "512k": 512 << 10, "1.5K": 1536,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"lots", "-1", "M", ""} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}

func TestCPUList(t *testing.T) {
	if got, want := cpuList("0-2,5"), []int{0, 1, 2, 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("cpuList = %v, want %v", got, want)
	}
}

func TestParseScenarios(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"A", []string{"A"}},
		{"e-WS,a,E", []string{"A", "E", "E-ws"}},
		{"H,A,A", []string{"A", "H"}},
		{"all", scenarioOrder},
	} {
		got, err := parseScenarios(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseScenarios(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"Z", "", "E-http"} {
		if _, err := parseScenarios(bad); err == nil {
			t.Errorf("parseScenarios(%q) succeeded", bad)
		}
	}
	for id := range scenarios {
		if tables[id].headline == "" {
			t.Errorf("scenario %s has no table", id)
		}
	}
}

func TestCandidateFlags(t *testing.T) {
	c, err := parseFlags([]string{
		"--candidate", "sluice=./bin/passthrough -listen {ADDR} -upstream {UPSTREAM}",
		"--candidate-tls", "sluice=./bin/passthrough -listen {ADDR} -upstream {UPSTREAM} -tls-cert {CERT} -tls-key {KEY}",
		"--candidate", "GOGC=off ./bin/other -l {ADDR}",
		"--candidate", "old=./bin/old -l {ADDR}",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []candidate{
		{name: "sluice", plain: "./bin/passthrough -listen {ADDR} -upstream {UPSTREAM}",
			tls: "./bin/passthrough -listen {ADDR} -upstream {UPSTREAM} -tls-cert {CERT} -tls-key {KEY}"},
		{name: "candidate", plain: "GOGC=off ./bin/other -l {ADDR}"},
		{name: "old", plain: "./bin/old -l {ADDR}"},
	}
	if !reflect.DeepEqual(c.candidates, want) {
		t.Errorf("candidates = %+v, want %+v", c.candidates, want)
	}
	for _, bad := range [][]string{
		{"--candidate", "./bin/proxy -listen 127.0.0.1:8080"}, // no placeholder for the port
		{"--candidate", "nginx=./bin/proxy {ADDR}"},           // a peer's name
		{"--scenarios", "Q"},
		{"--repeat", "0"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) succeeded", bad)
		}
	}
}

func TestSystemList(t *testing.T) {
	c, err := parseFlags([]string{"--candidate", "sluice=x {ADDR}", "--candidate", "old=y {ADDR}", "--systems", "httputil,old", "--base-port", "1000"})
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: c}
	want := []system{{"httputil", "httputil", 1092}, {"old", "candidate", 1097}}
	if got := r.systemList(); !reflect.DeepEqual(got, want) {
		t.Errorf("systemList = %+v, want %+v", got, want)
	}
	c.systems = []string{"candidate"}
	if got := r.systemList(); len(got) != 2 || got[0].name != "sluice" || got[1].name != "old" {
		t.Errorf("--systems candidate selects %+v, want both candidates", got)
	}
}

func TestBoundMedianSpread(t *testing.T) {
	for _, tc := range []struct {
		p, l float64
		want string
	}{{99, 50, "proxy"}, {50, 99, "load"}, {99, 99, "both"}, {50, 50, "none"}, {math.NaN(), 1, "-"}} {
		if got := bound(tc.p, tc.l); got != tc.want {
			t.Errorf("bound(%v, %v) = %q, want %q", tc.p, tc.l, got, tc.want)
		}
	}
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 2, 3}) != 2.5 || !math.IsNaN(median(nil)) {
		t.Error("median")
	}
	if spread([]float64{90, 100, 110}) != 0.2 || !math.IsNaN(spread([]float64{1})) {
		t.Error("spread")
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 5s test\nWRKJSON {\"requests\":1000,\"duration_us\":5000000,\"bytes\":200000,\"err_connect\":0,\"err_read\":1,\"err_write\":0,\"err_status\":2,\"err_timeout\":0,\"lat_mean_us\":1.5,\"lat_p50_us\":10,\"lat_p90_us\":20,\"lat_p99_us\":30,\"lat_max_us\":40}\n"
	res, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 1000 || res.errors() != 3 || res.LatP99Us != 30 {
		t.Errorf("parseWrk = %+v", res)
	}
	if _, err := parseWrk("unable to connect\n"); err == nil {
		t.Error("parseWrk accepted output without a summary")
	}
}

func TestParseH2load(t *testing.T) {
	out := `starting benchmark...
spawning thread #0: 16 total client(s). 16000 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 2.01s, 8000.00 req/s, 555.20KB/s
requests: 16182 total, 16240 started, 16182 done, 16000 succeeded, 182 failed, 182 errored, 0 timeout
status codes: 16000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.08MB (1137056) total, 750.00KB (768000) headers (space savings 51.02%), 78.13KB (80000) data
                     min         max         mean         sd        +/- sd
time for request:      104us      9.31ms      3.29ms       779us    92.03%
time for connect:     4.87ms     12.00ms      8.50ms      2.26ms    62.50%
`
	res, err := parseH2load(out)
	if err != nil {
		t.Fatal(err)
	}
	want := h2loadResult{Secs: 2.01, Total: 16182, Done: 16182, Succeeded: 16000, Failed: 182, Errored: 182,
		S2xx: 16000, BodyBytes: 80000, ReqMeanMs: 3.29,
		Protocol: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", TempKey: "X25519", ALPN: "h2"}
	if math.Abs(res.ReqMeanMs-want.ReqMeanMs) < 1e-9 {
		res.ReqMeanMs = want.ReqMeanMs
	}
	if res != want {
		t.Errorf("parseH2load =\n%+v, want\n%+v", res, want)
	}
	if _, err := parseH2load("connect: Connection refused\n"); err == nil {
		t.Error("parseH2load accepted output without a summary")
	}
}

// resumes must tell a server that resumes TLS sessions from one that does not.
func TestTLSResumes(t *testing.T) {
	files, err := makeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(files.cert, files.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, ticketsOff := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, SessionTicketsDisabled: ticketsOff}
		srv.StartTLS()
		resumed, tickets, err := files.resumes(srv.Listener.Addr().(*net.TCPAddr).Port)
		srv.Close()
		if err != nil || resumed == ticketsOff || (tickets == 0) != ticketsOff {
			t.Errorf("tickets off %v: resumed %v, %d tickets, %v", ticketsOff, resumed, tickets, err)
		}
	}
}

// The table shows medians of the successful repeats, ratios to the peers'
// medians, and the failed repeats as errors below it.
func TestTable(t *testing.T) {
	c, err := parseFlags([]string{"--candidate", "sluice=x {ADDR}", "--systems", "httputil,nginx,sluice", "--repeat", "3"})
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: c, place: placement{mode: "none"}}
	add := func(sys string, rep int, kb float64, fail string) {
		r.rows = append(r.rows, row{Scenario: "E-ws", System: sys, Rep: rep, Err: fail,
			Metrics: map[string]float64{"rss_kb_per_conn": kb, "opened": 5000}})
	}
	add("httputil", 1, 40, "")
	add("httputil", 2, 44, "")
	add("httputil", 3, 42, "")
	add("nginx", 1, 2, "")
	add("sluice", 1, 21, "")
	add("sluice", 2, 999, "only 12 of 5000 connections opened")
	add("sluice", 3, 19, "")
	got := r.table("E-ws")
	lines := map[string]string{} // first field: the first five fields
	for _, l := range strings.Split(got, "\n") {
		if f := strings.Fields(l); len(f) >= 5 && !strings.HasPrefix(l, "#") {
			lines[f[0]] = strings.Join(f[:5], " ")
		}
	}
	for _, want := range []string{
		"httputil 42.00 9.5% 1.00 21.00",
		"nginx 2.00 - 0.05 1.00",
		"sluice 20.00 10.0% 0.48 10.00",
	} {
		if got := lines[strings.Fields(want)[0]]; got != want {
			t.Errorf("row %q, want %q", got, want)
		}
	}
	for _, want := range []string{
		"# ERROR sluice rep 2: only 12 of 5000 connections opened",
		"# sluice: 1 of 3 repeats failed",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v float64) string {
		d := filepath.Join(dir, name)
		os.Mkdir(d, 0o755)
		b, _ := json.Marshal(resultsFile{Summary: map[string]map[string]map[string]float64{
			"A": {"sluice": {"rps": v, "proxy_cpu_us_per_req": 50}},
		}})
		os.WriteFile(filepath.Join(d, "results.json"), b, 0o644)
		return d
	}
	a, b := write("a", 1000), write("b", 1100)
	var out strings.Builder
	if code := compare(&out, a, b); code != 0 {
		t.Fatalf("compare returned %d", code)
	}
	if !strings.Contains(out.String(), "+10.0%") || !strings.Contains(out.String(), "proxy_cpu_us_per_req") {
		t.Errorf("compare printed:\n%s", out.String())
	}
}
