package sluiceotel

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// startServerSpan starts the server span of r: a child of the client's
// trace context if in.trust says so, else a new trace linked to it.
func (in *instruments) startServerSpan(ctx context.Context, r *http.Request) (context.Context, trace.Span) {
	method := normalizeMethod(r.Method)
	var kv [9]attribute.KeyValue
	attrs := append(kv[:0],
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLScheme(requestScheme(r)),
	)
	if method == otherMethod {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	if r.Method != http.MethodConnect {
		attrs = append(attrs, semconv.URLPath(r.URL.EscapedPath())) // the canonical one replaces it at the end
	}
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.ServerPort(n))
		}
	}
	if v := protocolVersion(r.Proto); v != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(v))
	}
	if host, _ := splitHostPort(r.RemoteAddr); host != "" {
		attrs = append(attrs, semconv.NetworkPeerAddress(host))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...)}
	carrier := propagation.HeaderCarrier(r.Header)
	if in.trust(r) {
		ctx = in.prop.Extract(ctx, carrier)
	} else if sc := trace.SpanContextFromContext(in.prop.Extract(context.Background(), carrier)); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return in.tracer.Start(ctx, method, opts...)
}

// endServerSpan names the server span after its route and gives it what
// the Record says of the exchange.
func (in *instruments) endServerSpan(span trace.Span, rec *sluice.Record, route, errType string) {
	if !span.IsRecording() {
		span.End()
		return
	}
	method := normalizeMethod(rec.Method)
	if route != "" {
		span.SetName(method + " " + route)
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPResponseStatusCode(rec.Status),
		semconv.HTTPRequestBodySize(int(rec.RequestBytes)),
		semconv.HTTPResponseBodySize(int(rec.ResponseBytes)),
	}
	if rec.Path != "" {
		attrs = append(attrs, semconv.URLPath(rec.Path))
	}
	if rec.Query != "" {
		attrs = append(attrs, semconv.URLQuery(redactQuery(rec.Query)))
	}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if rec.Client.IsValid() {
		attrs = append(attrs, semconv.ClientAddress(rec.Client.String()))
	}
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	if rec.RequestID != "" {
		attrs = append(attrs, attrRequestID.String(rec.RequestID))
	}
	span.SetAttributes(attrs...)
	// A server span is an error for a 5xx and for a failure on the
	// proxy's or the upstream's side after the response started; a 4xx,
	// a refusal or a client that went away is the client's doing
	// (semantic conventions, HTTP spans, status).
	if rec.Status >= 500 || rec.Err != nil && rec.ErrorClass != "client" && rec.ErrorClass != "policy" {
		desc := ""
		if rec.Err != nil {
			desc = rec.Err.Error()
		}
		span.SetStatus(codes.Error, desc)
	}
	span.End()
}

// startClientSpan starts the span of an attempt, a child of the server
// span (which is in the Proxy's request context). The request's context
// is left as it is: the server span stays the current span of the
// exchange, the one hooks and the Record's context see.
func (in *instruments) startClientSpan(pr *sluice.ProxyRequest, method string, server []attribute.KeyValue) (context.Context, trace.Span) {
	out := pr.Out
	var kv [6]attribute.KeyValue
	attrs := append(kv[:0], semconv.HTTPRequestMethodKey.String(method))
	attrs = append(attrs, server...)
	if method == otherMethod {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(out.Method))
	}
	if n := pr.Attempt(); n > 0 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(n))
	}
	ctx, span := in.tracer.Start(out.Context(), method,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if span.IsRecording() {
		u := *out.URL
		u.User = nil
		u.RawQuery = redactQuery(u.RawQuery)
		span.SetAttributes(semconv.URLFull(u.String()))
	}
	return ctx, span
}

// endClientSpan ends an attempt's span: an error for a failure, a 4xx or
// a 5xx.
func endClientSpan(span trace.Span, res sluice.Result, errType string) {
	if !span.IsRecording() {
		span.End()
		return
	}
	if res.Status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(res.Status))
	}
	if errType != "" {
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		desc := ""
		if res.Err != nil {
			desc = res.Err.Error()
		}
		span.SetStatus(codes.Error, desc)
	}
	span.End()
}

// redactedParams are the query parameters whose values spans never
// carry: signatures and keys of presigned URLs (semantic conventions,
// url.query and url.full).
var redactedParams = []string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"}

// redactQuery replaces the values of redactedParams in a raw query with
// "REDACTED".
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	changed := false
	for i, p := range parts {
		eq := strings.IndexByte(p, '=')
		if eq < 0 {
			continue
		}
		name := p[:eq]
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if slices.Contains(redactedParams, name) {
			parts[i] = p[:eq+1] + "REDACTED"
			changed = true
		}
	}
	if !changed {
		return raw
	}
	return strings.Join(parts, "&")
}
