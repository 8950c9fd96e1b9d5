package sluice_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/upload"
)

// bucket is a stand-in for object storage in the examples: it keeps what
// is PUT to it and serves it back with ranges. Real deployments use S3 and
// presigned URLs; see examples/direct-upload.
type bucket struct {
	mu      sync.Mutex
	objects map[string][]byte
}

func (b *bucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		data, _ := io.ReadAll(r.Body)
		b.objects[r.URL.Path] = data
		w.Header().Set("ETag", `"1"`)
	case http.MethodGet:
		data, ok := b.objects[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(data)))
	}
}

// The application pre-authorizes uploads (here with a Go func; usually
// with PreauthorizeUpstream, an HTTP subrequest to the application) and
// receives the request without the body, with a signed description of
// the stored object that it checks with package upload.
func ExampleUpload() {
	key := []byte("a secret shared by proxy and application")
	store := httptest.NewServer(&bucket{objects: map[string][]byte{}})
	defer store.Close()

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, err := upload.Verify(r, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		f := claims.Files[0]
		fmt.Printf("app: %s %s, body %d bytes\n", r.Method, r.URL.Path, r.ContentLength)
		fmt.Printf("app: stored %s (%d bytes) as %s, sha256 %s\n", f.Name, f.Size, f.RemoteID, f.SHA256[:16])
		w.WriteHeader(http.StatusCreated)
	}))
	defer app.Close()

	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer p.CloseIdleConnections()
	p.Handle("PUT /files/{name}", &sluice.Upload{
		SigningKey: key,
		Hashes:     []string{"sha256"},
		Preauthorizer: sluice.PreauthorizerFunc(func(pr *sluice.ProxyRequest) (*upload.Plan, error) {
			id := "uploads/" + pr.In.PathValue("name")
			return &upload.Plan{MaxSize: 1 << 20, Objects: []upload.Object{
				{ID: id, PutURL: store.URL + "/" + id}, // a presigned URL in real life
			}}, nil
		}),
	})
	proxy := httptest.NewServer(p)
	defer proxy.Close()

	req, _ := http.NewRequest(http.MethodPut, proxy.URL+"/files/report.txt", strings.NewReader("hello world"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Println("client:", res.Status)
	// Output:
	// app: PUT /files/report.txt, body 0 bytes
	// app: stored report.txt (11 bytes) as uploads/report.txt, sha256 b94d27b9934d3e08
	// client: 201 Created
}

// The pre-authorization is usually a subrequest to the application
// itself: the same method and path with "/authorize" appended, no body,
// the declared length in Sluice-Upload-Length, and a token proving it
// comes from the proxy. Any answer but 200 is relayed to the client.
func ExamplePreauthorizeUpstream() {
	key := []byte("a secret shared by proxy and application")
	store := httptest.NewServer(&bucket{objects: map[string][]byte{}})
	defer store.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("PUT /avatars/{user}/authorize", func(w http.ResponseWriter, r *http.Request) {
		method, path, err := upload.VerifyPreauthorize(r, key)
		if err != nil {
			http.Error(w, "not from the proxy", http.StatusForbidden)
			return
		}
		fmt.Println("app: authorize", method, path, "length", r.Header.Get(upload.HeaderLength))
		if r.PathValue("user") != "ann" {
			http.Error(w, "not your avatar", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(upload.Plan{MaxSize: 1 << 20, Objects: []upload.Object{
			{ID: "avatars/ann", PutURL: store.URL + "/avatars/ann"},
		}})
	})
	mux.HandleFunc("PUT /avatars/{user}", func(w http.ResponseWriter, r *http.Request) {
		claims, err := upload.Verify(r, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Println("app: recorded", claims.Files[0].RemoteID, claims.Files[0].Size, "bytes")
	})
	app := httptest.NewServer(mux)
	defer app.Close()

	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer p.CloseIdleConnections()
	p.Handle("PUT /avatars/{user}", &sluice.Upload{
		Preauthorizer: sluice.PreauthorizeUpstream("/authorize", key),
		SigningKey:    key,
	})
	proxy := httptest.NewServer(p)
	defer proxy.Close()

	for _, user := range []string{"ann", "bob"} {
		req, _ := http.NewRequest(http.MethodPut, proxy.URL+"/avatars/"+user, strings.NewReader("PNG..."))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Println(strings.TrimSpace("client: " + res.Status + " " + strings.TrimSpace(string(body))))
	}
	// Output:
	// app: authorize PUT /avatars/ann length 6
	// app: recorded avatars/ann 6 bytes
	// client: 200 OK
	// app: authorize PUT /avatars/bob length 6
	// client: 403 Forbidden not your avatar
}
