package sluice

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// proxyTo returns a Proxy in front of upstream, logging nowhere.
func proxyTo(t testing.TB, upstream string) *Proxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Director: &SingleHost{Target: u}, Logger: discardLogger()}
	t.Cleanup(p.CloseIdleConnections)
	return p
}

// get fetches url with c and returns the body, failing the test on error.
func get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// Each protocol reaches the handler as itself: HTTP/2 by ALPN over TLS,
// HTTP/1.1 over TLS, h2c with prior knowledge and HTTP/1.1 on one
// cleartext listener; Request.TLS is set over TLS only.
func TestServerProtocols(t *testing.T) {
	leaktest.Check(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		state := "plain"
		if r.TLS != nil {
			state = "tls alpn=" + r.TLS.NegotiatedProtocol
		}
		fmt.Fprintf(w, "%s %s", r.Proto, state)
	})
	fronts := startFronts(t, h, nil)
	want := map[string]string{
		"h2-tls": "HTTP/2.0 tls alpn=h2",
		"h1-tls": "HTTP/1.1 tls alpn=",
		"h2c":    "HTTP/2.0 plain",
		"h1":     "HTTP/1.1 plain",
	}
	for _, f := range fronts {
		t.Run(f.name, func(t *testing.T) {
			for range 3 { // and again on the kept connection
				if _, body := get(t, f.client, f.url+"/"); body != want[f.name] {
					t.Errorf("got %q, want %q", body, want[f.name])
				}
			}
		})
	}

	// A TLS client that offers http/1.1 by ALPN gets it.
	tlsURL, _ := url.Parse(fronts[0].url)
	tr := fronts[1].client.Transport.(*http.Transport)
	cfg := tr.TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", tlsURL.Host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasSuffix(string(b), "HTTP/1.1 tls alpn=http/1.1") {
		t.Errorf("ALPN http/1.1: got %q", b)
	}
}

// Protocols left out are not served: no h2c by default, no HTTP/2 over
// TLS without HTTP2, no HTTP/1.1 without HTTP1.
func TestServerProtocolsRefused(t *testing.T) {
	leaktest.Check(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	tests := []struct {
		name      string
		protocols *http.Protocols
		front     string // the client that must fail
		works     string // a client that must still work
	}{
		{"default has no h2c", nil, "h2c", "h1"},
		{"no HTTP2", protocols(true, false, false), "h2-tls", "h1-tls"},
		{"no HTTP1 over TLS", protocols(false, true, false), "h1-tls", "h2-tls"},
		{"no HTTP1 in cleartext", protocols(false, false, true), "h1", "h2c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fronts := startFronts(t, h, func(s *Server) { s.Protocols = tt.protocols })
			for _, f := range fronts {
				switch f.name {
				case tt.front:
					if res, err := f.client.Get(f.url + "/"); err == nil {
						b, _ := io.ReadAll(res.Body)
						res.Body.Close()
						if res.StatusCode == http.StatusOK {
							t.Errorf("%s: served (%s %q), want a failure", f.name, res.Status, b)
						}
					}
				case tt.works:
					if _, body := get(t, f.client, f.url+"/"); body != f.proto {
						t.Errorf("%s: got %q, want %q", f.name, body, f.proto)
					}
				}
			}
		})
	}
}

// trailerBody is a request body that sets the request's trailer when it
// reaches its end, as a client computing a checksum would.
type trailerBody struct {
	r   io.Reader
	req *http.Request
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Req-Trailer", "req-value")
	}
	return n, err
}

// Trailers pass both ways whatever the client's protocol: HTTP/2
// trailers to HTTP/1.1 chunked trailers upstream, and back.
func TestServerTrailers(t *testing.T) {
	leaktest.Check(t)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Res-Trailer")
		fmt.Fprintf(w, "%s got %q with trailer %q", r.Proto, b, r.Trailer.Get("X-Req-Trailer"))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Res-Trailer", "res-value")
	})
	for _, f := range startFronts(t, proxyTo(t, upstream.URL), nil) {
		t.Run(f.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", f.url+"/t", nil)
			req.Body = io.NopCloser(&trailerBody{r: strings.NewReader("hello"), req: req})
			req.ContentLength = -1
			req.Trailer = http.Header{"X-Req-Trailer": nil}
			res, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			got := []string{string(b), res.Trailer.Get("X-Res-Trailer")}
			want := []string{`HTTP/1.1 got "hello" with trailer "req-value"`, "res-value"}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("body and trailer (-want +got):\n%s", d)
			}
		})
	}
}

