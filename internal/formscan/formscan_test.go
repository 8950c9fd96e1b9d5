package formscan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func form(t testing.TB, build func(w *multipart.Writer)) ([]byte, string) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	build(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.Boundary()
}

func TestScan(t *testing.T) {
	body, boundary := form(t, func(w *multipart.Writer) {
		w.WriteField("title", "holiday")
		fw, _ := w.CreateFormFile("photo", "beach.jpg")
		fw.Write(bytes.Repeat([]byte("J"), 100000))
		w.WriteField("tags", "sea,sun")
	})
	var files []string
	fields, err := Scan(bytes.NewReader(body), boundary, Limits{FieldBytes: 1000, Parts: 10}, func(f *File) ([]Field, error) {
		b, err := io.ReadAll(f.Body)
		if err != nil {
			return nil, err
		}
		files = append(files, f.Field+"/"+f.FileName+"/"+f.ContentType+"/"+string(b[:3]))
		return []Field{{Name: f.Field + ".size", Value: []byte("100000"), Generated: true}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"photo/beach.jpg/application/octet-stream/JJJ"}, files); diff != "" {
		t.Fatalf("files (-want +got):\n%s", diff)
	}
	var got []string
	for _, f := range fields {
		got = append(got, f.Name+"="+string(f.Value))
	}
	if diff := cmp.Diff([]string{"title=holiday", "photo.size=100000", "tags=sea,sun"}, got); diff != "" {
		t.Fatalf("fields (-want +got):\n%s", diff)
	}

	// Written again, the form parses with the standard library.
	var out bytes.Buffer
	w := multipart.NewWriter(&out)
	if err := Write(w, fields); err != nil {
		t.Fatal(err)
	}
	mf, err := multipart.NewReader(&out, w.Boundary()).ReadForm(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"title": {"holiday"}, "photo.size": {"100000"}, "tags": {"sea,sun"}}
	if diff := cmp.Diff(want, mf.Value); diff != "" {
		t.Fatalf("rewritten form (-want +got):\n%s", diff)
	}
}

func TestScanLimits(t *testing.T) {
	noFile := func(*File) ([]Field, error) { t.Fatal("unexpected file"); return nil, nil }
	tests := []struct {
		name  string
		build func(w *multipart.Writer)
		lim   Limits
		want  error
	}{
		{"fields too large", func(w *multipart.Writer) {
			w.WriteField("a", strings.Repeat("x", 60))
			w.WriteField("b", strings.Repeat("x", 60))
		}, Limits{FieldBytes: 100, Parts: 10}, ErrFieldsTooLarge},
		{"too many parts", func(w *multipart.Writer) {
			for range 5 {
				w.WriteField("a", "1")
			}
		}, Limits{FieldBytes: 1000, Parts: 4}, ErrTooManyParts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, boundary := form(t, tt.build)
			_, err := Scan(bytes.NewReader(body), boundary, tt.lim, noFile)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Scan: %v, want %v", err, tt.want)
			}
		})
	}
	_, err := Scan(strings.NewReader("--b\r\nno end"), "b", Limits{FieldBytes: 10, Parts: 10}, noFile)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated form: %v, want ErrMalformed", err)
	}
}

func FuzzScan(f *testing.F) {
	body, boundary := form(f, func(w *multipart.Writer) {
		w.WriteField("a", "1")
		fw, _ := w.CreateFormFile("f", "x.txt")
		fw.Write([]byte("data"))
	})
	f.Add(body, boundary)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--b--\r\n"), "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		if boundary == "" {
			return
		}
		lim := Limits{FieldBytes: 1024, Parts: 20}
		fields, err := Scan(bytes.NewReader(body), boundary, lim, func(f *File) ([]Field, error) {
			_, err := io.Copy(io.Discard, f.Body)
			return nil, err
		})
		if err != nil {
			return
		}
		var total int64
		for _, fl := range fields {
			total += heldSize(fl)
		}
		if total > 1024 || len(fields) > 20 {
			t.Fatalf("limits exceeded: %d bytes, %d fields", total, len(fields))
		}
	})
}

// part returns one raw form part with a padding header of pad bytes.
func part(boundary, name string, pad int, value string) string {
	return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n" +
		"X-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n" + value + "\r\n"
}

