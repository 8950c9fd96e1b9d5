package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluiceproxy/sluice/upload"
)

// storeConfig says how to reach the object store.
type storeConfig struct {
	Endpoint  string // http(s)://host:port
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
}

// newS3Client returns an SDK client for the store, path-style (as
// S3-compatible servers on a plain host:port need).
func newS3Client(c storeConfig, hc *http.Client) *s3.Client {
	return s3.New(s3.Options{
		HTTPClient:   hc,
		Region:       c.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, ""),
		BaseEndpoint: aws.String(c.Endpoint),
		UsePathStyle: true,
		// Presigned URLs must not require checksum headers the proxy
		// does not send.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// appConfig is the demo application's upload policy.
type appConfig struct {
	Store      storeConfig
	SigningKey []byte
	PartSize   int64 // multipart part size
	// SinglePutMax is the largest declared length sent as one PUT (S3
	// allows 5 GiB); longer or unknown lengths get a multipart upload.
	// If zero, PartSize.
	SinglePutMax int64
	MaxSize      int64         // per object
	FormFiles    int           // objects pre-authorized for a form upload
	Expires      time.Duration // presigned URL validity
	Hashes       []string
	// PartCredentials, if set, presign the part URLs with other
	// credentials (tests use wrong ones to make the store refuse).
	PartCredentials *aws.Credentials
	// MaxParts, if positive, caps the presigned parts below
	// MaxSize/PartSize (tests use it to run out of parts).
	MaxParts int
}

// app is the demo application behind the proxy, standing for the slow
// application GitLab Workhorse protects: it pre-authorizes uploads by
// presigning URLs with the S3 SDK, and records the objects the proxy
// describes to it, never seeing their bytes.
type app struct {
	cfg     appConfig
	hc      *http.Client // the SDK's and the app's own requests to the store
	s3      *s3.Client
	presign *s3.PresignClient
	signer  *v4.Signer
	log     *slog.Logger

	mu      sync.Mutex
	objects []recorded
	bodies  int64 // bytes of request bodies the app received on upload routes
	uploads int   // upload requests that reached the app

	// authorized, if not nil, gets a value after each pre-authorization
	// was answered (tests synchronize on it).
	authorized chan struct{}
}

// recorded is an object the application accepted.
type recorded struct {
	Key    string            `json:"key"`
	File   upload.File       `json:"file"`
	Fields map[string]string `json:"fields,omitempty"`
	At     time.Time         `json:"at"`
}

func newApp(cfg appConfig, log *slog.Logger) *app {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}
	c := newS3Client(cfg.Store, hc)
	return &app{cfg: cfg, hc: hc, s3: c, presign: s3.NewPresignClient(c, s3.WithPresignExpires(cfg.Expires)),
		signer: v4.NewSigner(), log: log}
}

// Routes of the demo application (and of the proxy, which sends the
// bodies of the upload ones to the store).
const (
	routeRawUpload  = "PUT /files/{name}"
	routeFormUpload = "POST /forms"
	routeDownload   = "GET /files/{name}"
)

// sendfileHeader is the response header in which the application names
// the presigned URL of a download; the proxy's sluice.Sendfile serves the
// object from the store in its place.
const sendfileHeader = "X-Accel-Redirect"

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc(routeRawUpload+"/authorize", a.authorize)
	mux.HandleFunc(routeFormUpload+"/authorize", a.authorize)
	mux.HandleFunc(routeRawUpload, a.accept)
	mux.HandleFunc(routeFormUpload, a.accept)
	mux.HandleFunc(routeDownload, a.download)
	mux.HandleFunc("GET /uploads", a.list)
	return mux
}

const indexPage = `<!doctype html>
<title>sluice direct upload</title>
<h1>sluice direct upload</h1>
<p>Uploads go through the proxy straight to object storage; this
application only sees a signed description of each object.</p>
<ul>
<li><code>curl -T bigfile http://PROXY/files/bigfile</code>: raw upload (single PUT if the length is known and small, S3 multipart otherwise)</li>
<li><code>curl -F title=hello -F file=@bigfile http://PROXY/forms</code>: form upload</li>
<li><code>curl -r 0-99 http://PROXY/files/bigfile</code>: download, served from the bucket by the proxy (ranges work)</li>
<li><a href="/uploads">/uploads</a>: what the application recorded</li>
</ul>
<form method=post action=/forms enctype=multipart/form-data>
<input name=title placeholder=title> <input type=file name=file> <button>upload</button>
</form>
`

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, indexPage)
}

