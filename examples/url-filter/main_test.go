package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/examples/internal/demotest"
	"github.com/sluiceproxy/sluice/internal/leaktest"
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
		trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
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
