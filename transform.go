package sluice

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Default limits of the buffering helpers, used when a limit is zero.
const (
	// DefaultMaxRequestBody bounds a request body buffered by
	// BufferBody and RewriteJSON.
	DefaultMaxRequestBody = 1 << 20
	// DefaultMaxResponseBody bounds a response body buffered by
	// ResponseTransform, as received and again once decoded.
	DefaultMaxResponseBody = 8 << 20
)

// ErrBodyTooLarge is wrapped by the errors of the buffering helpers when a
// body is over their limit. The request helpers return it inside an *Error
// with status 413, ResponseTransform inside one with status 502.
var ErrBodyTooLarge = errors.New("sluice: body over the limit")

// Local returns an Interceptor that answers captured requests with h,
// without contacting any upstream: status pages, health checks,
// short-circuit denials. h gets the request as it would have gone
// upstream (as Proxy.Fallback does: canonical target, identity and
// forged forwarding headers removed, what the Authorizers set kept);
// headers added to ProxyRequest.ResponseHeader (by an Authorizer, say)
// are in its response.
func Local(h http.Handler) Interceptor {
	return InterceptorFunc(func(w http.ResponseWriter, pr *ProxyRequest) error {
		mergeHeader(w.Header(), pr.respHeader)
		h.ServeHTTP(w, pr.localRequest())
		return nil
	})
}

// OnResponse returns an Interceptor that forwards the request and
// passes the upstream's response to fn before it is written: fn may change
// the status and headers (hop-by-hop fields are still removed after it).
// The body keeps streaming untouched unless fn replaces it. An error from
// fn fails the exchange with StatusFor(err). It is the equivalent of
// httputil.ReverseProxy.ModifyResponse for one route.
func OnResponse(fn func(res *http.Response) error) Interceptor {
	return InterceptorFunc(func(w http.ResponseWriter, pr *ProxyRequest) error {
		pr.addModifyResponse(fn)
		return pr.Forward(w)
	})
}

// addModifyResponse chains fn after the ModifyResponse already set.
func (pr *ProxyRequest) addModifyResponse(fn func(*http.Response) error) {
	prev := pr.ModifyResponse
	if prev == nil {
		pr.ModifyResponse = fn
		return
	}
	pr.ModifyResponse = func(res *http.Response) error {
		if err := prev(res); err != nil {
			return err
		}
		return fn(res)
	}
}

// BufferBody reads the outbound request body into memory, up to
// limit bytes (DefaultMaxRequestBody if limit is zero or less), so that
// an Interceptor can inspect it or rewrite it with SetBody. Out
// keeps a body with the same bytes and framing, so forwarding after
// BufferBody sends the request unchanged. A request without body
// gives nil.
//
// If the body is over the limit, BufferBody returns an *Error with
// status 413 wrapping ErrBodyTooLarge, and Out still carries the whole
// body (what was read, then the unread rest): the caller may fail the
// request with the error or forward it untouched.
func (pr *ProxyRequest) BufferBody(limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxRequestBody
	}
	body := pr.Out.Body
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	if pr.Out.ContentLength > limit {
		return nil, requestTooLarge(limit)
	}
	buf, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		status := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			status = http.StatusRequestEntityTooLarge
		}
		return nil, &Error{Status: status, Err: fmt.Errorf("sluice: reading request body: %w", err)}
	}
	if int64(len(buf)) > limit {
		pr.Out.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), body), body}
		return nil, requestTooLarge(limit)
	}
	pr.Out.Body = io.NopCloser(bytes.NewReader(buf))
	return buf, nil
}

func requestTooLarge(limit int64) error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Err: fmt.Errorf("%w: request body over %d bytes", ErrBodyTooLarge, limit)}
}

// SetBody replaces the outbound request body with b and fixes the
// framing: Content-Length is len(b) and Transfer-Encoding is gone (the
// stale Content-Length of httputil, golang/go#81149 and earlier, cannot
// happen). b is sent as is: the caller keeps Content-Type and
// Content-Encoding right.
func (pr *ProxyRequest) SetBody(b []byte) {
	pr.Out.ContentLength = int64(len(b))
	pr.Out.TransferEncoding = nil
	pr.Out.Header.Del("Content-Length")
	pr.Out.Header.Del("Transfer-Encoding")
	if len(b) == 0 {
		pr.Out.Body = http.NoBody
		pr.Out.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return
	}
	pr.Out.Body = io.NopCloser(bytes.NewReader(b))
	pr.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// RewriteJSON decodes the outbound request body (at most limit bytes, see
// BufferBody) as JSON into a T, passes it to fn and replaces the
// body with fn's result encoded as JSON. An empty body gives fn the zero
// T; Content-Type is set to application/json if the request had none.
// Decoding into map[string]json.RawMessage keeps every member fn does
// not touch byte for byte (the order of members may change).
//
// On any error Out's body is left as it was (complete and unchanged), so
// the caller chooses between failing and forwarding untouched. The errors
// are *Error values: 413 (ErrBodyTooLarge) for a body over the limit, 415
// for a body with a Content-Encoding, 400 for a body that is not one JSON
// value; an error from fn is returned as is.
func RewriteJSON[T any](pr *ProxyRequest, limit int64, fn func(v *T) error) error {
	if ce := pr.Out.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return &Error{Status: http.StatusUnsupportedMediaType,
			Err: fmt.Errorf("sluice: cannot rewrite a JSON body with Content-Encoding %q", ce)}
	}
	b, err := pr.BufferBody(limit)
	if err != nil {
		return err
	}
	var v T
	if len(bytes.TrimSpace(b)) > 0 {
		if err := decodeJSON(b, &v); err != nil {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("sluice: request body is not valid JSON: %w", err)}
		}
	}
	if err := fn(&v); err != nil {
		return err
	}
	nb, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("sluice: encoding rewritten JSON body: %w", err)
	}
	pr.SetBody(nb)
	if pr.Out.Header.Get("Content-Type") == "" {
		pr.Out.Header.Set("Content-Type", "application/json")
	}
	return nil
}

