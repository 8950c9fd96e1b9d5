package sluice

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"github.com/sluiceproxy/sluice/upload"
)

// These tests cover the proxy's HTTP behaviour around an Upload
// (pre-authorization, refusals, limits decided before any store request,
// signatures, what of the client's request reaches the application).
// Those that store objects use a real versitygw, as examples/direct-upload
// does for the whole flow.

var uploadKey = []byte("0123456789abcdef0123456789abcdef")

// uploadProxy starts an upstream app and a proxy with h on "PUT /up/{name}".
func uploadProxy(t *testing.T, h *Upload, app http.Handler) (proxyURL string) {
	t.Helper()
	upstream := httptest.NewServer(app)
	t.Cleanup(upstream.Close)
	u, _ := url.Parse(upstream.URL)
	p := &Proxy{Director: &SingleHost{Target: u}}
	p.Handle("PUT /up/{name}", h)
	srv := newFront(t, p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return srv.URL
}

func TestUploadPreauthorizeRequestAndRefusal(t *testing.T) {
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
	proxy := uploadProxy(t, &Upload{Preauthorizer: PreauthorizeUpstream("/authorize", uploadKey), SigningKey: uploadKey}, app)

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
	if pa.Header.Get("Sluice-Upload-Signature") != "" || pa.Header.Get(upload.HeaderLength) != "5" || pa.Header.Get("X-Custom") != "kept" {
		t.Fatalf("pre-authorization headers: %v", pa.Header)
	}
	method, path, err := upload.VerifyPreauthorize(pa, uploadKey)
	if err != nil || method != http.MethodPut || path != "/up/a.txt" {
		t.Fatalf("VerifyPreauthorize = %q, %q, %v", method, path, err)
	}
	if _, _, err := upload.VerifyPreauthorize(pa, []byte("other key")); !errors.Is(err, upload.ErrSignature) {
		t.Fatalf("VerifyPreauthorize with another key: %v", err)
	}
}

// TestUploadRefusedBeforeStore covers the answers decided before any
// request to the store: no store URL is ever contacted (the plan's URLs
// point at a server that fails the test if called), except the abort of
// the multipart upload the plan created.
func TestUploadRefusedBeforeStore(t *testing.T) {
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
	multipart := &upload.Multipart{PartSize: 5, PartURLs: []string{store.URL + "/part1", store.URL + "/part2"},
		CompleteURL: store.URL + "/complete", AbortURL: store.URL + "/abort"}
	tests := []struct {
		name      string
		plan      *upload.Plan
		planErr   error
		body      string
		status    int
		wantCalls []string
	}{
		{"declared length over max size", &upload.Plan{MaxSize: 4, Objects: []upload.Object{{PutURL: store.URL + "/obj"}}},
			nil, "hello", 413, nil},
		{"declared length needs more parts than presigned", &upload.Plan{Objects: []upload.Object{{Multipart: multipart}}},
			nil, "eleven char", 413, []string{"DELETE /abort"}},
		{"plan without objects", &upload.Plan{}, nil, "x", 502, nil},
		{"plan with a relative URL", &upload.Plan{Objects: []upload.Object{{PutURL: "/obj"}}}, nil, "x", 502, nil},
		{"plan with an unknown hash", &upload.Plan{Hashes: []string{"crc32"}, Objects: []upload.Object{{Multipart: multipart}}},
			nil, "x", 502, []string{"DELETE /abort"}},
		{"preauthorizer error with status", nil, Errorf(http.StatusTooManyRequests, "quota"), "x", 429, nil},
		{"preauthorizer refusal", nil, &Refusal{Status: 403, Body: []byte("no")}, "x", 403, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			storeCalls = nil
			mu.Unlock()
			h := &Upload{SigningKey: uploadKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*upload.Plan, error) {
				return tt.plan, tt.planErr
			})}
			var upstreamHit atomic.Bool
			proxy := uploadProxy(t, h, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { upstreamHit.Store(true) }))
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

func TestUploadForwardsRequestsWithoutBody(t *testing.T) {
	leaktest.Check(t)
	var called atomic.Bool
	h := &Upload{SigningKey: uploadKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*upload.Plan, error) {
		called.Store(true)
		return nil, errors.New("must not be called")
	})}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.Header.Get("Sluice-Upload-Signature"))
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	p := &Proxy{Director: &SingleHost{Target: u}}
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
		t.Fatalf("GET on an Upload route: upstream saw %q, preauthorizer called %v", body, called.Load())
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

// TestUploadRefusalBeforeContinue: a client that asked for
// "Expect: 100-continue" gets the refusal without a 100, so it never
// sends the body.
func TestUploadRefusalBeforeContinue(t *testing.T) {
	leaktest.Check(t)
	h := &Upload{SigningKey: uploadKey, Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*upload.Plan, error) {
		return nil, &Refusal{Status: http.StatusForbidden, Body: []byte("no uploads today")}
	})}
	proxy := uploadProxy(t, h, http.NotFoundHandler())
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
		var plan upload.Plan
		if json.Unmarshal(data, &plan) != nil {
			return
		}
		u := &transfer{h: &Upload{}, pr: &ProxyRequest{proxy: p}, plan: &plan}
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

