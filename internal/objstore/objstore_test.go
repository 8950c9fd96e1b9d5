package objstore

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/spool"
)

// recorder is an httptest upstream that records every request and
// answers parts with an ETag, completes with completeAnswer.
type recorder struct {
	mu             sync.Mutex
	reqs           []string
	parts          map[string]string
	completed      []Part
	completeStatus int
	completeAnswer string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = append(rec.reqs, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, r.ContentLength))
	switch r.Method {
	case http.MethodPut:
		if rec.parts == nil {
			rec.parts = map[string]string{}
		}
		rec.parts[r.URL.Path] = string(body)
		w.Header().Set("ETag", `"etag-`+strings.TrimPrefix(r.URL.Path, "/")+`"`)
	case http.MethodPost:
		var doc struct {
			XMLName xml.Name
			Parts   []Part `xml:"Part"`
		}
		if err := xml.Unmarshal(body, &doc); err != nil || doc.XMLName.Space != "http://s3.amazonaws.com/doc/2006-03-01/" {
			http.Error(w, "bad document", 400)
			return
		}
		rec.completed = doc.Parts
		if rec.completeStatus != 0 {
			w.WriteHeader(rec.completeStatus)
		}
		io.WriteString(w, rec.completeAnswer)
	case http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	}
}

func TestMultipartUpload(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		partSize  int64
		nURLs     int
		answer    string
		wantErr   error
		wantParts int
	}{
		{"one short part", 10, 4, 5, "<CompleteMultipartUploadResult/>", nil, 3},
		{"exact multiple", 12, 4, 3, "", nil, 3},
		{"empty body", 0, 4, 1, "", nil, 1},
		{"too many parts", 13, 4, 3, "", ErrTooManyParts, 0},
		{"error in 200", 4, 4, 1, "<Error><Code>InternalError</Code><Message>x</Message></Error>", &StatusError{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{completeAnswer: tt.answer}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			m := &Multipart{PartSize: tt.partSize, CompleteURL: srv.URL + "/complete", AbortURL: srv.URL + "/abort"}
			for i := range tt.nURLs {
				m.PartURLs = append(m.PartURLs, fmt.Sprintf("%s/%d", srv.URL, i+1))
			}
			data := strings.Repeat("x", tt.size)
			// Spills: part size > memory. Pipelined: two buffers.
			bufs := []*spool.Buffer{spool.New(2, t.TempDir()), spool.New(2, t.TempDir())}
			defer bufs[0].Close()
			defer bufs[1].Close()
			n, err := m.Upload(context.Background(), &Client{}, strings.NewReader(data), bufs)
			var se *StatusError
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Upload: %v", err)
			case errors.As(tt.wantErr, &se):
				if !errors.As(err, &se) || se.Code != "InternalError" {
					t.Fatalf("Upload: %v, want a StatusError InternalError", err)
				}
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Upload: %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if n != int64(tt.size) {
				t.Fatalf("Upload read %d bytes, want %d", n, tt.size)
			}
			var want []Part
			var joined string
			for i := range tt.wantParts {
				want = append(want, Part{PartNumber: i + 1, ETag: fmt.Sprintf(`"etag-%d"`, i+1)})
				joined += rec.parts[fmt.Sprintf("/%d", i+1)]
			}
			if diff := cmp.Diff(want, rec.completed); diff != "" {
				t.Fatalf("completed parts (-want +got):\n%s", diff)
			}
			if joined != data {
				t.Fatalf("parts joined = %q, want %q", joined, data)
			}
		})
	}
}

func TestPutStatusError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>`)
	}))
	defer srv.Close()
	_, err := (&Client{}).Put(context.Background(), "put", srv.URL+"/o", strings.NewReader("abc"), 3)
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("Put: %v, want *StatusError", err)
	}
	if diff := cmp.Diff(&StatusError{Op: "put", Status: 403, Code: "SignatureDoesNotMatch", Message: "no"}, se); diff != "" {
		t.Fatalf("error (-want +got):\n%s", diff)
	}
}

func TestDeleteNotFoundIsGone(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if err := (&Client{}).Delete(context.Background(), "abort", srv.URL+"/x"); err != nil {
		t.Fatalf("Delete of a missing thing: %v", err)
	}
}

func TestCompleteBody(t *testing.T) {
	b, err := CompleteBody([]Part{{1, `"a"`}, {2, `"b"`}})
	if err != nil {
		t.Fatal(err)
	}
	want := xml.Header + `<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>&#34;a&#34;</ETag></Part><Part><PartNumber>2</PartNumber><ETag>&#34;b&#34;</ETag></Part></CompleteMultipartUpload>`
	if string(b) != want {
		t.Fatalf("body\n got %s\nwant %s", b, want)
	}
}

func FuzzParseCompleteResult(f *testing.F) {
	f.Add([]byte(`<CompleteMultipartUploadResult><ETag>"x-2"</ETag></CompleteMultipartUploadResult>`))
	f.Add([]byte(`<?xml version="1.0"?><Error><Code>InternalError</Code></Error>`))
	f.Add([]byte("   \n  "))
	f.Add([]byte(`<Other/>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		err := ParseCompleteResult(body)
		if err == nil {
			return
		}
		var se *StatusError
		if errors.As(err, &se) && se.Status != http.StatusOK {
			t.Fatalf("status %d from a 200 body", se.Status)
		}
	})
}
