package sluiceotel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sluiceproxy/sluice"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// stack is an instrumented Proxy served by sluice.Server on loopback,
// its metrics served by NewPrometheus's handler on another listener,
// its spans kept by a SpanRecorder.
type stack struct {
	proxy   *sluice.Proxy
	handler *Handler
	url     string // the proxy's base URL
	metrics string // the metrics endpoint's URL
	spans   *tracetest.SpanRecorder
	served  *served
}

// served counts the exchanges whose Record the instrumented OnExchange
// has handled: their metrics are recorded, their server span ended. (A
// tunnel's Record comes when it ends, after its handler returned.)
type served struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

// after makes p's OnExchange count its Records once it is done.
func (s *served) after(p *sluice.Proxy) {
	inner := p.OnExchange
	p.OnExchange = func(rec *sluice.Record) {
		inner(rec)
		s.mu.Lock()
		s.n++
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// wait returns once n exchanges were recorded, failing the test after 10 s.
func (s *served) wait(t *testing.T, n int) {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(10 * time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.n < n && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	if s.n < n {
		t.Fatalf("%d exchanges recorded, want %d", s.n, n)
	}
}

// newStack instruments p with cfg (its providers filled in) and serves
// it until the test ends.
func newStack(t *testing.T, p *sluice.Proxy, cfg Config) *stack {
	t.Helper()
	mp, metrics, err := NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg.MeterProvider, cfg.TracerProvider = mp, tp
	h, err := Instrument(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Logger == nil {
		p.Logger = discardLogger()
	}
	t.Cleanup(p.CloseIdleConnections)
	ms := httptest.NewServer(metrics)
	t.Cleanup(ms.Close)
	sv := &served{}
	sv.cond = sync.NewCond(&sv.mu)
	sv.after(p)
	return &stack{proxy: p, handler: h, url: "http://" + serve(t, h), metrics: ms.URL + "/metrics", spans: rec, served: sv}
}

// serve runs h on a sluice.Server on a loopback port until the test
// ends, and returns its address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sluice.Serve(ctx, &sluice.Server{Handler: h}, ln, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func newUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// deadAddr is a loopback address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// do sends a request and returns the status and the body.
func do(t *testing.T, c *http.Client, method, url, body string, header ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// scrape gets the metrics endpoint over HTTP and parses the Prometheus
// text format.
func scrape(t *testing.T, metricsURL string) families {
	t.Helper()
	res, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", metricsURL, res.Status)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want the text format", metricsURL, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// families are parsed metric families by name.
type families map[string]*dto.MetricFamily

// find returns the metric of family name whose labels include want
// (name=value pairs), failing the test if there is not exactly one.
func (f families) find(t *testing.T, name string, want ...string) *dto.Metric {
	t.Helper()
	ms := f.all(name, want...)
	if len(ms) != 1 {
		t.Fatalf("%d series of %s with %v, want 1; the family:\n%s", len(ms), name, want, f.dump(name))
	}
	return ms[0]
}

// all returns the metrics of family name whose labels include want.
func (f families) all(name string, want ...string) []*dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range fam.Metric {
		for i := 0; i+1 < len(want); i += 2 {
			if label(m, want[i]) != want[i+1] {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func (f families) dump(name string) string {
	fam := f[name]
	if fam == nil {
		names := make([]string, 0, len(f))
		for n := range f {
			names = append(names, n)
		}
		sort.Strings(names)
		return "(no such family; have " + strings.Join(names, " ") + ")"
	}
	var b strings.Builder
	for _, m := range fam.Metric {
		var ls []string
		for _, l := range m.Label {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		fmt.Fprintf(&b, "  {%s} %s\n", strings.Join(ls, ","), value(m))
	}
	return b.String()
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is a metric's value as text: the count and sum of a histogram,
// else its gauge or counter value.
func value(m *dto.Metric) string {
	switch {
	case m.Histogram != nil:
		return fmt.Sprintf("count=%d sum=%g", m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum())
	case m.Counter != nil:
		return fmt.Sprint(m.Counter.GetValue())
	case m.Gauge != nil:
		return fmt.Sprint(m.Gauge.GetValue())
	}
	return "?"
}

// number is a counter's or a gauge's value.
func number(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
