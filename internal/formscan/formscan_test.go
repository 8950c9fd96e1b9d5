package formscan

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
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
	fields, err := Scan(bytes.NewReader(body), boundary, Limits{FieldBytes: 100, Parts: 10}, func(f *File) ([]Field, error) {
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
		}, Limits{FieldBytes: 100, Parts: 4}, ErrTooManyParts},
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
		var total int
		for _, fl := range fields {
			total += len(fl.Value)
		}
		if total > 1024 || len(fields) > 20 {
			t.Fatalf("limits exceeded: %d bytes, %d fields", total, len(fields))
		}
	})
}
