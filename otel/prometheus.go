package sluiceotel

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// NewPrometheus returns a MeterProvider for Config.MeterProvider whose
// metrics the returned handler serves in the Prometheus text format (the
// OpenTelemetry Prometheus exporter, on a registry of its own that also
// has the Go runtime's and the process's collectors), for GET /metrics
// on an admin listener. Names follow the exporter's default translation:
// dots become underscores, the unit and, for counters, _total are
// appended (http.server.request.duration in seconds is
// http_server_request_duration_seconds). opts configure the
// MeterProvider further (sdkmetric.WithResource, WithView); its reader
// is the exporter. Call its Shutdown when done.
func NewPrometheus(opts ...sdkmetric.Option) (*sdkmetric.MeterProvider, http.Handler, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("sluiceotel: registering the Go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("sluiceotel: registering the process collector: %w", err)
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("sluiceotel: the Prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(append([]sdkmetric.Option{sdkmetric.WithReader(exp)}, opts...)...)
	return mp, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
