package sluice

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// discardWriter is a minimal http.ResponseWriter so that the benchmarks
// measure the proxy, not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// benchUpstream is a raw HTTP/1.1 upstream that answers every request
// with the same 100-byte response and allocates nothing per request, so
// that the benchmarks count the proxy's allocations, not the upstream's.
func benchUpstream(b testing.TB) *url.URL {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n" +
		"Date: Thu, 26 Nov 2026 00:00:00 GMT\r\n\r\n" + strings.Repeat("x", 100))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					// Requests in these benchmarks have no body: a head
					// ends with an empty line.
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
			}()
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

func benchHandler(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "http://proxy.test/small", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkProxy is a small keep-alive GET through sluice's handler to a
// real loopback upstream; compare with BenchmarkReverseProxy.
func BenchmarkProxy(b *testing.B) {
	u := benchUpstream(b)
	p := &Proxy{Director: &SingleHost{Target: u}}
	b.Cleanup(p.CloseIdleConnections)
	benchHandler(b, p)
}

// BenchmarkReverseProxy does the same work through httputil.ReverseProxy
// with a transport tuned like sluice's (keep-alive pool, no compression).
func BenchmarkReverseProxy(b *testing.B) {
	u := benchUpstream(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport: tr,
	}
	benchHandler(b, rp)
}

// BenchmarkProxyLargeBody streams a 1 MiB response through the handler.
func BenchmarkProxyLargeBody(b *testing.B) {
	body := make([]byte, 1<<20)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	b.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := &Proxy{Director: &SingleHost{Target: u}}
	b.Cleanup(p.CloseIdleConnections)
	b.SetBytes(int64(len(body)))
	benchHandler(b, p)
}

// BenchmarkSanitize measures building the outbound request: header copy,
// hop-by-hop removal and forwarding headers.
func BenchmarkSanitize(b *testing.B) {
	req := httptest.NewRequest("GET", "http://proxy.test/a/b?c=d", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "1")
	req.Header.Set("Cookie", "session=abc")
	p := &Proxy{}
	b.ReportAllocs()
	for b.Loop() {
		pr := p.newProxyRequest(req)
		p.releaseProxyRequest(pr)
	}
}

// BenchmarkProxyRecord is BenchmarkProxy with an OnExchange hook that
// reads the Record, as an access logger would.
func BenchmarkProxyRecord(b *testing.B) {
	u := benchUpstream(b)
	var n int64
	p := &Proxy{Director: &SingleHost{Target: u}, OnExchange: func(rec *Record) { n += rec.ResponseBytes + int64(rec.Status) }}
	b.Cleanup(p.CloseIdleConnections)
	benchHandler(b, p)
}
