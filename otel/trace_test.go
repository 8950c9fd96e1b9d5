package sluiceotel

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A client's trace context, as a traced service in front would send it.
const (
	clientTraceID    = "0af7651916cd43dd8448eb211c80319c"
	clientSpanID     = "b7ad6b7169203331"
	clientTraceparen = "00-" + clientTraceID + "-" + clientSpanID + "-01"
	clientTracestate = "vendor=opaque"
)

// headers is what the upstream got of the trace context.
type headers struct{ traceparent, tracestate string }

// traceUpstream answers 200 and sends the trace headers it got on the
// returned channel.
func traceUpstream(t *testing.T) (*url.URL, chan headers) {
	got := make(chan headers, 16)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got <- headers{r.Header.Get("Traceparent"), r.Header.Get("Tracestate")}
	})
	return mustURL(t, up.URL), got
}

// spanByKind returns the ended spans of kind k, in the order they ended.
func spanByKind(spans []sdktrace.ReadOnlySpan, k trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanKind() == k {
			out = append(out, s)
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	m := make(map[attribute.Key]string)
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

// A server span per request, a client span per attempt as its child, and
// the attempt's trace context in the upstream request; the client's is
// continued only when trusted.
func TestTraceContext(t *testing.T) {
	leaktest.Check(t)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		name      string
		sent      bool                     // the client sends a trace context
		trusted   []netip.Prefix           // Proxy.TrustedProxies
		trust     func(*http.Request) bool // Config.TrustTraceContext
		continued bool
	}{
		{name: "no trace context"},
		{name: "untrusted client (default)", sent: true},
		{name: "untrusted: not in TrustedProxies", sent: true, trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{name: "peer in TrustedProxies", sent: true, trusted: loopback, continued: true},
		{name: "TrustTraceContext", sent: true, trust: func(*http.Request) bool { return true }, continued: true},
		{name: "TrustTraceContext refuses a trusted proxy", sent: true, trusted: loopback, trust: func(*http.Request) bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, got := traceUpstream(t)
			p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}, TrustedProxies: tc.trusted, RequestIDHeader: "X-Request-Id"}
			p.AddRoute(sluice.Route{Pattern: "GET /items/{id}"})
			s := newStack(t, p, Config{TrustTraceContext: tc.trust})
			req, _ := http.NewRequest("GET", s.url+"/items/7?q=1&Signature=secret", nil)
			if tc.sent {
				req.Header.Set("Traceparent", clientTraceparen)
				req.Header.Set("Tracestate", clientTracestate)
			}
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			s.served.wait(t, 1)
			up := <-got

			ended := s.spans.Ended()
			servers, clients := spanByKind(ended, trace.SpanKindServer), spanByKind(ended, trace.SpanKindClient)
			if len(servers) != 1 || len(clients) != 1 || len(ended) != 2 {
				t.Fatalf("%d spans (%d server, %d client), want one of each", len(ended), len(servers), len(clients))
			}
			srv, cl := servers[0], clients[0]

			// Parent and child.
			if cl.Parent().SpanID() != srv.SpanContext().SpanID() || cl.SpanContext().TraceID() != srv.SpanContext().TraceID() {
				t.Errorf("client span's parent %v, want the server span %v", cl.Parent(), srv.SpanContext())
			}
			// The upstream gets the client span's context.
			want := "00-" + cl.SpanContext().TraceID().String() + "-" + cl.SpanContext().SpanID().String() + "-01"
			if up.traceparent != want {
				t.Errorf("upstream traceparent %q, want %q", up.traceparent, want)
			}
			// The client's context: continued, or a new trace linked to it.
			parent := srv.Parent()
			switch {
			case tc.continued:
				if parent.TraceID().String() != clientTraceID || parent.SpanID().String() != clientSpanID || !parent.IsRemote() {
					t.Errorf("trusted: server span's parent %v, want the client's %s", parent, clientTraceparen)
				}
				if up.tracestate != clientTracestate {
					t.Errorf("trusted: upstream tracestate %q, want the client's %q", up.tracestate, clientTracestate)
				}
			default:
				if parent.IsValid() || srv.SpanContext().TraceID().String() == clientTraceID {
					t.Errorf("server span's parent %v trace %v: the client's context was continued", parent, srv.SpanContext().TraceID())
				}
				if up.tracestate != "" || strings.Contains(up.traceparent, clientTraceID) {
					t.Errorf("the client's trace context reached the upstream: %+v", up)
				}
				var links []string
				for _, l := range srv.Links() {
					links = append(links, l.SpanContext.TraceID().String()+"-"+l.SpanContext.SpanID().String())
				}
				var wantLinks []string
				if tc.sent {
					wantLinks = []string{clientTraceID + "-" + clientSpanID}
				}
				if diff := cmp.Diff(wantLinks, links); diff != "" {
					t.Errorf("links (-want +got):\n%s", diff)
				}
			}

			t.Logf("upstream got traceparent %s tracestate %q; spans:\n%s", up.traceparent, up.tracestate, spanTree(ended))

			// What the spans say.
			if srv.Name() != "GET /items/{id}" || cl.Name() != "GET" {
				t.Errorf("span names %q, %q", srv.Name(), cl.Name())
			}
			sa, ca := attrs(srv), attrs(cl)
			for k, v := range map[attribute.Key]string{
				"http.request.method": "GET", "http.response.status_code": "200", "http.route": "/items/{id}",
				"url.path": "/items/7", "url.query": "q=1&Signature=REDACTED", "url.scheme": "http",
				"sluice.request_id": res.Header.Get("X-Request-Id"), "client.address": "127.0.0.1",
				"network.protocol.version": "1.1", "user_agent.original": "Go-http-client/1.1",
			} {
				if sa[k] != v {
					t.Errorf("server span %s = %q, want %q", k, sa[k], v)
				}
			}
			for k, v := range map[attribute.Key]string{
				"http.request.method": "GET", "http.response.status_code": "200",
				"server.address": u.Hostname(), "server.port": u.Port(),
				"url.full": "http://" + u.Host + "/items/7?q=1&Signature=REDACTED",
			} {
				if ca[k] != v {
					t.Errorf("client span %s = %q, want %q", k, ca[k], v)
				}
			}
			if srv.Status().Code != codes.Unset || cl.Status().Code != codes.Unset {
				t.Errorf("statuses %v, %v", srv.Status(), cl.Status())
			}
		})
	}
}

