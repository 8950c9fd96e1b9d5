package sluice

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// newH2CUpstream serves h over HTTP/2 with prior knowledge (and HTTP/1.1)
// on cleartext TCP and returns its h2c:// URL.
func newH2CUpstream(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.Protocols.SetHTTP1(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "h2c://" + ln.Addr().String()
}

// newTLSUpstream serves h over TLS, offering HTTP/2 if h2, and returns
// the server and a pool trusting its certificate.
func newTLSUpstream(t *testing.T, h http.Handler, h2 bool) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.EnableHTTP2 = h2
	s.StartTLS()
	t.Cleanup(s.Close)
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return s, pool
}

// protoEcho answers with the protocol it was reached over, an early hint,
// the request trailer X-Req-Sum as response trailer X-Got, and the
// request body.
func protoEcho(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Link", "</style.css>; rel=preload")
	w.WriteHeader(http.StatusEarlyHints)
	w.Header().Del("Link")
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("Trailer", "X-Got")
	w.Write(body)
	w.Header().Set("X-Got", r.Trailer.Get("X-Req-Sum"))
}

func TestUpstreamProtocols(t *testing.T) {
	leaktest.Check(t)
	h2s, h2Pool := newTLSUpstream(t, http.HandlerFunc(protoEcho), true)
	h1s, h1Pool := newTLSUpstream(t, http.HandlerFunc(protoEcho), false)
	for _, tc := range []struct {
		name   string
		target string
		pool   *x509.CertPool
		want   string
	}{
		{"http", newUpstream(t, protoEcho).URL, nil, "HTTP/1.1"},
		{"h2c", newH2CUpstream(t, http.HandlerFunc(protoEcho)), nil, "HTTP/2.0"},
		{"https offering h2", h2s.URL, h2Pool, "HTTP/2.0"},
		{"https without h2", h1s.URL, h1Pool, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front, _, _ := newProxy(t, tc.target, func(p *Proxy) {
				if tc.pool != nil {
					p.UpstreamTLS = &tls.Config{RootCAs: tc.pool}
				}
			})
			var hints []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
				return nil
			}}
			// A chunked body with a trailer, sent in two pieces.
			pr, pw := io.Pipe()
			go func() {
				pw.Write([]byte("hello "))
				pw.Write([]byte("world"))
				pw.Close()
			}()
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", front.URL+"/x", pr)
			req.Trailer = http.Header{"X-Req-Sum": {"abc"}}
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			got := []string{res.Status, res.Header.Get("X-Proto"), string(body), res.Trailer.Get("X-Got"), strings.Join(hints, ",")}
			want := []string{"200 OK", tc.want, "hello world", "abc", "103 </style.css>; rel=preload"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestUpstreamTLSFor(t *testing.T) {
	leaktest.Check(t)
	s, pool := newTLSUpstream(t, http.HandlerFunc(protoEcho), true)
	addr := strings.TrimPrefix(s.URL, "https://")
	var asked []string
	var mu sync.Mutex
	for _, tc := range []struct {
		name   string
		forFn  func(string) *tls.Config
		status int
	}{
		{"no configuration: unknown CA", nil, http.StatusBadGateway},
		{"override for the target", func(a string) *tls.Config {
			mu.Lock()
			asked = append(asked, a)
			mu.Unlock()
			if a == addr {
				return &tls.Config{RootCAs: pool, ServerName: "example.com"}
			}
			return nil
		}, http.StatusOK},
		{"nil override: UpstreamTLS", func(string) *tls.Config { return nil }, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front, _, _ := newProxy(t, s.URL, func(p *Proxy) { p.UpstreamTLSFor = tc.forFn })
			res, err := client(t).Get(front.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
		})
	}
	if diff := cmp.Diff([]string{addr}, asked); diff != "" {
		t.Errorf("UpstreamTLSFor calls (-want +got):\n%s", diff)
	}
}

func TestGRPCOverHTTP1Refused(t *testing.T) {
	leaktest.Check(t)
	var hits atomic.Int32
	up := newH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	front, _, _ := newProxy(t, up)
	for _, tc := range []struct {
		ct     string
		status int
	}{
		{"application/grpc", http.StatusHTTPVersionNotSupported},
		{"application/grpc+proto", http.StatusHTTPVersionNotSupported},
		{"Application/GRPC; charset=utf-8", http.StatusHTTPVersionNotSupported},
		{"application/grpc-web+proto", http.StatusOK},
		{"application/grpcx", http.StatusOK},
		{"application/json", http.StatusOK},
	} {
		hits.Store(0)
		res, err := client(t).Post(front.URL+"/pkg.Service/Method", tc.ct, strings.NewReader("\x00\x00\x00\x00\x00"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		wantHits := int32(1)
		if tc.status != http.StatusOK {
			wantHits = 0
		}
		if res.StatusCode != tc.status || hits.Load() != wantHits {
			t.Errorf("%s: status %d, upstream hits %d; want %d, %d", tc.ct, res.StatusCode, hits.Load(), tc.status, wantHits)
		}
	}
}

func TestH2CancelResetsUpstreamStream(t *testing.T) {
	leaktest.Check(t)
	arrived := make(chan struct{})
	canceled := make(chan struct{})
	up := newH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		close(arrived)
		<-r.Context().Done() // the RST_STREAM from the proxy
		close(canceled)
	}))
	front, _, _ := newProxy(t, up)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/", nil)
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-arrived
	cancel()
	res.Body.Close()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's cancellation did not reach the upstream")
	}
}