// Server-sent events reach the client one by one: the upstream sends the
// next event only after the client has read the last one.
func TestServerSSE(t *testing.T) {
	leaktest.Check(t)
	next := make(chan struct{})
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	for _, f := range startFronts(t, proxyTo(t, upstream.URL), nil) {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/events", nil)
			res, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("event %d: %v (not flushed?)", i, err)
				}
				if want := fmt.Sprintf("data: %d\n", i); line != want {
					t.Fatalf("got %q, want %q", line, want)
				}
				br.ReadString('\n')
				next <- struct{}{}
			}
		})
	}
}

// A client that gives up on a request (RST_STREAM over HTTP/2, closing
// the connection over HTTP/1.1) cancels the upstream exchange at once;
// over HTTP/2 the connection and its other streams go on.
func TestServerCancelUpstream(t *testing.T) {
	leaktest.Check(t)
	started := make(chan struct{}, 1)
	canceled := make(chan struct{}, 1)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hang" {
			io.WriteString(w, "ok")
			return
		}
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-r.Context().Done()
		canceled <- struct{}{}
	})
	for _, f := range startFronts(t, proxyTo(t, upstream.URL), nil) {
		t.Run(f.name, func(t *testing.T) {
			get(t, f.client, f.url+"/warm")
			conns := f.ln.n.Load()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/hang", nil)
			res, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			<-started
			if _, err := io.ReadFull(res.Body, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			cancel()
			select {
			case <-canceled:
				t.Logf("upstream canceled %v after the client", time.Since(begin))
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream exchange was not canceled")
			}
			if f.proto == "HTTP/2.0" {
				if _, body := get(t, f.client, f.url+"/after"); body != "ok" {
					t.Errorf("after the reset: %q", body)
				}
				if n := f.ln.n.Load(); n != conns {
					t.Errorf("%d new connections after the reset, want 0", n-conns)
				}
			}
		})
	}
}

// 100 requests on one HTTP/2 connection are all served at once, each
// with its own upstream exchange: the upstream answers none before all
// 100 arrived.
func TestServerConcurrentStreams(t *testing.T) {
	leaktest.Check(t)
	const streams = 100
	for _, name := range []string{"h2-tls", "h2c"} {
		t.Run(name, func(t *testing.T) {
			var arrived atomic.Int64
			all := make(chan struct{})
			upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "OPTIONS" {
					return
				}
				if arrived.Add(1) == streams {
					close(all)
				}
				select {
				case <-all:
					io.WriteString(w, "ok")
				case <-time.After(10 * time.Second):
					http.Error(w, "not all requests arrived", http.StatusGatewayTimeout)
				}
			})
			var f testFront
			for _, f = range startFronts(t, proxyTo(t, upstream.URL), nil) {
				if f.name == name {
					break
				}
			}
			// One request first, to have the connection that the 100
			// share (net/http's client dials one per request otherwise).
			warm, err := http.NewRequest("OPTIONS", f.url+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := f.client.Do(warm); err != nil {
				t.Fatal(err)
			} else {
				res.Body.Close()
			}
			bodies := make([]string, streams)
			var wg sync.WaitGroup
			for i := range streams {
				wg.Go(func() {
					res, err := f.client.Get(f.url + "/" + fmt.Sprint(i))
					if err != nil {
						bodies[i] = err.Error()
						return
					}
					b, _ := io.ReadAll(res.Body)
					res.Body.Close()
					bodies[i] = string(b)
				})
			}
			wg.Wait()
			for i, b := range bodies {
				if b != "ok" {
					t.Fatalf("request %d: %q", i, b)
				}
			}
			if n := f.ln.n.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// A client that stops reading stops the upstream too: flow control and
// the blocking writes in between keep what is in flight bounded, whatever
// the size of the response.
func TestServerSlowReader(t *testing.T) {
	leaktest.Check(t)
	const size, bound = 256 << 20, 64 << 20
	var written atomic.Int64
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		written.Store(0)
		buf := make([]byte, 32<<10)
		for written.Load() < size {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	for _, f := range startFronts(t, proxyTo(t, upstream.URL), nil) {
		t.Run(f.name, func(t *testing.T) {
			res, err := f.client.Get(f.url + "/big")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if _, err := io.ReadFull(res.Body, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			// Wait until the upstream stops making progress.
			last := int64(-1)
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
				n := written.Load()
				if n == last {
					break
				}
				last = n
			}
			if last >= bound {
				t.Errorf("the upstream wrote %d MiB to a client that read 1 byte, want < %d MiB", last>>20, bound>>20)
			}
			t.Logf("in flight when the client stopped reading: %.1f MiB", float64(last)/(1<<20))
		})
	}
}

// h2Client is a raw HTTP/2 client, to see the frames themselves.
type h2Client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	dec *hpack.Decoder
}

func dialH2(t *testing.T, addr string, cfg *tls.Config) *h2Client {
	t.Helper()
	var c net.Conn
	var err error
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"h2"}
		c, err = tls.Dial("tcp", addr, cfg)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2Client{t: t, c: c, fr: http2.NewFramer(c, c), dec: hpack.NewDecoder(4096, nil)}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *h2Client) get(id uint32, path string) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "a"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// next returns the next frame that is not connection housekeeping
// (SETTINGS, which it acknowledges, WINDOW_UPDATE, PING).
func (h *h2Client) next() http2.Frame {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading a frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame, *http2.PingFrame:
		default:
			return f
		}
	}
}

