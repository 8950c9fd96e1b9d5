package sluice

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/hs256"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// These tests cover the proxy's HTTP behaviour around a hijack
// (pre-authorization, refusals, limits decided before any store request,
// signatures). Everything that talks to object storage is tested against
// a real versitygw in examples/direct-upload.

var hijackKey = []byte("0123456789abcdef0123456789abcdef")

// hijackProxy starts an upstream app and a proxy with h on "PUT /up/{name}".
func hijackProxy(t *testing.T, h *Hijack, app http.Handler) (proxyURL string) {
	t.Helper()
	upstream := httptest.NewServer(app)
	t.Cleanup(upstream.Close)
	u, _ := url.Parse(upstream.URL)
	p := &Proxy{Director: SingleHost(u, false)}
	p.Handle("PUT /up/{name}", h)
	srv := newFront(t, p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return srv.URL
}

func TestHijackPreauthorizeRequestAndRefusal(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	var seen []*http.Request
	uploads := 0
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !strings.HasSuffix(r.URL.Path, "/authorize") {
			uploads++
			return
		}
		seen = append(seen, r.Clone(r.Context()))
		w.Header().Set("WWW-Authenticate", `Bearer realm="uploads"`)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "log in first")
	})
	proxy := hijackProxy(t, &Hijack{Preauthorizer: PreauthorizeUpstream("/authorize", hijackKey), SigningKey: hijackKey}, app)

	req, _ := http.NewRequest(http.MethodPut, proxy+"/up/a.txt", strings.NewReader("hello"))
	req.Header.Set("Sluice-Upload-Signature", "forged")
	req.Header.Set("Sluice-Upload-Length", "1")
	req.Header.Set("X-Custom", "kept")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	got := []string{res.Status, res.Header.Get("Www-Authenticate"), string(body)}
	want := []string{"401 Unauthorized", `Bearer realm="uploads"`, "log in first"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("refusal not relayed (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if uploads != 0 || len(seen) != 1 {
		t.Fatalf("upstream saw %d uploads and %d pre-authorizations, want 0 and 1", uploads, len(seen))
	}
	pa := seen[0]
	if pa.Method != http.MethodPut || pa.URL.Path != "/up/a.txt/authorize" || pa.ContentLength != 0 {
		t.Fatalf("pre-authorization request %s %s with %d body bytes", pa.Method, pa.URL.Path, pa.ContentLength)
	}
	if pa.Header.Get("Sluice-Upload-Signature") != "" || pa.Header.Get(HeaderUploadLength) != "5" || pa.Header.Get("X-Custom") != "kept" {
		t.Fatalf("pre-authorization headers: %v", pa.Header)
	}
	method, path, err := VerifyPreauthorize(pa, hijackKey)
	if err != nil || method != http.MethodPut || path != "/up/a.txt" {
		t.Fatalf("VerifyPreauthorize = %q, %q, %v", method, path, err)
	}
	if _, _, err := VerifyPreauthorize(pa, []byte("other key")); !errors.Is(err, ErrUploadSignature) {
		t.Fatalf("VerifyPreauthorize with another key: %v", err)
	}
}

