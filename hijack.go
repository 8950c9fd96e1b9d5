package sluice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/internal/digest"
	"github.com/sluiceproxy/sluice/internal/formscan"
	"github.com/sluiceproxy/sluice/internal/hs256"
	"github.com/sluiceproxy/sluice/internal/objstore"
	"github.com/sluiceproxy/sluice/internal/spool"
	"github.com/sluiceproxy/sluice/upload"
)

// Defaults of Upload, used when the corresponding field is zero.
const (
	// DefaultUploadMaxSize bounds an uploaded object when neither the
	// Upload nor the pre-authorization says otherwise.
	DefaultUploadMaxSize = 1 << 30
	// DefaultUploadMemory is how much of an upload part is held in
	// memory before the rest goes to a temporary file.
	DefaultUploadMemory = 8 << 20
	// DefaultFormFieldsSize bounds what a multipart/form-data upload
	// holds in memory (see Upload.MaxFormFieldsSize).
	DefaultFormFieldsSize = 1 << 20
	// DefaultFormParts bounds the number of parts of a form.
	DefaultFormParts = 1000
	// DefaultUploadSignatureTTL is how long a signed upload description
	// is valid (its exp claim).
	DefaultUploadSignatureTTL = 5 * time.Minute
	// DefaultUploadCleanupTimeout bounds the requests that abort or delete
	// what a failed upload left in the store.
	DefaultUploadCleanupTimeout = 30 * time.Second
)

// Errors of Upload that callers may need to tell apart. Both reach the
// client as the status of the *Error that wraps them.
var (
	// ErrUploadTooLarge: the body is over the size limit, or needs more
	// parts or objects than were pre-authorized (413).
	ErrUploadTooLarge = errors.New("sluice: upload too large")
	// ErrObjectStore: the object store failed or refused a request (502).
	ErrObjectStore = errors.New("sluice: object store failed")
)