// A connection whose handshake ended is handed to its server, which
// tracks it for Shutdown from then on: Shutdown must not close it as a
// pending one any more. (It did, when the hand-off raced with Shutdown:
// a request already running on a fresh HTTP/2 connection was cut with no
// GOAWAY, once in about 60 runs of TestServerShutdownGOAWAY.)
func TestFrontHandOff(t *testing.T) {
	f := front{stopped: make(chan struct{})}
	pending := func() (net.Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		if !f.trackPending(a, true) {
			t.Fatal("trackPending refused a connection before stop")
		}
		return a, b
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}

	handed, handedPeer := pending()
	if !f.handOff(handed) {
		t.Fatal("handOff refused a pending connection")
	}
	cut, cutPeer := pending()
	f.stop()
	if closed(handedPeer) {
		t.Error("stop closed a connection handed to its server")
	}
	if !closed(cutPeer) {
		t.Error("stop left a pending connection open")
	}
	if f.handOff(cut) {
		t.Error("handOff took a connection that stop closed")
	}
	if c, _ := net.Pipe(); f.trackPending(c, true) {
		t.Error("trackPending took a connection after stop")
	}
}

// Shutdown (and the Serve function when its context ends) sends GOAWAY
// at once, lets the open stream finish, then closes the connection.
func TestServerShutdownGOAWAY(t *testing.T) {
	for _, tt := range []struct {
		name     string
		tls      bool
		function bool // sluice.Serve instead of Server.Shutdown
	}{
		{"h2-tls Shutdown", true, false},
		{"h2c Shutdown", false, false},
		{"h2-tls Serve", true, true},
		{"h2c Serve", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			started, release := make(chan struct{}), make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				<-release
				io.WriteString(w, "done")
			})
			pki := newTestPKI(t)
			srv := &Server{Handler: h, Protocols: protocols(true, true, true), Logger: discardLogger()}
			var clientTLS *tls.Config
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			if tt.tls {
				srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pki.issue(t, "server", false)}}
				clientTLS = &tls.Config{RootCAs: pki.pool}
				if ln, err = srv.TLSListener(ln, "", ""); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var shutdown func()
			if tt.function {
				go func() { done <- Serve(ctx, srv, ln, 10*time.Second) }()
				shutdown = cancel
			} else {
				served := make(chan error, 1)
				go func() { served <- srv.Serve(ln) }()
				shutdown = func() {
					go func() {
						err := srv.Shutdown(ctx)
						if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
							err = fmt.Errorf("Serve: %v", serr)
						}
						done <- err
					}()
				}
			}
			t.Cleanup(func() { srv.Close() })

			c := dialH2(t, addr, clientTLS)
			c.get(1, "/slow")
			<-started
			shutdown()
			f := c.next()
			ga, ok := f.(*http2.GoAwayFrame)
			if !ok {
				t.Fatalf("got %v, want GOAWAY", f)
			}
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
				t.Errorf("GOAWAY %v last stream %d, want NO_ERROR, 1", ga.ErrCode, ga.LastStreamID)
			}
			select {
			case err := <-done:
				t.Fatalf("shutdown returned (%v) with a stream open", err)
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Error("the listener still accepts")
			}

			close(release)
			var got []string
			for end := false; !end; {
				switch f := c.next().(type) {
				case *http2.HeadersFrame:
					fields, _ := c.dec.DecodeFull(f.HeaderBlockFragment())
					for _, hf := range fields {
						if hf.Name == ":status" {
							got = append(got, hf.Value)
						}
					}
					end = f.StreamEnded()
				case *http2.DataFrame:
					got = append(got, string(f.Data()))
					end = f.StreamEnded()
				default:
					t.Fatalf("unexpected frame %v", f)
				}
			}
			if d := cmp.Diff([]string{"200", "done"}, got); d != "" {
				t.Errorf("response (-want +got):\n%s", d)
			}
			// The server closes the connection (here after a second, as
			// the client does not close it).
			if _, err := c.fr.ReadFrame(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("after the last stream: %v, want the connection closed", err)
			}
			if err := <-done; err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
}