// TestHijackRefusedBeforeStore covers the answers decided before any
// request to the store: no store URL is ever contacted (the plan's URLs
// point at a server that fails the test if called), except the abort of
// the multipart upload the plan created.
func TestHijackRefusedBeforeStore(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	var storeCalls []string
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storeCalls = append(storeCalls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer store.Close()
	multipart := &MultipartUpload{PartSize: 5, PartURLs: []string{store.URL + "/part1", store.URL + "/part2"},
		CompleteURL: store.URL + "/complete", AbortURL: store.URL + "/abort"}
	tests := []struct {
		name      string
		plan      *UploadPlan
		planErr   error
		body      string
		status    int
		wantCalls []string
	}{
		{"declared length over max size", &UploadPlan{MaxSize: 4, Objects: []RemoteObject{{PutURL: store.URL + "/obj"}}},
			nil, "hello", 413, nil},
		{"declared length needs more parts than presigned", &UploadPlan{Objects: []RemoteObject{{Multipart: multipart}}},
			nil, "eleven char", 413, []string{"DELETE /abort"}},
		{"plan without objects", &UploadPlan{}, nil, "x", 502, nil},
		{"plan with a relative URL", &UploadPlan{Objects: []RemoteObject{{PutURL: "/obj"}}}, nil, "x", 502, nil},
		{"plan with an unknown hash", &UploadPlan{Hashes: []string{"crc32"}, Objects: []RemoteObject{{Multipart: multipart}}},
			nil, "x", 502, []string{"DELETE /abort"}},
		{"preauthorizer error with status", nil, Errorf(http.StatusTooManyRequests, "quota"), "x", 429, nil},
		{"preauthorizer refusal", nil, &Refusal{Status: 403, Body: []byte("no")}, "x", 403, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			storeCalls = nil
			mu.Unlock()
			h := &Hijack{SigningKey: hijackKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*UploadPlan, error) {
				return tt.plan, tt.planErr
			})}
			var upstreamHit atomic.Bool
			proxy := hijackProxy(t, h, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { upstreamHit.Store(true) }))
			res, err := http.DefaultClient.Do(mustNewRequest(t, http.MethodPut, proxy+"/up/f", strings.NewReader(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if upstreamHit.Load() {
				t.Fatal("the upstream was called")
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(tt.wantCalls, storeCalls); diff != "" {
				t.Fatalf("store calls (-want +got):\n%s", diff)
			}
		})
	}
}

func mustNewRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestHijackForwardsRequestsWithoutBody(t *testing.T) {
	leaktest.Check(t)
	var called atomic.Bool
	h := &Hijack{SigningKey: hijackKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*UploadPlan, error) {
		called.Store(true)
		return nil, errors.New("must not be called")
	})}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.Header.Get("Sluice-Upload-Signature"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	p := &Proxy{Director: SingleHost(u, false)}
	p.Handle("/up/{name}", h)
	srv := newFront(t, p)
	defer srv.Close()
	defer p.CloseIdleConnections()
	req := mustNewRequest(t, http.MethodGet, srv.URL+"/up/x", nil)
	req.Header.Set("Sluice-Upload-Signature", "forged")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "GET " || called.Load() {
		t.Fatalf("GET on a hijack route: upstream saw %q, preauthorizer called %v", body, called.Load())
	}
}