// Upload is an Interceptor that keeps request bodies away from a slow
// upstream, as GitLab Workhorse's direct upload does: it asks a
// Preauthorizer (usually the upstream application itself) where the body
// may go, streams it to object storage through the presigned URLs of the
// upload.Plan it got, and then forwards the request without the body but
// with a signed description of the stored objects (upload.Claims, in the
// upload.HeaderSignature header). The upstream's response goes back to
// the client as usual. The application side (the plan, the checks of the
// pre-authorization and of the description) is package upload, which
// does not import the proxy.
//
//	p.Handle("PUT /files/", &sluice.Upload{
//		Preauthorizer: sluice.PreauthorizeUpstream("/authorize", key),
//		SigningKey:    key,
//	})
//
// A raw body (PUT or POST of a file) becomes one object; its description
// travels in headers. A multipart/form-data body (RFC 7578) has each file
// part stored as one object, in the order of the plan's Objects, while
// its other fields are forwarded in a new form where each file part is
// replaced by fields describing it ("<field>.name", "<field>.size",
// "<field>.remote_id", "<field>.remote_url", "<field>.content_type",
// "<field>.md5", "<field>.sha1", "<field>.sha256", "<field>.sha512",
// "<field>.upload_duration"). Every field of that shape sent by the
// client is dropped, whether or not a file of that name was stored in the
// request (so such names cannot carry the application's own fields), and
// "Sluice-*" request headers are removed in every spelling (see
// upload.HeaderSignature); the signature header covers
// every description and is what the application should trust. The
// client's request trailers are not forwarded: its body is not either.
//
// Guarantees:
//   - memory per request is bounded (MemoryBuffer per part, plus
//     MaxFormFieldsSize for what a form keeps) whatever the body size;
//     the rest of a part waits in an unlinked temporary file;
//   - a body of known length that fits in one part goes in a single
//     streaming PUT; a body of unknown length (chunked, or a form's file)
//     goes as an S3 multipart upload, or, with only a PUT URL, is spooled
//     to a temporary file first;
//   - over the size limit, or needing more parts or objects than
//     presigned: 413, and nothing is left in the store;
//   - the store fails: 502, and nothing is left in the store;
//   - the client goes away: nothing is forwarded, nothing is left in the
//     store (the exchange is logged with 499);
//   - a multipart upload the plan created but the request did not
//     complete is always aborted.
//
// "Nothing is left" means: multipart uploads are aborted through their
// AbortURL, and objects already stored are deleted through their
// DeleteURL (a plan without DeleteURL accepts that an object stored before
// a later failure, e.g. the second file of a form, stays). Once the
// request was forwarded, the objects belong to the application: they are
// deleted only if the request certainly did not reach it (no connection
// could be made).
//
// A request other than POST, PUT or PATCH without a body is forwarded
// untouched (so a route may capture downloads too); an empty POST, PUT or
// PATCH stores an empty object.
type Upload struct {
	// Preauthorizer says where the body may go. Required.
	Preauthorizer Preauthorizer

	// SigningKey is the HMAC-SHA256 key of the description's signature
	// (checked by upload.Verify). Required; use at least 32 random bytes,
	// shared with the application.
	SigningKey []byte

	// MaxSize bounds each stored object. The plan's MaxSize, when set,
	// lowers it further for one request. If zero, DefaultUploadMaxSize.
	MaxSize int64

	// Hashes lists the digests computed while streaming ("md5", "sha1",
	// "sha256", "sha512") when the plan does not list its own. If nil,
	// none.
	Hashes []string

	// MemoryBuffer is how many bytes of a part (or of a body spooled
	// before a single PUT) are held in memory; the rest goes to a
	// temporary file in TempDir. If zero, DefaultUploadMemory; if
	// negative, none.
	MemoryBuffer int

	// TempDir is where spooled parts go. If empty, os.TempDir().
	TempDir string

	// MaxFormFieldsSize bounds what a form holds in memory (413 beyond):
	// its non-file fields (names, part headers and values), the fields
	// describing its stored files, and the header of the part being read.
	// If zero, DefaultFormFieldsSize.
	MaxFormFieldsSize int64

	// MaxFormParts bounds the number of parts of a form (413 beyond). If
	// zero, DefaultFormParts.
	MaxFormParts int

	// SignatureTTL is the validity of the signed description. If zero,
	// DefaultUploadSignatureTTL.
	SignatureTTL time.Duration

	// Transport carries the requests to the object store. If nil, the
	// Proxy's transport is used (same pool and timeouts).
	Transport http.RoundTripper
}

// Preauthorizer decides whether an upload may proceed and where its body
// goes. It runs before any byte of the body is read (so a client sending
// "Expect: 100-continue" is refused before it sends the body).
//
// To refuse, return a *Refusal (its response goes to the client as is) or
// an error with a status (*Error); any other error fails the request with
// StatusFor(err).
type Preauthorizer interface {
	Preauthorize(pr *ProxyRequest) (*upload.Plan, error)
}

// PreauthorizerFunc adapts a function to the Preauthorizer interface.
type PreauthorizerFunc func(pr *ProxyRequest) (*upload.Plan, error)

// Preauthorize calls f(pr).
func (f PreauthorizerFunc) Preauthorize(pr *ProxyRequest) (*upload.Plan, error) { return f(pr) }

// Refusal is the error a Preauthorizer returns to refuse an upload with a
// response of its own, typically the application's answer relayed.
type Refusal struct {
	Status int
	Header http.Header
	Body   []byte
}

// Error describes the refusal by its status.
func (r *Refusal) Error() string {
	return "sluice: upload refused with status " + strconv.Itoa(r.Status)
}

// descriptionKeys are the suffixes of the form fields describing a file,
// in the order they are written.
var descriptionKeys = []string{"name", "size", "remote_id", "remote_url", "content_type",
	"md5", "sha1", "sha256", "sha512", "upload_duration"}

// fileValues returns the values of f's description, in the order of
// descriptionKeys.
func fileValues(f *upload.File) []string {
	return []string{f.Name, strconv.FormatInt(f.Size, 10), f.RemoteID, f.RemoteURL, f.ContentType,
		f.MD5, f.SHA1, f.SHA256, f.SHA512, strconv.FormatFloat(f.Duration, 'f', 6, 64)}
}

