package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestProxyProtocolFlagParsing(t *testing.T) {
	var p prefixes
	for _, v := range []string{"10.0.0.0/8, 127.0.0.1", "::1", "192.168.1.7/16"} {
		if err := p.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := "10.0.0.0/8,127.0.0.1/32,::1/128,192.168.0.0/16"
	if got := p.String(); got != want {
		t.Errorf("-proxy-protocol parsed as %q, want %q", got, want)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com", "10.0.0.0/8,,::1"} {
		if err := new(prefixes).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{netHTTP: true, proxyProtocol: p}); err == nil {
		t.Error("serve accepted -proxy-protocol with -server net/http")
	}
}

// -proxy-protocol 127.0.0.1: the demo upstream's /headers shows the
// header's client in X-Forwarded-For, over a plain and a TLS listener; a
// connection without the header is closed.
func TestProxyProtocolFlag(t *testing.T) {
	roots, certFile, keyFile := writeTestCert(t)
	header := "PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n"
	for _, tlsOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsOn], func(t *testing.T) {
			leaktest.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg := config{timeout: 5 * time.Second, proxyProtocol: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
			if tlsOn {
				cfg.tlsCert, cfg.tlsKey = certFile, keyFile
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- serve(ctx, ln, cfg) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			get := func(header string) (string, error) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, header)
				if tlsOn {
					c = tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
				}
				io.WriteString(c, "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return "", err
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				return string(b), err
			}
			body, err := get(header)
			if err != nil {
				t.Fatal(err)
			}
			var xff []string
			for _, line := range strings.Split(body, "\r\n") {
				if v, ok := strings.CutPrefix(line, "X-Forwarded-For: "); ok {
					xff = append(xff, v)
				}
			}
			if diff := cmp.Diff([]string{"203.0.113.7"}, xff); diff != "" {
				t.Errorf("X-Forwarded-For at the upstream (-want +got):\n%s\n%s", diff, body)
			}
			if body, err := get(""); err == nil {
				t.Errorf("without a PROXY header: answered %q", body)
			}
		})
	}
}
