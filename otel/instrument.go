package sluiceotel

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"slices"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the metrics and spans this
// package makes (the otel_scope_name label in the Prometheus text).
const ScopeName = "github.com/sluiceproxy/sluice/otel"

// Config says where the telemetry of an instrumented Proxy goes. Its
// zero value uses OpenTelemetry's global providers and W3C Trace Context.
type Config struct {
	// MeterProvider gets the metrics. If nil, otel.GetMeterProvider()
	// (a no-op until the program sets one). NewPrometheus returns one
	// that serves them in the Prometheus text format.
	MeterProvider metric.MeterProvider

	// TracerProvider gets the spans. If nil, otel.GetTracerProvider() (a
	// no-op until the program sets one).
	TracerProvider trace.TracerProvider

	// Propagator reads a trusted client's trace context from the request
	// headers and writes each attempt's into the upstream request. If
	// nil, propagation.TraceContext{}: W3C traceparent and tracestate.
	// The fields it names (Fields) are removed from every upstream
	// request before it writes its own, so a client's trace context
	// never reaches the upstream unless it was trusted.
	Propagator propagation.TextMapPropagator

	// TrustTraceContext reports whether the trace context a request
	// carries is continued: the server span becomes a child of the span
	// the client named, in its trace and under its sampling decision.
	// For any other request the server span starts a new trace, linked
	// (not parented) to the client's, so that an Internet client can
	// neither choose trace IDs nor force sampling. It runs before the
	// Proxy sees the request, on the request as the server read it. If
	// nil, a request is trusted when the address of its peer (the TCP
	// peer, or the one a PROXY protocol header gave) is in the Proxy's
	// TrustedProxies, the peers whose forwarding headers the Proxy
	// believes; with no TrustedProxies, none is. A function returning
	// true trusts every client, for a proxy that only internal services
	// reach.
	TrustTraceContext func(r *http.Request) bool

	// Pool, if not nil, is the balance.Pool directing the Proxy: each
	// of its targets' health, attempts in flight and counters (what
	// Pool.Stats returns and Pool.Handler serves) are exported as
	// sluice.pool.target.* metrics, read at each collection.
	Pool *balance.Pool
}

// Handler serves an instrumented Proxy: it starts the server span and
// counts the request in http.server.active_requests, then calls the
// Proxy's ServeHTTP with the same http.ResponseWriter, so the Proxy keeps
// every capability of the server's writer (io.ReaderFrom for splice,
// hijacking for tunnels, flushing). The span ends and the request stops
// being active when the Proxy delivers the exchange's Record (for a
// tunnel, when it ends, after ServeHTTP returned). sluice.Serve finds the
// Proxy through Unwrap, to end its tunnels on shutdown.
type Handler struct {
	proxy *sluice.Proxy
	in    *instruments
}

// Instrument makes p report metrics and traces as Config says and returns
// the handler to serve in its place. It sets p.OnExchange and p.OnAttempt,
// calling the functions already there first, so it must be called before
// p serves its first request (as any other Proxy field is set), and once
// per Proxy. A Proxy served without the returned Handler still reports
// its metrics, but for http.server.active_requests, and its client spans,
// without a server span to parent them.
func Instrument(p *sluice.Proxy, cfg Config) (*Handler, error) {
	if p == nil {
		return nil, errors.New("sluiceotel: Instrument: nil Proxy")
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	in, err := newInstruments(p, cfg)
	if err != nil {
		return nil, err
	}
	if prev := p.OnExchange; prev != nil {
		p.OnExchange = func(rec *sluice.Record) {
			defer in.onExchange(rec) // even if prev panics: the span ends, the request stops being active
			prev(rec)                // first: it may still add attributes to the span
		}
	} else {
		p.OnExchange = in.onExchange
	}
	if prev := p.OnAttempt; prev != nil {
		p.OnAttempt = func(pr *sluice.ProxyRequest) func(sluice.Result) {
			mine := in.onAttempt(pr)
			theirs := prev(pr)
			if theirs == nil {
				return mine
			}
			return func(res sluice.Result) {
				theirs(res)
				mine(res)
			}
		}
	} else {
		p.OnAttempt = in.onAttempt
	}
	return &Handler{proxy: p, in: in}, nil
}

// ServeHTTP serves r through the Proxy, within the request's server span.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in := h.in
	ex := &exchange{active: in.activeOption(r)}
	ctx := r.Context()
	in.active.Int64UpDownCounter.Add(ctx, 1, ex.active)
	ctx, ex.span = in.startServerSpan(ctx, r)
	// The Proxy delivers one Record per exchange, whatever happens: its
	// OnExchange (onExchange) ends what starts here.
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, in, ex)))
}

// Unwrap returns the Proxy, for sluice.Serve.
func (h *Handler) Unwrap() http.Handler { return h.proxy }

// exchange is what the Handler started for a request; the Proxy's
// OnExchange finds it in the Record's context (the key is the
// *instruments, so that nested instrumented proxies do not mix theirs)
// and ends it.
type exchange struct {
	span   trace.Span
	active metric.AddOption // the request's attributes in http.server.active_requests
}

// trustedPeer is the default TrustTraceContext: the request's peer is in
// p.TrustedProxies.
func trustedPeer(p *sluice.Proxy) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		if len(p.TrustedProxies) == 0 {
			return false
		}
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return false
		}
		a := ap.Addr().Unmap()
		return slices.ContainsFunc(p.TrustedProxies, func(pf netip.Prefix) bool { return pf.Contains(a) })
	}
}