// Intercept implements Interceptor.
func (h *Upload) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	uploadHeaders.strip(pr.Out.Header)
	if pr.Out.Body == nil || pr.Out.Body == http.NoBody {
		switch pr.In.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			pr.Out.Body = http.NoBody // an empty file
		default:
			return pr.Forward(w)
		}
	}
	if h.Preauthorizer == nil || len(h.SigningKey) == 0 {
		return &Error{Status: http.StatusInternalServerError, Err: errors.New("sluice: Upload needs a Preauthorizer and a SigningKey")}
	}
	plan, err := h.Preauthorizer.Preauthorize(pr)
	if err != nil {
		var ref *Refusal
		if errors.As(err, &ref) {
			writeRefusal(w, pr, ref)
			return nil
		}
		return fmt.Errorf("sluice: upload pre-authorization: %w", err)
	}
	u := &transfer{h: h, pr: pr, plan: plan}
	defer u.close()
	if err := u.check(); err != nil {
		return &Error{Status: http.StatusBadGateway, Err: fmt.Errorf("sluice: invalid upload plan: %w", err)}
	}
	if mt, params, _ := mime.ParseMediaType(pr.In.Header.Get("Content-Type")); mt == "multipart/form-data" && params["boundary"] != "" {
		err = u.form(params["boundary"])
	} else {
		err = u.raw()
	}
	if err != nil {
		return err
	}
	pr.Out.Trailer = nil // they came with a body that is not forwarded
	return u.forward(w)
}

// uploadHeaders are the request headers only an Upload may set (see
// upload.HeaderSignature), stripped in every spelling.
var uploadHeaders = newHeaderNames("Sluice-*")

func writeRefusal(w http.ResponseWriter, pr *ProxyRequest, ref *Refusal) {
	h := w.Header()
	copyHeader(h, ref.Header)
	removeHopByHop(h)
	delete(h, "Content-Length")
	mergeHeader(h, pr.respHeader)
	h.Set("Content-Length", strconv.Itoa(len(ref.Body)))
	status := ref.Status
	if status < 200 || status > 999 {
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	if pr.In.Method != http.MethodHead && bodyAllowed(status) {
		_, _ = w.Write(ref.Body)
	}
}

// transfer is the state of one request an Upload handles.
type transfer struct {
	h      *Upload
	pr     *ProxyRequest
	plan   *upload.Plan
	client objstore.Client
	limit  int64
	hashes []string
	bufs   []*spool.Buffer

	used      int    // objects of the plan used so far
	completed []bool // per object: multipart completed
	stored    []bool // per object: an object may exist in the store
	files     []upload.File
	handedOff bool // the application may have the objects: keep them
}

func (u *transfer) check() error {
	p := u.plan
	if p == nil || len(p.Objects) == 0 {
		return errors.New("no objects")
	}
	u.completed = make([]bool, len(p.Objects))
	u.stored = make([]bool, len(p.Objects))
	u.client.Transport = u.h.Transport
	if u.client.Transport == nil {
		u.client.Transport = u.pr.proxy.transport
	}
	u.limit = u.h.MaxSize
	if u.limit <= 0 {
		u.limit = DefaultUploadMaxSize
	}
	if p.MaxSize < 0 {
		return errors.New("negative max_size")
	}
	if p.MaxSize > 0 {
		u.limit = min(u.limit, p.MaxSize)
	}
	u.hashes = u.h.Hashes
	if p.Hashes != nil {
		u.hashes = p.Hashes
	}
	if _, err := digest.New(u.hashes); err != nil {
		return err
	}
	for i := range p.Objects {
		o := &p.Objects[i]
		if o.PutURL == "" && o.Multipart == nil {
			return fmt.Errorf("object %d: neither put_url nor multipart", i)
		}
		urls := []string{o.PutURL, o.DeleteURL}
		if m := o.Multipart; m != nil {
			if err := (&objstore.Multipart{PartSize: m.PartSize, PartURLs: m.PartURLs, CompleteURL: m.CompleteURL, AbortURL: m.AbortURL}).Check(); err != nil {
				return fmt.Errorf("object %d: %w", i, err)
			}
			urls = append(urls, m.CompleteURL, m.AbortURL)
			urls = append(urls, m.PartURLs...)
		}
		for _, s := range urls {
			if s == "" {
				continue
			}
			if err := checkStoreURL(s); err != nil {
				return fmt.Errorf("object %d: %w", i, err)
			}
		}
	}
	return nil
}

func checkStoreURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("store URL %q is not an absolute http(s) URL", objstore.ObjectURL(s))
	}
	return nil
}

