package sluiceotel

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/httpconv"
	"go.opentelemetry.io/otel/trace"
)

// Names and units of sluice's own metrics (the HTTP ones are the
// semantic conventions', from httpconv).
const (
	metricRetries        = "sluice.upstream.retries"
	metricDenials        = "sluice.policy.denials"
	metricTunnels        = "sluice.active_tunnels"
	metricTargetHealthy  = "sluice.pool.target.healthy"
	metricTargetInFlight = "sluice.pool.target.in_flight"
	metricTargetRequests = "sluice.pool.target.requests"
	metricTargetFailures = "sluice.pool.target.failures"
	metricTargetLatency  = "sluice.pool.target.latency"
	metricTargetWeight   = "sluice.pool.target.weight"
)

// Attribute keys with no semantic convention.
const (
	attrTargetID  = attribute.Key("sluice.target.id")
	attrRequestID = attribute.Key("sluice.request_id")
)

// bodySizeBuckets are the bucket boundaries of the body size histograms,
// in bytes: powers of 4 from 64 B to 1 GiB (the conventions give none,
// and the SDK's default ones end at 10 kB).
var bodySizeBuckets = []float64{0, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10,
	1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30}

// methods are the request methods the conventions know; others are
// reported as "_OTHER".
var methods = []string{
	http.MethodConnect, http.MethodDelete, http.MethodGet, http.MethodHead, http.MethodOptions,
	http.MethodPatch, http.MethodPost, http.MethodPut, http.MethodTrace, "QUERY",
}

const otherMethod = "_OTHER"

// instruments are the metrics and the tracer of one instrumented Proxy.
type instruments struct {
	proxy  *sluice.Proxy
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	fields []string // prop.Fields()
	trust  func(r *http.Request) bool

	duration     httpconv.ServerRequestDuration
	active       httpconv.ServerActiveRequests
	requestSize  httpconv.ServerRequestBodySize
	responseSize httpconv.ServerResponseBodySize
	client       httpconv.ClientRequestDuration
	retries      metric.Int64Counter
	denials      metric.Int64Counter

	// activeOpts are the attribute sets of http.server.active_requests,
	// by method (index in methods, then _OTHER) and scheme (http,
	// https), made once: counting a request allocates nothing.
	activeOpts [2 * 11]metric.AddOption
}

func newInstruments(p *sluice.Proxy, cfg Config) (*instruments, error) {
	in := &instruments{
		proxy:  p,
		tracer: cfg.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   cfg.Propagator,
		fields: cfg.Propagator.Fields(),
		trust:  cfg.TrustTraceContext,
	}
	if in.trust == nil {
		in.trust = trustedPeer(p)
	}
	m := cfg.MeterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	in.duration, err = httpconv.NewServerRequestDuration(m)
	add(err)
	in.active, err = httpconv.NewServerActiveRequests(m)
	add(err)
	in.requestSize, err = httpconv.NewServerRequestBodySize(m, metric.WithExplicitBucketBoundaries(bodySizeBuckets...))
	add(err)
	in.responseSize, err = httpconv.NewServerResponseBodySize(m, metric.WithExplicitBucketBoundaries(bodySizeBuckets...))
	add(err)
	in.client, err = httpconv.NewClientRequestDuration(m)
	add(err)
	in.retries, err = m.Int64Counter(metricRetries, metric.WithUnit("{retry}"),
		metric.WithDescription("Attempts to reach an upstream that failed and were tried again, by the attempt's error.type."))
	add(err)
	in.denials, err = m.Int64Counter(metricDenials, metric.WithUnit("{request}"),
		metric.WithDescription("Requests the proxy refused itself (error.type policy): malformed or ambiguous, denied by an Authorizer, destination not allowed."))
	add(err)
	tunnels, err := m.Int64ObservableUpDownCounter(metricTunnels, metric.WithUnit("{tunnel}"),
		metric.WithDescription("Tunnels open: upgraded connections (WebSocket and others) and CONNECT tunnels."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	observed := []metric.Observable{tunnels}
	callbacks := []metric.Callback{func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(tunnels, int64(p.OpenTunnels()))
		return nil
	}}
	if cfg.Pool != nil {
		obs, cb, err := poolMetrics(m, cfg.Pool)
		if err != nil {
			return nil, err
		}
		observed = append(observed, obs...)
		callbacks = append(callbacks, cb)
	}
	if _, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, cb := range callbacks {
			if err := cb(ctx, o); err != nil {
				return err
			}
		}
		return nil
	}, observed...); err != nil {
		return nil, err
	}
	for i := range len(methods) + 1 {
		method := otherMethod
		if i < len(methods) {
			method = methods[i]
		}
		for j, scheme := range []string{"http", "https"} {
			in.activeOpts[2*i+j] = metric.WithAttributeSet(attribute.NewSet(
				semconv.HTTPRequestMethodKey.String(method), semconv.URLScheme(scheme)))
		}
	}
	return in, nil
}