// With ClientAuth set, a client is served only with a certificate the
// configured authority issued, and the handler sees it, over HTTP/2 and
// HTTP/1.1 alike.
func TestServerClientCert(t *testing.T) {
	leaktest.Check(t)
	pki, other := newTestPKI(t), newTestPKI(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			io.WriteString(w, "no verified client certificate")
			return
		}
		io.WriteString(w, r.Proto+" "+r.TLS.PeerCertificates[0].Subject.CommonName)
	})
	srv := &Server{Handler: h, Logger: discardLogger(), TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{pki.issue(t, "server", false)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
	}}
	url := "https://" + startServer(t, srv, true).Addr().String() + "/"
	tests := []struct {
		name  string
		cert  *tls.Certificate
		h2    bool
		want  string
		error bool
	}{
		{"h2 with certificate", ptr(pki.issue(t, "alice", true)), true, "HTTP/2.0 alice", false},
		{"h1 with certificate", ptr(pki.issue(t, "bob", true)), false, "HTTP/1.1 bob", false},
		{"h2 without", nil, true, "", true},
		{"h1 without", nil, false, "", true},
		{"h2 other authority", ptr(other.issue(t, "mallory", true)), true, "", true},
		{"h1 other authority", ptr(other.issue(t, "mallory", true)), false, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pki.pool}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			tr := &http.Transport{TLSClientConfig: cfg}
			if tt.h2 {
				tr.Protocols = protocols(false, true, false)
			}
			defer tr.CloseIdleConnections()
			res, err := (&http.Client{Transport: tr}).Get(url)
			if tt.error {
				if err == nil {
					res.Body.Close()
					t.Fatalf("served (%s), want a failed handshake", res.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != tt.want {
				t.Errorf("got %q, want %q", b, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// GetCertificate serves many names, and a certificate replaced behind it
// is served to the next connection without a restart, while connections
// made before keep working.
func TestServerGetCertificate(t *testing.T) {
	leaktest.Check(t)
	pki := newTestPKI(t)
	var certs sync.Map // server name -> *tls.Certificate
	certs.Store("a.test", ptr(pki.issue(t, "a1", false, "a.test")))
	certs.Store("b.test", ptr(pki.issue(t, "b1", false, "b.test")))
	srv := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.TLS.ServerName) }),
		Logger:  discardLogger(),
		TLSConfig: &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := certs.Load(hello.ServerName); ok {
				return c.(*tls.Certificate), nil
			}
			return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
		}},
	}
	addr := startServer(t, srv, true).Addr().String()
	// served returns the common name of the certificate served for name,
	// over a connection that is kept (h2) for later requests.
	clients := map[string]*http.Client{}
	served := func(name string, fresh bool) string {
		t.Helper()
		c := clients[name]
		if c == nil || fresh {
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pki.pool, ServerName: name},
				Protocols:       protocols(false, true, false),
			}
			t.Cleanup(tr.CloseIdleConnections)
			c = &http.Client{Transport: tr}
			clients[name] = c
		}
		res, err := c.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != name {
			t.Errorf("handler saw server name %q, want %q", b, name)
		}
		return res.TLS.PeerCertificates[0].Subject.CommonName
	}
	got := []string{served("a.test", false), served("b.test", false)}
	certs.Store("a.test", ptr(pki.issue(t, "a2", false, "a.test"))) // renewed
	got = append(got, served("a.test", true), served("a.test", false), served("b.test", false))
	if d := cmp.Diff([]string{"a1", "b1", "a2", "a2", "b1"}, got); d != "" {
		t.Errorf("certificates served (-want +got):\n%s", d)
	}
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.pool, ServerName: "c.test"}); err == nil {
		t.Error("a name without a certificate got a handshake")
	}
}