// raw stores a raw request body as the plan's first object.
func (u *transfer) raw() error {
	in := u.pr.In
	name := path.Base(in.URL.Path)
	if _, params, err := mime.ParseMediaType(in.Header.Get("Content-Disposition")); err == nil && params["filename"] != "" {
		name = path.Base(params["filename"])
	}
	src := &sourceReader{r: u.pr.Out.Body}
	f, err := u.store(0, src, src, in.ContentLength, name, in.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	u.used = 1
	u.files = append(u.files, f)
	out := u.pr.Out
	out.Body, out.ContentLength = nil, 0
	for _, k := range []string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Md5", "Content-Disposition", "Expect"} {
		delete(out.Header, k)
	}
	setUploadHeaders(out.Header, &f)
	return nil
}

// form stores each file part of a multipart/form-data body and rewrites
// the form without them.
func (u *transfer) form(boundary string) error {
	maxFields := u.h.MaxFormFieldsSize
	if maxFields <= 0 {
		maxFields = DefaultFormFieldsSize
	}
	maxParts := u.h.MaxFormParts
	if maxParts <= 0 {
		maxParts = DefaultFormParts
	}
	src := &sourceReader{r: u.pr.Out.Body}
	fields, err := formscan.Scan(src, boundary, formscan.Limits{FieldBytes: maxFields, Parts: maxParts},
		func(ff *formscan.File) ([]formscan.Field, error) {
			if u.used >= len(u.plan.Objects) {
				return nil, &Error{Status: http.StatusRequestEntityTooLarge,
					Err: fmt.Errorf("%w: more files in the form than the %d pre-authorized objects", ErrUploadTooLarge, len(u.plan.Objects))}
			}
			i := u.used
			u.used++
			f, err := u.store(i, &sourceReader{r: ff.Body}, src, -1, path.Base(ff.FileName), ff.ContentType)
			if err != nil {
				return nil, err
			}
			f.Field = ff.Field
			u.files = append(u.files, f)
			vals := fileValues(&f)
			gen := make([]formscan.Field, 0, len(vals))
			for k, v := range vals {
				if v == "" {
					continue
				}
				gen = append(gen, formscan.Field{Name: ff.Field + "." + descriptionKeys[k], Value: []byte(v), Generated: true})
			}
			return gen, nil
		})
	switch {
	case err == nil:
	case src.err != nil || u.pr.In.Context().Err() != nil:
		return clientGone(src.err, err)
	case errors.Is(err, formscan.ErrFieldsTooLarge), errors.Is(err, formscan.ErrTooManyParts):
		return &Error{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("%w: %w", ErrUploadTooLarge, err)}
	case errors.Is(err, formscan.ErrMalformed):
		return &Error{Status: http.StatusBadRequest, Err: err}
	default:
		return err
	}
	// Drop client fields that look like a description of a file, stored
	// in this request or not.
	kept := fields[:0]
	for _, f := range fields {
		if !f.Generated && isDescriptionName(f.Name) {
			continue
		}
		kept = append(kept, f)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := formscan.Write(mw, kept); err != nil {
		return err
	}
	out := u.pr.Out
	out.Body = io.NopCloser(bytes.NewReader(body.Bytes()))
	out.ContentLength = int64(body.Len())
	out.Header.Set("Content-Length", strconv.Itoa(body.Len()))
	out.Header.Set("Content-Type", mw.FormDataContentType())
	delete(out.Header, "Expect")
	return nil
}

// setUploadHeaders sets the informational headers describing a raw-body
// upload (see upload.HeaderPrefix).
func setUploadHeaders(h http.Header, f *upload.File) {
	vals := fileValues(f)
	for i, name := range [...]string{"Name", "Size", "Remote-Id", "Remote-Url", "Content-Type",
		"Md5", "Sha1", "Sha256", "Sha512", "Duration"} {
		if vals[i] != "" {
			h[upload.HeaderPrefix+name] = []string{vals[i]}
		}
	}
}

// isDescriptionName reports whether a form field name has the shape of a
// field describing a stored file: "<anything>.<suffix>" for a suffix of
// descriptionKeys, in any case.
func isDescriptionName(name string) bool {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return false
	}
	return slices.ContainsFunc(descriptionKeys, func(k string) bool { return strings.EqualFold(name[i+1:], k) })
}

