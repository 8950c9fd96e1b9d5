package sluiceotel

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sluiceproxy/sluice"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// discardWriter is a minimal http.ResponseWriter, so that the benchmarks
// measure the proxy and its instrumentation, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// benchUpstream is a raw HTTP/1.1 upstream answering every request with
// the same 100-byte response, allocating nothing per request (as the
// root package's BenchmarkProxy has it).
func benchUpstream(b *testing.B) *url.URL {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 100))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			})
		}
	})
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// benchProxy runs a small keep-alive GET through h (a Proxy, or an
// instrumented one) to a real loopback upstream.
func benchProxy(b *testing.B, instrument func(*sluice.Proxy) http.Handler) {
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: benchUpstream(b)}}
	p.AddRoute(sluice.Route{Pattern: "GET /small"})
	b.Cleanup(p.CloseIdleConnections)
	var h http.Handler = p
	if instrument != nil {
		h = instrument(p)
	}
	req := httptest.NewRequest("GET", "http://proxy.test/small", nil)
	req.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

func instrumentWith(b *testing.B, cfg Config) func(*sluice.Proxy) http.Handler {
	return func(p *sluice.Proxy) http.Handler {
		h, err := Instrument(p, cfg)
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
}

// BenchmarkProxyPlain is the Proxy alone, the baseline of the others.
func BenchmarkProxyPlain(b *testing.B) { benchProxy(b, nil) }

// BenchmarkProxyInstrumentedNoop is Instrument with OpenTelemetry's no-op
// providers: the cost of the hooks and the wrapper alone.
func BenchmarkProxyInstrumentedNoop(b *testing.B) {
	benchProxy(b, instrumentWith(b, Config{MeterProvider: noop.NewMeterProvider(), TracerProvider: tracenoop.NewTracerProvider()}))
}

// BenchmarkProxyInstrumentedMetrics records every metric into the SDK
// (a manual reader, never collected), with no tracing.
func BenchmarkProxyInstrumentedMetrics(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	benchProxy(b, instrumentWith(b, Config{MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider()}))
}

// BenchmarkProxyInstrumented records every metric and samples every
// trace (two spans per request, exported synchronously to a no-op
// exporter): the full cost.
func BenchmarkProxyInstrumented(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	benchProxy(b, instrumentWith(b, Config{MeterProvider: mp, TracerProvider: tp}))
}
