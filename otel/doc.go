// Package sluiceotel adds OpenTelemetry metrics and traces to a
// sluice.Proxy with one call, and serves the metrics in the Prometheus
// text format. It is a module of its own
// (github.com/sluiceproxy/sluice/otel), so that importing sluice pulls in
// no OpenTelemetry code: a program opts in by importing this one.
//
//	mp, metrics, err := sluiceotel.NewPrometheus()
//	if err != nil { ... }
//	h, err := sluiceotel.Instrument(proxy, sluiceotel.Config{MeterProvider: mp, TracerProvider: tp})
//	if err != nil { ... }
//	go http.Serve(adminListener, metrics) // GET /metrics on an admin port
//	sluice.Serve(ctx, &sluice.Server{Handler: h}, ln, 0)
//
// Metrics follow the OpenTelemetry semantic conventions for HTTP, with
// their names, units and attributes and no prefix (the Prometheus text
// has http_server_request_duration_seconds): http.server.request.duration,
// http.server.active_requests, http.server.request.body.size and
// http.server.response.body.size per request, http.client.request.duration
// per upstream attempt. sluice's own are under "sluice.": retries,
// requests the proxy refused, tunnels open and, with a balance.Pool, each
// target's health, attempts in flight and counters. Routes are reported by
// their pattern (http.route), never by the raw path, so the number of
// series stays bounded.
//
// Traces: a server span per request and a client span per upstream
// attempt, its child; the attempt's trace context goes upstream in W3C
// traceparent and tracestate. A client's own trace context is continued
// only when Config.TrustTraceContext says so (by default, from the Proxy's
// TrustedProxies); otherwise the server span starts a new trace, linked to
// the one the client named.
//
// Everything comes from the Proxy's hooks (Proxy.OnExchange,
// Proxy.OnAttempt, Proxy.OpenTunnels) and from a handler that wraps the
// Proxy without wrapping the http.ResponseWriter, so nothing of the
// Proxy's fast paths (splice, hijacking for tunnels, flushing) is lost.
// See docs/observability.md in the repository.
package sluiceotel
