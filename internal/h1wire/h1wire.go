// Package h1wire holds the pieces of HTTP/1.1 message syntax (RFC 9112)
// that sluice's server (internal/h1server) and client (internal/h1client)
// share: a bounded reader for message heads, Content-Length values,
// methods, and the trailer section of a chunked body. The root package uses
// IsIdempotent too.
package h1wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// LimitReader reads from R, at most N bytes while N >= 0: it bounds what
// a message head (or trailer) may take. Its owner sets N before reading a
// head and -1 after.
type LimitReader struct {
	R        io.Reader
	N        int64 // bytes left; < 0: no limit
	TooLarge error // returned once N bytes were read
	Err      error // the last error R returned, while limited
}

func (l *LimitReader) Read(p []byte) (int, error) {
	if l.N < 0 {
		return l.R.Read(p)
	}
	if l.N == 0 {
		return 0, l.TooLarge
	}
	if int64(len(p)) > l.N {
		p = p[:l.N]
	}
	n, err := l.R.Read(p)
	l.N -= int64(n)
	if err != nil {
		l.Err = err
	}
	return n, err
}

// ErrBadLength is a malformed Content-Length value.
var ErrBadLength = errors.New("bad Content-Length")

// ParseContentLength parses a Content-Length value (RFC 9110 §8.6):
// digits only, no sign, at most 18 of them, so that it cannot overflow.
func ParseContentLength(v string) (int64, error) {
	v = textproto.TrimString(v)
	if v == "" || len(v) > 18 {
		return 0, ErrBadLength
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, ErrBadLength
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// ValidMethod reports whether m is a token (RFC 9110 §9.1).
func ValidMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// IsIdempotent reports whether requests with method may be sent twice
// (RFC 9110 §9.2.2).
func IsIdempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// FieldNames yields the canonical field names listed in the values of a
// header such as Trailer ("a, b" and repeated fields; RFC 9110 §5.6.1),
// skipping empty elements.
func FieldNames(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for k := range strings.SplitSeq(v, ",") {
				if k = textproto.TrimString(k); k != "" && !yield(textproto.CanonicalMIMEHeaderKey(k)) {
					return
				}
			}
		}
	}
}

// ReadTrailer reads the trailer section that follows the last chunk (RFC
// 9112 §7.1.2) through tp, which reads br. An empty section (the usual
// case) costs no allocation and gives a nil header. Field names must be
// tokens. The caller bounds the read (see LimitReader).
func ReadTrailer(br *bufio.Reader, tp *textproto.Reader) (http.Header, error) {
	if buf, err := br.Peek(2); err == nil && buf[0] == '\r' && buf[1] == '\n' {
		br.Discard(2)
		return nil, nil
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("trailer: %w", err)
	}
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("trailer: invalid field name %q", k)
		}
	}
	return http.Header(h), nil
}

// MergeTrailer reads a trailer section as ReadTrailer does, with lr
// bounding it to max bytes, and adds its fields to *dst (made if nil).
func MergeTrailer(dst *http.Header, br *bufio.Reader, tp *textproto.Reader, lr *LimitReader, max int64) error {
	lr.N = max
	defer func() { lr.N = -1 }()
	h, err := ReadTrailer(br, tp)
	if err != nil || len(h) == 0 {
		return err
	}
	if *dst == nil {
		*dst = make(http.Header, len(h))
	}
	for k, vv := range h {
		(*dst)[k] = vv
	}
	return nil
}
