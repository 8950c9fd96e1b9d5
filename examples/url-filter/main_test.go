package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/examples/internal/demotest"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// buildHelper builds the sample helper program for the test.
func buildHelper(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "helper")
	out, err := exec.Command("go", "build", "-o", bin, "./helper").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./helper: %v\n%s", err, out)
	}
	return bin
}

// startFilter runs url-filter as main does, until the test ends.
func startFilter(t *testing.T, cfg config) string {
	t.Helper()
	return demotest.Run(t, func(ctx context.Context, ready func(string)) error { return run(ctx, cfg, ready) })
}

type answer struct {
	status   int
	body     string
	location string
}

func get(t *testing.T, c *http.Client, target string, header http.Header) answer {
	t.Helper()
	req, err := http.NewRequest("GET", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vv := range header {
		req.Header[k] = vv
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, string(b), res.Header.Get("Location")}
}

func TestURLFilter(t *testing.T) {
	leaktest.Check(t)
	helper := buildHelper(t)
	backend := httptest.NewServer(demoHandler())
	t.Cleanup(backend.Close)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "other "+r.Host+" "+r.URL.Path+" xff="+r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(other.Close)
	otherHost := strings.TrimPrefix(other.URL, "http://")

	for _, bypass := range []bool{false, true} {
		name := "fail-closed"
		failStatus := http.StatusServiceUnavailable
		if bypass {
			name, failStatus = "bypass", http.StatusOK
		}
		t.Run(name, func(t *testing.T) {
			front := startFilter(t, config{
				listen: "127.0.0.1:0", upstream: backend.URL,
				helper: helper, helperArgs: []string{"-concurrency", "-test-hooks"},
				children: 1, concurrency: 4, timeout: 500 * time.Millisecond, bypass: bypass,
				trusted:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				stripCookies: []string{"_ga"},
				connectPorts: []uint16{443}, allowAddrs: loopback,
			})
			frontURL, _ := url.Parse(front)
			direct := &http.Client{
				Transport:     &http.Transport{},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			proxied := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(frontURL)}}
			t.Cleanup(direct.CloseIdleConnections)
			t.Cleanup(proxied.CloseIdleConnections)

			tests := []struct {
				name     string
				client   *http.Client
				url      string
				header   http.Header
				want     int
				body     string // substring
				location string
			}{
				{"allowed", direct, front + "/hello", nil, 200, "GET /hello\n", ""},
				{"xff names the requester", direct, front + "/hello",
					http.Header{"X-Forwarded-For": {"203.0.113.9"}}, 200, "X-Forwarded-For: 127.0.0.1\n", ""},
				{"tracking cookie stripped", direct, front + "/hello",
					http.Header{"Cookie": {"_ga=GA1.2.3; session=abc"}}, 200, "Cookie: session=abc\n", ""},
				{"rewritten", direct, front + "/old/page?q=1", nil, 200, "GET /new/page?q=1\n", ""},
				{"redirected", direct, front + "/moved/page", nil, 301, "", front + "/new/page"},
				{"forward allowed", proxied, other.URL + "/fwd", nil, 200, "other " + otherHost + " /fwd xff=127.0.0.1", ""},
				{"forward denied", proxied, "http://ads.example/banner", nil, 403, "blocked by url-filter: ads.example\n", ""},
				{"forward denied subdomain", proxied, "http://x.blocked.example/", nil, 403, "blocked by url-filter: x.blocked.example", ""},
				{"forward denied trailing dot", proxied, "http://Blocked.Example./", nil, 403, "blocked by url-filter: blocked.example\n", ""},
				{"forward denied trailing dot and port", proxied, "http://blocked.example.:80/", nil, 403, "blocked by url-filter: blocked.example\n", ""},
				{"helper BH", direct, front + "/bh", nil, failStatus, "", ""},
				{"helper garbage", direct, front + "/garbage", nil, failStatus, "", ""},
				{"helper crash", direct, front + "/crash", nil, failStatus, "", ""},
				{"after crash: restarted", direct, front + "/hello", nil, 200, "GET /hello\n", ""},
				{"helper timeout", direct, front + "/hang", nil, failStatus, "", ""},
				{"after timeout: others served", direct, front + "/hello", nil, 200, "GET /hello\n", ""},
			}
			for _, tt := range tests {
				a := get(t, tt.client, tt.url, tt.header)
				if a.status != tt.want || !strings.Contains(a.body, tt.body) || a.location != tt.location {
					t.Errorf("%s: got %d %q Location %q; want %d, body containing %q, Location %q",
						tt.name, a.status, a.body, a.location, tt.want, tt.body, tt.location)
				}
			}
		})
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// TestHTTPSThroughConnect filters HTTPS: curl -x with https:// URLs
// and raw CONNECT exchanges, against a local TLS site.
func TestHTTPSThroughConnect(t *testing.T) {
	leaktest.Check(t)
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	helper := buildHelper(t)
	cert, _, caFile := testcert.Localhost(t)
	site := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls site "+r.URL.Path)
	}))
	site.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	site.StartTLS()
	t.Cleanup(site.Close)
	siteURL, _ := url.Parse(site.URL)
	port, _ := strconv.ParseUint(siteURL.Port(), 10, 16)
	backend := httptest.NewServer(demoHandler())
	t.Cleanup(backend.Close)

	front := startFilter(t, config{
		listen: "127.0.0.1:0", upstream: backend.URL,
		helper: helper, helperArgs: []string{"-concurrency"},
		children: 1, concurrency: 4, timeout: 5 * time.Second,
		connectPorts: []uint16{uint16(port)}, allowAddrs: loopback, matchSNI: true,
	})
	proxyAddr := strings.TrimPrefix(front, "http://")
	curlVia := func(args ...string) (string, error) {
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "10", "--cacert", caFile, "-x", front}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		name, url, want string
		fail            bool
	}{
		{"allowed", fmt.Sprintf("https://localhost:%d/page", port), "tls site /page", false},
		// The sample helper blocks ads.example; the proxy resolves the
		// name, so a blocked name never reaches DNS: the helper decides
		// first.
		{"blocked host", "https://ads.example/", "CONNECT tunnel failed, response 403", true},
		{"blocked subdomain", fmt.Sprintf("https://x.blocked.example:%d/", port), "CONNECT tunnel failed, response 403", true},
		{"port not listed", "https://localhost:8443/", "CONNECT tunnel failed, response 403", true},
	} {
		out, err := curlVia(tt.url)
		if tt.fail != (err != nil) || !strings.Contains(out, tt.want) {
			t.Errorf("%s: curl %v, output %q; want %q (failure %v)", tt.name, err, out, tt.want, tt.fail)
		}
	}

	// A raw CONNECT, with the start of a TLS ClientHello right behind
	// the request head: the 200 has no body framing, and the helper's
	// answer for a blocked host is a 403 that closes the connection.
	for _, tt := range []struct {
		authority  string
		wantStatus int
	}{
		{fmt.Sprintf("localhost:%d", port), http.StatusOK},
		{"blocked.example:443", http.StatusForbidden},
		{"localhost", http.StatusBadRequest},
	} {
		c, err := net.Dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tt.authority, tt.authority)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("CONNECT %s: %v", tt.authority, err)
		}
		if res.StatusCode != tt.wantStatus {
			t.Errorf("CONNECT %s: %d, want %d", tt.authority, res.StatusCode, tt.wantStatus)
		}
		if res.StatusCode == http.StatusOK {
			// TLS through the tunnel, verified against the site's name.
			tc := tls.Client(&bufferedConn{Conn: c, r: br}, &tls.Config{ServerName: "localhost", RootCAs: mustPool(t, caFile)})
			if err := tc.Handshake(); err != nil {
				t.Errorf("TLS through the raw tunnel: %v", err)
			}
		} else if !res.Close {
			t.Errorf("CONNECT %s: refused without closing the connection", tt.authority)
		}
		c.Close()
	}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func mustPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// TestTrustedBalancer puts url-filter behind a trusted load balancer: the
