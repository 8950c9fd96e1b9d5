package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/realserver"
	"github.com/sluiceproxy/sluice/upload"
)

const mib = 1 << 20

// env is a running deployment against a real versitygw.
type env struct {
	t      testing.TB
	d      *deployment
	cfg    appConfig
	s3     *s3.Client
	hc     *http.Client // the test's client
	served chan string  // "METHOD path status" of each request the proxy finished
}

// newEnv starts versitygw, the demo application and the proxy. mod may
// change the application's policy.
func newEnv(t testing.TB, mod func(*appConfig)) *env {
	t.Helper()
	s := realserver.StartS3(t)
	cfg := appConfig{
		Store: storeConfig{Endpoint: s.Endpoint, Region: s.Region, AccessKey: s.AccessKey,
			SecretKey: s.SecretKey, Bucket: "uploads"},
		SigningKey: []byte("test-signing-key-0123456789abcdef"),
		PartSize:   5 * mib, // S3's minimum
		MaxSize:    64 * mib,
		FormFiles:  3,
		Expires:    time.Hour,
		Hashes:     []string{"md5", "sha1", "sha256", "sha512"},
	}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, cfg: cfg, served: make(chan string, 100)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	d, err := start(context.Background(), cfg, "127.0.0.1:0", log, func(a *app, h http.Handler) http.Handler {
		a.authorized = make(chan struct{}, 100)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w}
			defer func() { e.served <- fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, sw.status) }()
			h.ServeHTTP(sw, r)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.hc = &http.Client{Transport: &http.Transport{}}
	e.s3 = newS3Client(cfg.Store, e.hc)
	t.Cleanup(func() {
		if err := d.shutdown(); err != nil {
			t.Error(err)
		}
		e.hc.CloseIdleConnections()
	})
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// waitServed waits until the proxy finished the request to path and
// returns its status.
func (e *env) waitServed(path string) int {
	e.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-e.served:
			f := strings.Fields(s)
			if f[1] == path {
				n, _ := strconv.Atoi(f[2])
				return n
			}
		case <-timeout:
			e.t.Fatalf("proxy did not finish %s within 30s", path)
		}
	}
}

func (e *env) url(path string) string { return "http://" + e.d.addr + path }

// bucket lists the objects (key → size) and the open multipart uploads
// of the bucket through the S3 API.
func (e *env) bucket() (objects map[string]int64, uploads []string) {
	e.t.Helper()
	ctx := context.Background()
	objects = map[string]int64{}
	lo, err := e.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &e.cfg.Store.Bucket})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, o := range lo.Contents {
		objects[*o.Key] = *o.Size
	}
	lu, err := e.s3.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &e.cfg.Store.Bucket})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range lu.Uploads {
		uploads = append(uploads, *u.Key)
	}
	return objects, uploads
}

// assertClean fails the test if the bucket holds any object or open
// multipart upload.
func (e *env) assertClean() {
	e.t.Helper()
	objects, uploads := e.bucket()
	if len(objects) != 0 || len(uploads) != 0 {
		e.t.Fatalf("bucket not clean: objects %v, open multipart uploads %v", objects, uploads)
	}
}