// decodeJSON decodes exactly one JSON value from b, numbers kept as
// json.Number where the target is an interface.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// ResponseTransform rewrites whole response bodies in memory: it reads
// the upstream's body (within MaxBody), decodes gzip or deflate, passes
// it to Func and sends Func's result with the headers made consistent.
// Use it as an Interceptor, or call its ModifyResponse from one that
// rewrites the request first.
//
// Only responses that carry a complete representation are transformed:
// 2xx other than 204, 205 and 206, to requests other than HEAD. Every
// other response (errors, redirects, 304) is relayed as is, except that
// its strong ETag is weakened (and a HEAD response loses Content-Length)
// so that it agrees with the transformed GET. Intercept asks the upstream
// for a whole representation in a coding the proxy can decode: it removes
// Range and If-Range and limits Accept-Encoding to the client's
// preferences among gzip and deflate (identity if none is left).
//
// When Func changes the body, the response gets:
//   - Content-Length set to the new size (chunked framing dropped);
//   - Content-Encoding: the original coding when Reencode is set,
//     otherwise none (the body is sent identity, which every client
//     accepts);
//   - a strong ETag weakened (W/"..."), since the bytes differ but a
//     revalidation with the upstream still means the same content (as
//     nginx does when it compresses); Func may delete it instead;
//   - Content-MD5, Digest, Content-Digest, Repr-Digest and Accept-Ranges
//     removed, as they described the upstream's bytes.
//
// When Func returns the body unchanged, the upstream's bytes and headers
// are sent untouched (still compressed if they were).
//
// A body over MaxBody fails the exchange with 502 and a log line naming
// the limit; memory is at most about four times MaxBody per request
// (the body as received, decoded, the copy Func gets, Func's result).
type ResponseTransform struct {
	// Func returns the new body. res has the upstream's status and
	// headers (Func may edit them); body is a copy of the decoded body that
	// Func owns: it may modify it in place and return it. An error fails the exchange
	// with StatusFor(err), 502 unless it is an *Error.
	Func func(res *http.Response, body []byte) ([]byte, error)

	// MaxBody bounds the body as received and once decoded. If zero,
	// DefaultMaxResponseBody.
	MaxBody int64

	// Reencode compresses a changed body again with the coding the
	// upstream used. If false, a changed body is sent identity.
	Reencode bool
}

// Intercept forwards the request and transforms the response; see
// ResponseTransform.
func (t *ResponseTransform) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	prepareTransform(pr.Out.Header)
	pr.addModifyResponse(t.ModifyResponse)
	return pr.Forward(w)
}

// ModifyResponse transforms res in place, replacing its body. It has the
// signature of ProxyRequest.ModifyResponse.
func (t *ResponseTransform) ModifyResponse(res *http.Response) error {
	head := res.Request != nil && res.Request.Method == http.MethodHead
	if head || res.StatusCode < 200 || res.StatusCode > 299 ||
		res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusResetContent ||
		res.StatusCode == http.StatusPartialContent {
		if head || res.StatusCode == http.StatusNotModified {
			weakenETag(res.Header)
		}
		if head {
			res.Header.Del("Content-Length")
		}
		return nil
	}
	limit := t.MaxBody
	if limit <= 0 {
		limit = DefaultMaxResponseBody
	}
	if res.ContentLength > limit {
		return responseTooLarge(limit)
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return fmt.Errorf("sluice: reading upstream body: %w", err)
	}
	if int64(len(raw)) > limit {
		return responseTooLarge(limit)
	}
	orig := res.Body
	enc := contentCoding(res.Header)
	decoded := raw
	if enc != "" {
		dr, err := decoder(enc, bytes.NewReader(raw))
		if err != nil {
			return err
		}
		decoded, err = io.ReadAll(io.LimitReader(dr, limit+1))
		if err != nil {
			return fmt.Errorf("sluice: decoding %s upstream body: %w", enc, err)
		}
		if int64(len(decoded)) > limit {
			return responseTooLarge(limit)
		}
	}
	out, err := t.Func(res, bytes.Clone(decoded)) // decoded stays pristine
	if err != nil {
		return err
	}
	if bytes.Equal(out, decoded) {
		res.Body = readCloser{bytes.NewReader(raw), orig}
		return nil
	}
	if enc != "" {
		if t.Reencode {
			if out, err = encode(enc, out); err != nil {
				return err
			}
		} else {
			res.Header.Del("Content-Encoding")
		}
	}
	fixRepresentation(res.Header)
	res.Header.Set("Content-Length", strconv.Itoa(len(out)))
	res.ContentLength = int64(len(out))
	res.TransferEncoding = nil
	res.Uncompressed = false
	res.Body = readCloser{bytes.NewReader(out), orig}
	return nil
}