// authorize answers the proxy's pre-authorization request with an
// upload plan: a presigned PUT when the length is known and fits in one
// part, else an S3 multipart upload with presigned part URLs.
func (a *app) authorize(w http.ResponseWriter, r *http.Request) {
	method, path, err := upload.VerifyPreauthorize(r, a.cfg.SigningKey)
	if err != nil {
		http.Error(w, "pre-authorization must come from the proxy", http.StatusForbidden)
		return
	}
	if r.PathValue("name") == "forbidden" {
		http.Error(w, "uploads named forbidden are not allowed", http.StatusForbidden)
		return
	}
	length := int64(-1)
	if v := r.Header.Get(upload.HeaderLength); v != "" {
		if length, err = strconv.ParseInt(v, 10, 64); err != nil {
			http.Error(w, "bad length", http.StatusBadRequest)
			return
		}
	}
	n := 1
	if r.Pattern == routeFormUpload+"/authorize" {
		n = a.cfg.FormFiles
		length = -1 // each file's length is unknown
	}
	plan := &upload.Plan{MaxSize: a.cfg.MaxSize, Hashes: a.cfg.Hashes}
	ctx := r.Context()
	for range n {
		obj, err := a.planObject(ctx, length)
		if err != nil {
			// Abort what was created for this plan already.
			for _, o := range plan.Objects {
				a.abandon(context.WithoutCancel(ctx), o)
			}
			a.log.Error("presigning", "err", err)
			http.Error(w, "cannot presign: "+err.Error(), http.StatusInternalServerError)
			return
		}
		plan.Objects = append(plan.Objects, obj)
	}
	a.log.Debug("pre-authorized", "method", method, "path", path, "objects", n, "length", length)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(plan)
	if a.authorized != nil {
		select {
		case a.authorized <- struct{}{}:
		default:
		}
	}
}

// planObject presigns one object of a plan.
func (a *app) planObject(ctx context.Context, length int64) (upload.Object, error) {
	key := "uploads/" + time.Now().UTC().Format("20060102") + "/" + randomID()
	bucket := a.cfg.Store.Bucket
	obj := upload.Object{ID: key}
	del, err := a.presign.PresignDeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return obj, err
	}
	obj.DeleteURL = del.URL
	single := a.cfg.SinglePutMax
	if single == 0 {
		single = a.cfg.PartSize
	}
	if length >= 0 && length <= single {
		put, err := a.presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key})
		if err != nil {
			return obj, err
		}
		obj.PutURL = put.URL
		return obj, nil
	}
	parts := int((a.cfg.MaxSize + a.cfg.PartSize - 1) / a.cfg.PartSize)
	parts = max(1, min(parts, 10000))
	if a.cfg.MaxParts > 0 {
		parts = min(parts, a.cfg.MaxParts)
	}
	created, err := a.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return obj, err
	}
	m := &upload.Multipart{PartSize: a.cfg.PartSize}
	obj.Multipart = m
	partPresign := a.presign
	if pc := a.cfg.PartCredentials; pc != nil {
		sc := a.cfg.Store
		sc.AccessKey, sc.SecretKey = pc.AccessKeyID, pc.SecretAccessKey
		partPresign = s3.NewPresignClient(newS3Client(sc, a.hc), s3.WithPresignExpires(a.cfg.Expires))
	}
	for i := range parts {
		pn := int32(i + 1)
		p, err := partPresign.PresignUploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key,
			UploadId: created.UploadId, PartNumber: &pn})
		if err != nil {
			return obj, err
		}
		m.PartURLs = append(m.PartURLs, p.URL)
	}
	// The SDK's presign client has no CompleteMultipartUpload nor
	// AbortMultipartUpload: presign them with its SigV4 signer.
	q := url.Values{"uploadId": {*created.UploadId}}
	if m.CompleteURL, err = a.presignRaw(ctx, http.MethodPost, key, q); err != nil {
		return obj, err
	}
	if m.AbortURL, err = a.presignRaw(ctx, http.MethodDelete, key, q); err != nil {
		return obj, err
	}
	return obj, nil
}

