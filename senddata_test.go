package sluice

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestSendURL(t *testing.T) {
	leaktest.Check(t)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/obj" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
	}))
	defer store.Close()
	storeURL, _ := url.Parse(store.URL)
	tests := []struct {
		name       string
		method     string
		target     string // the app's Sluice-Send-Url; "" for none
		appStatus  int
		reqHeader  map[string]string
		allow      func(*url.URL) bool
		wantStatus int
		wantBody   string
	}{
		{"full object", "GET", "/obj", 200, nil, nil, 200, "0123456789"},
		{"range", "GET", "/obj", 200, map[string]string{"Range": "bytes=2-4"}, nil, 206, "234"},
		{"unsatisfiable range", "GET", "/obj", 200, map[string]string{"Range": "bytes=20-"}, nil, 416, ""},
		{"conditional", "GET", "/obj", 200, map[string]string{"If-None-Match": `"v1"`}, nil, 304, ""},
		{"head", "HEAD", "/obj", 200, nil, nil, 200, ""},
		{"no header: app body", "GET", "", 200, nil, nil, 200, "app body"},
		{"non-200 from app: header dropped, app body", "GET", "/obj", 404, nil, nil, 404, "app body"},
		{"store 404", "GET", "/missing", 200, nil, nil, 502, ""},
		{"host not allowed", "GET", "/obj", 200, nil, func(u *url.URL) bool { return u.Host != storeURL.Host }, 502, ""},
		{"not http", "GET", "file:///etc/passwd", 200, nil, nil, 502, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(HeaderSendURL) != "" {
					t.Error("client's Sluice-Send-Url reached the app")
				}
				switch {
				case strings.Contains(tt.target, "://"):
					w.Header().Set(HeaderSendURL, tt.target)
				case tt.target != "":
					w.Header().Set(HeaderSendURL, store.URL+tt.target)
				}
				w.Header().Set("Cache-Control", "private")
				w.WriteHeader(tt.appStatus)
				io.WriteString(w, "app body")
			}))
			defer app.Close()
			u, _ := url.Parse(app.URL)
			p := &Proxy{Director: SingleHost(u, false)}
			defer p.CloseIdleConnections()
			p.Handle("/", &SendURL{Allow: tt.allow})
			srv := httptest.NewServer(p)
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL+"/x", nil)
			req.Header.Set(HeaderSendURL, "http://evil.example/")
			for k, v := range tt.reqHeader {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus || (tt.wantBody != "" && string(body) != tt.wantBody) {
				t.Fatalf("got %d %q, want %d %q", res.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if res.Header.Get(HeaderSendURL) != "" {
				t.Fatal("Sluice-Send-Url reached the client")
			}
			if res.StatusCode < 300 && res.Header.Get("Cache-Control") != "private" {
				t.Fatalf("app header lost: %v", res.Header)
			}
			if tt.method == "HEAD" && res.Header.Get("Content-Length") != "10" {
				t.Fatalf("HEAD: Content-Length %q, want the object's 10", res.Header.Get("Content-Length"))
			}
		})
	}
}
