package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// target is one row of the status page, as numbers.
type target struct {
	ID                                            string
	Weight, Healthy, Requests, Failures, InFlight float64
	Latency                                       float64 // seconds
}

// -metrics serves, on a listener of its own, the numbers of the status
// page (Pool.Stats) for each target, and the HTTP metrics of the
// requests served.
func TestMetricsAgreeWithStatusPage(t *testing.T) {
	leaktest.Check(t)
	cfg := defaultConfig()
	cfg.metrics = "127.0.0.1:0"
	metricsURL := make(chan string, 1)
	cfg.metricsReady = func(u string) { metricsURL <- u }
	base, admin := startBalancer(t, cfg)
	scrapeURL := <-metricsURL
	if strings.HasPrefix(scrapeURL, base) || strings.HasPrefix(scrapeURL, admin) {
		t.Fatalf("metrics at %s share a listener with %s or %s", scrapeURL, base, admin)
	}
	c := testClient(t)
	eventually(t, "three demo backends registered", func() bool { return len(stats(t, c, admin)) == 3 })
	const n = 7
	for range n {
		if status, _, _ := get(t, c, base+"/hello"); status != 200 {
			t.Fatalf("status %d", status)
		}
	}

	fromStats := func() []target {
		var out []target
		for _, s := range stats(t, c, admin) {
			h := 0.0
			if s.Healthy {
				h = 1
			}
			out = append(out, target{s.ID, float64(s.Weight), h, float64(s.Requests), float64(s.Failures), float64(s.InFlight), s.Latency.Seconds()})
		}
		return out
	}
	fromMetrics := func(fams map[string]*dto.MetricFamily) []target {
		var out []target
		for _, m := range fams["sluice_pool_target_requests_total"].GetMetric() {
			id := label(m, "sluice_target_id")
			out = append(out, target{id,
				value(t, fams, "sluice_pool_target_weight", id),
				value(t, fams, "sluice_pool_target_healthy", id),
				value(t, fams, "sluice_pool_target_requests_total", id),
				value(t, fams, "sluice_pool_target_failures_total", id),
				value(t, fams, "sluice_pool_target_in_flight", id),
				value(t, fams, "sluice_pool_target_latency_seconds", id),
			})
		}
		slices.SortFunc(out, func(a, b target) int { return strings.Compare(a.ID, b.ID) }) // as Stats
		return out
	}
	// Once every request has ended (a target counts an attempt when its
	// response body is closed, just after the client has it), the page
	// and the metrics say the same.
	var page, metrics []target
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		page = fromStats()
		fams = scrape(t, c, scrapeURL)
		metrics = fromMetrics(fams)
		if total(page) == n && cmp.Equal(page, metrics) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if diff := cmp.Diff(page, metrics); diff != "" {
		t.Errorf("status page and metrics disagree (-page +metrics):\n%s", diff)
	}
	if total(page) != n || len(page) != 3 {
		t.Errorf("status page: %+v, want %d requests over 3 targets", page, n)
	}

	// The requests themselves, by the conventions' names.
	var served uint64
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		if label(m, "http_response_status_code") == "200" {
			served += m.GetHistogram().GetSampleCount()
		}
	}
	if served != n {
		t.Errorf("http_server_request_duration_seconds counts %d requests with 200, want %d", served, n)
	}

	// The page says where the metrics are.
	_, _, html := get(t, c, admin+"/_balancer/")
	if !strings.Contains(html, scrapeURL) || !strings.Contains(html, "sluice_pool_target_requests_total") {
		t.Errorf("status page does not point at the metrics:\n%s", html)
	}
}

// A -metrics address must be a listener of its own.
func TestMetricsFlag(t *testing.T) {
	for _, args := range [][]string{
		{"-metrics", "nonsense"},
		{"-metrics", "127.0.0.1:8080"}, // -listen's default
	} {
		if _, err := parseFlags(args, new(strings.Builder)); err == nil || !strings.Contains(err.Error(), "-metrics") {
			t.Errorf("%v: %v, want an error naming -metrics", args, err)
		}
	}
	if cfg, err := parseFlags([]string{"-metrics", "127.0.0.1:9464"}, new(strings.Builder)); err != nil || cfg.metrics != "127.0.0.1:9464" {
		t.Errorf("-metrics 127.0.0.1:9464: %v, %q", err, cfg.metrics)
	}
}

func total(ts []target) float64 {
	var n float64
	for _, t := range ts {
		n += t.Requests
	}
	return n
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

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is the value of family name for target id.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name, id string) float64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		if label(m, "sluice_target_id") == id {
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Errorf("no %s for target %s", name, id)
	return -1
}
