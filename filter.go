package sluice

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/sluiceproxy/sluice/internal/htmlrewrite"
	"github.com/sluiceproxy/sluice/internal/linefilter"
)

// A BodyFilter transforms a response body chunk by chunk while it streams
// to the client, like Pingora's response_body_filter or Envoy ext_proc in
// STREAMED mode. Set it with ProxyRequest.BodyFilter or the Filter
// Interceptor.
//
// FilterBody is called with each chunk of the body as read from the
// upstream, in order, and once more with end set after the last one
// (chunk may then be empty). It writes its output to dst, as much or as
// little as it likes: nothing (to hold bytes until a later chunk), the
// chunk itself, or something else. chunk is only valid during the call
// and must not be modified. A filter must keep its own memory bounded: it
// sees a body of any size.
//
// An error from FilterBody aborts the response (the headers are already
// sent), so the client never mistakes a half-filtered body for a complete
// one.
type BodyFilter interface {
	FilterBody(dst io.Writer, chunk []byte, end bool) error
}

// BodyFilterFunc adapts a function to the BodyFilter interface.
type BodyFilterFunc func(dst io.Writer, chunk []byte, end bool) error

// FilterBody calls f(dst, chunk, end).
func (f BodyFilterFunc) FilterBody(dst io.Writer, chunk []byte, end bool) error {
	return f(dst, chunk, end)
}

// Filter returns an Interceptor that forwards the request and streams the
// response body through the filter newFilter returns for it (nil leaves
// the response untouched). Before forwarding it limits the request's
// Accept-Encoding to the client's preferences among gzip and deflate
// (identity if none is left) and removes Range and If-Range, so the upstream
// sends a whole representation the filter can read.
func Filter(newFilter func(res *http.Response) BodyFilter) Interceptor {
	return InterceptorFunc(func(w http.ResponseWriter, pr *ProxyRequest) error {
		prepareTransform(pr.Out.Header)
		pr.BodyFilter = newFilter
		return pr.Forward(w)
	})
}

// filterResponse applies pr.BodyFilter to res before its headers are
// written: when the filter takes the response, the body is decoded from
// gzip or deflate and replaced by the filter's output, and the headers
// that described the upstream's bytes are fixed (see fixRepresentation).
// For a HEAD, 204 or 304 response only the headers are fixed, so that
// they agree with the filtered GET.
func (pr *ProxyRequest) filterResponse(res *http.Response) error {
	f := pr.BodyFilter(res)
	if f == nil {
		return nil
	}
	if pr.In.Method == http.MethodHead || !bodyAllowed(res.StatusCode) {
		weakenETag(res.Header)
		if pr.In.Method == http.MethodHead {
			res.Header.Del("Content-Length")
		}
		return nil
	}
	body, err := decodeBody(res)
	if err != nil {
		return err
	}
	fixRepresentation(res.Header)
	res.Header.Del("Content-Length")
	res.ContentLength = -1
	res.Body = &filterReader{src: body, closer: res.Body, f: f}
	return nil
}

// filterReader is the body of a filtered response: each Read pulls one
// chunk from the upstream, runs the filter on it and serves its output.
// Memory is one pooled buffer plus the output of one chunk.
type filterReader struct {
	src    io.Reader
	closer io.Closer
	f      BodyFilter
	bp     *[]byte
	out    bytes.Buffer
	err    error // sticky: io.EOF once the filter saw the end
}

func (r *filterReader) Read(p []byte) (int, error) {
	for r.out.Len() == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.bp == nil {
			r.bp = copyBufferPool.Get().(*[]byte)
		}
		n, err := r.src.Read(*r.bp)
		switch {
		case err == io.EOF:
			r.err = io.EOF
			if ferr := r.f.FilterBody(&r.out, (*r.bp)[:n], true); ferr != nil {
				r.err = fmt.Errorf("sluice: body filter: %w", ferr)
			}
			r.release()
		case err != nil:
			r.err = err
			r.release()
		case n > 0:
			if ferr := r.f.FilterBody(&r.out, (*r.bp)[:n], false); ferr != nil {
				r.err = fmt.Errorf("sluice: body filter: %w", ferr)
				r.release()
			}
		}
	}
	return r.out.Read(p)
}

