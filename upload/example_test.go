package upload_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/upload"
)

// An application behind a proxy with an Upload route: it answers the
// pre-authorization with a Plan, then gets the request without its body
// and checks the description of the stored object. The application needs
// only package upload; the proxy and the store are here to run it.
func Example() {
	key := []byte("a secret shared by proxy and application")
	stored := make(chan []byte, 1)
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // a presigned PUT, in real life to S3
		stored <- b
	}))
	defer store.Close()

	// The application.
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /files/{name}/authorize", func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := upload.VerifyPreauthorize(r, key); err != nil {
			http.Error(w, "not from the proxy", http.StatusForbidden)
			return
		}
		id := "files/" + r.PathValue("name")
		json.NewEncoder(w).Encode(upload.Plan{MaxSize: 1 << 20, Objects: []upload.Object{
			{ID: id, PutURL: store.URL + "/" + id},
		}})
	})
	mux.HandleFunc("PUT /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		claims, err := upload.Verify(r, key)
		if err != nil || claims.Method != r.Method || claims.Path != r.URL.Path {
			http.Error(w, "no valid description", http.StatusForbidden)
			return
		}
		f := claims.Files[0]
		fmt.Printf("app: %s is %s, %d bytes\n", f.Name, f.RemoteID, f.Size)
		w.WriteHeader(http.StatusCreated)
	})
	app := httptest.NewServer(mux)
	defer app.Close()

	// The proxy.
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	defer p.CloseIdleConnections()
	p.Handle("PUT /files/{name}", &sluice.Upload{
		Preauthorizer: sluice.PreauthorizeUpstream("/authorize", key),
		SigningKey:    key,
	})
	proxy := httptest.NewServer(p)
	defer proxy.Close()

	req, _ := http.NewRequest(http.MethodPut, proxy.URL+"/files/notes.txt", strings.NewReader("hello"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Println("client:", res.Status)
	fmt.Printf("store: %q\n", <-stored)
	// Output:
	// app: notes.txt is files/notes.txt, 5 bytes
	// client: 201 Created
	// store: "hello"
}