// ServeTLS loads the key pair from files; a bad file is an error from
// ServeTLS itself.
func TestServerServeTLSFiles(t *testing.T) {
	leaktest.Check(t)
	pki := newTestPKI(t)
	certFile, keyFile := writeFiles(t, pki.issue(t, "server", false))
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }), Logger: discardLogger()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeTLS(ln, certFile, certFile); err == nil {
		t.Fatal("ServeTLS with the certificate as the key: no error")
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, certFile, keyFile) }()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}, Protocols: protocols(false, true, false)}
	defer tr.CloseIdleConnections()
	if _, body := get(t, &http.Client{Transport: tr}, "https://"+ln.Addr().String()+"/"); body != "HTTP/2.0" {
		t.Errorf("got %q", body)
	}
	srv.Close()
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ServeTLS: %v", err)
	}
}

// coalescingConn holds what is written to it until flush, so that several
// TLS records leave in one segment.
type coalescingConn struct {
	net.Conn
	hold bool
	buf  bytes.Buffer
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if c.hold {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *coalescingConn) flush() error {
	c.hold = false
	_, err := c.Conn.Write(c.buf.Bytes())
	return err
}

// Over TLS, HTTP/1.1 keep-alive connections wait for their next request
// on the TCP descriptor; a request that crypto/tls already read with the
// previous one (two records in one segment) is served at once all the
// same, as are requests that come one by one; an idle connection closed
// by the client is let go, and one idle too long is closed.
func TestServerTLSKeepAlive(t *testing.T) {
	leaktest.Check(t)
	pki := newTestPKI(t)
	srv := &Server{
		Handler:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }),
		Logger:      discardLogger(),
		IdleTimeout: 300 * time.Millisecond,
		TLSConfig:   &tls.Config{Certificates: []tls.Certificate{pki.issue(t, "server", false)}},
	}
	addr := startServer(t, srv, true).Addr().String()
	dial := func() (*tls.Conn, *coalescingConn, *bufio.Reader) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cc := &coalescingConn{Conn: raw}
		c := tls.Client(cc, &tls.Config{RootCAs: pki.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		return c, cc, bufio.NewReader(c)
	}
	read := func(br *bufio.Reader) string {
		t.Helper()
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return string(b)
	}

	c, cc, br := dial()
	var got []string
	for _, p := range []string{"/1", "/2", "/3"} {
		io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		got = append(got, read(br))
	}
	// Two requests, two records, one segment.
	cc.hold = true
	io.WriteString(c, "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n")
	io.WriteString(c, "GET /5 HTTP/1.1\r\nHost: a\r\n\r\n")
	if err := cc.flush(); err != nil {
		t.Fatal(err)
	}
	got = append(got, read(br), read(br))
	if d := cmp.Diff([]string{"/1", "/2", "/3", "/4", "/5"}, got); d != "" {
		t.Errorf("responses (-want +got):\n%s", d)
	}

	// The client closes its idle connection: the server lets it go.
	c.Close()
	for end := time.Now().Add(5 * time.Second); srv.server().Conns() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d connections left after the client closed", srv.server().Conns())
		}
	}

	// An idle connection is closed after IdleTimeout.
	c, _, br = dial()
	io.WriteString(c, "GET /6 HTTP/1.1\r\nHost: a\r\n\r\n")
	read(br)
	begin := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF", err)
	}
	if d := time.Since(begin); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", d)
	}
}

