package sluice

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
)

// DefaultSendfileHeader is the response header Sendfile looks for when its
// Header field is empty.
const DefaultSendfileHeader = "X-Accel-Redirect"

// Sendfile is an Interceptor that lets the upstream answer with a header
// naming the body to serve instead of its own, like nginx's
// X-Accel-Redirect or Apache's X-Sendfile: the application decides
// (authorization, accounting) and the proxy does the heavy streaming. The
// header never reaches the client.
//
// The header's value is a URI reference, percent-encoded:
//   - an absolute http or https URL (a presigned object-storage GET, say)
//     is fetched with the Proxy's transport, if AllowURL allows it;
//   - a path, when Dir is set, names a file inside Dir, served with
//     http.ServeContent: Range, If-Range and the other conditional
//     requests of RFC 9110 §13 work, and the file moves with sendfile(2);
//   - a path, when Dir is empty, is fetched from the upstream with GET,
//     through the Director like any forwarded request (nginx's internal
//     redirect).
//
// Content-Type, Content-Disposition, Cache-Control, Expires and
// Content-Language of the upstream's response, when present, replace
// those of the served body, and its Set-Cookie headers are kept. The
// client's Range and conditional headers go with a fetch, so partial
// downloads work in every mode. A served response's own header is
// ignored: there is one redirect at most.
//
// Errors map through StatusFor: a missing file is 404, a file that cannot
// be read 403, a value that is malformed, escapes Dir or is not allowed
// 502 (the upstream's answer was unusable).
type Sendfile struct {
	// Header is the response header naming the body to serve. If empty,
	// DefaultSendfileHeader.
	Header string

	// Dir is the directory files are served from. Paths are resolved
	// inside it with os.Root: "..", absolute symlinks and symlinks leading
	// out of Dir are refused.
	Dir string

	// AllowURL reports whether an absolute URL may be fetched. If nil,
	// absolute URLs are refused.
	AllowURL func(u *url.URL) bool
}

var errSendfile = errors.New("sluice: unusable sendfile header")

// keptHeaders are the fields of the upstream's response that describe the
// body it points to.
var keptHeaders = [...]string{"Content-Type", "Content-Disposition", "Cache-Control", "Expires", "Content-Language"}

// Intercept forwards the request and, if the upstream's response has the
// header, serves what it names instead of the response's body.
func (s *Sendfile) Intercept(w http.ResponseWriter, pr *ProxyRequest) error {
	if pr.upgrade != "" {
		return pr.Forward(w)
	}
	name := s.Header
	if name == "" {
		name = DefaultSendfileHeader
	}
	res, err := pr.RoundTrip()
	if err != nil {
		return err
	}
	defer res.Body.Close()
	v := res.Header.Get(name)
	res.Header.Del(name)
	if v == "" {
		if pr.ModifyResponse != nil {
			if err := pr.ModifyResponse(res); err != nil {
				return err
			}
		}
		return pr.WriteResponse(w, res)
	}
	// Read a little of the upstream's body so its connection can be
	// reused; a longer body costs a new connection, not memory.
	_, _ = io.CopyN(io.Discard, res.Body, 4<<10)
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("%w: %w", errSendfile, err)
	}
	kept := make(http.Header)
	for _, k := range keptHeaders {
		if vv := res.Header.Values(k); len(vv) > 0 {
			kept[k] = vv
		}
	}
	if c := res.Header.Values("Set-Cookie"); len(c) > 0 {
		pr.ResponseHeader()["Set-Cookie"] = append(pr.ResponseHeader()["Set-Cookie"], c...)
	}
	switch {
	case u.IsAbs():
		return s.serveURL(w, pr, u, name, kept)
	case s.Dir != "":
		return s.serveFile(w, pr, u, kept)
	}
	return s.serveInternal(w, pr, u, name, kept)
}

// serveFile serves a file inside Dir.
func (s *Sendfile) serveFile(w http.ResponseWriter, pr *ProxyRequest, u *url.URL, kept http.Header) error {
	if !strings.HasPrefix(u.Path, "/") || u.Host != "" {
		return fmt.Errorf("%w: %q is not a rooted path", errSendfile, u.Path)
	}
	name := strings.TrimPrefix(path.Clean(u.Path), "/")
	if name == "" {
		name = "."
	}
	root, err := os.OpenRoot(s.Dir)
	if err != nil {
		return fmt.Errorf("sluice: sendfile directory: %w", err)
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return fileError(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileError(err)
	}
	if fi.IsDir() {
		return &Error{Status: http.StatusNotFound, Err: fmt.Errorf("sluice: sendfile %q is a directory", name)}
	}
	h := w.Header()
	copyHeader(h, kept)
	mergeHeader(h, pr.respHeader)
	http.ServeContent(w, pr.In, fi.Name(), fi.ModTime(), f)
	return nil
}

func fileError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &Error{Status: http.StatusNotFound, Err: fmt.Errorf("sluice: sendfile: %w", err)}
	case errors.Is(err, fs.ErrPermission):
		return &Error{Status: http.StatusForbidden, Err: fmt.Errorf("sluice: sendfile: %w", err)}
	}
	// os.Root refuses names that escape it with a plain error.
	return fmt.Errorf("%w: %w", errSendfile, err)
}

// serveInternal fetches a path from the upstream through the Director.
func (s *Sendfile) serveInternal(w http.ResponseWriter, pr *ProxyRequest, u *url.URL, name string, kept http.Header) error {
	if !strings.HasPrefix(u.Path, "/") || u.Host != "" {
		return fmt.Errorf("%w: %q is not a rooted path", errSendfile, u.Path)
	}
	out := pr.Out.Clone(pr.In.Context()) // drop the first attempt's trace
	out.Method = fetchMethod(pr.In)
	out.URL = &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
	out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	for _, k := range [...]string{"Content-Type", "Content-Length", "Content-Encoding", "Expect", name} {
		out.Header.Del(k)
	}
	pr.Out = out
	pr.BodyFilter = nil
	res, err := pr.RoundTrip()
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return s.writeFetched(w, pr, res, name, kept)
}

// serveURL fetches an absolute URL with the Proxy's transport.
func (s *Sendfile) serveURL(w http.ResponseWriter, pr *ProxyRequest, u *url.URL, name string, kept http.Header) error {
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || s.AllowURL == nil || !s.AllowURL(u) {
		return fmt.Errorf("%w: URL %s not allowed", errSendfile, u.Redacted())
	}
	req, err := http.NewRequestWithContext(pr.In.Context(), fetchMethod(pr.In), u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errSendfile, err)
	}
	for _, k := range [...]string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if vv := pr.In.Header.Values(k); len(vv) > 0 {
			req.Header[k] = append([]string(nil), vv...)
		}
	}
	res, err := pr.proxy.transport.RoundTrip(req)
	if err != nil {
		if pr.In.Context().Err() != nil {
			err = fmt.Errorf("%w: %w", errClientGone, err)
		}
		return err
	}
	defer res.Body.Close()
	return s.writeFetched(w, pr, res, name, kept)
}

func (s *Sendfile) writeFetched(w http.ResponseWriter, pr *ProxyRequest, res *http.Response, name string, kept http.Header) error {
	res.Header.Del(name)
	if res.StatusCode >= 200 && res.StatusCode <= 299 {
		copyHeader(res.Header, kept)
	}
	return pr.WriteResponse(w, res)
}

func fetchMethod(in *http.Request) string {
	if in.Method == http.MethodHead {
		return http.MethodHead
	}
	return http.MethodGet
}