// poolMetrics makes the sluice.pool.target.* instruments and the
// callback that reads pool.Stats() once per collection into them.
func poolMetrics(m metric.Meter, pool *balance.Pool) ([]metric.Observable, metric.Callback, error) {
	healthy, err1 := m.Int64ObservableGauge(metricTargetHealthy,
		metric.WithDescription("1 if the target gets requests (in the set the balancing policy picks from), 0 if health checks or a down mark keep it out."))
	inFlight, err2 := m.Int64ObservableUpDownCounter(metricTargetInFlight, metric.WithUnit("{request}"),
		metric.WithDescription("Attempts sent to the target whose response has not ended."))
	requests, err3 := m.Int64ObservableCounter(metricTargetRequests, metric.WithUnit("{request}"),
		metric.WithDescription("Attempts directed to the target, retries included."))
	failures, err4 := m.Int64ObservableCounter(metricTargetFailures, metric.WithUnit("{request}"),
		metric.WithDescription("Attempts to the target that failed (as passive health counts them)."))
	latency, err5 := m.Float64ObservableGauge(metricTargetLatency, metric.WithUnit("s"),
		metric.WithDescription("Mean duration of the target's attempts that ended, from sending the request to the end of the response body."))
	weight, err6 := m.Int64ObservableGauge(metricTargetWeight,
		metric.WithDescription("The target's weight for weighted policies."))
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return nil, nil, err
	}
	cb := func(_ context.Context, o metric.Observer) error {
		for _, s := range pool.Stats() {
			attrs := metric.WithAttributeSet(targetAttributes(s))
			h := int64(0)
			if s.Healthy {
				h = 1
			}
			o.ObserveInt64(healthy, h, attrs)
			o.ObserveInt64(inFlight, s.InFlight, attrs)
			o.ObserveInt64(requests, int64(s.Requests), attrs)
			o.ObserveInt64(failures, int64(s.Failures), attrs)
			o.ObserveFloat64(latency, s.Latency.Seconds(), attrs)
			o.ObserveInt64(weight, int64(s.Weight), attrs)
		}
		return nil
	}
	return []metric.Observable{healthy, inFlight, requests, failures, latency, weight}, cb, nil
}

// targetAttributes identifies a pool target: its ID, and its address as
// http.client.request.duration's server.address and server.port name
// it.
func targetAttributes(s balance.Stats) attribute.Set {
	kv := []attribute.KeyValue{attrTargetID.String(s.ID)}
	if u, err := url.Parse(s.URL); err == nil {
		kv = append(kv, serverAddress(u.Scheme, u.Host)...)
	}
	return attribute.NewSet(kv...)
}

// activeOption returns the attributes of r in http.server.active_requests.
func (in *instruments) activeOption(r *http.Request) metric.AddOption {
	i := len(methods)
	for k, m := range methods {
		if m == r.Method {
			i = k
			break
		}
	}
	j := 0
	if r.TLS != nil {
		j = 1
	}
	return in.activeOpts[2*i+j]
}

