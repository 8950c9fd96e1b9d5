// Package objstore talks to an S3-compatible object store through
// presigned URLs only: a single PUT, a multipart upload (PUT of each part,
// POST of the CompleteMultipartUpload document, DELETE to abort) and a
// DELETE of an object. It holds no credentials and needs no SDK: whoever
// presigned the URLs decided what may be done.
//
// The wire formats are those of the Amazon S3 API reference
// (PutObject, UploadPart, CompleteMultipartUpload, AbortMultipartUpload,
// DeleteObject), which S3-compatible stores implement.
package objstore

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice/internal/spool"
)

// maxResponseBody bounds what is read of a store's response body (error
// documents, completion results).
const maxResponseBody = 1 << 20

// ErrTooManyParts is returned by Multipart.Upload when the stream needs
// more parts than there are presigned part URLs.
var ErrTooManyParts = errors.New("objstore: upload needs more parts than presigned")

// StatusError is an unexpected answer of the store: a status other than
// 2xx, or an S3 error document in a 200 response to
// CompleteMultipartUpload.
type StatusError struct {
	Op      string // "put", "upload part 3", "complete", "abort", "delete"
	Status  int
	Code    string // S3 error code, e.g. "NoSuchUpload", if the body had one
	Message string
}

// Error describes the object store's answer.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("objstore: %s: status %d", e.Op, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Client sends requests to presigned URLs.
type Client struct {
	// Transport carries the requests. If nil, http.DefaultTransport.
	Transport http.RoundTripper
}

func (c *Client) transport() http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// Put uploads size bytes from body to a presigned PUT URL (PutObject or
// UploadPart) and returns the ETag the store answered. The request has a
// Content-Length: S3 refuses chunked uploads to presigned URLs. If body
// yields fewer bytes than size, the request is cut and the store keeps
// nothing.
func (c *Client) Put(ctx context.Context, op, url string, body io.Reader, size int64) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, body)
	if err != nil {
		return "", fmt.Errorf("objstore: %s: %w", op, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	} else {
		req.Body = io.NopCloser(body) // the transport must not close the caller's reader
	}
	req.GetBody = nil
	res, err := c.transport().RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("objstore: %s: %w", op, err)
	}
	defer drain(res.Body)
	if res.StatusCode/100 != 2 {
		return "", statusError(op, res)
	}
	return res.Header.Get("ETag"), nil
}

// Delete sends a DELETE to a presigned URL (DeleteObject or
// AbortMultipartUpload). A 404 counts as success: the thing is gone.
func (c *Client) Delete(ctx context.Context, op, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return fmt.Errorf("objstore: %s: %w", op, err)
	}
	res, err := c.transport().RoundTrip(req)
	if err != nil {
		return fmt.Errorf("objstore: %s: %w", op, err)
	}
	defer drain(res.Body)
	if res.StatusCode/100 != 2 && res.StatusCode != http.StatusNotFound {
		return statusError(op, res)
	}
	return nil
}

// Part is one uploaded part of a multipart upload.
type Part struct {
	PartNumber int    `xml:"PartNumber"`
	ETag       string `xml:"ETag"`
}

type completeMultipartUpload struct {
	XMLName xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CompleteMultipartUpload"`
	Parts   []Part   `xml:"Part"`
}

// CompleteBody returns the CompleteMultipartUpload document for parts.
func CompleteBody(parts []Part) ([]byte, error) {
	b, err := xml.Marshal(completeMultipartUpload{Parts: parts})
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	return append([]byte(xml.Header), b...), nil
}

// Complete POSTs the CompleteMultipartUpload document to a presigned URL.
// S3 may answer 200 and still fail, with an Error document as the body
// (the status line is sent before the work is done); Complete reads the
// body to tell.
func (c *Client) Complete(ctx context.Context, url string, parts []Part) error {
	body, err := CompleteBody(parts)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("objstore: complete: %w", err)
	}
	req.Header.Set("Content-Type", "application/xml")
	res, err := c.transport().RoundTrip(req)
	if err != nil {
		return fmt.Errorf("objstore: complete: %w", err)
	}
	defer drain(res.Body)
	if res.StatusCode/100 != 2 {
		return statusError("complete", res)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("objstore: complete: reading result: %w", err)
	}
	return ParseCompleteResult(b)
}

// ParseCompleteResult checks the body of a 200 answer to
// CompleteMultipartUpload: a CompleteMultipartUploadResult document (or
// an empty body, which some stores send) is success; an Error document is
// a *StatusError; anything else is an error.
func ParseCompleteResult(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	root, doc, err := parseDocument(body)
	if err != nil {
		return fmt.Errorf("objstore: complete: malformed result: %w", err)
	}
	switch root {
	case "CompleteMultipartUploadResult":
		return nil
	case "Error":
		return &StatusError{Op: "complete", Status: http.StatusOK, Code: doc.Code, Message: doc.Message}
	}
	return fmt.Errorf("objstore: complete: unexpected result document <%s>", root)
}