// store uploads one object from src, of size bytes (-1: unknown), to the
// plan's object i. client is the reader of the whole request body (src
// itself for a raw body, the form for a file part): its read errors mean
// the client is gone.
func (u *transfer) store(i int, src, client *sourceReader, size int64, name, contentType string) (upload.File, error) {
	start := time.Now()
	// Store requests are not canceled when the client goes away: a read
	// error stops the upload, and the cleanup must find no request of
	// ours still in flight. The transport's timeouts bound them.
	ctx := context.WithoutCancel(u.pr.Context())
	obj := &u.plan.Objects[i]
	f := upload.File{Name: name, ContentType: contentType, RemoteID: obj.ID, RemoteURL: obj.URL}
	if size > u.limit {
		return f, &Error{Status: http.StatusRequestEntityTooLarge,
			Err: fmt.Errorf("%w: declared length %d over the limit of %d bytes", ErrUploadTooLarge, size, u.limit)}
	}
	src.limit = u.limit
	d, _ := digest.New(u.hashes) // checked in check
	r := io.TeeReader(src, d)
	mp := obj.Multipart
	var err error
	switch {
	case size >= 0 && obj.PutURL != "" && (mp == nil || size <= mp.PartSize):
		u.stored[i] = true
		_, err = u.client.Put(ctx, "put", obj.PutURL, r, size)
		if f.RemoteURL == "" {
			f.RemoteURL = objstore.ObjectURL(obj.PutURL)
		}
	case mp != nil:
		m := &objstore.Multipart{PartSize: mp.PartSize, PartURLs: mp.PartURLs, CompleteURL: mp.CompleteURL, AbortURL: mp.AbortURL}
		if size > m.MaxSize() {
			return f, &Error{Status: http.StatusRequestEntityTooLarge,
				Err: fmt.Errorf("%w: declared length %d needs more than the %d presigned parts", ErrUploadTooLarge, size, len(mp.PartURLs))}
		}
		u.stored[i] = true
		_, err = m.Upload(ctx, &u.client, r, u.spools(mp.PartSize, 2))
		u.completed[i] = err == nil
		if f.RemoteURL == "" {
			f.RemoteURL = objstore.ObjectURL(mp.CompleteURL)
		}
	default: // unknown length and a PUT URL only: spool the whole body
		buf := u.spools(u.limit, 1)[0]
		if _, err = buf.ReadFrom(r); err == nil {
			u.stored[i] = true
			_, err = u.client.Put(ctx, "put", obj.PutURL, buf.Reader(), buf.Len())
		} else {
			err = &objstore.ReadError{Err: err}
		}
		if f.RemoteURL == "" {
			f.RemoteURL = objstore.ObjectURL(obj.PutURL)
		}
	}
	if err != nil {
		return f, u.storeError(err, src, client)
	}
	f.Size = src.n
	f.Duration = time.Since(start).Seconds()
	sums := d.Sums()
	f.MD5, f.SHA1, f.SHA256, f.SHA512 = sums["md5"], sums["sha1"], sums["sha256"], sums["sha512"]
	return f, nil
}

