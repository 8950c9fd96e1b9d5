package sluice

import (
	"fmt"
	"net/http"
	"net/url"
)

// HeaderSendURL is the response header with which an upstream asks a
// SendURL interceptor to serve the content of another URL.
const HeaderSendURL = "Sluice-Send-Url"

// SendURL is an Interceptor that lets the upstream answer a download with
// a URL instead of the bytes, as GitLab Workhorse's send-url and nginx's
// X-Accel-Redirect to a remote location: when the upstream's 200 response
// carries the Header (typically a presigned GET URL of object storage),
// the proxy fetches that URL and streams its body to the client in place
// of the upstream's. The application never carries the bytes and the
// client never sees the store's address.
//
// The client's Range, If-Range, If-Match, If-None-Match,
// If-Modified-Since and If-Unmodified-Since headers are passed to the
// store, so range requests (RFC 9110 §14) and conditional requests work as
// the store implements them: its status (200, 206, 304, 412, 416) and
// entity headers (Content-Type, Content-Length, Content-Range,
// Content-Encoding, Accept-Ranges, ETag, Last-Modified) replace the
// upstream's; the upstream's other headers (Content-Disposition,
// Cache-Control, Set-Cookie…) are kept. Any other status from the store
// fails the request with 502. The Header never reaches the client, and is
// removed from the client's request too.
//
// Applies to GET and HEAD; other methods are forwarded untouched.
// A response without the Header passes through untouched.
type SendURL struct {
	// Header names the response header carrying the URL.
	// If empty, HeaderSendURL.
	Header string

	// Allow, if not nil, must accept the URL before it is fetched; a
	// refused URL fails the request with 502. If nil, any absolute http
	// or https URL is fetched: set it when the upstream is not fully
	// trusted, e.g. to a check of the store's host.
	Allow func(u *url.URL) bool

	// Transport fetches the URL. If nil, the Proxy's transport.
	Transport http.RoundTripper
}

// sendURLRequestHeaders are passed from the client to the store.
var sendURLRequestHeaders = []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"}

// sendURLEntityHeaders are taken from the store's response.
var sendURLEntityHeaders = []string{"Content-Type", "Content-Length", "Content-Range", "Content-Encoding", "Accept-Ranges", "Etag", "Last-Modified"}

// Intercept implements Interceptor.
func (s *SendURL) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	name := s.Header
	if name == "" {
		name = HeaderSendURL
	}
	pr.Out.Header.Del(name)
	if pr.In.Method != http.MethodGet && pr.In.Method != http.MethodHead {
		return pr.Forward(w)
	}
	prev := pr.ModifyResponse
	pr.ModifyResponse = func(res *http.Response) error {
		if prev != nil {
			if err := prev(res); err != nil {
				return err
			}
		}
		target := res.Header.Get(name)
		res.Header.Del(name)
		if target == "" || res.StatusCode != http.StatusOK {
			return nil
		}
		return s.swap(pr, res, target)
	}
	return pr.Forward(w)
}

// swap replaces the upstream's response body, status and entity headers
// with those of target.
func (s *SendURL) swap(pr *ProxyRequest, res *http.Response, target string) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: send-url %q is not an absolute http(s) URL", errBadResponse, target)
	}
	if s.Allow != nil && !s.Allow(u) {
		return fmt.Errorf("%w: send-url to %s refused", errBadResponse, u.Host)
	}
	req, err := http.NewRequestWithContext(pr.Context(), pr.In.Method, target, nil)
	if err != nil {
		return fmt.Errorf("%w: send-url: %w", errBadResponse, err)
	}
	for _, k := range sendURLRequestHeaders {
		if vv := pr.In.Header[k]; len(vv) > 0 {
			req.Header[k] = append([]string(nil), vv...)
		}
	}
	rt := s.Transport
	if rt == nil {
		rt = pr.proxy.transport
	}
	obj, err := rt.RoundTrip(req)
	if err != nil {
		return &Error{Status: StatusFor(err), Err: fmt.Errorf("sluice: send-url: %w", err)}
	}
	switch obj.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusNotModified,
		http.StatusPreconditionFailed, http.StatusRequestedRangeNotSatisfiable:
	default:
		obj.Body.Close()
		return &Error{Status: http.StatusBadGateway, Err: fmt.Errorf("%w: send-url: store answered %s", ErrObjectStore, obj.Status)}
	}
	res.Body.Close()
	res.StatusCode, res.Status = obj.StatusCode, obj.Status
	for _, k := range sendURLEntityHeaders {
		delete(res.Header, k)
		if vv := obj.Header[k]; len(vv) > 0 {
			res.Header[k] = vv
		}
	}
	res.Body = obj.Body
	res.ContentLength = obj.ContentLength
	res.TransferEncoding = nil
	res.Trailer = nil
	return nil
}