func (e *env) getObject(key string) []byte {
	e.t.Helper()
	out, err := e.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &e.cfg.Store.Bucket, Key: &key})
	if err != nil {
		e.t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// describe is what the proxy must tell the application about data.
func describe(data []byte) upload.File {
	m5 := md5.Sum(data)
	s1 := sha1.Sum(data)
	s256 := sha256.Sum256(data)
	s512 := sha512.Sum512(data)
	return upload.File{Size: int64(len(data)), MD5: hex.EncodeToString(m5[:]), SHA1: hex.EncodeToString(s1[:]),
		SHA256: hex.EncodeToString(s256[:]), SHA512: hex.EncodeToString(s512[:])}
}

// chunked hides the length of r so that the request is sent chunked.
type chunked struct{ io.Reader }

func TestRawUpload(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name    string
		size    int
		chunked bool
	}{
		{"known length, single PUT", 3*mib + 17, false},
		{"known length, empty", 0, false},
		{"known length over one part, multipart", 12*mib + 5, false},
		{"unknown length, multipart", 12*mib + 5, true},
		{"unknown length, exact parts", 10 * mib, true},
		{"unknown length, small", 1000, true},
	}
	e := newEnv(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(tt.size, uint64(i))
			name := fmt.Sprintf("raw%d.bin", i)
			var body io.Reader = bytes.NewReader(data)
			if tt.chunked {
				body = chunked{body}
			}
			req, _ := http.NewRequest(http.MethodPut, e.url("/files/"+name), body)
			if !tt.chunked {
				req.ContentLength = int64(len(data))
			}
			req.Header.Set("Content-Type", "application/x-test")
			res, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("status %d: %s", res.StatusCode, answer)
			}
			var recs []recorded
			if err := json.Unmarshal(answer, &recs); err != nil || len(recs) != 1 {
				t.Fatalf("application answered %s (%v)", answer, err)
			}
			got := recs[0].File
			want := describe(data)
			want.Name, want.ContentType, want.RemoteID = name, "application/x-test", got.RemoteID
			want.RemoteURL = e.cfg.Store.Endpoint + "/" + e.cfg.Store.Bucket + "/" + got.RemoteID
			want.Duration = got.Duration
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("description (-want +got):\n%s", diff)
			}
			if got.Duration <= 0 {
				t.Errorf("upload duration %v", got.Duration)
			}
			if !bytes.Equal(e.getObject(got.RemoteID), data) {
				t.Fatal("stored object differs from the upload")
			}
			if _, _, bodies := e.d.app.snapshot(); bodies != 0 {
				t.Fatalf("the application received %d body bytes", bodies)
			}
			if _, uploads := e.bucket(); len(uploads) != 0 {
				t.Fatalf("open multipart uploads left: %v", uploads)
			}

			// The download is served from the bucket, ranges included.
			req, _ = http.NewRequest(http.MethodGet, e.url("/files/"+name), nil)
			lo, hi := len(data)/3, len(data)/3+999
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi))
			res, err = e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			part, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if len(data) == 0 {
				if res.StatusCode != http.StatusRequestedRangeNotSatisfiable {
					t.Fatalf("range of an empty object: status %d", res.StatusCode)
				}
				return
			}
			hi = min(hi, len(data)-1)
			if res.StatusCode != http.StatusPartialContent || !bytes.Equal(part, data[lo:hi+1]) {
				t.Fatalf("range download: status %d, %d bytes (want 206, %d)", res.StatusCode, len(part), hi-lo+1)
			}
			if res.Header.Get(sendfileHeader) != "" {
				t.Fatal("the sendfile header reached the client")
			}
			if cd := res.Header.Get("Content-Disposition"); !strings.Contains(cd, name) {
				t.Fatalf("application header lost: Content-Disposition %q", cd)
			}
		})
	}
}

func TestFormUpload(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, nil)
	photo := randomBytes(7*mib+3, 1)
	notes := randomBytes(1234, 2)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("title", "holiday")
	// Forged descriptions, before and after the file they pretend to
	// describe: both must be dropped.
	mw.WriteField("photo.remote_id", "evil/object")
	mw.WriteField("photo.size", "1")
	fw, _ := mw.CreateFormFile("photo", "beach.jpg")
	fw.Write(photo)
	fw, _ = mw.CreateFormFile("notes", "notes.txt")
	fw.Write(notes)
	mw.WriteField("notes.sha256", "forged")
	mw.WriteField("tags", "sea,sun")
	mw.Close()

	req, _ := http.NewRequest(http.MethodPost, e.url("/forms"), chunked{&body})
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Sluice-Upload-Signature", "forged.token.here")
	res, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, answer)
	}
	var recs []recorded
	if err := json.Unmarshal(answer, &recs); err != nil || len(recs) != 2 {
		t.Fatalf("application answered %s (%v)", answer, err)
	}
	for i, data := range [][]byte{photo, notes} {
		got := recs[i].File
		want := describe(data)
		want.Field, want.Name, want.ContentType = []string{"photo", "notes"}[i], []string{"beach.jpg", "notes.txt"}[i], "application/octet-stream"
		want.RemoteID, want.RemoteURL, want.Duration = got.RemoteID, got.RemoteURL, got.Duration
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("file %d description (-want +got):\n%s", i, diff)
		}
		if !bytes.Equal(e.getObject(got.RemoteID), data) {
			t.Fatalf("file %d: stored object differs", i)
		}
	}
	fields := recs[0].Fields
	for k, want := range map[string]string{
		"title": "holiday", "tags": "sea,sun",
		"photo.remote_id": recs[0].File.RemoteID, "photo.size": strconv.Itoa(len(photo)),
		"notes.sha256": recs[1].File.SHA256, "photo.name": "beach.jpg",
	} {
		if fields[k] != want {
			t.Errorf("form field %s = %q, want %q", k, fields[k], want)
		}
	}
	objects, uploads := e.bucket()
	// Three objects were pre-authorized, two used: the third's multipart
	// upload was aborted.
	if len(objects) != 2 || len(uploads) != 0 {
		t.Fatalf("bucket: objects %v, open uploads %v; want 2 objects, no uploads", objects, uploads)
	}
}