// storeError classifies a failed store: body over the limit (413), client
// gone (499), or the store's fault (502).
func (u *transfer) storeError(err error, src, client *sourceReader) error {
	switch {
	case src.tooLarge:
		return &Error{Status: http.StatusRequestEntityTooLarge,
			Err: fmt.Errorf("%w: body over the limit of %d bytes", ErrUploadTooLarge, u.limit)}
	case errors.Is(err, objstore.ErrTooManyParts):
		return &Error{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("%w: %w", ErrUploadTooLarge, err)}
	case client.err != nil || u.pr.In.Context().Err() != nil:
		return clientGone(client.err, err)
	case src.err != nil: // a form part ended badly while the body was fine
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("%w: %w", formscan.ErrMalformed, src.err)}
	}
	return &Error{Status: http.StatusBadGateway, Err: fmt.Errorf("%w: %w", ErrObjectStore, err)}
}

func clientGone(readErr, err error) error {
	if readErr != nil {
		return fmt.Errorf("%w: reading upload: %w", errClientGone, readErr)
	}
	return fmt.Errorf("%w: %w", errClientGone, err)
}

// spools returns n part buffers, each holding at most size bytes (or
// MemoryBuffer) in memory. Buffers are made once per request and reused
// by its objects.
func (u *transfer) spools(size int64, n int) []*spool.Buffer {
	mem := u.h.MemoryBuffer
	switch {
	case mem == 0:
		mem = DefaultUploadMemory
	case mem < 0:
		mem = 0
	}
	for len(u.bufs) < n {
		u.bufs = append(u.bufs, spool.New(int(min(int64(mem), size)), u.h.TempDir))
	}
	return u.bufs[:n]
}

// forward sends the rewritten request upstream with its signature, and
// relays the response.
func (u *transfer) forward(w http.ResponseWriter) error {
	pr := u.pr
	now := time.Now()
	ttl := u.h.SignatureTTL
	if ttl <= 0 {
		ttl = DefaultUploadSignatureTTL
	}
	tok, err := hs256.Sign(u.h.SigningKey, upload.Claims{
		Issuer: upload.Issuer, IssuedAt: now.Unix(), ExpiresAt: now.Add(ttl).Unix(),
		Method: pr.In.Method, Path: pr.In.URL.Path, Files: u.files,
	})
	if err != nil {
		return err
	}
	pr.Out.Header.Set(upload.HeaderSignature, tok)
	res, err := pr.RoundTrip()
	if err != nil {
		// Keep the objects unless the application certainly never saw
		// the request.
		u.handedOff = !isConnectError(err) && !errors.Is(err, ErrNoRoute) &&
			!errors.Is(err, ErrNoUpstream) && !errors.Is(err, errBadTarget)
		return err
	}
	u.handedOff = true
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		return fmt.Errorf("%w: 101 Switching Protocols to an upload", errBadResponse)
	}
	if pr.ModifyResponse != nil {
		if err := pr.ModifyResponse(res); err != nil {
			return err
		}
	}
	return pr.WriteResponse(w, res)
}

// close releases the spool and, unless the objects were handed to the
// application, removes what the request left in the store. Multipart
// uploads not completed are aborted in every case.
func (u *transfer) close() {
	for _, b := range u.bufs {
		_ = b.Close()
	}
	if u.plan == nil || u.completed == nil {
		return
	}
	timeout := DefaultUploadCleanupTimeout
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.pr.Context()), timeout)
	defer cancel()
	log := u.pr.logger()
	for i := range u.plan.Objects {
		o := &u.plan.Objects[i]
		if o.Multipart != nil && o.Multipart.AbortURL != "" && !u.completed[i] {
			if err := u.client.Delete(ctx, "abort", o.Multipart.AbortURL); err != nil {
				log.Warn("sluice: aborting multipart upload failed: parts may remain in the store",
					"object", o.ID, "err", err)
			}
		}
		if !u.stored[i] || u.handedOff {
			continue
		}
		if o.DeleteURL == "" {
			if u.completed[i] || o.Multipart == nil {
				log.Warn("sluice: upload failed after an object was stored and the plan has no delete_url: it stays",
					"object", o.ID)
			}
			continue
		}
		if err := u.client.Delete(ctx, "delete", o.DeleteURL); err != nil {
			log.Warn("sluice: deleting a stored object of a failed upload failed", "object", o.ID, "err", err)
		}
	}
}

