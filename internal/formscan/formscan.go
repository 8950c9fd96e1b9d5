// Package formscan streams a multipart/form-data body (RFC 7578): file
// parts are handed to a callback as they arrive, without being buffered,
// and the other fields are kept, within limits, to be written again into
// a new form.
package formscan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
)

// Errors returned by Scan. Anything else from the body is a malformed
// form, except what the callback returns, which Scan returns unchanged.
var (
	ErrFieldsTooLarge = errors.New("formscan: form fields over the size limit")
	ErrTooManyParts   = errors.New("formscan: too many parts in the form")
	ErrMalformed      = errors.New("formscan: malformed multipart/form-data body")
)

// Limits bound what Scan keeps in memory.
type Limits struct {
	// FieldBytes bounds what Scan holds in memory at any time: the fields
	// kept so far (names, part headers and values, the callback's fields
	// included, as counted by heldSize) and the header of the part being
	// read, a file part's included while its body streams. Beyond it,
	// Scan fails with ErrFieldsTooLarge, having read no more of a part's
	// header than that (give or take the boundary line and some white
	// space) on top of the multipart reader's 4 KiB buffer.
	FieldBytes int64
	// Parts bounds the number of parts, files included.
	Parts int
}

// Field is one part of the form to write again: a non-file field as the
// client sent it, or a field the callback made.
type Field struct {
	Name      string
	Header    textproto.MIMEHeader // nil for a field the callback made
	Value     []byte
	Generated bool // made by the callback, not sent by the client
}

// File is a file part being read: the callback must read Body to its end
// (or fail).
type File struct {
	Field       string // the form field name
	FileName    string
	ContentType string
	Body        io.Reader
}

// Scan reads the form from r. For every part with a filename it calls
// onFile, whose returned fields take the part's place; other parts are
// kept as fields. Parts are read raw (no Content-Transfer-Encoding
// decoding), so what is kept is what the client sent.
func Scan(r io.Reader, boundary string, lim Limits, onFile func(f *File) ([]Field, error)) ([]Field, error) {
	m := &headMeter{r: r}
	mr := multipart.NewReader(m, boundary)
	var fields []Field
	var size int64 // what fields hold
	tooLarge := func(more int64) bool { return more > lim.FieldBytes-size }
	for n := 0; ; n++ {
		// mime/multipart reads a part's header whole, whatever its size
		// (up to 10 MiB): the meter stops it once it needs more than the
		// limit leaves (and the boundary line and headSlack). Its reads
		// are cut to what is left, so its read-ahead pulls no more.
		m.on, m.left = true, max(lim.FieldBytes-size, 0)+headSlack+int64(len(boundary))
		p, err := mr.NextRawPart()
		m.on = false
		if m.over {
			return nil, ErrFieldsTooLarge
		}
		if err == io.EOF {
			return fields, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if n >= lim.Parts {
			return nil, ErrTooManyParts
		}
		name := p.FormName()
		if name == "" {
			return nil, fmt.Errorf("%w: part without a form field name", ErrMalformed)
		}
		head := headerSize(p.Header)
		if p.FileName() != "" {
			if tooLarge(head) { // held while the file streams
				return nil, ErrFieldsTooLarge
			}
			gen, err := onFile(&File{Field: name, FileName: p.FileName(), ContentType: p.Header.Get("Content-Type"), Body: p})
			if err != nil {
				return nil, err
			}
			for _, f := range gen {
				if tooLarge(heldSize(f)) {
					return nil, ErrFieldsTooLarge
				}
				size += heldSize(f)
			}
			fields = append(fields, gen...)
			continue
		}
		if tooLarge(int64(len(name)) + head) {
			return nil, ErrFieldsTooLarge
		}
		size += int64(len(name)) + head
		var v bytes.Buffer
		k, err := v.ReadFrom(io.LimitReader(p, lim.FieldBytes-size+1))
		size += k
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if size > lim.FieldBytes {
			return nil, ErrFieldsTooLarge
		}
		fields = append(fields, Field{Name: name, Header: p.Header, Value: v.Bytes()})
	}
}

// headSlack is what a part's head may take beyond what the limit leaves,
// besides its boundary line: the line ends around it and some white
// space in the header, which headerSize does not count.
const headSlack = 256

// heldSize is what a kept field holds in memory: its name, its value and
// its part header (see headerSize).
func heldSize(f Field) int64 {
	return int64(len(f.Name)+len(f.Value)) + headerSize(f.Header)
}

// headerSize is the size of a part header as sent: "Name: value\r\n"
// for each value.
func headerSize(h textproto.MIMEHeader) int64 {
	var n int64
	for k, vv := range h {
		for _, v := range vv {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// headMeter lets at most left bytes through while on: it bounds what
// the multipart reader may buffer while it reads a part's head. Bodies
// are read with it off (file parts are streamed, field values bounded by
// Scan itself).
type headMeter struct {
	r    io.Reader
	on   bool
	left int64
	over bool // the limit was hit
}

func (m *headMeter) Read(p []byte) (int, error) {
	if !m.on {
		return m.r.Read(p)
	}
	if m.left <= 0 {
		m.over = true
		return 0, ErrFieldsTooLarge
	}
	if int64(len(p)) > m.left {
		p = p[:m.left]
	}
	n, err := m.r.Read(p)
	m.left -= int64(n)
	return n, err
}

// Write writes fields as a form to w and closes it.
func Write(w *multipart.Writer, fields []Field) error {
	for _, f := range fields {
		var pw io.Writer
		var err error
		if f.Header != nil {
			pw, err = w.CreatePart(f.Header)
		} else {
			pw, err = w.CreateFormField(f.Name)
		}
		if err != nil {
			return err
		}
		if _, err := pw.Write(f.Value); err != nil {
			return err
		}
	}
	return w.Close()
}