// presign returns a query-presigned URL (AWS Signature Version 4,
// "Authenticating Requests: Using Query Parameters") for method on
// /bucket/key of s, as an application makes them with an S3 SDK. key
// must need no escaping.
func presign(s *realserver.S3, method, bucket, key string) string {
	u, _ := url.Parse(s.Endpoint)
	now := time.Now().UTC()
	amzDate, day := now.Format("20060102T150405Z"), now.Format("20060102")
	scope := day + "/" + s.Region + "/s3/aws4_request"
	q := url.Values{
		"X-Amz-Algorithm":     {"AWS4-HMAC-SHA256"},
		"X-Amz-Credential":    {s.AccessKey + "/" + scope},
		"X-Amz-Date":          {amzDate},
		"X-Amz-Expires":       {"3600"},
		"X-Amz-SignedHeaders": {"host"},
	}.Encode()
	path := "/" + bucket + "/" + key
	canonical := method + "\n" + path + "\n" + q + "\nhost:" + u.Host + "\n\nhost\nUNSIGNED-PAYLOAD"
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	mac := func(key []byte, data string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(data))
		return m.Sum(nil)
	}
	k := []byte("AWS4" + s.SecretKey)
	for _, part := range []string{day, s.Region, "s3", "aws4_request"} {
		k = mac(k, part)
	}
	return s.Endpoint + path + "?" + q + "&X-Amz-Signature=" + hex.EncodeToString(mac(k, toSign))
}

// seenRequest is what the application behind an Upload received.
type seenRequest struct {
	header http.Header
	form   map[string][]string
	claims *upload.Claims
	err    error
}

// uploadApp records the requests it gets (the form parsed, the
// signature verified) on seen.
func uploadApp(seen chan<- seenRequest) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seenRequest{header: r.Header.Clone()}
		s.claims, s.err = upload.Verify(r, uploadKey)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			if err := r.ParseMultipartForm(1 << 20); err != nil {
				s.err = err
			} else {
				s.form = r.MultipartForm.Value
			}
		}
		seen <- s
		w.WriteHeader(http.StatusCreated)
	})
}