func TestVerifyUpload(t *testing.T) {
	now := time.Now()
	good := UploadClaims{Issuer: "sluice", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(),
		Method: "PUT", Path: "/x", Files: []UploadedFile{{Name: "x", Size: 3, RemoteID: "k"}}}
	sign := func(c any, key []byte) string {
		tok, err := hs256.Sign(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := good
	expired.ExpiresAt = now.Add(-time.Second).Unix()
	foreign := good
	foreign.Issuer = "someone"
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", sign(good, hijackKey), true},
		{"other key", sign(good, []byte("other")), false},
		{"expired", sign(expired, hijackKey), false},
		{"other issuer", sign(foreign, hijackKey), false},
		{"missing", "", false},
		{"garbage", "a.b.c", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/x", nil)
			if tt.token != "" {
				r.Header.Set(HeaderUploadSignature, tt.token)
			}
			c, err := VerifyUpload(r, hijackKey)
			if !tt.ok {
				if !errors.Is(err, ErrUploadSignature) {
					t.Fatalf("VerifyUpload: %v, want ErrUploadSignature", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&good, c); diff != "" {
				t.Fatalf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSourceReaderLimit(t *testing.T) {
	tests := []struct {
		size, limit int
		tooLarge    bool
	}{
		{10, 10, false},
		{11, 10, true},
		{0, 10, false},
		{100000, 65536, true},
	}
	for _, tt := range tests {
		s := &sourceReader{r: strings.NewReader(strings.Repeat("x", tt.size)), limit: int64(tt.limit)}
		n, err := io.Copy(io.Discard, s)
		if s.tooLarge != tt.tooLarge || (err != nil) != tt.tooLarge {
			t.Fatalf("size %d limit %d: read %d, err %v, tooLarge %v", tt.size, tt.limit, n, err, s.tooLarge)
		}
		if n > int64(tt.limit)+1 {
			t.Fatalf("size %d limit %d: read %d bytes, more than limit+1", tt.size, tt.limit, n)
		}
	}
}

func FuzzVerifyUpload(f *testing.F) {
	tok, _ := hs256.Sign(hijackKey, UploadClaims{Issuer: "sluice", ExpiresAt: 1 << 40})
	f.Add(tok)
	f.Add("")
	f.Add("e30.e30.e30")
	f.Fuzz(func(t *testing.T, tok string) {
		r := httptest.NewRequest(http.MethodPut, "/", nil)
		r.Header.Set(HeaderUploadSignature, tok)
		c, err := VerifyUpload(r, hijackKey)
		if err == nil && (c.Issuer != "sluice" || c.ExpiresAt < time.Now().Unix()) {
			t.Fatalf("accepted claims %+v", c)
		}
	})
}

// TestHijackRefusalBeforeContinue: a client that asked for
// "Expect: 100-continue" gets the refusal without a 100, so it never
// sends the body.
func TestHijackRefusalBeforeContinue(t *testing.T) {
	leaktest.Check(t)
	h := &Hijack{SigningKey: hijackKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*UploadPlan, error) {
		return nil, &Refusal{Status: http.StatusForbidden, Body: []byte("no uploads today")}
	})}
	proxy := hijackProxy(t, h, http.NotFoundHandler())
	c, err := net.Dial("tcp", strings.TrimPrefix(proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "PUT /up/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusForbidden || string(body) != "no uploads today" {
		t.Fatalf("got %d %q, want 403 without 100 Continue first", res.StatusCode, body)
	}
}

// FuzzUploadPlan feeds pre-authorization answers (JSON from the
// application) to the plan check: it must never panic, and a plan it
// accepts must be usable.
func FuzzUploadPlan(f *testing.F) {
	f.Add([]byte(`{"objects":[{"id":"a","put_url":"http://s/a"}],"max_size":10,"hashes":["md5"]}`))
	f.Add([]byte(`{"objects":[{"id":"a","multipart":{"part_size":5,"part_urls":["http://s/1"],"complete_url":"http://s/c","abort_url":"http://s/x"}}]}`))
	f.Add([]byte(`{"objects":[]}`))
	f.Add([]byte(`{"objects":[{"put_url":"ftp://x"}],"hashes":["crc"]}`))
	p := &Proxy{}
	f.Fuzz(func(t *testing.T, data []byte) {
		var plan UploadPlan
		if json.Unmarshal(data, &plan) != nil {
			return
		}
		u := &upload{h: &Hijack{}, pr: &ProxyRequest{proxy: p}, plan: &plan}
		if u.check() != nil {
			return
		}
		if u.limit <= 0 || len(plan.Objects) == 0 {
			t.Fatalf("accepted plan with limit %d and %d objects", u.limit, len(plan.Objects))
		}
		for _, o := range plan.Objects {
			if o.PutURL == "" && (o.Multipart == nil || o.Multipart.PartSize <= 0 || len(o.Multipart.PartURLs) == 0) {
				t.Fatalf("accepted unusable object %+v", o)
			}
		}
	})
}

// A pre-authorization token is signed with the same key as an upload
// description: VerifyUpload must not take one for the other.
func TestVerifyUploadRefusesPreauthorizeToken(t *testing.T) {
	now := time.Now().Unix()
	tok, err := hs256.Sign(hijackKey, preauthClaims{Issuer: "sluice", IssuedAt: now, ExpiresAt: now + 60, Method: "POST", Path: "/up", Preauth: true})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("POST", "http://app.test/up", nil)
	r.Header.Set(HeaderUploadSignature, tok)
	if c, err := VerifyUpload(r, hijackKey); !errors.Is(err, ErrUploadSignature) {
		t.Fatalf("VerifyUpload accepted a pre-authorization token: %+v, %v", c, err)
	}
}
