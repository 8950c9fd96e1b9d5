package forward_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/forward"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// startProxy serves p with sluice.Server on loopback and returns its
// address.
func startProxy(t *testing.T, p *sluice.Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &sluice.Server{Handler: p}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		p.CloseIdleConnections()
	})
	return ln.Addr().String()
}

// tlsSite is an HTTPS server on loopback (HTTP/2 and HTTP/1.1) with a
// certificate for "localhost" and 127.0.0.1, and the file of that
// certificate, for curl --cacert.
func tlsSite(t *testing.T) (srv *httptest.Server, caFile string) {
	t.Helper()
	cert, _, caFile := testcert.Localhost(t)
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secret site: %s %s", r.Method, r.URL.Path)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, caFile
}

func proxyClient(t *testing.T, proxy string, roots *x509.CertPool) *http.Client {
	t.Helper()
	pu, _ := url.Parse(proxy)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// Go's http.Transport with Proxy set: HTTPS through CONNECT (HTTP/2
// inside the tunnel), plain HTTP in absolute form.
func TestGoClientThroughForwardProxy(t *testing.T) {
	site, _ := tlsSite(t)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain site: %s", r.URL.Path)
	}))
	t.Cleanup(plain.Close)
	proxy := startProxy(t, &sluice.Proxy{Director: &forward.Director{
		AllowAddrs:   loopback,
		ConnectPorts: []uint16{portOf(t, site.URL)},
	}})
	roots := x509.NewCertPool()
	roots.AddCert(site.Certificate())
	c := proxyClient(t, "http://"+proxy, roots)

	for _, tt := range []struct{ url, want, proto string }{
		{site.URL + "/a", "secret site: GET /a", "HTTP/2.0"},
		{plain.URL + "/b", "plain site: /b", "HTTP/1.1"},
	} {
		res, err := c.Get(tt.url)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.url, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != tt.want || res.Proto != tt.proto {
			t.Errorf("GET %s: %s %q, want %s %q", tt.url, res.Proto, b, tt.proto, tt.want)
		}
	}
}

