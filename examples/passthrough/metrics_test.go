package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// -metrics serves the Prometheus text format on its own listener, with
// the requests the proxy served; the client's trace context still
// reaches the upstream untouched.
func TestMetrics(t *testing.T) {
	leaktest.Check(t)
	traceparents := make(chan string, 8)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceparents <- r.Header.Get("Traceparent")
		io.WriteString(w, "hello")
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, ln, config{upstream: up.URL, timeout: 5 * time.Second, deny: []string{"/admin/"},
			metrics: "127.0.0.1:0", metricsReady: func(u string) { metricsURL <- u }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	scrapeURL := <-metricsURL
	if strings.HasPrefix(scrapeURL, "http://"+ln.Addr().String()) {
		t.Fatalf("metrics on the clients' listener: %s", scrapeURL)
	}
	base := "http://" + ln.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, path := range []string{"/a", "/b", "/c", "/admin/x"} {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Traceparent", traceparent)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	for range 3 {
		if got := <-traceparents; got != traceparent {
			t.Errorf("upstream got traceparent %q, want the client's %q", got, traceparent)
		}
	}

	// The requests are counted when their exchange ends, just after the
	// client has its response.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = scrape(t, c, scrapeURL)
		if count(fams, "200") == 3 && count(fams, "403") == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n200, n403 := count(fams, "200"), count(fams, "403"); n200 != 3 || n403 != 1 {
		t.Errorf("http_server_request_duration_seconds: %d with 200, %d with 403; want 3 and 1", n200, n403)
	}
	for _, name := range []string{"http_server_active_requests", "http_client_request_duration_seconds",
		"http_server_response_body_size_bytes", "sluice_active_tunnels"} {
		if fams[name] == nil {
			t.Errorf("no %s in the scrape", name)
		}
	}
	// Only GET /metrics there.
	if res, err := c.Get(strings.TrimSuffix(scrapeURL, "/metrics") + "/"); err != nil || res.StatusCode != http.StatusNotFound {
		t.Errorf("GET / on the metrics listener: %v %v", res.StatusCode, err)
	} else {
		res.Body.Close()
	}
}

func scrape(t *testing.T, c *http.Client, u string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// count is the number of requests with status in
// http_server_request_duration_seconds.
func count(fams map[string]*dto.MetricFamily, status string) uint64 {
	var n uint64
	if f := fams["http_server_request_duration_seconds"]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "http_response_status_code" && l.GetValue() == status {
					n += m.Histogram.GetSampleCount()
				}
			}
		}
	}
	return n
}