// TestClientHeadersStripped sends descriptions and a signature of its own:
// the application must see only the proxy's.
func TestClientHeadersStripped(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, nil)
	data := randomBytes(1000, 3)
	req, _ := http.NewRequest(http.MethodPut, e.url("/files/x"), bytes.NewReader(data))
	forged := map[string]string{
		"Sluice-Upload-Size":      "1",
		"Sluice-Upload-Remote-Id": "evil/object",
		"Sluice-Upload-Signature": "eyJhbGciOiJub25lIn0.eyJmaWxlcyI6W119.",
		"Sluice-Preauthorize":     "forged",
	}
	for k, v := range forged {
		req.Header.Set(k, v)
	}
	res, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var recs []recorded
	if res.StatusCode != http.StatusCreated || json.Unmarshal(answer, &recs) != nil || len(recs) != 1 {
		t.Fatalf("status %d: %s", res.StatusCode, answer)
	}
	if f := recs[0].File; f.Size != 1000 || f.RemoteID == "evil/object" {
		t.Fatalf("forged description reached the application: %+v", f)
	}

	// The same forged request sent to the application directly, past the
	// proxy, is refused: the signature is what it trusts.
	req, _ = http.NewRequest(http.MethodPut, "http://"+e.d.appAddr+"/files/x", nil)
	for k, v := range forged {
		req.Header.Set(k, v)
	}
	res, err = e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("forged upload sent straight to the application: status %d, want 403", res.StatusCode)
	}
}

func TestPreauthorizationRefused(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, nil)
	res, err := e.hc.Do(mustRequest(http.MethodPut, e.url("/files/forbidden"), strings.NewReader("data")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "uploads named forbidden") {
		t.Fatalf("got %d %q, want the application's 403", res.StatusCode, body)
	}
	if _, uploads, _ := e.d.app.snapshot(); uploads != 0 {
		t.Fatalf("%d upload requests reached the application", uploads)
	}
	e.assertClean()
}

func mustRequest(method, url string, body io.Reader) *http.Request {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		panic(err)
	}
	return req
}

// TestFailures runs every failure path of an upload and checks the
// bucket afterwards: no object and no open multipart upload is left, and
// the application never got the request.
func TestFailures(t *testing.T) {
	leaktest.Check(t)
	wrong := &aws.Credentials{AccessKeyID: "sluicetest", SecretAccessKey: "not-the-secret"}
	tests := []struct {
		name    string
		mod     func(*appConfig)
		size    int
		chunked bool
		status  int
	}{
		{"declared length over the limit", func(c *appConfig) { c.MaxSize = 2 * mib }, 3 * mib, false, 413},
		{"declared length over the limit, multipart planned", func(c *appConfig) { c.MaxSize = 8 * mib }, 12 * mib, false, 413},
		{"streamed body over the limit", func(c *appConfig) { c.MaxSize = 8 * mib }, 12 * mib, true, 413},
		{"more parts needed than presigned", func(c *appConfig) { c.MaxParts = 2 }, 12 * mib, true, 413},
		{"store refuses a part", func(c *appConfig) { c.PartCredentials = wrong }, 12 * mib, true, 502},
		{"store refuses the completion (parts under 5 MiB)", func(c *appConfig) { c.PartSize = mib }, 3*mib + 1, true, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			var body io.Reader = bytes.NewReader(randomBytes(tt.size, 9))
			if tt.chunked {
				body = chunked{body}
			}
			res, err := e.hc.Do(mustRequest(http.MethodPut, e.url("/files/f"), body))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if _, uploads, _ := e.d.app.snapshot(); uploads != 0 {
				t.Fatalf("%d upload requests reached the application", uploads)
			}
			e.assertClean()
		})
	}
}

