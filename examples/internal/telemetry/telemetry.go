// Package telemetry gives every starter service its -metrics flag: the
// Proxy instrumented by package sluiceotel, and GET /metrics (the
// Prometheus text format) served on a separate admin listener, never on
// the port that serves clients.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	sluiceotel "github.com/sluiceproxy/sluice/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Usage is the help text of the -metrics flag.
const Usage = "serve Prometheus metrics (OpenTelemetry's HTTP conventions, sluice_* for the proxy's own) at " +
	"http://`ADDR`/metrics, a listener of its own (e.g. 127.0.0.1:9464); empty: off"

// Metrics is the -metrics admin listener of a starter service.
type Metrics struct {
	// Handler is what the service serves in place of its Proxy: the
	// instrumented Proxy, or the Proxy itself when metrics are off.
	Handler http.Handler
	// Addr is the admin listener's host:port, "" when metrics are off.
	Addr string

	mp     *sdkmetric.MeterProvider
	cancel context.CancelFunc
	done   chan error
}

// Start instruments p (with pool's targets, if pool is not nil) and
// serves its metrics on addr until Close. With addr empty it does
// nothing: Handler is p. It must be called before p serves.
//
// Metrics only: no spans are made and the trace headers of requests are
// left as they are (an empty propagator), so that turning metrics on
// changes nothing of what reaches the upstream.
func Start(addr string, p *sluice.Proxy, pool *balance.Pool) (*Metrics, error) {
	if addr == "" {
		return &Metrics{Handler: p}, nil
	}
	mp, metrics, err := sluiceotel.NewPrometheus()
	if err != nil {
		return nil, err
	}
	h, err := sluiceotel.Instrument(p, sluiceotel.Config{MeterProvider: mp, Pool: pool,
		Propagator: propagation.NewCompositeTextMapPropagator()})
	if err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, fmt.Errorf("-metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	ctx, cancel := context.WithCancel(context.Background())
	m := &Metrics{Handler: h, Addr: ln.Addr().String(), mp: mp, cancel: cancel, done: make(chan error, 1)}
	go func() {
		m.done <- sluice.Serve(ctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln, 5*time.Second)
	}()
	return m, nil
}

// URL is the address of the metrics, "" when they are off.
func (m *Metrics) URL() string {
	if m.Addr == "" {
		return ""
	}
	return "http://" + m.Addr + "/metrics"
}

// CheckAddr reports whether addr is a valid -metrics value: empty, or
// host:port.
func CheckAddr(addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("-metrics %q: want host:port: %w", addr, err)
	}
	return nil
}

// Close ends the admin listener, once the service stopped serving.
func (m *Metrics) Close() error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	return errors.Join(<-m.done, m.mp.Shutdown(context.Background()))
}