// presignRaw presigns a request on an object with the SDK's SigV4 signer
// (query authentication, unsigned payload).
func (a *app) presignRaw(ctx context.Context, method, key string, q url.Values) (string, error) {
	u, err := url.Parse(a.cfg.Store.Endpoint)
	if err != nil {
		return "", err
	}
	u = u.JoinPath(a.cfg.Store.Bucket, key)
	q.Set("X-Amz-Expires", strconv.Itoa(int(a.cfg.Expires.Seconds())))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return "", err
	}
	creds := aws.Credentials{AccessKeyID: a.cfg.Store.AccessKey, SecretAccessKey: a.cfg.Store.SecretKey}
	signed, _, err := a.signer.PresignHTTP(ctx, creds, req, "UNSIGNED-PAYLOAD", "s3", a.cfg.Store.Region, time.Now())
	return signed, err
}

// abandon aborts the multipart upload of an object of a plan that will
// not be used.
func (a *app) abandon(ctx context.Context, o upload.Object) {
	if o.Multipart == nil {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, o.Multipart.AbortURL, nil)
	if err != nil {
		return
	}
	if res, err := a.hc.Do(req); err == nil {
		res.Body.Close()
	}
}

// accept is the upload endpoint behind the proxy: it trusts only the
// signed description, and records the objects.
func (a *app) accept(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.uploads++
	a.mu.Unlock()
	claims, err := upload.Verify(r, a.cfg.SigningKey)
	if err != nil {
		http.Error(w, "unsigned upload: "+err.Error(), http.StatusForbidden)
		return
	}
	if claims.Method != r.Method || claims.Path != r.URL.Path {
		http.Error(w, "signature for another request", http.StatusForbidden)
		return
	}
	var fields map[string]string
	if r.Pattern == routeFormUpload {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fields = map[string]string{}
		for k, v := range r.MultipartForm.Value {
			fields[k] = v[0]
		}
	}
	n, _ := io.Copy(io.Discard, r.Body)
	var out []recorded
	a.mu.Lock()
	a.bodies += n
	for _, f := range claims.Files {
		key := f.RemoteID
		if r.Pattern == routeRawUpload {
			key = r.PathValue("name")
		}
		rec := recorded{Key: key, File: f, Fields: fields, At: time.Now()}
		a.objects = append(a.objects, rec)
		out = append(out, rec)
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(out)
}

// download answers with a presigned GET URL of the latest object
// recorded under the name; the proxy serves its bytes.
func (a *app) download(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var rec *recorded
	a.mu.Lock()
	for i := len(a.objects) - 1; i >= 0; i-- {
		if a.objects[i].Key == name {
			rec = &a.objects[i]
			break
		}
	}
	a.mu.Unlock()
	if rec == nil {
		http.NotFound(w, r)
		return
	}
	bucket, key := a.cfg.Store.Bucket, rec.File.RemoteID
	get, err := a.presign.PresignGetObject(r.Context(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set(sendfileHeader, get.URL)
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", rec.File.Name))
	w.WriteHeader(http.StatusOK)
}

func (a *app) list(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.objects)
}

func (a *app) snapshot() (objects []recorded, uploads int, bodies int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]recorded(nil), a.objects...), a.uploads, a.bodies
}

// ensureBucket creates the bucket if it does not exist.
func ensureBucket(ctx context.Context, c *s3.Client, bucket string) error {
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket}); err == nil {
		return nil
	}
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
	if err != nil {
		var owned interface{ ErrorCode() string }
		if errors.As(err, &owned) && (owned.ErrorCode() == "BucketAlreadyOwnedByYou") {
			return nil
		}
	}
	return err
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