type s3Document struct {
	XMLName xml.Name
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// parseDocument decodes an S3 XML answer, returning its root element's
// local name and the Code and Message children if any.
func parseDocument(body []byte) (string, s3Document, error) {
	var doc s3Document
	dec := xml.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return "", doc, err
	}
	return doc.XMLName.Local, doc, nil
}

func statusError(op string, res *http.Response) error {
	e := &StatusError{Op: op, Status: res.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if root, doc, err := parseDocument(b); err == nil && root == "Error" {
		e.Code, e.Message = doc.Code, doc.Message
	}
	return e
}

// drain reads a little of what is left of a response body so that the
// connection can be reused, then closes it.
func drain(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 64<<10)
	rc.Close()
}

// MaxPartSize is S3's limit on the size of one part (and of a single PUT).
const MaxPartSize = 5 << 30

// Multipart is a presigned S3 multipart upload.
type Multipart struct {
	PartSize    int64
	PartURLs    []string // part i+1 goes to PartURLs[i]
	CompleteURL string
	AbortURL    string
}

// Check reports what makes m unusable.
func (m *Multipart) Check() error {
	switch {
	case m.PartSize <= 0:
		return errors.New("objstore: multipart: part size must be positive")
	case m.PartSize > MaxPartSize:
		return errors.New("objstore: multipart: part size over 5 GiB")
	case len(m.PartURLs) == 0:
		return errors.New("objstore: multipart: no part URLs")
	case len(m.PartURLs) > 10000:
		return errors.New("objstore: multipart: more than 10000 parts")
	case m.CompleteURL == "":
		return errors.New("objstore: multipart: no complete URL")
	case m.AbortURL == "":
		return errors.New("objstore: multipart: no abort URL")
	}
	return nil
}

// MaxSize is the largest object the presigned parts can hold.
func (m *Multipart) MaxSize() int64 {
	return m.PartSize * int64(len(m.PartURLs))
}

// Upload reads r to its end, sends it part by part and completes the
// upload. It returns the number of bytes read from r. Each part is spooled
// in one of bufs, so that it goes with a Content-Length; with two buffers
// or more, the next part is read while the previous one is sent (at most
// one part in flight). It does not abort on failure: the caller decides
// (and must, to leave no open upload). An error from r is returned
// wrapped as a *ReadError.
//
// Upload returns only when no request of its own is in flight: after a
// failure it waits for the part being sent rather than cancel it, since a
// canceled part may still be stored by the server after an abort that
// followed, leaving the upload open (the S3 API reference warns of this
// for AbortMultipartUpload).
func (m *Multipart) Upload(ctx context.Context, c *Client, r io.Reader, bufs []*spool.Buffer) (int64, error) {
	type result struct {
		part Part
		err  error
	}
	results := make(chan result, 1)
	inflight := false
	wait := func() error {
		if !inflight {
			return nil
		}
		inflight = false
		res := <-results
		return res.err
	}
	var parts []Part
	collect := func() error {
		if !inflight {
			return nil
		}
		inflight = false
		res := <-results
		if res.err == nil {
			parts = append(parts, res.part)
		}
		return res.err
	}
	fail := func(err error) error {
		_ = wait()
		return err
	}
	var total int64
	for i := 0; ; i++ {
		buf := bufs[i%len(bufs)]
		if len(bufs) == 1 {
			if err := collect(); err != nil {
				return total, err
			}
		}
		if err := buf.Reset(); err != nil {
			return total, fail(err)
		}
		n, err := buf.ReadFrom(io.LimitReader(r, m.PartSize))
		total += n
		if err != nil {
			return total, fail(&ReadError{Err: err})
		}
		if n == 0 && i > 0 {
			break
		}
		if i >= len(m.PartURLs) {
			return total, fail(ErrTooManyParts)
		}
		if err := collect(); err != nil {
			return total, err
		}
		inflight = true
		go func(i int, body io.Reader, n int64) {
			op := "upload part " + strconv.Itoa(i+1)
			etag, err := c.Put(ctx, op, m.PartURLs[i], body, n)
			if err == nil && etag == "" {
				err = &StatusError{Op: op, Status: http.StatusOK, Message: "no ETag in the answer"}
			}
			results <- result{Part{PartNumber: i + 1, ETag: etag}, err}
		}(i, buf.Reader(), n)
		if n < m.PartSize {
			break
		}
	}
	if err := collect(); err != nil {
		return total, err
	}
	return total, c.Complete(ctx, m.CompleteURL, parts)
}

// ReadError is a failure to read the stream being uploaded, as opposed to
// a failure of the store.
type ReadError struct{ Err error }

// Error describes the failure to read the upload.
func (e *ReadError) Error() string { return "objstore: reading upload: " + e.Err.Error() }

// Unwrap returns the read error.
func (e *ReadError) Unwrap() error { return e.Err }

// ObjectURL returns a presigned URL without its query: the address of the
// object (or of the multipart upload's object) it names, safe to log and
// to hand to an application since the signature is gone.
func ObjectURL(presigned string) string {
	u, _, _ := strings.Cut(presigned, "?")
	return u
}