// A client speaking plain HTTP to the TLS port is told so in plain HTTP.
func TestServerPlainHTTPToTLS(t *testing.T) {
	leaktest.Check(t)
	srv := &Server{
		Handler:   http.NotFoundHandler(),
		Logger:    discardLogger(),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{newTestPKI(t).issue(t, "server", false)}},
	}
	addr := startServer(t, srv, true).Addr().String()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400 Bad Request\r\n") || !strings.Contains(string(b), "HTTPS") {
		t.Errorf("got %q", b)
	}
}

// On a listener serving HTTP/1.1 and h2c, the preface is recognized even
// when it arrives a byte at a time, and anything else is HTTP/1.x, even a
// request shorter than the preface or one that starts like it; a request
// to upgrade to h2c is never honored: it is answered in HTTP/1.1 and
// reaches the upstream without Upgrade and HTTP2-Settings.
func TestServerH2CDetection(t *testing.T) {
	leaktest.Check(t)
	var seen sync.Map
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.Path, r.Header.Get("Upgrade")+"|"+r.Header.Get("Http2-Settings")+"|"+r.Header.Get("Connection"))
		io.WriteString(w, "upstream")
	})
	srv := &Server{Handler: proxyTo(t, upstream.URL), Protocols: protocols(true, false, true), Logger: discardLogger()}
	addr := startServer(t, srv, false).Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	status := func(c net.Conn) string {
		t.Helper()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("reading the status line: %v", err)
		}
		return strings.TrimSpace(line)
	}

	// The preface a byte at a time, then a SETTINGS frame: the server
	// answers with its own SETTINGS.
	c := dial()
	for i := range len(http2.ClientPreface) {
		if _, err := c.Write([]byte{http2.ClientPreface[i]}); err != nil {
			t.Fatal(err)
		}
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	if f, err := fr.ReadFrame(); err != nil {
		t.Errorf("after a split preface: %v", err)
	} else if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Errorf("after a split preface: %v, want SETTINGS", f)
	}

	for _, tt := range []struct{ name, req, want string }{
		{"HTTP/1.0 shorter than the preface", "GET /a HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK"},
		{"starts like the preface", "PRI /b HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"},
		{"upgrade to h2c", "GET /c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", "HTTP/1.1 200 OK"},
	} {
		c := dial()
		io.WriteString(c, tt.req)
		if got := status(c); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if v, _ := seen.Load("/c"); v != "||" {
		t.Errorf("the upstream saw Upgrade|HTTP2-Settings|Connection = %q, want none", v)
	}
}

// curl, over HTTP/2 with TLS and with prior knowledge, and over HTTP/1.1,
// gets the upstream's answer through the Proxy, uploads included.
func TestServerCurl(t *testing.T) {
	leaktest.Check(t)
	curl := realserver.LookPath(t, "curl", "apt-get install curl")
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, len(b))
	})
	fronts := startFronts(t, proxyTo(t, upstream.URL), nil)
	dir := t.TempDir()
	ca, upload := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "upload")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fronts[0].pki.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(upload, bytes.Repeat([]byte("x"), 300000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url, version string
		args               []string
	}{
		{"h2 over TLS", fronts[0].url, "2", []string{"--http2", "--cacert", ca}},
		{"h1 over TLS", fronts[0].url, "1.1", []string{"--http1.1", "--cacert", ca}},
		{"h2c prior knowledge", fronts[2].url, "2", []string{"--http2-prior-knowledge"}},
		{"h1", fronts[2].url, "1.1", []string{"--http1.1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, req := range []struct {
				args []string
				want string
			}{
				{nil, "GET 0 " + tt.version},
				{[]string{"--data-binary", "@" + upload}, "POST 300000 " + tt.version},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				args := append(append([]string{"-sS", "-w", " %{http_version}"}, tt.args...), req.args...)
				out, err := exec.CommandContext(ctx, curl, append(args, tt.url+"/x")...).CombinedOutput()
				cancel()
				if err != nil || string(out) != req.want {
					t.Errorf("curl %s: %q (%v), want %q", strings.Join(req.args, " "), out, err, req.want)
				}
			}
		})
	}
}