// onExchange records the metrics of an exchange that ended and ends its
// server span.
func (in *instruments) onExchange(rec *sluice.Record) {
	ctx := rec.Context // holds the server span: exemplars point at it
	errType := errorType(rec.ErrorClass, rec.Status, false)
	route := httpRoute(rec.Route)
	method := semconv.HTTPRequestMethodKey.String(normalizeMethod(rec.Method))
	status := semconv.HTTPResponseStatusCode(rec.Status)
	var kv [7]attribute.KeyValue
	attrs := append(kv[:0], method, status,
		semconv.URLScheme(requestScheme(rec.Request)),
		semconv.NetworkProtocolName("http"),
	)
	if v := protocolVersion(rec.Proto); v != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(v))
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	set := attribute.NewSet(attrs...)
	in.duration.RecordSet(ctx, rec.Duration.Seconds(), set)
	in.requestSize.RecordSet(ctx, rec.RequestBytes, set)
	in.responseSize.RecordSet(ctx, rec.ResponseBytes, set)
	if rec.ErrorClass == "policy" {
		deny := []attribute.KeyValue{method, status}
		if route != "" {
			deny = append(deny, semconv.HTTPRoute(route))
		}
		in.denials.Add(ctx, 1, metric.WithAttributes(deny...))
	}
	if n := len(rec.Attempts); n > 1 {
		for _, a := range rec.Attempts[:n-1] {
			in.retries.Add(ctx, 1, metric.WithAttributes(semconv.ErrorTypeKey.String(orOther(a.ErrorClass()))))
		}
	}
	if ex, _ := ctx.Value(in).(*exchange); ex != nil {
		in.active.Int64UpDownCounter.Add(ctx, -1, ex.active)
		in.endServerSpan(ex.span, rec, route, errType)
	}
}

// onAttempt starts the client span of an attempt, writes its trace
// context into the upstream request, and returns the function that
// records the attempt's end.
func (in *instruments) onAttempt(pr *sluice.ProxyRequest) func(sluice.Result) {
	out := pr.Out
	server := serverAddress(out.URL.Scheme, out.URL.Host)
	method := normalizeMethod(out.Method)
	ctx, span := in.startClientSpan(pr, method, server)
	for _, f := range in.fields {
		out.Header.Del(f)
	}
	in.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return func(res sluice.Result) {
		errType := errorType(res.ErrorClass(), res.Status, true)
		var kv [5]attribute.KeyValue
		attrs := append(kv[:0], semconv.HTTPRequestMethodKey.String(method))
		attrs = append(attrs, server...)
		if res.Status != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(res.Status))
		}
		if errType != "" {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		in.client.RecordSet(ctx, res.Duration.Seconds(), attribute.NewSet(attrs...))
		endClientSpan(span, res, errType)
	}
}

// errorType is the error.type of an exchange (or, for client, of an
// attempt): its error class if it failed, else its status as a string
// when the conventions count it as an error (5xx for a server, 4xx and
// 5xx for a client), else "".
func errorType(class string, status int, client bool) string {
	switch {
	case class != "":
		return class
	case status >= 500, client && status >= 400:
		return strconv.Itoa(status)
	}
	return ""
}

func orOther(s string) string {
	if s == "" {
		return "_OTHER"
	}
	return s
}

// normalizeMethod is http.request.method: a method the conventions know,
// or "_OTHER", so that clients cannot grow the number of series.
func normalizeMethod(m string) string {
	for _, k := range methods {
		if k == m {
			return k
		}
	}
	return otherMethod
}

// httpRoute is http.route for a route pattern: the pattern without its
// method ("POST /{index}/_search" is "/{index}/_search"), which
// http.request.method already says.
func httpRoute(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return strings.TrimLeft(pattern[i:], " \t")
	}
	return pattern
}

func requestScheme(r *http.Request) string {
	if r != nil && r.TLS != nil {
		return "https"
	}
	return "http"
}

// protocolVersion is network.protocol.version for a request's Proto.
func protocolVersion(proto string) string {
	switch proto {
	case "HTTP/1.1":
		return "1.1"
	case "HTTP/2.0":
		return "2"
	case "HTTP/1.0":
		return "1.0"
	case "HTTP/3.0":
		return "3"
	}
	return ""
}

// serverAddress returns server.address and server.port for an upstream
// URL's host (the scheme's default port if it has none); a unix: upstream
// has its socket path as server.address and no port.
func serverAddress(scheme, hostport string) []attribute.KeyValue {
	host, port := splitHostPort(hostport)
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http", "h2c":
			port = "80"
		}
	}
	kv := []attribute.KeyValue{semconv.ServerAddress(host)}
	if n, err := strconv.Atoi(port); err == nil {
		kv = append(kv, semconv.ServerPort(n))
	}
	return kv
}

// splitHostPort splits host[:port] (the port may be missing, an IPv6
// address is in brackets); unlike net.SplitHostPort, a missing port is
// no error, and nothing is allocated.
func splitHostPort(hostport string) (host, port string) {
	host = hostport
	if i := strings.LastIndexByte(hostport, ':'); i > strings.LastIndexByte(hostport, ']') {
		host, port = hostport[:i], hostport[i+1:]
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host, port
}