func responseTooLarge(limit int64) error {
	return &Error{Status: http.StatusBadGateway,
		Err: fmt.Errorf("%w: upstream response body over the %d-byte transform limit", ErrBodyTooLarge, limit)}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// limitAcceptEncoding rewrites the Accept-Encoding of an outbound request
// so that the upstream can only choose a content coding the proxy decodes
// for a transform: the client's own preferences restricted to gzip and
// deflate (with their weights), or "identity" if none is left. Upstream
// compression is kept when the client accepts it, and an upstream that
// honors Accept-Encoding never sends br or zstd that a transform could
// not read (RFC 9110 §12.5.3).
func limitAcceptEncoding(h http.Header) {
	var keep []string
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(q), 64); err != nil || f <= 0 {
					continue
				}
			}
			switch coding {
			case "gzip", "x-gzip", "deflate":
				keep = append(keep, strings.TrimSpace(part))
			case "*":
				keep = append(keep, "gzip")
			}
		}
	}
	if len(keep) == 0 {
		h.Set("Accept-Encoding", "identity")
		return
	}
	h.Set("Accept-Encoding", strings.Join(keep, ", "))
}

// prepareTransform asks the upstream for a whole representation in a
// coding the proxy can decode.
func prepareTransform(h http.Header) {
	limitAcceptEncoding(h)
	h.Del("Range")
	h.Del("If-Range")
}

// contentCoding returns the response's content coding in lower case, ""
// for identity.
func contentCoding(h http.Header) string {
	enc := strings.ToLower(strings.TrimSpace(strings.Join(h.Values("Content-Encoding"), ",")))
	if enc == "identity" {
		return ""
	}
	return enc
}

// decodeBody returns res's body decoded from its content coding and
// removes Content-Encoding. Only gzip and deflate are known; anything
// else (br, zstd, stacked codings) is an error, so a filter never passes
// through bytes it could not read.
func decodeBody(res *http.Response) (io.Reader, error) {
	enc := contentCoding(res.Header)
	if enc == "" {
		return res.Body, nil
	}
	r, err := decoder(enc, res.Body)
	if err != nil {
		return nil, err
	}
	res.Header.Del("Content-Encoding")
	return r, nil
}

// errUnknownCoding is returned for a content coding the proxy cannot
// decode; it maps to 502.
var errUnknownCoding = errors.New("sluice: cannot decode content coding to transform the body")

// decoder returns a reader of r decoded from enc. "deflate" is the zlib
// format (RFC 9110 §8.4.1.2); raw deflate, which some servers send, is
// accepted too.
func decoder(enc string, r io.Reader) (io.Reader, error) {
	switch enc {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("sluice: reading gzip upstream body: %w", err)
		}
		return zr, nil
	case "deflate":
		br := bufio.NewReader(r)
		if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("sluice: reading deflate upstream body: %w", err)
			}
			return zr, nil
		}
		return flate.NewReader(br), nil
	}
	return nil, fmt.Errorf("%w: %q", errUnknownCoding, enc)
}

// encode compresses b with enc (gzip or deflate).
func encode(enc string, b []byte) ([]byte, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip", "x-gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	default:
		return nil, fmt.Errorf("%w: %q", errUnknownCoding, enc)
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// weakenETag turns a strong ETag into a weak one (RFC 9110 §8.8.3): the
// body the client gets is not the upstream's byte for byte, but
// revalidating it with the upstream's validator remains correct.
func weakenETag(h http.Header) {
	if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
		h.Set("Etag", "W/"+et)
	}
}

// fixRepresentation removes or weakens the headers that describe the
// upstream's bytes of a body the proxy changes.
func fixRepresentation(h http.Header) {
	weakenETag(h)
	for _, k := range [...]string{"Content-Md5", "Digest", "Content-Digest", "Repr-Digest", "Accept-Ranges"} {
		delete(h, k)
	}
}