// Failures: every attempt has its span (a retry says so), error.type
// and the span status follow the Record.
func TestTraceOutcomes(t *testing.T) {
	leaktest.Check(t)
	u, got := traceUpstream(t)
	dead := &url.URL{Scheme: "http", Host: deadAddr(t)}
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}}
	p.AddRoute(sluice.Route{Pattern: "/flaky/", Director: sluice.DirectorFunc(func(pr *sluice.ProxyRequest) error {
		if pr.Attempt() == 0 {
			pr.SetURL(dead)
		} else {
			pr.SetURL(u)
		}
		return nil
	})})
	p.AddRoute(sluice.Route{Pattern: "/dead/", Director: &sluice.SingleHost{Target: dead}})
	p.AddRoute(sluice.Route{Pattern: "/private/", Authorizer: sluice.AuthorizerFunc(func(*sluice.ProxyRequest) (sluice.Decision, error) {
		return sluice.Deny(http.StatusForbidden, "no\n"), nil
	})})
	s := newStack(t, p, Config{})
	c := client(t)

	type span struct {
		Kind   trace.SpanKind
		Name   string
		Status codes.Code
		Error  string // error.type
		Code   string // http.response.status_code
		Resend string // http.request.resend_count
	}
	for i, tc := range []struct {
		path string
		want []span // in the order they ended: the attempts, then the server span
	}{
		{"/flaky/x", []span{
			{trace.SpanKindClient, "GET", codes.Error, "refused", "", ""},
			{trace.SpanKindClient, "GET", codes.Unset, "", "200", "1"},
			{trace.SpanKindServer, "GET /flaky/", codes.Unset, "", "200", ""},
		}},
		{"/dead/x", []span{
			{trace.SpanKindClient, "GET", codes.Error, "refused", "", ""},
			{trace.SpanKindClient, "GET", codes.Error, "refused", "", "1"},
			{trace.SpanKindServer, "GET /dead/", codes.Error, "refused", "502", ""},
		}},
		{"/private/x", []span{
			{trace.SpanKindServer, "GET /private/", codes.Unset, "policy", "403", ""},
		}},
	} {
		s.spans.Reset()
		do(t, c, "GET", s.url+tc.path, "")
		s.served.wait(t, i+1)
		ended := s.spans.Ended()
		var spans []span
		for _, sp := range ended {
			a := attrs(sp)
			spans = append(spans, span{sp.SpanKind(), sp.Name(), sp.Status().Code, a["error.type"], a["http.response.status_code"], a["http.request.resend_count"]})
		}
		if diff := cmp.Diff(tc.want, spans); diff != "" {
			t.Errorf("%s: spans (-want +got):\n%s", tc.path, diff)
			continue
		}
		t.Logf("GET %s:\n%s", tc.path, spanTree(ended))
		srv := ended[len(ended)-1]
		for _, sp := range ended[:len(ended)-1] {
			if sp.Parent().SpanID() != srv.SpanContext().SpanID() {
				t.Errorf("%s: attempt span's parent %v, want the server span", tc.path, sp.Parent().SpanID())
			}
		}
	}
	if n := len(got); n != 1 {
		t.Errorf("upstream got %d requests, want 1 (the flaky route's retry)", n)
	}
}