// h2load, nghttp2's load generator, runs 2,000 requests over 4 HTTP/2
// connections with 32 streams each, over TLS and with prior knowledge,
// through the Proxy: every one succeeds.
func TestServerH2Load(t *testing.T) {
	leaktest.Check(t)
	h2load := realserver.LookPath(t, "h2load", "apt-get install nghttp2-client")
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100))
	})
	fronts := startFronts(t, proxyTo(t, upstream.URL), nil)
	for _, f := range []testFront{fronts[0], fronts[2]} {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, h2load, "-n", "2000", "-c", "4", "-m", "32", f.url+"/small").CombinedOutput()
			if err != nil {
				t.Fatalf("h2load: %v\n%s", err, out)
			}
			for _, want := range []string{"2000 succeeded, 0 failed, 0 errored", "status codes: 2000 2xx", "Application protocol: h2"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("h2load output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// A client that gives up during an upload (RST_STREAM over HTTP/2, a
// closed connection over HTTP/1.1) is a client that went away (499), not
// a malformed request (400), whatever the protocol.
func TestServerUploadCanceled(t *testing.T) {
	leaktest.Check(t)
	got := make(chan struct{}, 1)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 1000))
		got <- struct{}{}
		io.Copy(io.Discard, r.Body)
	})
	logs := &logRecorder{}
	p := proxyTo(t, upstream.URL)
	p.Logger = logs.logger()
	for _, f := range startFronts(t, p, nil) {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequestWithContext(ctx, "POST", f.url+"/upload-"+f.name, pr)
			go func() {
				pw.Write(make([]byte, 1000))
				<-got
				cancel()
				pw.CloseWithError(context.Canceled) // net/http's client waits for its body read
			}()
			if res, err := f.client.Do(req); err == nil {
				res.Body.Close()
			}
			want := "uri=/upload-" + f.name + " status=499"
			for end := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("no %q in the log:\n%s", want, logs)
				}
			}
		})
	}
}

// A request the Proxy refuses (here CONNECT, which it does not tunnel over HTTP/2)
// ends only its own stream: the HTTP/2 connection serves the next one,
// with no GOAWAY in between (over HTTP/1.1 the connection closes, since
// what follows a refused request cannot be trusted to be framed right).
func TestServerH2RefusedRequestKeepsConnection(t *testing.T) {
	leaktest.Check(t)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv := &Server{Handler: proxyTo(t, upstream.URL), Protocols: protocols(true, false, true), Logger: discardLogger()}
	c := dialH2(t, startServer(t, srv, false).Addr().String(), nil)
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "example.com:443"})
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	c.get(3, "/")
	statuses := map[uint32]string{}
	for len(statuses) < 2 {
		switch f := c.next().(type) {
		case *http2.HeadersFrame:
			fields, _ := c.dec.DecodeFull(f.HeaderBlockFragment())
			for _, hf := range fields {
				if hf.Name == ":status" {
					statuses[f.StreamID] = hf.Value
				}
			}
		case *http2.DataFrame, *http2.RSTStreamFrame:
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	if d := cmp.Diff(map[uint32]string{1: "405", 3: "200"}, statuses); d != "" {
		t.Errorf("statuses (-want +got):\n%s", d)
	}
}

// Over TLS, a handler that hijacks the connection (a WebSocket tunnel
// does) gets it whole: bytes the client sent right after its request,
// which the goroutine watching for a client that leaves may already have
// read through crypto/tls, come first, then the rest.
func TestServerTLSHijack(t *testing.T) {
	leaktest.Check(t)
	pki := newTestPKI(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, "echo "+line)
		}
	})
	srv := &Server{Handler: h, Logger: discardLogger(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.issue(t, "server", false)}}}
	addr := startServer(t, srv, true).Addr().String()
	for _, tt := range []struct{ name, req string }{
		{"upgrade request", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly\n"},
		{"plain request", "GET / HTTP/1.1\r\nHost: a\r\n\r\nearly\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.pool, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tt.req)
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%v %v", res, err)
			}
			io.WriteString(c, "late\n")
			var got []string
			for range 2 {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, line)
			}
			if d := cmp.Diff([]string{"echo early\n", "echo late\n"}, got); d != "" {
				t.Errorf("echoes (-want +got):\n%s", d)
			}
		})
	}
}