// TestScanCountsHeldBytes: every byte Scan keeps in memory counts against
// FieldBytes: part headers and field names as well as values, the
// callback's fields, and the head of a file part while it streams.
func TestScanCountsHeldBytes(t *testing.T) {
	const b = "B0undary"
	lim := Limits{FieldBytes: 1024, Parts: 100}
	fileHead := "--" + b + "\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f.bin\"\r\n"
	tests := []struct {
		name string
		body string
		gen  int // bytes of the field the callback returns for a file
	}{
		{"part headers", part(b, "a", 600, "1") + part(b, "b", 600, "2"), 0},
		{"field name", part(b, strings.Repeat("n", 1100), 0, "1"), 0},
		{"fields of the callback", fileHead + "\r\ndata\r\n", 1100},
		{"file part header", fileHead + "X-Pad: " + strings.Repeat("p", 1100) + "\r\n\r\ndata\r\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body + "--" + b + "--\r\n"
			called := false
			_, err := Scan(strings.NewReader(body), b, lim, func(f *File) ([]Field, error) {
				called = true
				if _, err := io.Copy(io.Discard, f.Body); err != nil {
					return nil, err
				}
				return []Field{{Name: f.Field + ".x", Value: bytes.Repeat([]byte("g"), tt.gen), Generated: true}}, nil
			})
			if !errors.Is(err, ErrFieldsTooLarge) {
				t.Fatalf("Scan: %v, want ErrFieldsTooLarge", err)
			}
			if tt.gen == 0 && called {
				t.Fatal("the callback ran for a part whose head is over the limit")
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestScanBoundsMemory: a 20 MiB form made of part headers is refused
// with a 1 KiB limit once about the limit was read (plus the multipart
// reader's 4 KiB buffer), not after buffering it.
func TestScanBoundsMemory(t *testing.T) {
	const b = "B0undary"
	var parts []io.Reader
	for i := range 4 {
		parts = append(parts,
			strings.NewReader(fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"f%d\"\r\nX-Pad: ", b, i)),
			io.LimitReader(repeatReader('p'), 5<<20),
			strings.NewReader("\r\n\r\nv\r\n"))
	}
	parts = append(parts, strings.NewReader("--"+b+"--\r\n"))
	src := &countingReader{r: io.MultiReader(parts...)}
	_, err := Scan(src, b, Limits{FieldBytes: 1024, Parts: 10}, func(*File) ([]Field, error) {
		t.Fatal("unexpected file")
		return nil, nil
	})
	if !errors.Is(err, ErrFieldsTooLarge) {
		t.Fatalf("Scan: %v, want ErrFieldsTooLarge", err)
	}
	if max := int64(1024 + 4096 + 512); src.n > max {
		t.Fatalf("Scan read %d bytes of the form before refusing it, more than %d", src.n, max)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestScanLimitIsExact: a form that holds exactly FieldBytes passes, one
// byte less fails, even with a large file between the fields (whose
// bytes read with its head the limit must not count).
func TestScanLimitIsExact(t *testing.T) {
	body, boundary := form(t, func(w *multipart.Writer) {
		w.WriteField("a", "first")
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", `form-data; name="b"`)
		h.Set("X-Extra", strings.Repeat("e", 300))
		pw, _ := w.CreatePart(h)
		io.WriteString(pw, "second")
		fw, _ := w.CreateFormFile("photo", "p.jpg")
		fw.Write(bytes.Repeat([]byte("J"), 1<<20))
		w.WriteField("c", "") // its header is most of what it holds
	})
	// Reads of the form end where a boundary line starts and ends: the
	// multipart reader reads each part's header while Scan meters it,
	// and fills its read-ahead with the file's body while it reads the
	// file part's header.
	var cuts []int
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte("--"+boundary))
		if j < 0 {
			break
		}
		cuts = append(cuts, i+j, i+j+len(boundary)+4)
		i += j + 1
	}
	scan := func(limit int64) ([]Field, error) {
		return Scan(&cutReader{data: body, cuts: cuts}, boundary, Limits{FieldBytes: limit, Parts: 10}, func(f *File) ([]Field, error) {
			if _, err := io.Copy(io.Discard, f.Body); err != nil {
				return nil, err
			}
			return []Field{{Name: f.Field + ".desc", Value: bytes.Repeat([]byte("d"), 500), Generated: true}}, nil
		})
	}
	fields, err := scan(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var held int64
	for _, f := range fields {
		held += heldSize(f)
	}
	if _, err := scan(held); err != nil {
		t.Fatalf("limit %d, what the form holds: %v", held, err)
	}
	if _, err := scan(held - 1); !errors.Is(err, ErrFieldsTooLarge) {
		t.Fatalf("limit %d, one byte less than the form holds: %v, want ErrFieldsTooLarge", held-1, err)
	}
}

// cutReader reads data, never across one of cuts (offsets, ascending).
type cutReader struct {
	data []byte
	pos  int
	cuts []int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.pos == len(c.data) {
		return 0, io.EOF
	}
	end := len(c.data)
	for _, cut := range c.cuts {
		if cut > c.pos {
			end = cut
			break
		}
	}
	n := copy(p, c.data[c.pos:end])
	c.pos += n
	return n, nil
}
