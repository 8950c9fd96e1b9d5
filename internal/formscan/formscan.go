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
	// FieldBytes bounds the total size of the non-file fields' values.
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
	mr := multipart.NewReader(r, boundary)
	var fields []Field
	var size int64
	for n := 0; ; n++ {
		p, err := mr.NextRawPart()
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
		if p.FileName() != "" {
			gen, err := onFile(&File{Field: name, FileName: p.FileName(), ContentType: p.Header.Get("Content-Type"), Body: p})
			if err != nil {
				return nil, err
			}
			fields = append(fields, gen...)
			continue
		}
		var v bytes.Buffer
		m, err := v.ReadFrom(io.LimitReader(p, lim.FieldBytes-size+1))
		size += m
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if size > lim.FieldBytes {
			return nil, ErrFieldsTooLarge
		}
		fields = append(fields, Field{Name: name, Header: p.Header, Value: v.Bytes()})
	}
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