func (r *filterReader) release() {
	if r.bp != nil {
		copyBufferPool.Put(r.bp)
		r.bp = nil
	}
}

func (r *filterReader) Close() error { return r.closer.Close() }

// DefaultMaxFilterToken is the default bound on what a streaming filter
// holds between chunks: one line for LineFilter, one tag or comment for
// HTMLRewriter.
const DefaultMaxFilterToken = 1 << 20

// HTMLRewriter rewrites text/html responses as they stream: attributes of
// start tags (links, sources) are passed through Attr, and Inject is
// inserted before </body>. It is built on the golang.org/x/net/html
// tokenizer and holds at most one incomplete tag between chunks, so memory
// does not grow with the document. Bytes that no rule changes reach the
// client exactly as the upstream sent them (after content decoding).
//
// The content of script, style, textarea, title and the other raw text
// elements is passed through verbatim up to its end tag; a "</script"
// inside a script's "<!--" escape ends it early (the tokenizer's escape
// states are not followed).
type HTMLRewriter struct {
	// Attr, if not nil, is called for every attribute of every start tag
	// with the tag name and the attribute key in lower case and the
	// unescaped value; it returns the new value. A tag whose attributes
	// all come back unchanged is written as received; a changed tag is
	// written again in canonical form (lower-case names, values quoted
	// and escaped).
	Attr func(tag, key, val string) string

	// Inject, if not empty, is inserted right before the first </body>
	// end tag, or at the end of the document if it has none.
	Inject string

	// MaxTokenSize bounds one tag, comment or doctype; a longer one
	// aborts the response. If zero, DefaultMaxFilterToken.
	MaxTokenSize int
}

// Filter returns the BodyFilter for one response: a new rewriter for a
// text/html response with a body, nil for anything else. Use the method
// value as ProxyRequest.BodyFilter or with Filter.
func (h *HTMLRewriter) Filter(res *http.Response) BodyFilter {
	ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if ct != "text/html" {
		return nil
	}
	max := h.MaxTokenSize
	if max <= 0 {
		max = DefaultMaxFilterToken
	}
	rw := htmlrewrite.New(htmlrewrite.Config{Attr: h.Attr, Inject: []byte(h.Inject), MaxToken: max})
	return BodyFilterFunc(rw.Feed)
}

// LineFilter rewrites a response line by line as it streams, for formats
// made of lines such as NDJSON, server-sent events (text/event-stream) and
// logs: redact a pattern, drop a field. Memory is bounded by MaxLineSize
// whatever the body size.
type LineFilter struct {
	// Func returns the replacement of line, given without its "\n" or
	// "\r\n" terminator (which is written back after the result). It may
	// return line itself or a slice of it; line is only valid during the
	// call. Func must be safe for concurrent use: it serves every
	// response the filter is set on.
	Func func(line []byte) []byte

	// Match, if not nil, selects the responses to filter; if nil, every
	// response with a body is filtered.
	Match func(res *http.Response) bool

	// MaxLineSize bounds one line; a longer one aborts the response. If
	// zero, DefaultMaxFilterToken.
	MaxLineSize int
}

// Filter returns the BodyFilter for one response, or nil if Match
// declines it. Use the method value as ProxyRequest.BodyFilter or with
// Filter.
func (l *LineFilter) Filter(res *http.Response) BodyFilter {
	if l.Match != nil && !l.Match(res) {
		return nil
	}
	max := l.MaxLineSize
	if max <= 0 {
		max = DefaultMaxFilterToken
	}
	s := &linefilter.Splitter{Func: l.Func, Max: max}
	return BodyFilterFunc(s.Feed)
}