// sourceReader reads the client's body for an upload: it counts bytes,
// refuses more than limit (if positive) and remembers read errors, so that
// a failure can be blamed on the client or the store.
type sourceReader struct {
	r        io.Reader
	n        int64
	limit    int64
	tooLarge bool
	err      error
}

var errSourceTooLarge = errors.New("sluice: upload over the size limit")

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.tooLarge {
		return 0, errSourceTooLarge
	}
	if s.limit > 0 && int64(len(p)) > s.limit-s.n+1 {
		p = p[:s.limit-s.n+1]
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if s.limit > 0 && s.n > s.limit {
		s.tooLarge = true
		return n, errSourceTooLarge
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// PreauthorizeUpstream returns a Preauthorizer that asks the upstream,
// as GitLab Workhorse does: it sends the request's method, headers and
// URL with suffix appended to the path (e.g. "/authorize"), without the
// body, through the Proxy's engine (same Director, pool and timeouts).
// The request carries upload.HeaderLength when the length is known, and
// upload.HeaderPreauthorize, a token signed with key (usually the
// Upload's SigningKey) that the application checks with
// upload.VerifyPreauthorize; with an empty key it is not sent.
//
// A 200 answer must be an upload.Plan as JSON (at most 4 MiB). Any other
// answer refuses the upload and is relayed to the client (its body at
// most 64 KiB, else 502).
func PreauthorizeUpstream(suffix string, key []byte) Preauthorizer {
	return PreauthorizerFunc(func(pr *ProxyRequest) (*upload.Plan, error) {
		return preauthorizeUpstream(pr, suffix, key)
	})
}

const (
	maxPlanSize    = 4 << 20
	maxRefusalSize = 64 << 10
)

func preauthorizeUpstream(pr *ProxyRequest, suffix string, key []byte) (*upload.Plan, error) {
	req := pr.Out.Clone(pr.Context())
	req.Body, req.ContentLength, req.GetBody = nil, 0, nil
	req.URL.Path = strings.TrimSuffix(req.URL.Path, "/") + suffix
	if req.URL.RawPath != "" {
		req.URL.RawPath = strings.TrimSuffix(req.URL.RawPath, "/") + suffix
	}
	for _, k := range []string{"Content-Length", "Expect", "Content-Md5"} {
		delete(req.Header, k)
	}
	if pr.In.ContentLength >= 0 {
		req.Header.Set(upload.HeaderLength, strconv.FormatInt(pr.In.ContentLength, 10))
	}
	if len(key) > 0 {
		now := time.Now()
		tok, err := hs256.Sign(key, upload.Claims{Issuer: upload.Issuer, IssuedAt: now.Unix(),
			ExpiresAt: now.Add(time.Minute).Unix(), Method: pr.In.Method, Path: pr.In.URL.Path, Preauthorize: true})
		if err != nil {
			return nil, err
		}
		req.Header.Set(upload.HeaderPreauthorize, tok)
	}
	sub := &ProxyRequest{In: pr.In, Out: req, proxy: pr.proxy, route: pr.route, client: pr.client}
	res, err := sub.RoundTrip()
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, err := io.ReadAll(io.LimitReader(res.Body, maxRefusalSize+1))
		if err != nil {
			return nil, fmt.Errorf("reading refusal: %w", err)
		}
		if len(body) > maxRefusalSize {
			return nil, fmt.Errorf("%w: pre-authorization refusal over %d bytes", errBadResponse, maxRefusalSize)
		}
		return nil, &Refusal{Status: res.StatusCode, Header: res.Header, Body: body}
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxPlanSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading upload plan: %w", err)
	}
	if len(body) > maxPlanSize {
		return nil, fmt.Errorf("%w: upload plan over %d bytes", errBadResponse, maxPlanSize)
	}
	plan := new(upload.Plan)
	if err := json.Unmarshal(body, plan); err != nil {
		return nil, fmt.Errorf("%w: upload plan: %w", errBadResponse, err)
	}
	return plan, nil
}