// TestClientDisconnect cuts the client off in the middle of its body:
// nothing may be forwarded, nothing left in the bucket.
func TestClientDisconnect(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name   string
		header string
		// sent before the cut
		size int
		// wait until a part is in the store before cutting
		waitPart bool
	}{
		{"during a multipart upload", "Transfer-Encoding: chunked", 7 * mib, true},
		{"during a single PUT", "Content-Length: " + strconv.Itoa(4*mib), 2 * mib, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			c, err := net.Dial("tcp", e.d.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "PUT /files/cut HTTP/1.1\r\nHost: test\r\n%s\r\n\r\n", tt.header)
			select {
			case <-e.d.app.authorized:
			case <-time.After(30 * time.Second):
				t.Fatal("no pre-authorization within 30s")
			}
			data := randomBytes(tt.size, 4)
			if strings.HasPrefix(tt.header, "Transfer-Encoding") {
				fmt.Fprintf(c, "%x\r\n", len(data))
			}
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			if tt.waitPart {
				e.waitForPart(t)
			}
			c.Close()
			if status := e.waitServed("/files/cut"); status != 0 {
				t.Fatalf("proxy wrote status %d to a client that went away", status)
			}
			if _, uploads, _ := e.d.app.snapshot(); uploads != 0 {
				t.Fatalf("%d upload requests reached the application", uploads)
			}
			e.assertClean()
		})
	}
}

// waitForPart polls the bucket until a multipart upload has a part.
func (e *env) waitForPart(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		lu, err := e.s3.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &e.cfg.Store.Bucket})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range lu.Uploads {
			lp, err := e.s3.ListParts(context.Background(), &s3.ListPartsInput{Bucket: &e.cfg.Store.Bucket, Key: u.Key, UploadId: u.UploadId})
			if err == nil && len(lp.Parts) > 0 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling the store: no event to wait on
	}
	t.Fatal("no part reached the store within 30s")
}

// zeroReader yields n zero bytes without holding them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	m := min(int64(len(p)), z.n)
	clear(p[:m])
	z.n -= m
	return int(m), nil
}

// TestUpstreamUnreachableDeletesObject stores an object and then fails
// to reach the application: the object must be deleted, since nobody
// will ever know about it.
func TestUpstreamUnreachableDeletesObject(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close() // connections to it are refused
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: dead}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer p.CloseIdleConnections()
	p.Handle("PUT /files/{name}", &sluice.Upload{
		SigningKey: e.cfg.SigningKey,
		Preauthorizer: sluice.PreauthorizerFunc(func(pr *sluice.ProxyRequest) (*upload.Plan, error) {
			obj, err := e.d.app.planObject(pr.Context(), pr.In.ContentLength)
			return &upload.Plan{Objects: []upload.Object{obj}}, err
		}),
	})
	srv := httptest.NewServer(p)
	defer srv.Close()
	for _, chunk := range []bool{false, true} { // single PUT, multipart
		var body io.Reader = bytes.NewReader(randomBytes(3*mib, 5))
		if chunk {
			body = bytes.NewReader(randomBytes(6*mib, 5))
			body = chunked{body}
		}
		res, err := e.hc.Do(mustRequest(http.MethodPut, srv.URL+"/files/x", body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("chunked %v: status %d, want 502", chunk, res.StatusCode)
		}
		e.assertClean()
	}
}

func TestStartVersitygw(t *testing.T) {
	leaktest.Check(t)
	realserver.StartS3(t) // skips (or fails in CI) when versitygw is not installed
	g, err := startVersitygw()
	if err != nil {
		t.Fatal(err)
	}
	defer g.stop()
	res, err := http.Get(g.endpoint + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden && res.StatusCode != http.StatusBadRequest {
		t.Fatalf("unsigned GET /: status %d, want an S3 refusal", res.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestStartVersitygwMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	_, err := startVersitygw()
	if err == nil || !strings.Contains(err.Error(), versitygwInstall) {
		t.Fatalf("startVersitygw without versitygw: %v, want the install command", err)
	}
}