// Instrument keeps the hooks set before it, and the Handler leads
// sluice.Serve to the Proxy.
func TestHooksChained(t *testing.T) {
	leaktest.Check(t)
	u, got := traceUpstream(t)
	var exchanges, attempts, results int
	var sawSpan bool
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u},
		OnExchange: func(rec *sluice.Record) {
			exchanges++
			sawSpan = trace.SpanFromContext(rec.Context).SpanContext().IsValid()
		},
		OnAttempt: func(pr *sluice.ProxyRequest) func(sluice.Result) {
			attempts++
			if pr.Out.Header.Get("Traceparent") == "" {
				t.Error("the user's OnAttempt runs before the trace context is written")
			}
			return func(sluice.Result) { results++ }
		},
	}
	s := newStack(t, p, Config{})
	do(t, client(t), "GET", s.url+"/", "")
	s.served.wait(t, 1)
	<-got
	if exchanges != 1 || attempts != 1 || results != 1 || !sawSpan {
		t.Errorf("user hooks: %d exchanges, %d attempts, %d results, span in the Record's context %v", exchanges, attempts, results, sawSpan)
	}
	if n := len(s.spans.Ended()); n != 2 {
		t.Errorf("%d spans, want 2", n)
	}
	if s.handler.Unwrap() != http.Handler(p) {
		t.Error("Unwrap does not return the Proxy")
	}
}

// spanTree draws spans as a tree, children under their parent in the
// order they started, with IDs, duration, status and the attributes that
// say what happened (go test -v shows it; docs/observability.md quotes
// it).
func spanTree(spans []sdktrace.ReadOnlySpan) string {
	children := make(map[trace.SpanID][]sdktrace.ReadOnlySpan)
	ids := make(map[trace.SpanID]bool)
	for _, s := range spans {
		ids[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent().SpanID(); s.Parent().IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(ss []sdktrace.ReadOnlySpan) {
		slices.SortFunc(ss, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	}
	keys := []attribute.Key{"http.response.status_code", "error.type", "http.route", "http.request.resend_count",
		"server.address", "server.port", "url.full", "url.path", "client.address", "sluice.request_id"}
	var b strings.Builder
	var draw func(s sdktrace.ReadOnlySpan, depth int)
	draw = func(s sdktrace.ReadOnlySpan, depth int) {
		indent := strings.Repeat("    ", depth)
		fmt.Fprintf(&b, "%s%s [%s] trace=%s span=%s", indent, s.Name(), s.SpanKind(), s.SpanContext().TraceID(), s.SpanContext().SpanID())
		if s.Parent().IsValid() && depth == 0 {
			fmt.Fprintf(&b, " parent=%s (remote)", s.Parent().SpanID())
		}
		fmt.Fprintf(&b, " %s status=%s\n", s.EndTime().Sub(s.StartTime()).Round(time.Microsecond), s.Status().Code)
		a := attrs(s)
		var kv []string
		for _, k := range keys {
			if v, ok := a[k]; ok {
				kv = append(kv, string(k)+"="+v)
			}
		}
		fmt.Fprintf(&b, "%s    %s\n", indent, strings.Join(kv, " "))
		for _, l := range s.Links() {
			fmt.Fprintf(&b, "%s    link: trace=%s span=%s\n", indent, l.SpanContext.TraceID(), l.SpanContext.SpanID())
		}
		kids := children[s.SpanContext().SpanID()]
		byStart(kids)
		for _, c := range kids {
			draw(c, depth+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		draw(r, 0)
	}
	return b.String()
}
