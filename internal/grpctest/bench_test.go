//lint:file-ignore SA1019 the baseline issue 17 names is ReverseProxy with x/net's (deprecated) http2.Transport

package grpctest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httputil"
	"net/url"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// BenchmarkUnary measures gRPC unary calls (64-byte request and response
// payloads) from a grpc-go client to a grpc-go server over h2c: directly,
// through sluice (an h2c net/http front, the Proxy, its engine's h2c
// client), and through httputil.ReverseProxy behind the same front with
// x/net's http2.Transport (AllowHTTP, a plain dial) as its transport.
// Allocations count the whole process: client, proxy and server.
//
//	go test -run '^$' -bench Unary -benchtime 20000x ./internal/grpctest
func BenchmarkUnary(b *testing.B) {
	u := startUpstream(b, false)
	upstreamURL := &url.URL{Scheme: "http", Host: u.target.Host}
	proxies := []struct {
		name  string
		start func(b *testing.B) (string, credentials.TransportCredentials)
	}{
		{"direct", func(b *testing.B) (string, credentials.TransportCredentials) {
			return u.target.Host, insecure.NewCredentials()
		}},
		{"sluice", func(b *testing.B) (string, credentials.TransportCredentials) {
			p := newProxy(u)
			b.Cleanup(p.CloseIdleConnections)
			return h2cFront(b, p)
		}},
		{"httputil", func(b *testing.B) (string, credentials.TransportCredentials) {
			tr := &http2.Transport{
				AllowHTTP: true,
				DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				},
			}
			b.Cleanup(tr.CloseIdleConnections)
			rp := &httputil.ReverseProxy{
				Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upstreamURL) },
				Transport: tr,
			}
			return h2cFront(b, rp)
		}},
	}
	for _, px := range proxies {
		b.Run(px.name, func(b *testing.B) {
			addr, creds := px.start(b)
			c := testpb.NewTestServiceClient(dial(b, addr, creds))
			req := &testpb.SimpleRequest{ResponseSize: 64, Payload: &testpb.Payload{Body: make([]byte, 64)}}
			ctx := context.Background()
			if _, err := c.UnaryCall(ctx, req); err != nil { // connections up before timing
				b.Fatal(err)
			}
			b.Run("sequential", func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := c.UnaryCall(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.UnaryCall(ctx, req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// reportCPU reports the process's CPU time (user and system) per
// operation, a figure that other load on the machine disturbs less than
// the wall time per operation. Call the result when the loop ended.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