// refusingH2Upstream is an HTTP/2 upstream (prior knowledge) written with
// x/net's Framer: it refuses the first streams once it got their whole
// body (so that the proxy surely read it all), with REFUSED_STREAM or
// with a GOAWAY whose last stream ID is 0 (and closes that connection),
// and echoes the body of the others. It records the
// bodies it got on streams it answered.
type refusingH2Upstream struct {
	addr   string
	mu     sync.Mutex
	bodies []string
	refuse atomic.Int32 // streams still to refuse
	goaway bool         // refuse with GOAWAY (last stream 0) and close, not REFUSED_STREAM
}

func newRefusingH2Upstream(t *testing.T, refuse int, goaway bool) *refusingH2Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &refusingH2Upstream{addr: ln.Addr().String(), goaway: goaway}
	u.refuse.Store(int32(refuse))
	var wg sync.WaitGroup
	var cmu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); u.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *refusingH2Upstream) serve(c net.Conn) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	bodies := map[uint32]*bytes.Buffer{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		var end uint32
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			bodies[f.StreamID] = new(bytes.Buffer)
			if f.StreamEnded() {
				end = f.StreamID
			}
		case *http2.DataFrame:
			if n := len(f.Data()); n > 0 {
				fr.WriteWindowUpdate(0, uint32(n))
				if !f.StreamEnded() {
					fr.WriteWindowUpdate(f.StreamID, uint32(n))
				}
			}
			bodies[f.StreamID].Write(f.Data())
			if f.StreamEnded() {
				end = f.StreamID
			}
		}
		if end == 0 {
			continue
		}
		if u.refuse.Add(-1) >= 0 {
			if u.goaway {
				// A graceful shutdown that never took the stream up.
				fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				return
			}
			fr.WriteRSTStream(end, http2.ErrCodeRefusedStream)
			continue
		}
		body := bodies[end].Bytes()
		u.mu.Lock()
		u.bodies = append(u.bodies, string(body))
		u.mu.Unlock()
		hbuf.Reset()
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: end, BlockFragment: hbuf.Bytes(), EndHeaders: true})
		fr.WriteData(end, true, body)
	}
}

