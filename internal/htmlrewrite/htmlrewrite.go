// Package htmlrewrite rewrites an HTML document that arrives in chunks:
// attributes of start tags are passed through a callback and a snippet is
// inserted before </body>. It tokenizes with golang.org/x/net/html and
// holds at most one incomplete token (bounded by a limit) between chunks,
// so memory does not grow with the document.
//
// Bytes that no rule changes are written exactly as received.
package htmlrewrite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/net/html"
)

// ErrTokenTooLong is returned when one tag, comment or doctype is longer
// than the Rewriter's limit, so it cannot be held to be tokenized whole.
var ErrTokenTooLong = errors.New("htmlrewrite: token too long")

// Config says what a Rewriter changes.
type Config struct {
	// Attr, if not nil, is called for every attribute of every start tag
	// with the tag name and attribute key in lower case and the unescaped
	// value. It returns the new value; returning val leaves the tag as it
	// was received, byte for byte.
	Attr func(tag, key, val string) string

	// Inject, if not empty, is written right before the first </body>
	// end tag, or at the end of the document if it has none.
	Inject []byte

	// MaxToken bounds the bytes held for one incomplete token. It must be
	// positive.
	MaxToken int
}

// Rewriter is the state of one document being rewritten.
type Rewriter struct {
	cfg      Config
	pending  []byte // the unconsumed tail: at most one incomplete token
	rawTag   string // inside the raw text of this element (script, style...)
	injected bool
	tried    int // len(pending) when it last failed to complete a token
	attrs    []html.Attribute
	buf      []byte
	keys     map[string]string // attribute names seen, interned
}

// New returns a Rewriter for one document.
func New(cfg Config) *Rewriter { return &Rewriter{cfg: cfg, keys: map[string]string{}} }

// rawTags are the elements whose content the tokenizer reads as raw text
// or RCDATA up to the matching end tag (WHATWG HTML §13.2.5), as
// golang.org/x/net/html does.
var rawTags = map[string]bool{
	"iframe": true, "noembed": true, "noframes": true, "noscript": true,
	"plaintext": true, "script": true, "style": true, "textarea": true,
	"title": true, "xmp": true,
}

// Feed rewrites the next chunk of the document into dst. end is true for
// the last call, after which the Rewriter must not be used.
func (r *Rewriter) Feed(dst io.Writer, chunk []byte, end bool) error {
	var data []byte
	if len(r.pending) == 0 {
		data = chunk // the common case: no copy
	} else {
		r.pending = append(r.pending, chunk...)
		data = r.pending
		// Tokenize a held token again only once the data has doubled
		// since the last try, so that an upstream trickling a long tag
		// byte by byte costs linear time, not quadratic.
		if !end && len(data) < 2*r.tried && len(data) <= r.cfg.MaxToken {
			return nil
		}
	}
	off, err := r.process(dst, data, end)
	if err != nil {
		return err
	}
	rest := data[off:]
	if end {
		if len(rest) > 0 {
			if _, err := dst.Write(rest); err != nil {
				return err
			}
		}
		if !r.injected && len(r.cfg.Inject) > 0 {
			r.injected = true
			if _, err := dst.Write(r.cfg.Inject); err != nil {
				return err
			}
		}
		r.pending = nil
		return nil
	}
	if len(rest) > r.cfg.MaxToken {
		return fmt.Errorf("%w: over %d bytes", ErrTokenTooLong, r.cfg.MaxToken)
	}
	// rest may alias pending's own array: copy moves it to the front.
	r.pending = append(r.pending[:0], rest...)
	r.tried = len(rest)
	return nil
}

// process writes the complete tokens at the start of data and returns how
// many bytes it consumed.
func (r *Rewriter) process(dst io.Writer, data []byte, end bool) (int, error) {
	off := 0
	for off < len(data) {
		if r.rawTag != "" {
			n, closed := scanRaw(data[off:], r.rawTag, end)
			if _, err := dst.Write(data[off : off+n]); err != nil {
				return off, err
			}
			off += n
			if !closed {
				return off, nil
			}
			r.rawTag = ""
			continue
		}
		n, err := r.tokens(dst, data[off:], end)
		off += n
		if err != nil || n == 0 {
			return off, err
		}
	}
	return off, nil
}

// tokens writes the complete tokens at the start of data, stopping after
// a start tag that opens raw text. A token that reaches the end of data
// may be incomplete and is left for the next chunk, except for the safe
// part of a text token.
func (r *Rewriter) tokens(dst io.Writer, data []byte, end bool) (int, error) {
	z := html.NewTokenizer(bytes.NewReader(data))
	consumed := 0
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return consumed, nil // io.EOF: data is used up
		}
		raw := z.Raw()
		if consumed+len(raw) == len(data) && !end {
			if tt == html.TextToken {
				n := safeText(raw)
				if _, err := dst.Write(raw[:n]); err != nil {
					return consumed, err
				}
				consumed += n
			}
			return consumed, nil
		}
		if err := r.token(dst, z, tt, raw); err != nil {
			return consumed, err
		}
		consumed += len(raw)
		if r.rawTag != "" {
			return consumed, nil
		}
	}
}