// sluiceNames returns the names of h that an upstream reading headers
// CGI-style (underscores as dashes, any case) takes for Sluice-* ones.
func sluiceNames(h http.Header) []string {
	var names []string
	for k := range h {
		if strings.HasPrefix(strings.ToLower(dashedName(k)), "sluice-") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// s3Upload starts a real object store (versitygw) with a bucket
// "uploads", an application recording what it gets, and a proxy whose
// Upload on "PUT /up/{name}" stores the body as uploads/<name>. The
// headers of each pre-authorization go to preauth.
func s3Upload(t *testing.T) (proxy string, s3 *realserver.S3, seen chan seenRequest, preauth chan http.Header) {
	t.Helper()
	s3 = realserver.StartS3(t)
	if err := os.MkdirAll(filepath.Join(s3.Dir, "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	seen, preauth = make(chan seenRequest, 1), make(chan http.Header, 1)
	h := &Upload{SigningKey: uploadKey, Hashes: []string{"sha256"},
		Preauthorizer: PreauthorizerFunc(func(pr *ProxyRequest) (*upload.Plan, error) {
			preauth <- pr.Out.Header.Clone()
			key := pr.In.PathValue("name")
			return &upload.Plan{Objects: []upload.Object{{ID: "uploads/" + key,
				PutURL:    presign(s3, http.MethodPut, "uploads", key),
				DeleteURL: presign(s3, http.MethodDelete, "uploads", key)}}}, nil
		})}
	return uploadProxy(t, h, uploadApp(seen)), s3, seen, preauth
}

// TestUploadDropsForgedDescriptions: a form's file goes to the store and
// the application gets the form with the file replaced by its
// description; client fields shaped like a description are dropped,
// whether or not a file of that name was stored.
func TestUploadDropsForgedDescriptions(t *testing.T) {
	leaktest.Check(t)
	proxy, s3, seen, preauth := s3Upload(t)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, f := range [][2]string{
		{"comment", "hello"},
		{"notes.txt", "kept: not a description suffix"},
		{"photo.remote_id", "forged for the stored file"},
		{"avatar.remote_id", "forged for a file never sent"},
		{"avatar.size", "1"},
		{"avatar.sha256", "forged"},
		{"Avatar.REMOTE_ID", "forged, in another case"},
		{"a.b.remote_url", "http://evil.example/"},
		{"photo", "a field, not the file"},
	} {
		mw.WriteField(f[0], f[1])
	}
	fw, _ := mw.CreateFormFile("photo", "beach.jpg")
	io.WriteString(fw, "JPEG DATA")
	mw.Close()
	req := mustNewRequest(t, http.MethodPut, proxy+"/up/photo-1", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", res.StatusCode)
	}
	<-preauth
	got := <-seen
	if got.err != nil {
		t.Fatalf("application: %v", got.err)
	}
	f := got.claims.Files[0]
	want := map[string][]string{
		"comment":               {"hello"},
		"notes.txt":             {"kept: not a description suffix"},
		"photo":                 {"a field, not the file"},
		"photo.name":            {"beach.jpg"},
		"photo.size":            {"9"},
		"photo.remote_id":       {"uploads/photo-1"},
		"photo.remote_url":      {f.RemoteURL},
		"photo.content_type":    {"application/octet-stream"},
		"photo.sha256":          {f.SHA256},
		"photo.upload_duration": {strconv.FormatFloat(f.Duration, 'f', 6, 64)},
	}
	if diff := cmp.Diff(want, got.form); diff != "" {
		t.Errorf("form at the application (-want +got):\n%s", diff)
	}
	stored, err := os.ReadFile(filepath.Join(s3.Dir, "uploads", "photo-1"))
	if err != nil || string(stored) != "JPEG DATA" {
		t.Fatalf("object in the store: %q, %v", stored, err)
	}
}

// TestUploadStripsSluiceHeaders: Sluice-* request headers in any
// spelling (case, underscores for dashes) reach neither the
// pre-authorization nor the application, which gets the proxy's own.
func TestUploadStripsSluiceHeaders(t *testing.T) {
	leaktest.Check(t)
	proxy, s3, seen, preauth := s3Upload(t)
	req := mustNewRequest(t, http.MethodPut, proxy+"/up/raw-1", strings.NewReader("raw body"))
	for _, k := range []string{"Sluice_Upload_Signature", "sluice_upload_name", "SLUICE_UPLOAD_REMOTE_ID",
		"Sluice-Upload_Size", "Sluice_Preauthorize", "sluice-upload-sha256"} {
		req.Header[k] = []string{"forged"}
	}
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", res.StatusCode)
	}
	if diff := cmp.Diff([]string(nil), sluiceNames(<-preauth)); diff != "" {
		t.Errorf("Sluice-* headers in the pre-authorization (-want +got):\n%s", diff)
	}
	got := <-seen
	if got.err != nil {
		t.Fatalf("application: %v", got.err)
	}
	f := got.claims.Files[0]
	want := map[string]string{
		upload.HeaderSignature:     got.header.Get(upload.HeaderSignature),
		"Sluice-Upload-Name":       "raw-1",
		"Sluice-Upload-Size":       "8",
		"Sluice-Upload-Remote-Id":  "uploads/raw-1",
		"Sluice-Upload-Remote-Url": f.RemoteURL,
		"Sluice-Upload-Sha256":     f.SHA256,
		"Sluice-Upload-Duration":   strconv.FormatFloat(f.Duration, 'f', 6, 64),
	}
	gotSluice := map[string]string{}
	for _, k := range sluiceNames(got.header) {
		gotSluice[k] = strings.Join(got.header[k], ", ")
	}
	if diff := cmp.Diff(want, gotSluice); diff != "" {
		t.Errorf("Sluice-* headers at the application (-want +got):\n%s", diff)
	}
	stored, err := os.ReadFile(filepath.Join(s3.Dir, "uploads", "raw-1"))
	if err != nil || string(stored) != "raw body" {
		t.Fatalf("object in the store: %q, %v", stored, err)
	}
}

// TestUploadFormFieldsLimit: MaxFormFieldsSize counts what a form holds
// in memory, part headers and field names included: a form of small
// values under large part headers is refused with 413, before anything
// reaches the store or the application.
func TestUploadFormFieldsLimit(t *testing.T) {
	leaktest.Check(t)
	var upstreamHit, storeHit atomic.Bool
	store := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { storeHit.Store(true) }))
	defer store.Close()
	h := &Upload{SigningKey: uploadKey, MaxFormFieldsSize: 1 << 10,
		Preauthorizer: PreauthorizerFunc(func(*ProxyRequest) (*upload.Plan, error) {
			return &upload.Plan{Objects: []upload.Object{{PutURL: store.URL + "/obj"}}}, nil
		})}
	proxy := uploadProxy(t, h, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { upstreamHit.Store(true) }))
	tests := []struct {
		name  string
		build func(mw *multipart.Writer)
	}{
		{"part headers", func(mw *multipart.Writer) {
			for i := range 8 {
				hdr := textproto.MIMEHeader{}
				hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name="f%d"`, i))
				hdr.Set("X-Pad", strings.Repeat("p", 8<<10))
				pw, _ := mw.CreatePart(hdr)
				io.WriteString(pw, "v")
			}
		}},
		{"field name", func(mw *multipart.Writer) { mw.WriteField(strings.Repeat("n", 2<<10), "v") }},
		{"file name", func(mw *multipart.Writer) {
			fw, _ := mw.CreateFormFile("f", strings.Repeat("n", 2<<10))
			io.WriteString(fw, "data")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			tt.build(mw)
			mw.Close()
			req := mustNewRequest(t, http.MethodPut, proxy+"/up/form", &body)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusRequestEntityTooLarge || upstreamHit.Load() || storeHit.Load() {
				t.Fatalf("status %d, application called %v, store called %v; want 413 and neither",
					res.StatusCode, upstreamHit.Load(), storeHit.Load())
			}
		})
	}
}
