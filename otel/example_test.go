package sluiceotel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice"
	sluiceotel "github.com/sluiceproxy/sluice/otel"
)

// Instrument a Proxy and serve its metrics in the Prometheus text
// format. In a program, the Handler is what sluice.Server serves and
// the metrics handler goes on an admin listener:
//
//	go sluice.Serve(ctx, &http.Server{Handler: metrics}, adminLn, 0)
//	sluice.Serve(ctx, &sluice.Server{Handler: h}, ln, 0)
func ExampleInstrument() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	proxy := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer proxy.CloseIdleConnections()

	mp, metrics, err := sluiceotel.NewPrometheus()
	if err != nil {
		log.Fatal(err)
	}
	defer mp.Shutdown(context.Background())
	h, err := sluiceotel.Instrument(proxy, sluiceotel.Config{MeterProvider: mp})
	if err != nil {
		log.Fatal(err)
	}

	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/hello", nil))

	scrape := httptest.NewRecorder()
	metrics.ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(scrape.Body.String()) {
		if strings.HasPrefix(line, "http_server_request_duration_seconds_count") {
			fmt.Print(line)
		}
	}
	// Output:
	// http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",network_protocol_name="http",network_protocol_version="1.1",otel_scope_name="github.com/sluiceproxy/sluice/otel",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",url_scheme="http"} 1
}