// token writes one complete token, rewritten if a rule applies.
func (r *Rewriter) token(dst io.Writer, z *html.Tokenizer, tt html.TokenType, raw []byte) error {
	switch tt {
	case html.StartTagToken, html.SelfClosingTagToken:
		name, hasAttr := z.TagName()
		if rawTags[string(name)] {
			r.rawTag = string(name)
		}
		if r.cfg.Attr == nil || !hasAttr {
			break
		}
		tag := string(name)
		changed := false
		r.attrs = r.attrs[:0]
		for more := true; more; {
			var k, v []byte
			k, v, more = z.TagAttr()
			key, ok := r.keys[string(k)] // no allocation for a known key
			if !ok {
				key = string(k)
				if len(r.keys) < 256 {
					r.keys[key] = key
				}
			}
			a := html.Attribute{Key: key, Val: string(v)}
			if nv := r.cfg.Attr(tag, a.Key, a.Val); nv != a.Val {
				a.Val = nv
				changed = true
			}
			r.attrs = append(r.attrs, a)
		}
		if changed {
			r.buf = appendTag(r.buf[:0], tag, r.attrs, tt == html.SelfClosingTagToken)
			_, err := dst.Write(r.buf)
			return err
		}
	case html.EndTagToken:
		if r.injected || len(r.cfg.Inject) == 0 {
			break
		}
		if name, _ := z.TagName(); string(name) == "body" {
			r.injected = true
			if _, err := dst.Write(r.cfg.Inject); err != nil {
				return err
			}
		}
	}
	_, err := dst.Write(raw)
	return err
}

// appendTag appends a start tag in canonical form: lower-case names,
// values in double quotes, escaped as html.EscapeString does.
func appendTag(b []byte, tag string, attrs []html.Attribute, selfClosing bool) []byte {
	b = append(b, '<')
	b = append(b, tag...)
	for _, a := range attrs {
		b = append(b, ' ')
		b = append(b, a.Key...)
		b = append(b, '=', '"')
		for i := 0; i < len(a.Val); i++ {
			switch c := a.Val[i]; c {
			case '&':
				b = append(b, "&amp;"...)
			case '\'':
				b = append(b, "&#39;"...)
			case '<':
				b = append(b, "&lt;"...)
			case '>':
				b = append(b, "&gt;"...)
			case '"':
				b = append(b, "&#34;"...)
			case '\r':
				b = append(b, "&#13;"...)
			default:
				b = append(b, c)
			}
		}
		b = append(b, '"')
	}
	if selfClosing {
		b = append(b, '/')
	}
	return append(b, '>')
}

// safeText returns how much of a text token that reaches the end of the
// available data can be written now: all of it but a trailing "<", "</"
// or "<!-" that may start a tag or comment once more data arrives. A token
// that starts with "<" is a tag cut by the end of the data and is kept
// whole.
func safeText(raw []byte) int {
	i := bytes.LastIndexByte(raw, '<')
	switch {
	case i < 0:
		return len(raw)
	case i == 0:
		return 0
	case len(raw)-i <= 3:
		return i
	}
	return len(raw)
}

// scanRaw finds the end of the raw text of element tag in data: the
// first "</tag" followed by whitespace, "/" or ">" (case-insensitive). It
// returns the number of bytes of raw text that can be written and whether
// the end tag was found (it then starts at data[n:]). Without the end tag,
// a tail that may be the start of it is held back unless end is true.
func scanRaw(data []byte, tag string, end bool) (n int, closed bool) {
	if tag == "plaintext" {
		return len(data), false // plaintext never ends
	}
	for i := 0; i < len(data); {
		j := bytes.IndexByte(data[i:], '<')
		if j < 0 {
			break
		}
		i += j
		rest := data[i:]
		if len(rest) < len(tag)+3 {
			if end {
				return len(data), false
			}
			if len(rest) >= 2 && (rest[1] != '/' || !strings.HasPrefix(tag, strings.ToLower(string(rest[2:])))) {
				i++
				continue
			}
			return i, false
		}
		if rest[1] == '/' && strings.EqualFold(string(rest[2:2+len(tag)]), tag) {
			switch rest[2+len(tag)] {
			case ' ', '\t', '\n', '\r', '\f', '/', '>':
				return i, true
			}
		}
		i++
	}
	return len(data), false
}
