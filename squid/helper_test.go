package squid

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/forward"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// shHelper is a url_rewrite helper in sh, with channel IDs.
const shHelper = `#!/bin/sh
while read -r id url rest; do
  case "$url" in
    */block*) echo "$id ERR message=\"blocked by policy\"" ;;
    */rewrite*) echo "$id OK rewrite-url=$REWRITE" ;;
    */redirect*) echo "$id OK status=307 url=\"http://login.example/\"" ;;
    */bh*) echo "$id BH message=\"cannot decide\"" ;;
    */crash*) exit 3 ;;
    */client*) echo "$rest" > "$CLIENTFILE" ; echo "$id OK" ;;
    *) echo "$id OK" ;;
  esac
done
`

func TestHelperAuthorizerDirector(t *testing.T) {
	leaktest.Check(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream "+r.Host+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	alt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "rewritten "+r.URL.RequestURI())
	}))
	t.Cleanup(alt.Close)

	dir := t.TempDir()
	script := filepath.Join(dir, "helper.sh")
	if err := os.WriteFile(script, []byte(shHelper), 0o755); err != nil {
		t.Fatal(err)
	}
	clientFile := filepath.Join(dir, "client")
	for _, bypass := range []bool{false, true} {
		h, err := Start(Config{
			Command: script, Children: 2, Concurrency: 4, Timeout: 5 * time.Second, Bypass: bypass,
			Env: append(os.Environ(), "REWRITE="+alt.URL+"/new?x=1", "CLIENTFILE="+clientFile),
		})
		if err != nil {
			t.Fatal(err)
		}
		target, _ := url.Parse(up.URL)
		p := &sluice.Proxy{Authorizer: h, Director: h.Director(&forward.Director{Next: &sluice.SingleHost{Target: target}, AllowAddrs: loopback})}
		front := newFront(t, p)
		c := noRedirect()

		bh := http.StatusServiceUnavailable
		bhBody := "503 Service Unavailable\n"
		if bypass {
			bh, bhBody = http.StatusOK, "upstream "+target.Host+"/bh"
		}
		tests := []struct {
			path     string
			wantCode int
			wantBody string
			wantLoc  string
		}{
			{"/ok", 200, "upstream " + target.Host + "/ok", ""},
			{"/block", 403, "blocked by policy\n", ""},
			{"/rewrite/old", 200, "rewritten /new?x=1", ""},
			{"/redirect", 307, "", "http://login.example/"},
			{"/bh", bh, bhBody, ""},
			{"/client", 200, "", ""},
		}
		for _, tt := range tests {
			req, _ := http.NewRequest("GET", front.URL+tt.path, nil)
			r := do(t, c, req)
			if r.status != tt.wantCode || (tt.wantBody != "" && r.body != tt.wantBody) || r.header.Get("Location") != tt.wantLoc {
				t.Errorf("bypass=%v %s: got %d %q Location %q, want %d %q %q", bypass, tt.path,
					r.status, r.body, r.header.Get("Location"), tt.wantCode, tt.wantBody, tt.wantLoc)
			}
		}
		// Forward proxying: an absolute-form request goes where it says.
		fc := &http.Client{Transport: &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse(front.URL) }}}
		req, _ := http.NewRequest("GET", alt.URL+"/direct", nil)
		if r := do(t, fc, req); r.status != 200 || r.body != "rewritten /direct" {
			t.Errorf("bypass=%v forward proxy: %d %q", bypass, r.status, r.body)
		}
		fc.CloseIdleConnections()
		front.Close()
		c.CloseIdleConnections()
		p.CloseIdleConnections()
		h.Close()
	}
	// The helper saw the requester, the method and the local address.
	b, err := os.ReadFile(clientFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), "127.0.0.1/- - GET myip=127.0.0.1 myport="; !strings.HasPrefix(got, want) {
		t.Errorf("helper request extras %q, want prefix %q", got, want)
	}
}

// The Squid helper decides on the canonical URL, as Squid hands it.
func TestHelperSeesCanonicalURL(t *testing.T) {
	leaktest.Check(t)
	script := filepath.Join(t.TempDir(), "helper.sh")
	const sh = `#!/bin/sh
while read -r id url rest; do
  case "$url" in
    http://a/public/*) echo "$id OK" ;;
    *) echo "$id ERR" ;;
  esac
done
`
	if err := os.WriteFile(script, []byte(sh), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := Start(Config{Command: script, Concurrency: 1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var (
		mu   sync.Mutex
		uris []string
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		uris = append(uris, r.RequestURI)
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	p := &sluice.Proxy{Authorizer: h, Director: &sluice.SingleHost{Target: target}}
	px := newFront(t, p)
	t.Cleanup(p.CloseIdleConnections)
	for path, want := range map[string]string{
		"/public/a.txt":          "200",
		"/public/../private.txt": "403",
		"/public/%2E%2E/private": "403",
	} {
		resp := rawExchange(t, px.Listener.Addr().String(), "GET "+path+" HTTP/1.1\r\nHost: A.\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 "+want) {
			t.Errorf("GET %s: %q, want %s", path, firstLine(resp), want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"/public/a.txt"}, uris); diff != "" {
		t.Errorf("upstream got (-want +got):\n%s", diff)
	}
}

// loopback lets the forward.Director reach this test's upstreams.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// A CONNECT goes to the helper as Squid sends it: the authority as URL.
func TestRequestURLConnect(t *testing.T) {
	r := httptest.NewRequest(http.MethodConnect, "example.com:443", nil)
	r.URL = &url.URL{Host: "example.com:443"}
	if got := requestURL(r); got != "example.com:443" {
		t.Errorf("CONNECT URL %q, want example.com:443", got)
	}
	r = httptest.NewRequest(http.MethodGet, "http://example.com/a?b=c", nil)
	if got := requestURL(r); got != "http://example.com/a?b=c" {
		t.Errorf("absolute-form URL %q", got)
	}
}