// WebSockets over TLS go over HTTP/1.1 (RFC 6455) through the Proxy. The
// HTTP/2 server does not offer RFC 8441's extended CONNECT (no
// SETTINGS_ENABLE_CONNECT_PROTOCOL), so browsers do not try WebSockets
// over HTTP/2, and a client that tries anyway gets its stream reset.
func TestServerWebSocketTLS(t *testing.T) {
	leaktest.Check(t)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			msg, op, err := wsutil.ReadClientData(c)
			if err != nil {
				return
			}
			wsutil.WriteServerMessage(c, op, append([]byte("echo "), msg...))
		}
	})
	fronts := startFronts(t, proxyTo(t, upstream.URL), nil)
	roots := fronts[0].client.Transport.(*http.Transport).TLSClientConfig.RootCAs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{TLSConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	c, _, _, err := d.Dial(ctx, "wss"+strings.TrimPrefix(fronts[0].url, "https")+"/chat")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wsutil.WriteClientText(c, []byte("hello"))
	if msg, err := wsutil.ReadServerText(c); err != nil || string(msg) != "echo hello" {
		t.Errorf("got %q, %v", msg, err)
	}

	// HTTP/2: no extended CONNECT offered, and refused when tried.
	h := dialH2(t, strings.TrimPrefix(fronts[0].url, "https://"), &tls.Config{RootCAs: roots})
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "https"}, {":path", "/chat"}, {":authority", "a"}, {"sec-websocket-version", "13"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if v, ok := sf.Value(http2.SettingEnableConnectProtocol); ok && v != 0 {
				t.Error("the server offers extended CONNECT")
			}
			h.fr.WriteSettingsAck()
			break
		}
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	switch f := h.next().(type) {
	case *http2.RSTStreamFrame:
	case *http2.GoAwayFrame:
	default:
		t.Errorf("extended CONNECT answered with %v, want a reset", f)
	}
}

// An HTTP/2 client that stops taking bytes has its connection closed
// after WriteByteTimeout, and the upstream exchange ends with it.
func TestServerH2WriteByteTimeout(t *testing.T) {
	leaktest.Check(t)
	const timeout = 300 * time.Millisecond
	aborted := make(chan time.Time, 1)
	upstream := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := w.Write(buf); err != nil {
				aborted <- time.Now()
				return
			}
		}
	})
	srv := &Server{
		Handler:   proxyTo(t, upstream.URL),
		Protocols: protocols(true, false, true),
		HTTP2:     &http.HTTP2Config{WriteByteTimeout: timeout},
		Logger:    discardLogger(),
	}
	c := dialH2(t, startServer(t, srv, false).Addr().String(), nil)
	// Open the windows wide, so that only TCP holds the server back.
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	c.get(1, "/endless")
	c.c.SetDeadline(time.Time{})
	begin := time.Now()
	select {
	case at := <-aborted:
		if d := at.Sub(begin); d < timeout {
			t.Errorf("upstream aborted after %v, before the timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream exchange of a client that takes nothing goes on")
	}
}

// A handler that panics over HTTP/2 resets its stream and is logged as an
// error; a handler that aborts with http.ErrAbortHandler is not.
func TestServerH2Panic(t *testing.T) {
	leaktest.Check(t)
	logs := &logRecorder{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	})
	srv := &Server{Handler: h, Protocols: protocols(true, false, true), Logger: logs.logger()}
	c := dialH2(t, startServer(t, srv, false).Addr().String(), nil)
	c.get(1, "/abort")
	c.get(3, "/boom")
	for reset := map[uint32]bool{}; len(reset) < 2; {
		switch f := c.next().(type) {
		case *http2.RSTStreamFrame:
			reset[f.StreamID] = true
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	for end := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "boom"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the panic was not logged")
		}
	}
	if got := strings.Count(logs.String(), "level=ERROR"); got != 1 || !strings.Contains(logs.String(), "level=ERROR msg=\"http2: panic serving") {
		t.Errorf("want one error, the panic:\n%s", logs)
	}
}

// A connection that does not complete its TLS handshake within
// ReadHeaderTimeout is closed.
func TestServerTLSHandshakeTimeout(t *testing.T) {
	leaktest.Check(t)
	srv := &Server{
		Handler:           http.NotFoundHandler(),
		Logger:            discardLogger(),
		ReadHeaderTimeout: 300 * time.Millisecond,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{newTestPKI(t).issue(t, "server", false)}},
	}
	c, err := net.Dial("tcp", startServer(t, srv, true).Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	begin := time.Now()
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a server waiting for a handshake", n)
	}
	if d := time.Since(begin); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
}
