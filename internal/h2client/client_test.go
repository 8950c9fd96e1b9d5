package h2client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
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

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c := New(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func get(t *testing.T, c *Client, url string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func protoHandler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Trailer", "X-Sum")
	io.WriteString(w, r.Proto)
	w.Header().Set("X-Sum", "ok")
}

// tlsServer starts an HTTPS server (HTTP/2 offered if h2) and returns it
// with a pool that trusts its certificate, which is valid for 127.0.0.1
// and example.com.
func tlsServer(t *testing.T, h2 bool, h http.Handler, edit func(*tls.Config)) (*httptest.Server, *x509.CertPool, *countingListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.StartTLS()
	if edit != nil {
		// StartTLS built srv.TLS and wrapped the listener with it.
		edit(srv.TLS)
	}
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool, cl
}

func TestALPN(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name    string
		h2      bool
		upgrade bool
		want    string
	}{
		{"h2 offered", true, false, "HTTP/2.0"},
		{"h1 only", false, false, "HTTP/1.1"},
		{"upgrade request stays on HTTP/1.1", true, true, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, pool, _ := tlsServer(t, tc.h2, http.HandlerFunc(protoHandler), nil)
			c := newClient(t, Config{TLS: &tls.Config{RootCAs: pool}})
			var hdr http.Header
			if tc.upgrade {
				hdr = http.Header{"Upgrade": {"example"}, "Connection": {"Upgrade"}}
			}
			res, body := get(t, c, srv.URL+"/", hdr)
			got := []string{res.Proto, body, res.Trailer.Get("X-Sum")}
			if tc.upgrade {
				got[2] = "ok" // no trailers on a plain answer to an upgrade over HTTP/1.1 (chunked: yes)
			}
			if diff := cmp.Diff([]string{tc.want, tc.want, "ok"}, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	leaktest.Check(t)
	ca, caKey := newCA(t)
	clientCert := newLeaf(t, ca, caKey, "client")
	caPool := x509.NewCertPool()
	caPool.AddCert(ca)

	var sniMu sync.Mutex
	var sni []string
	recordSNI := func(cfg *tls.Config) {
		cfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			sniMu.Lock()
			sni = append(sni, hi.ServerName)
			sniMu.Unlock()
			return nil, nil
		}
	}
	plain, pool, _ := tlsServer(t, true, http.HandlerFunc(protoHandler), recordSNI)
	mtls, mtlsPool, _ := tlsServer(t, true, http.HandlerFunc(protoHandler), func(cfg *tls.Config) {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = caPool
	})
	tls12, tls12Pool, _ := tlsServer(t, true, http.HandlerFunc(protoHandler), func(cfg *tls.Config) {
		cfg.MaxVersion = tls.VersionTLS12
	})
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "https://") }

	for _, tc := range []struct {
		name    string
		cfg     Config
		url     string
		wantErr string
		wantSNI []string
	}{
		{name: "unknown CA refused", cfg: Config{}, url: plain.URL, wantErr: "certificate"},
		{name: "custom CA, no SNI for an IP", cfg: Config{TLS: &tls.Config{RootCAs: pool}}, url: plain.URL, wantSNI: []string{""}},
		{name: "per-target server name", cfg: Config{TLSFor: func(a string) *tls.Config {
			if a != addr(plain) {
				return nil
			}
			return &tls.Config{RootCAs: pool, ServerName: "example.com"}
		}}, url: plain.URL, wantSNI: []string{"example.com"}},
		{name: "wrong server name refused", cfg: Config{TLS: &tls.Config{RootCAs: pool, ServerName: "other.example"}}, url: plain.URL, wantErr: "certificate", wantSNI: []string{"other.example"}},
		{name: "mTLS without certificate refused", cfg: Config{TLS: &tls.Config{RootCAs: mtlsPool}}, url: mtls.URL, wantErr: "certificate|could not be established|reset by peer|broken pipe"}, // TLS 1.3: the client's handshake ends before the server checks; its refusal (an alert, then close) may reach the client as a reset of its first write
		{name: "mTLS with certificate", cfg: Config{
			TLS: &tls.Config{RootCAs: pool},
			TLSFor: func(a string) *tls.Config {
				if a != addr(mtls) {
					return nil
				}
				return &tls.Config{RootCAs: mtlsPool, Certificates: []tls.Certificate{clientCert}}
			}}, url: mtls.URL},
		{name: "TLS 1.2 server accepted by default", cfg: Config{TLS: &tls.Config{RootCAs: tls12Pool}}, url: tls12.URL},
		{name: "TLS 1.2 server refused with MinVersion 1.3", cfg: Config{TLS: &tls.Config{RootCAs: tls12Pool, MinVersion: tls.VersionTLS13}}, url: tls12.URL, wantErr: "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sniMu.Lock()
			sni = nil
			sniMu.Unlock()
			c := newClient(t, tc.cfg)
			req, _ := http.NewRequest("GET", tc.url+"/", nil)
			res, err := c.RoundTrip(req)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "HTTP/2.0" {
					t.Errorf("body %q, want HTTP/2.0", b)
				}
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !containsAny(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
			sniMu.Lock()
			defer sniMu.Unlock()
			if tc.wantSNI != nil {
				if diff := cmp.Diff(tc.wantSNI, sni); diff != "" {
					t.Errorf("SNI (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// containsAny reports whether s contains one of the |-separated words.
func containsAny(s, words string) bool {
	for _, w := range strings.Split(words, "|") {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// h2cServer serves h with HTTP/2 over cleartext TCP (prior knowledge).
func h2cServer(t *testing.T, h http.Handler) (string, *countingListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(cl) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String(), cl
}

func TestH2CMultiplexes(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	var inFlight atomic.Int32
	all := make(chan struct{})
	const n = 20
	url, cl := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if inFlight.Add(1) == n {
			close(all)
		}
		<-release
		protoHandler(w, r)
	}))
	c := newClient(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", url+"/", strings.NewReader("x"))
			res, err := c.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if string(b) != "HTTP/2.0" || res.Trailer.Get("X-Sum") != "ok" {
				errs <- errors.New("bad response " + string(b))
			}
		}()
	}
	select {
	case <-all: // all n streams are open at once
	case <-time.After(10 * time.Second):
		t.Fatal("the streams did not all reach the server")
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := cl.n.Load(); got != 1 {
		t.Errorf("%d connections for %d concurrent requests, want 1", got, n)
	}
}

func TestResponseHeaderTimeoutStartsAfterBody(t *testing.T) {
	leaktest.Check(t)
	url, _ := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	c := newClient(t, Config{ResponseHeaderTimeout: 200 * time.Millisecond})

	// A body that takes longer than the timeout to send is no slow upstream.
	pr, pw := io.Pipe()
	go func() {
		for range 4 {
			time.Sleep(100 * time.Millisecond) // a slow client, longer than the bound in total
			pw.Write([]byte("x"))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", url+"/", pr)
	res, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	res.Body.Close()

	req, _ = http.NewRequest("GET", url+"/slow", nil)
	_, err = c.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("slow upstream: err %v, want a timeout", err)
	}
}

// relay forwards TCP connections to addr and can freeze them: stop
// copying in both directions while keeping both sockets open, as a peer
// that vanished from the network looks.
type relay struct {
	ln      net.Listener
	addr    string
	frozen  chan struct{}
	closed  chan struct{} // a client-side connection was closed by the client
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
	accepts atomic.Int32
}

func newRelay(t *testing.T, addr string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, addr: ln.Addr().String(), frozen: make(chan struct{}), closed: make(chan struct{}, 16)}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.accepts.Add(1)
			u, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, u)
			frozen := r.frozen
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); r.pipe(u, c, frozen, true) }()
			go func() { defer r.wg.Done(); r.pipe(c, u, frozen, false) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// pipe copies src to dst until frozen; a frozen pipe reads on and drops
// what it reads, and reports the client closing its side.
func (r *relay) pipe(dst, src net.Conn, frozen chan struct{}, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			if fromClient {
				r.closed <- struct{}{}
			}
			dst.Close()
			return
		}
		select {
		case <-frozen:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// freeze stops the current connections; later ones flow.
func (r *relay) freeze() {
	r.mu.Lock()
	close(r.frozen)
	r.frozen = make(chan struct{})
	r.mu.Unlock()
}

func TestDeadConnectionReplaced(t *testing.T) {
	leaktest.Check(t)
	url, _ := h2cServer(t, http.HandlerFunc(protoHandler))
	r := newRelay(t, strings.TrimPrefix(url, "http://"))
	c := newClient(t, Config{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	if _, body := get(t, c, "http://"+r.addr+"/", nil); body != "HTTP/2.0" {
		t.Fatalf("body %q", body)
	}
	r.freeze()
	select {
	case <-r.closed: // the client gave up on the silent connection
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen connection was not closed")
	}
	if _, body := get(t, c, "http://"+r.addr+"/", nil); body != "HTTP/2.0" {
		t.Fatalf("body %q", body)
	}
	if got := r.accepts.Load(); got != 2 {
		t.Errorf("%d connections, want 2 (the dead one replaced)", got)
	}
}

func TestPingOffWhenNegative(t *testing.T) {
	c := newClient(t, Config{PingInterval: -1})
	if got := c.h2c.HTTP2.SendPingTimeout; got != 0 {
		t.Errorf("SendPingTimeout %v, want 0", got)
	}
	c = newClient(t, Config{})
	if got := c.tls.HTTP2.SendPingTimeout; got != DefaultPingInterval {
		t.Errorf("SendPingTimeout %v, want %v", got, DefaultPingInterval)
	}
}

func TestUnprocessed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.ErrUnexpectedEOF, false},
		{ErrUnprocessed, true},
		{fmt.Errorf("x: %w", ErrUnprocessed), true},
		{errors.New("stream error: stream ID 7; REFUSED_STREAM"), true},
		{errors.New("stream error: stream ID 7; REFUSED_STREAM; received from peer"), true},
		{errors.New("stream error: stream ID 7; CANCEL"), false},
		{errors.New("http2: Transport received Server's graceful shutdown GOAWAY"), true},
		{errors.New("http2: Transport received GOAWAY from server ErrCode:PROTOCOL_ERROR"), false},
	} {
		if got := Unprocessed(tc.err); got != tc.want {
			t.Errorf("Unprocessed(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// rawStream is a request as a rawServer saw it.
type rawStream struct {
	conn   int // the connection's number, from 1
	id     uint32
	header map[string]string
	body   []byte
}

// rawServer is an HTTP/2 upstream written with x/net's Framer, so that a
// test decides frame by frame: on each complete request, act returns
// what to do ("ok" answers 200, "refuse" resets the stream with
// REFUSED_STREAM, "goaway" sends GOAWAY with last stream ID 0 and closes
// the connection, "hold" answers nothing).
type rawServer struct {
	addr   string
	events chan string // "rst <conn> <id> <code>" for every RST_STREAM received
	mu     sync.Mutex
	seen   []rawStream
}

func newRawServer(t *testing.T, act func(s rawStream) string) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &rawServer{addr: ln.Addr().String(), events: make(chan string, 64)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); rs.serve(c, n, act) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return rs
}

func (rs *rawServer) serve(c net.Conn, n int, act func(rawStream) string) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	streams := map[uint32]*rawStream{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		var done *rawStream
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			s := &rawStream{conn: n, id: f.StreamID, header: map[string]string{}}
			for _, hf := range f.Fields {
				s.header[hf.Name] = hf.Value
			}
			streams[f.StreamID] = s
			if f.StreamEnded() {
				done = s
			}
		case *http2.DataFrame:
			s := streams[f.StreamID]
			if s == nil {
				continue
			}
			s.body = append(s.body, f.Data()...)
			if len(f.Data()) > 0 {
				fr.WriteWindowUpdate(0, uint32(len(f.Data())))
			}
			if f.StreamEnded() {
				done = s
			}
		case *http2.RSTStreamFrame:
			rs.events <- fmt.Sprintf("rst %d %d %v", n, f.StreamID, f.ErrCode)
		}
		if done == nil {
			continue
		}
		rs.mu.Lock()
		rs.seen = append(rs.seen, *done)
		rs.mu.Unlock()
		switch act(*done) {
		case "ok":
			hbuf.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: done.id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
			fr.WriteData(done.id, true, done.body)
		case "refuse":
			fr.WriteRSTStream(done.id, http2.ErrCodeRefusedStream)
		case "goaway":
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			return
		}
	}
}

func (rs *rawServer) streams() []rawStream {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]rawStream(nil), rs.seen...)
}

// post sends a POST with a body that GetBody gives again.
func post(c *Client, url, body string) (string, error) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	res, err := c.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func TestUnprocessedRetried(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name  string
		first string
		want  [][2]int // (conn, stream) of the requests the server saw
	}{
		{"REFUSED_STREAM", "refuse", [][2]int{{1, 1}, {1, 3}}},
		{"GOAWAY above the request", "goaway", [][2]int{{1, 1}, {2, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			rs := newRawServer(t, func(s rawStream) string {
				if n.Add(1) == 1 {
					return tc.first
				}
				return "ok"
			})
			c := newClient(t, Config{})
			// http.NewRequest sets GetBody for a strings.Reader: the
			// x/net transport sends the body again.
			got, err := post(c, "http://"+rs.addr+"/", "payload")
			if err != nil {
				t.Fatal(err)
			}
			if got != "payload" {
				t.Errorf("echo %q", got)
			}
			var seen [][2]int
			for _, s := range rs.streams() {
				seen = append(seen, [2]int{s.conn, int(s.id)})
				if string(s.body) != "payload" || s.header[":method"] != "POST" {
					t.Errorf("stream %d: %s %q", s.id, s.header[":method"], s.body)
				}
			}
			if diff := cmp.Diff(tc.want, seen); diff != "" {
				t.Errorf("streams (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnprocessedNotReplayable(t *testing.T) {
	leaktest.Check(t)
	rs := newRawServer(t, func(rawStream) string { return "refuse" })
	c := newClient(t, Config{})
	req, _ := http.NewRequest("POST", "http://"+rs.addr+"/", strings.NewReader("payload"))
	req.GetBody = func() (io.ReadCloser, error) {
		return nil, fmt.Errorf("%w: body gone", ErrUnprocessed)
	}
	_, err := c.RoundTrip(req)
	if !Unprocessed(err) {
		t.Fatalf("err %v: want Unprocessed", err)
	}
	if got := len(rs.streams()); got != 1 {
		t.Errorf("%d streams, want 1", got)
	}
}

func TestCancelResetsStream(t *testing.T) {
	leaktest.Check(t)
	arrived := make(chan struct{})
	rs := newRawServer(t, func(rawStream) string { close(arrived); return "hold" })
	c := newClient(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+rs.addr+"/", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := c.RoundTrip(req)
		errc <- err
	}()
	<-arrived
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	select {
	case ev := <-rs.events:
		if ev != "rst 1 1 CANCEL" {
			t.Errorf("upstream got %q, want RST_STREAM CANCEL for stream 1", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no RST_STREAM reached the upstream")
	}
}
