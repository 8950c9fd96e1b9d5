package sluice

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// newUnixUpstream serves h on a Unix-domain socket in a temporary
// directory and returns the socket's path.
func newUnixUpstream(t *testing.T, h http.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return path
}

// hostPathEcho answers with the request's Host, path and query, and a
// body of the size asked for in ?size.
func hostPathEcho(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Target", r.URL.RequestURI())
	n, _ := strconv.Atoi(r.URL.Query().Get("size"))
	w.Header().Set("Content-Length", strconv.Itoa(n))
	io.WriteString(w, strings.Repeat("z", n))
}

func TestUnixUpstream(t *testing.T) {
	leaktest.Check(t)
	sock := newUnixUpstream(t, http.HandlerFunc(hostPathEcho))
	for _, tc := range []struct {
		name         string
		target       string
		preserveHost bool
		path         string
		want         []string // X-Host, X-Target, body length
	}{
		{"unix:///path", "unix://" + sock, false, "/a/b?q=1&size=5", []string{"localhost", "/a/b?q=1&size=5", "5"}},
		{"unix:/path", "unix:" + sock, false, "/x", []string{"localhost", "/x", "0"}},
		{"client's Host kept", "unix://" + sock, true, "/x", []string{"front.example", "/x", "0"}},
		{"large body of known length", "unix://" + sock, false, "/big?size=1048576", []string{"localhost", "/big?size=1048576", "1048576"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			front, _, _ := newProxy(t, "http://unused", func(p *Proxy) { p.Director = &SingleHost{Target: u, PreserveHost: tc.preserveHost} })
			req, _ := http.NewRequest("GET", front.URL+tc.path, nil)
			req.Host = "front.example"
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("status %d, err %v", res.StatusCode, err)
			}
			got := []string{res.Header.Get("X-Host"), res.Header.Get("X-Target"), strconv.Itoa(len(b))}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnixTargetCheck(t *testing.T) {
	for _, tc := range []struct {
		u    url.URL
		host string
		ok   bool
	}{
		{url.URL{Scheme: "unix", Host: "/run/app.sock"}, "localhost", true},
		{url.URL{Scheme: "unix", Host: "run/app.sock"}, "localhost", false},
		{url.URL{Scheme: "unix", Host: "/run/a\nb"}, "localhost", false},
		{url.URL{Scheme: "unix", Host: "/run/app.sock"}, "bad host", false},
		{url.URL{Scheme: "h2c", Host: "10.0.0.1:1"}, "", true},
		{url.URL{Scheme: "gopher", Host: "10.0.0.1:1"}, "", false},
	} {
		err := checkTarget(&http.Request{URL: &tc.u, Host: tc.host})
		if (err == nil) != tc.ok {
			t.Errorf("target %#v host %q: err %v, want ok=%v", tc.u, tc.host, err, tc.ok)
		}
	}
}
