package balance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/sluiceproxy/sluice"
)

// BenchmarkPoolPick measures the Director cost of one request: Pool.Direct
// (snapshot load, policy pick, URL rewrite, counters) and the matching
// Observe, with 100 healthy targets.
func BenchmarkPoolPick(b *testing.B) {
	policies := []struct {
		name string
		p    Policy
	}{
		{"round-robin", RoundRobin()},
		{"weighted-round-robin", WeightedRoundRobin()},
		{"least-connections", LeastConnections()},
		{"random-two-choices", RandomTwoChoices()},
		{"consistent-hash-ip", ConsistentHash(HashClientIP())},
		{"consistent-hash-header", ConsistentHash(HashHeader("X-User"))},
		{"sticky-cookie", StickyCookie("lb", nil)},
	}
	for _, pc := range policies {
		b.Run(pc.name, func(b *testing.B) {
			pool := &Pool{Policy: pc.p, Logger: quiet()}
			ctx := context.Background()
			for i := range 100 {
				m := Member{ID: fmt.Sprintf("t%03d", i), URL: fmt.Sprintf("http://10.0.%d.%d:8080", i/250, i%250), Weight: 1 + i%4}
				if err := pool.Add(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			h := http.Header{"X-User": {"user-12345"}}
			if pc.name == "sticky-cookie" {
				// A client that already has its cookie.
				withRequest(b, nil, "", func(pr *sluice.ProxyRequest) {
					if err := pool.Direct(pr); err != nil {
						b.Fatal(err)
					}
					c := pr.ResponseHeader().Get("Set-Cookie")
					h.Set("Cookie", c[:len("lb=")+16])
				})
			}
			withRequest(b, h, "192.0.2.10:5555", func(pr *sluice.ProxyRequest) {
				orig := *pr.Out.URL
				res := sluice.Result{}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					*pr.Out.URL = orig
					if err := pool.Direct(pr); err != nil {
						b.Fatal(err)
					}
					res.Upstream = pr.Out.URL.Host
					pool.Observe(pr, res)
				}
				b.StopTimer()
			})
		})
	}
}

// BenchmarkPoolPickParallel is round-robin and two-choices picks from all
// cores at once, for contention on the shared counters.
func BenchmarkPoolPickParallel(b *testing.B) {
	for _, pc := range []struct {
		name string
		p    Policy
	}{{"round-robin", RoundRobin()}, {"random-two-choices", RandomTwoChoices()}} {
		b.Run(pc.name, func(b *testing.B) {
			pool := &Pool{Policy: pc.p, Logger: quiet()}
			for i := range 100 {
				_ = pool.Add(context.Background(), Member{URL: fmt.Sprintf("http://10.1.0.%d:80", i)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				withRequest(b, nil, "192.0.2.1:1", func(pr *sluice.ProxyRequest) {
					orig := *pr.Out.URL
					for pb.Next() {
						*pr.Out.URL = orig
						_ = pool.Direct(pr)
						pool.Observe(pr, sluice.Result{Upstream: pr.Out.URL.Host})
					}
				})
			})
		})
	}
}

// BenchmarkProxyThroughPool compares a full proxied GET (loopback client,
// proxy, upstream; keep-alive) directed by SingleHost and by a Pool of
// one target, the overhead the balancer adds per request.
func BenchmarkProxyThroughPool(b *testing.B) {
	body := make([]byte, 1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	pool := &Pool{Logger: quiet()}
	if err := pool.Add(context.Background(), Member{URL: up.URL}); err != nil {
		b.Fatal(err)
	}
	for _, d := range []struct {
		name string
		d    sluice.Director
	}{{"single-host", &sluice.SingleHost{Target: u}}, {"pool", pool}} {
		b.Run(d.name, func(b *testing.B) {
			p := &sluice.Proxy{Director: d.d, Logger: quiet()}
			px := httptest.NewServer(p)
			defer px.Close()
			defer p.CloseIdleConnections()
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := c.Get(px.URL + "/")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		})
	}
}