// TestH2RefusedStreamRetried: a stream refused unprocessed (RFC 9113
// §8.7) is sent again, body and all, whatever the method, when the body
// was kept.
func TestH2RefusedStreamRetried(t *testing.T) {
	leaktest.Check(t)
	big := strings.Repeat("x", 2<<10)
	for _, tc := range []struct {
		name       string
		body       string
		retry      *RetryPolicy
		status     int
		wantBodies []string
	}{
		{"POST sent again", "payload", nil, http.StatusOK, []string{"payload"}},
		{"POST sent again after GOAWAY", "payload", nil, http.StatusOK, []string{"payload"}},
		{"big POST sent again", big, nil, http.StatusOK, []string{big}},
		{"body over ReplayLimit: not sent twice", big, &RetryPolicy{ReplayLimit: 1 << 10}, http.StatusBadGateway, nil},
		{"no retries: not sent twice", "payload", &RetryPolicy{Attempts: 1}, http.StatusBadGateway, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRefusingH2Upstream(t, 1, strings.Contains(tc.name, "GOAWAY"))
			front, _, _ := newProxy(t, "h2c://"+up.addr, func(p *Proxy) { p.Retry = tc.retry })
			// A body of unknown length, so that the proxy cannot know
			// its size in advance.
			req, _ := http.NewRequest("POST", front.URL+"/", io.MultiReader(strings.NewReader(tc.body)))
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.status == http.StatusOK && string(got) != tc.body {
				t.Errorf("echo %q, want %q", got, tc.body)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if diff := cmp.Diff(tc.wantBodies, up.bodies); diff != "" {
				t.Errorf("bodies processed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUpgradeToH2UpstreamUsesHTTP1(t *testing.T) {
	leaktest.Check(t)
	s, pool := newTLSUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "example" || r.ProtoMajor != 1 {
			http.Error(w, "want an HTTP/1.1 upgrade, got "+r.Proto, http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: example\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		io.WriteString(c, "echo "+line)
	}), true)
	front, _, _ := newProxy(t, s.URL, func(p *Proxy) { p.UpstreamTLS = &tls.Config{RootCAs: pool} })
	u, _ := url.Parse(front.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: example\r\n\r\n")
	var buf bytes.Buffer
	tmp := make([]byte, 512)
	for !strings.Contains(buf.String(), "\r\n\r\n") {
		n, err := c.Read(tmp)
		if err != nil {
			t.Fatalf("reading the 101: %v (%q)", err, buf.String())
		}
		buf.Write(tmp[:n])
	}
	if !strings.HasPrefix(buf.String(), "HTTP/1.1 101") {
		t.Fatalf("got %q, want 101", buf.String())
	}
	io.WriteString(c, "ping\n")
	rest, _ := io.ReadAll(c)
	if got := strings.SplitN(buf.String(), "\r\n\r\n", 2)[1] + string(rest); got != "echo ping\n" {
		t.Errorf("tunnel got %q", got)
	}
}

func TestH2StreamHeadNotHeldForBody(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	up := newH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Head", "early")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "body")
	}))
	front, _, _ := newProxy(t, up)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/", nil)
	res, err := client(t).Do(req) // returns with the head, before release
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got := res.Header.Get("X-Head"); got != "early" {
		t.Errorf("X-Head %q", got)
	}
	close(release)
	if b, err := io.ReadAll(res.Body); err != nil || string(b) != "body" {
		t.Errorf("body %q, %v", b, err)
	}
}

// TestH2TrailersWithContentLength: an HTTP/2 response may have both a
// Content-Length and trailers; an HTTP/1.1 client gets it chunked, with
// the trailers.
func TestH2TrailersWithContentLength(t *testing.T) {
	leaktest.Check(t)
	up := newH2CUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "hello")
		w.Header().Set("X-Sum", "v")
	}))
	front, _, _ := newProxy(t, up)
	res, err := client(t).Get(front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	got := []string{string(b), fmt.Sprint(err), res.Trailer.Get("X-Sum"), fmt.Sprint(res.ContentLength)}
	if diff := cmp.Diff([]string{"hello", "<nil>", "v", "-1"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
