package sluice

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

type sendfileResult struct {
	Status      int
	Body        string
	ContentType string
	Range       string
	Leaked      string // the sendfile header as the client saw it
	Cookie      string
}

func getSendfile(t *testing.T, url, rangeHdr string) sendfileResult {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	res, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return sendfileResult{res.StatusCode, string(b), res.Header.Get("Content-Type"),
		res.Header.Get("Content-Range"), res.Header.Get("X-Accel-Redirect"), res.Header.Get("Set-Cookie")}
}

func TestSendfileFiles(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "report.csv"), []byte("a,b,c\n1,2,3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/plain":
			io.WriteString(w, "no redirect")
			return
		case "/download":
			w.Header().Set("X-Accel-Redirect", "/report.csv")
		default:
			w.Header().Set("X-Accel-Redirect", r.URL.Query().Get("f"))
		}
		w.Header().Set("Content-Type", "text/csv")
		w.Header().Set("Set-Cookie", "seen=1")
		io.WriteString(w, "this body is replaced")
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", &Sendfile{Dir: dir})

	tests := []struct {
		name, path, rangeHdr string
		want                 sendfileResult
	}{
		{"file", "/download", "", sendfileResult{200, "a,b,c\n1,2,3\n", "text/csv", "", "", "seen=1"}},
		{"range", "/download", "bytes=6-10", sendfileResult{206, "1,2,3", "text/csv", "bytes 6-10/12", "", "seen=1"}},
		{"escaped name", "/x?f=/report%2ecsv", "", sendfileResult{200, "a,b,c\n1,2,3\n", "text/csv", "", "", "seen=1"}},
		{"dot-dot stays inside", "/x?f=/../" + filepath.Base(outside) + "/secret", "", sendfileResult{404, "404 Not Found\n", "text/plain; charset=utf-8", "", "", "seen=1"}},
		{"symlink out refused", "/x?f=/link", "", sendfileResult{502, "502 Bad Gateway\n", "text/plain; charset=utf-8", "", "", "seen=1"}},
		{"missing", "/x?f=/nope", "", sendfileResult{404, "404 Not Found\n", "text/plain; charset=utf-8", "", "", "seen=1"}},
		{"directory", "/x?f=/", "", sendfileResult{404, "404 Not Found\n", "text/plain; charset=utf-8", "", "", "seen=1"}},
		{"no header", "/plain", "", sendfileResult{200, "no redirect", "text/plain; charset=utf-8", "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, getSendfile(t, ps.URL+tt.path, tt.rangeHdr)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestSendfileFetch(t *testing.T) {
	leaktest.Check(t)
	store := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Accel-Redirect", "/loop") // must be ignored
		http.ServeContent(w, r, "obj.bin", fixedTime, stringsReader("0123456789"))
	})
	storeURL, _ := url.Parse(store.URL)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/internal/blob":
			if r.Method != "GET" || r.URL.RawQuery != "v=2" || r.Header.Get("Content-Length") != "" {
				http.Error(w, "bad internal fetch "+r.Method+" "+r.URL.RawQuery, 500)
				return
			}
			w.Header().Set("X-Accel-Redirect", "/loop") // must be ignored
			http.ServeContent(w, r, "blob", fixedTime, stringsReader("internal blob"))
		case "/internal":
			w.Header().Set("X-Accel-Redirect", "/internal/blob?v=2")
		case "/store":
			w.Header().Set("X-Accel-Redirect", store.URL+"/bucket/obj?X-Amz-Signature=abc")
			w.Header().Set("Content-Type", "application/x-thing")
		case "/elsewhere":
			w.Header().Set("X-Accel-Redirect", "http://127.0.0.1:1/evil")
		default:
			http.Error(w, "loop followed", 500)
		}
	})
	ps, p, _ := newProxy(t, up.URL)
	p.Handle("/", &Sendfile{AllowURL: func(u *url.URL) bool { return u.Host == storeURL.Host }})
	tests := []struct {
		name, path, rangeHdr string
		want                 sendfileResult
	}{
		{"internal", "/internal", "", sendfileResult{200, "internal blob", "text/plain; charset=utf-8", "", "", ""}},
		{"internal range", "/internal", "bytes=0-7", sendfileResult{206, "internal", "text/plain; charset=utf-8", "bytes 0-7/13", "", ""}},
		{"allowed url", "/store", "bytes=2-4", sendfileResult{206, "234", "application/x-thing", "bytes 2-4/10", "", ""}},
		{"refused url", "/elsewhere", "", sendfileResult{502, "502 Bad Gateway\n", "text/plain; charset=utf-8", "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, getSendfile(t, ps.URL+tt.path, tt.rangeHdr)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

var fixedTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func stringsReader(s string) io.ReadSeeker { return strings.NewReader(s) }