// helper and the upstream both see the real requester.
func TestTrustedBalancer(t *testing.T) {
	leaktest.Check(t)
	helper := buildHelper(t)
	backend := httptest.NewServer(demoHandler())
	t.Cleanup(backend.Close)
	front := startFilter(t, config{
		listen: "127.0.0.1:0", upstream: backend.URL,
		helper: helper, helperArgs: []string{"-test-hooks"}, // no channel IDs
		children: 2, concurrency: 0, timeout: 5 * time.Second,
		trusted:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		connectPorts: []uint16{443},
	})
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	a := get(t, c, front+"/whoami", http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	for _, want := range []string{"GET /whoami?client=203.0.113.9\n", "X-Forwarded-For: 203.0.113.9, 127.0.0.1\n"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("body %q does not contain %q", a.body, want)
		}
	}
}

// TestProxyProtocol: behind an L4 load balancer that sends PROXY
// headers (curl --haproxy-protocol stands in for it), the helper and the
// upstream see the address the header names, not the balancer's.
func TestProxyProtocol(t *testing.T) {
	leaktest.Check(t)
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	helper := buildHelper(t)
	backend := httptest.NewServer(demoHandler())
	t.Cleanup(backend.Close)
	front := startFilter(t, config{
		listen: "127.0.0.1:0", upstream: backend.URL,
		helper: helper, helperArgs: []string{"-test-hooks"},
		children: 1, timeout: 5 * time.Second, connectPorts: []uint16{443},
		proxyProto: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	// curl sends "PROXY TCP4 127.0.0.1 127.0.0.1 ..." with its own
	// address: what changes is that the header is required and read.
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--haproxy-protocol", front+"/whoami").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GET /whoami?client=127.0.0.1") || !strings.Contains(string(out), "X-Forwarded-For: 127.0.0.1\n") {
		t.Errorf("through PROXY protocol: %v\n%s", err, out)
	}
	// A header naming another client: that address is the requester.
	c, err := net.Dial("tcp", strings.TrimPrefix(front, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET /whoami HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "GET /whoami?client=203.0.113.7") || !strings.Contains(string(b), "X-Forwarded-For: 203.0.113.7\n") {
		t.Errorf("client named by the PROXY header not used:\n%s", b)
	}
	// Without the header, a listed peer's connection is refused.
	if out, err := exec.Command(curl, "-sS", "--max-time", "10", front+"/whoami").CombinedOutput(); err == nil {
		t.Errorf("a listed peer without a PROXY header was served: %s", out)
	}
}

// TestFlags: settings that cannot work are refused at start, naming the
// flag; -h says what the program is before the flags.
func TestFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-helper", "go", "-helper-args", "version", "-trusted", "10.0.0.0/8, ::1/128", "-concurrency", "0"}, ""},
		{[]string{"-helper", "/nonexistent/helper"}, "-helper"},
		{[]string{"-helper-args", "-concurrency"}, "-helper-args"},
		{[]string{"-children", "0"}, "-children 0"},
		{[]string{"-concurrency", "-1"}, "-concurrency"},
		{[]string{"-queue", "-1"}, "-queue"},
		{[]string{"-timeout", "0"}, "-timeout"},
		{[]string{"-trusted", "10.0.0.0/33"}, "-trusted"},
		{[]string{"-upstream", "127.0.0.1:9000"}, "-upstream"},
		{[]string{"-listen", "8080"}, "-listen"},
		{[]string{"-connect-ports", "443,x"}, "-connect-ports"},
		{[]string{"-connect-ports", ""}, "-connect-ports"},
		{[]string{"-allow-addrs", "10.0.0.0/8,nope"}, "-allow-addrs"},
		{[]string{"-proxy-protocol", "10.0.0.0/33"}, "-proxy-protocol"},
		{[]string{"-connect-ports", "443, 8443", "-allow-addrs", "10.0.0.0/8", "-match-sni=false"}, ""},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var out strings.Builder
		_, err := parseFlags(tt.args, &out)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%q: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	var out strings.Builder
	if _, err := parseFlags([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.HasPrefix(out.String(), "url-filter: a filtering forward and reverse proxy") || !strings.Contains(out.String(), "-helper") {
		t.Errorf("-h prints:\n%s", out.String())
	}
}
