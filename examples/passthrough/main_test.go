package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

func TestStarterProxiesDemo(t *testing.T) {
	for _, server := range []string{"sluice", "net/http"} {
		t.Run(server, func(t *testing.T) { testStarter(t, server == "net/http") })
	}
}

func testStarter(t *testing.T, netHTTP bool) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, config{timeout: 5 * time.Second, netHTTP: netHTTP}) }()
	base := "http://" + ln.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	res, err := c.Get(base + "/small")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(b) != 100 || res.StatusCode != 200 {
		t.Errorf("/small: %d, %d bytes", res.StatusCode, len(b))
	}

	// Server-sent events arrive one by one, not at the end.
	res, err = c.Get(base + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	res.Body.Close()
	if err != nil || !strings.HasPrefix(line, "data: tick 0") {
		t.Errorf("/sse first line %q (%v)", line, err)
	}

	// An upload comes back intact.
	body := strings.Repeat("sluice", 100000)
	res, err = c.Post(base+"/echo", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != body {
		t.Errorf("/echo returned %d bytes, want %d", len(b), len(body))
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestBadUpstreamFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{upstream: "not a url", timeout: time.Second}); err == nil {
		t.Fatal("serve accepted a bad -upstream")
	}
}

// -deny answers 403 for its pattern however the client spells the path,
// and 400 for spellings that have no canonical form.
func TestDenyFlag(t *testing.T) {
	for _, server := range []string{"sluice", "net/http"} {
		t.Run(server, func(t *testing.T) {
			leaktest.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- serve(ctx, ln, config{timeout: 5 * time.Second, netHTTP: server == "net/http", deny: []string{"/admin/", "POST /small"}})
			}()
			for _, tc := range []struct {
				method, path string
				status       int
			}{
				{"GET", "/small", 200},
				{"POST", "/small", 403},
				{"GET", "/admin/", 403},
				{"GET", "/admin", 403},
				{"GET", "/ADMIN/../admin/x", 403},
				{"GET", "/small/../admin/x", 403},
				{"GET", "/%61dmin/x", 403},
				{"GET", "//admin/x", 403},
				{"GET", "/admin%2Fx", 400},
				{"GET", "/admin;a/x", 400},
				{"GET", "/a/..%5Cadmin/x", 400},
				{"GET", "/../admin/x", 400},
			} {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(c, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("%s %s: %v", tc.method, tc.path, err)
				}
				res.Body.Close()
				c.Close()
				if res.StatusCode != tc.status {
					t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	if err := checkPattern("GET /{bad"); err == nil {
		t.Error("-deny accepted a bad pattern")
	}
}

// -client-timeout D disconnects a client silent for D in the middle of a
// request body (408 first), one not reading for D in the middle of a
// response, and one whose request head is not complete D after it began;
// behind both servers.
func TestClientTimeoutFlag(t *testing.T) {
	const d = 300 * time.Millisecond
	for _, server := range []string{"sluice", "net/http"} {
		t.Run(server, func(t *testing.T) {
			leaktest.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- serve(ctx, ln, config{timeout: 5 * time.Second, netHTTP: server == "net/http", clientTimeout: d})
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			dial := func() net.Conn {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				c.SetDeadline(time.Now().Add(10 * time.Second))
				return c
			}
			// Within, -client-timeout D means about D: the server's
			// renewals may cut up to D/8 early, and a loaded machine late.
			within := func(what string, start time.Time) {
				if after := time.Since(start); after < d*7/8 || after > d+2*time.Second {
					t.Errorf("%s: cut %v after the client stalled, want about %v", what, after, d)
				}
			}

			t.Run("body", func(t *testing.T) {
				c := dial()
				io.WriteString(c, "PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
				stalled := time.Now()
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				within("body", stalled)
				if res.StatusCode != http.StatusRequestTimeout || !res.Close {
					t.Errorf("%s, close %v; want 408 and Connection: close", res.Status, res.Close)
				}
			})
			t.Run("head", func(t *testing.T) {
				c := dial()
				io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n")
				stalled := time.Now()
				b, err := io.ReadAll(c) // sluice answers 408, net/http nothing
				within("head", stalled)
				if err != nil || len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408 ") {
					t.Errorf("got %q, %v; want a close, maybe after a 408", b, err)
				}
			})
			t.Run("response", func(t *testing.T) {
				c := dial()
				c.(*net.TCPConn).SetReadBuffer(64 << 10)
				io.WriteString(c, "GET /download?n=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
				// The client reads nothing, and finds out that it was cut
				// when its writes fail (its peer closed the connection).
				stalled := time.Now()
				for {
					time.Sleep(d / 4)
					if _, err := c.Write([]byte("\r\n")); err != nil {
						break
					}
					if time.Since(stalled) > 5*time.Second {
						t.Fatal("a client that does not read is never cut")
					}
				}
				if after := time.Since(stalled); after > d+3*time.Second {
					t.Errorf("cut %v after the client stopped reading, want about %v and the time to fill the buffers", after, d)
				}
			})
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{clientTimeout: -time.Second}); err == nil {
		t.Error("serve accepted a negative -client-timeout")
	}
}

// With -tls-cert/-tls-key the proxy serves HTTPS, HTTP/2 and HTTP/1.1 by
// ALPN, and with -tls-no-resume it resumes no session; with -h2c it
// serves h2c with prior knowledge next to HTTP/1.1. Both servers.
func TestStarterTLSAndH2C(t *testing.T) {
	roots, certFile, keyFile := writeTestCert(t)

	h2only := new(http.Protocols)
	h2only.SetHTTP2(true)
	h2cOnly := new(http.Protocols)
	h2cOnly.SetUnencryptedHTTP2(true)
	tlsCfg := config{timeout: 5 * time.Second, tlsCert: certFile, tlsKey: keyFile, tlsNoResume: true}
	for _, tt := range []struct {
		name    string
		cfg     config
		scheme  string
		clients map[string]*http.Transport // want Proto -> client
	}{
		{"tls", tlsCfg, "https", map[string]*http.Transport{
			"HTTP/2.0": {TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: h2only},
			"HTTP/1.1": {TLSClientConfig: &tls.Config{RootCAs: roots}},
		}},
		{"h2c", config{timeout: 5 * time.Second, h2c: true}, "http", map[string]*http.Transport{
			"HTTP/2.0": {Protocols: h2cOnly},
			"HTTP/1.1": {},
		}},
	} {
		for _, server := range []string{"sluice", "net/http"} {
			t.Run(tt.name+" "+server, func(t *testing.T) {
				leaktest.Check(t)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				cfg := tt.cfg
				cfg.netHTTP = server == "net/http"
				go func() { done <- serve(ctx, ln, cfg) }()
				for proto, tr := range tt.clients {
					res, err := (&http.Client{Transport: tr}).Get(tt.scheme + "://" + ln.Addr().String() + "/small")
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(res.Body)
					res.Body.Close()
					tr.CloseIdleConnections()
					if res.Proto != proto || len(b) != 100 {
						t.Errorf("%s client: %s, %d bytes", proto, res.Proto, len(b))
					}
				}
				if tt.scheme == "https" {
					// A session cache on the client: nothing to resume.
					cfg := &tls.Config{RootCAs: roots, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
					for i := range 2 {
						c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
						if err != nil {
							t.Fatal(err)
						}
						io.WriteString(c, "GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
						io.ReadAll(c) // tickets come after the handshake
						c.Close()
						if c.ConnectionState().DidResume {
							t.Errorf("connection %d resumed a session", i)
						}
					}
				}
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			})
		}
	}
}

// -forward: an open forward proxy next to the reverse one: absolute-form
// requests and CONNECT tunnels to loopback, any port; curl -x over https
// and Go's http.Transport with Proxy.
func TestForwardFlag(t *testing.T) {
	leaktest.Check(t)
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	cert, roots, caFile := testcert.Localhost(t)
	site := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "site "+r.Proto+" "+r.URL.Path)
	}))
	site.EnableHTTP2 = true
	site.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	site.StartTLS()
	defer site.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.URL.Path)
	}))
	defer plain.Close()

	addr, stop := startServe(t, config{timeout: 5 * time.Second, forward: true})
	proxy := "http://" + addr
	_, sitePort, _ := net.SplitHostPort(site.Listener.Addr().String())

	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--cacert", caFile, "-x", proxy,
		"https://localhost:"+sitePort+"/tls").CombinedOutput()
	if err != nil || string(out) != "site HTTP/2.0 /tls" {
		t.Errorf("curl -x https: %v %q", err, out)
	}
	pu, _ := url.Parse(proxy)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for url, want := range map[string]string{
		"https://localhost:" + sitePort + "/go": "site HTTP/2.0 /go",
		plain.URL + "/abs":                      "plain /abs",
		proxy + "/small":                        strings.Repeat("x", 100), // origin form: the demo upstream
	} {
		res, err := c.Get(url)
		if err != nil {
			t.Errorf("GET %s: %v", url, err)
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if url == proxy+"/small" {
			if len(b) != 100 {
				t.Errorf("GET %s: %d bytes, want 100", url, len(b))
			}
		} else if string(b) != want {
			t.Errorf("GET %s: %q, want %q", url, b, want)
		}
	}
	stop()
}

// -access-log writes a line per exchange to standard output; -request-id
// sends an ID upstream and back, and puts it in the line.
func TestAccessLogFlag(t *testing.T) {
	leaktest.Check(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	addr, stop := startServe(t, config{timeout: 5 * time.Second, accessLog: "slog", requestID: "X-Request-Id"})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/small?x=1")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	id := res.Header.Get("X-Request-Id")
	stop()
	w.Close()
	out, _ := io.ReadAll(r)
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "msg=access") {
			line = l
		}
	}
	for _, want := range []string{"method=GET", "path=/small", `query="x=1"`, "status=200", "resp_bytes=100", "request_id=" + id} {
		if len(id) != 32 || !strings.Contains(line, want) {
			t.Errorf("access line %q lacks %q (stdout: %q)", line, want, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{accessLog: "json"}); err == nil || !strings.Contains(err.Error(), "-access-log") {
		t.Errorf("-access-log json: %v", err)
	}
}

// startServe runs serve with cfg on a loopback listener; stop ends it
// (and fails the test if serve failed). stop also runs at cleanup.
func startServe(t *testing.T, cfg config) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// With -upstream-idle-timeout D an upstream that stops in the middle of a
// response body is cut after about D, and the client sees an aborted body,
// never a complete-looking one.
func TestUpstreamIdleTimeoutFlag(t *testing.T) {
	leaktest.Check(t)
	const d = 300 * time.Millisecond
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part of a body of unknown length")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) })
	addr, _ := startServe(t, config{upstream: up.URL, timeout: 5 * time.Second, upstreamIdle: d})
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	res, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if after := time.Since(stalled); after < d*7/8 || after > d+3*time.Second {
		t.Errorf("cut %v after the upstream stalled, want about %v", after, d)
	}
	if err == nil || string(b) != "part of a body of unknown length" {
		t.Errorf("read %q, %v; want the part sent, then an error", b, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{upstream: up.URL, upstreamIdle: -time.Second}); err == nil {
		t.Error("serve accepted a negative -upstream-idle-timeout")
	}
}

// With -tunnel-idle-timeout D an upgraded connection in which nothing
// moves is closed after about D, both sides; bytes that move keep it open.
func TestTunnelIdleTimeoutFlag(t *testing.T) {
	leaktest.Check(t)
	const d = 300 * time.Millisecond
	upClosed := make(chan time.Time, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 64)
		for {
			n, err := brw.Read(buf)
			if err != nil {
				upClosed <- time.Now()
				return
			}
			c.Write(buf[:n])
		}
	}))
	t.Cleanup(up.Close)
	addr, _ := startServe(t, config{upstream: up.URL, timeout: 5 * time.Second, tunnelIdle: d})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	// Traffic for longer than D keeps the tunnel open.
	for range 4 {
		time.Sleep(d / 3)
		io.WriteString(c, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
			t.Fatalf("echo: %q, %v", b, err)
		}
	}
	idle := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from an idle tunnel, want its end", n)
	}
	if after := time.Since(idle); after < d*7/8 || after > d+3*time.Second {
		t.Errorf("tunnel closed %v after it went idle, want about %v", after, d)
	}
	select {
	case <-upClosed:
	case <-time.After(5 * time.Second):
		t.Error("the upstream side of the tunnel stayed open")
	}

	for _, bad := range []config{{upstream: up.URL, tunnelIdle: -time.Second}, {upstream: up.URL, maxIdlePerHost: -1}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := serve(context.Background(), ln, bad); err == nil {
			t.Errorf("serve accepted %+v", bad)
		}
		ln.Close()
	}
}

// An h2c:// -upstream is reached over HTTP/2 with prior knowledge.
func TestH2CUpstreamFlag(t *testing.T) {
	leaktest.Check(t)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	up.Config.Protocols = p
	up.Start()
	t.Cleanup(up.Close)
	addr, _ := startServe(t, config{upstream: "h2c://" + up.Listener.Addr().String(), timeout: 5 * time.Second})
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	res, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || string(b) != "HTTP/2.0" {
		t.Errorf("%s %q, %v; want 200 HTTP/2.0", res.Status, b, err)
	}
}
