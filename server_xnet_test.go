//lint:file-ignore SA1019 golang.org/x/net/http2.Transport is deprecated in favor of net/http's (the same code, bundled), which the other tests use; this one keeps x/net's own client, h2c dialing included, covered.

package sluice

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/sluiceproxy/sluice/internal/leaktest"
	"golang.org/x/net/http2"
)

// golang.org/x/net/http2's own Transport speaks HTTP/2 to Server over TLS
// and, with AllowHTTP and a plain dial, h2c with prior knowledge.
func TestServerXNetHTTP2Client(t *testing.T) {
	leaktest.Check(t)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" upstream")
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Front-Proto", r.Proto)
		proxyTo(t, upstream.URL).ServeHTTP(w, r)
	})
	fronts := startFronts(t, h, nil)
	var roots *tls.Config
	if tr, ok := fronts[0].client.Transport.(*http.Transport); ok {
		roots = tr.TLSClientConfig
	}
	tlsTr := &http2.Transport{TLSClientConfig: roots}
	h2cTr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tlsTr.CloseIdleConnections)
	t.Cleanup(h2cTr.CloseIdleConnections)
	for _, tt := range []struct {
		name string
		tr   http.RoundTripper
		url  string
	}{
		{"tls", tlsTr, fronts[0].url},
		{"h2c", h2cTr, fronts[2].url},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, body := get(t, &http.Client{Transport: tt.tr}, tt.url+"/x")
			if got := res.Proto + " " + res.Header.Get("X-Front-Proto") + " " + body; got != "HTTP/2.0 HTTP/2.0 HTTP/1.1 upstream" {
				t.Errorf("got %q", got)
			}
		})
	}
}