// The defaults refuse loopback targets, whatever the spelling, for
// tunnels and plain requests alike, and tunnels to ports other than 443.
func TestEgressDefaults(t *testing.T) {
	reached := make(chan string, 10)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached <- r.URL.Path
	}))
	t.Cleanup(plain.Close)
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	proxy := startProxy(t, &sluice.Proxy{Director: &forward.Director{}, Logger: quiet()})

	for _, tt := range []struct {
		request string
		want    int
	}{
		{"GET http://127.0.0.1:" + port + "/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", http.StatusForbidden},
		{"GET http://localhost:" + port + "/x HTTP/1.1\r\nHost: localhost\r\n\r\n", http.StatusForbidden},
		{"GET http://[::ffff:127.0.0.1]:" + port + "/x HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusForbidden},
		{"GET https://127.0.0.1:" + port + "/x HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusForbidden},
		{"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusForbidden},
		{"CONNECT localhost:" + port + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusForbidden}, // port
		{"GET http://example.com:25/ HTTP/1.1\r\nHost: example.com\r\n\r\n", http.StatusForbidden},
		{"GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", http.StatusBadRequest},
		{"GET /origin HTTP/1.1\r\nHost: example.com\r\n\r\n", http.StatusNotFound},
	} {
		res := raw(t, proxy, tt.request)
		if res.StatusCode != tt.want {
			t.Errorf("%q: status %d, want %d", strings.SplitN(tt.request, "\r\n", 2)[0], res.StatusCode, tt.want)
		}
	}
	select {
	case p := <-reached:
		t.Errorf("a refused request reached the loopback server: %s", p)
	default:
	}
}

// raw sends one request on a new connection and reads the response.
func raw(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(req, " ")
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

func portOf(t *testing.T, u string) uint16 {
	t.Helper()
	pu, _ := url.Parse(u)
	var p uint16
	if _, err := fmt.Sscan(pu.Port(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// curl -x with https:// URLs: Proxy-Authorization (407 first),
// AllowHosts, the SNI check, the port policy.
func TestCurlThroughForwardProxy(t *testing.T) {
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	site, caFile := tlsSite(t)
	sitePort := portOf(t, site.URL)
	proxy := startProxy(t, &sluice.Proxy{
		Logger: quiet(),
		Authorizer: sluice.Chain(
			forward.BasicAuth("test proxy", func(u, p string) bool { return u == "alice" && p == "s3cret" }),
			forward.AllowHosts("LOCALHOST.", "*.allowed.test"),
		),
		Director: &forward.Director{AllowAddrs: loopback, ConnectPorts: []uint16{sitePort}, CheckHello: forward.MatchServerName},
	})
	curlVia := func(args ...string) (string, error) {
		cmd := exec.Command(curl, append([]string{"-sS", "--max-time", "10", "--cacert", caFile, "-x", "http://" + proxy}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	siteURL := fmt.Sprintf("https://localhost:%d/path", sitePort)

	tests := []struct {
		name string
		args []string
		want string // curl's output, or what it says when it fails
		fail bool
	}{
		{"no credentials", []string{siteURL}, "CONNECT tunnel failed, response 407", true},
		{"good", []string{"-U", "alice:s3cret", siteURL}, "secret site: GET /path", false},
		{"http2 inside", []string{"-U", "alice:s3cret", "--http2", "-w", " %{http_version}", siteURL}, "secret site: GET /path 2", false},
		{"wrong password", []string{"-U", "alice:nope", siteURL}, "CONNECT tunnel failed, response 407", true},
		// CONNECT localhost, but the ClientHello asks for another name.
		{"SNI mismatch", []string{"-U", "alice:s3cret", "--connect-to", fmt.Sprintf("other.allowed.test:%d:localhost:%d", sitePort, sitePort),
			"-k", fmt.Sprintf("https://other.allowed.test:%d/", sitePort)}, "curl: (35)", true},
		// A host not in AllowHosts (127.0.0.1 is localhost's address,
		// not its name).
		{"host not allowed", []string{"-U", "alice:s3cret", fmt.Sprintf("https://127.0.0.1:%d/", sitePort)}, "CONNECT tunnel failed, response 403", true},
		{"port not allowed", []string{"-U", "alice:s3cret", "https://localhost:1/"}, "CONNECT tunnel failed, response 403", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := curlVia(tt.args...)
			switch {
			case tt.fail && (err == nil || !strings.Contains(out, tt.want)):
				t.Errorf("curl: %v, output %q; want a failure saying %q", err, out, tt.want)
			case !tt.fail && (err != nil || out != tt.want):
				t.Errorf("curl: %v, output %q; want %q", err, out, tt.want)
			}
		})
	}
	// The 407's challenge, as curl sees it.
	out, _ := curlVia("-v", siteURL)
	if !strings.Contains(out, "407") || !strings.Contains(out, `Proxy-Authenticate: Basic realm="test proxy", charset="UTF-8"`) {
		t.Errorf("no 407 challenge in curl's trace:\n%s", out)
	}
}

// What the Authorizers decide on is where the proxy goes: the canonical
// spelling of the target, for CONNECT and absolute form alike, whatever
// the client's spelling or Host header.
func TestDecidedIsDialed(t *testing.T) {
	gotHost := make(chan string, 4)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost <- r.Host
	}))
	t.Cleanup(site.Close)
	_, port, _ := net.SplitHostPort(site.Listener.Addr().String())
	var mu sync.Mutex
	var decided []string
	proxy := startProxy(t, &sluice.Proxy{
		Logger: quiet(),
		Authorizer: sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
			mu.Lock()
			decided = append(decided, pr.In.URL.Host)
			mu.Unlock()
			return sluice.Allow, nil
		}),
		Director: &forward.Director{AllowAddrs: loopback, AnyPort: true},
	})
	want := "localhost:" + port
	for _, req := range []string{
		"GET http://LocalHost.:" + port + "/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
		"GET http://localhost:0" + port + "/x HTTP/1.1\r\nHost: localhost:" + port + "\r\nConnection: close\r\n\r\n",
	} {
		if res := raw(t, proxy, req); res.StatusCode != http.StatusOK {
			t.Fatalf("%q: status %d", req, res.StatusCode)
		}
		if h := <-gotHost; h != want {
			t.Errorf("%q: the site got Host %q, want %q", req, h, want)
		}
	}
	// A CONNECT: the tunnel reaches the site, whose answer proves it.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT LOCALHOST.:%s HTTP/1.1\r\nHost: evil.example:443\r\n\r\nGET /t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", port)
	br := bufio.NewReader(c)
	for range 2 { // the proxy's 200, then the site's
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("through the tunnel: %v %v", res, err)
		}
	}
	if h := <-gotHost; h != "t" {
		t.Errorf("the tunnel reached a server that got Host %q", h)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, d := range decided {
		if d != want {
			t.Errorf("request %d: the Authorizer decided on %q, the proxy went to %q", i, d, want)
		}
	}
	if len(decided) != 3 {
		t.Errorf("%d decisions, want 3", len(decided))
	}
}
