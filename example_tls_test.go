package sluice_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/sluiceproxy/sluice"
)

// protoOf fetches url with c and prints the body.
func protoOf(c *http.Client, url string) {
	res, err := c.Get(url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	fmt.Print(string(b))
}

// Server serves HTTPS, HTTP/2 or HTTP/1.1 as ALPN negotiates. Here with
// a certificate borrowed from httptest; in production, files given to
// ListenAndServeTLS, or TLSConfig.GetCertificate.
func ExampleServer_TLSListener() {
	ts := httptest.NewTLSServer(nil)
	cert, roots := ts.TLS.Certificates[0], ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()

	srv := &sluice.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello over", r.Proto)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	tl, err := srv.TLSListener(ln, "", "") // the certificate is in TLSConfig
	if err != nil {
		panic(err)
	}
	go srv.Serve(tl) // or sluice.Serve(ctx, srv, tl, 0)
	defer srv.Close()

	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer h2.CloseIdleConnections()
	defer h1.CloseIdleConnections()
	protoOf(&http.Client{Transport: h2}, "https://"+ln.Addr().String()+"/")
	protoOf(&http.Client{Transport: h1}, "https://"+ln.Addr().String()+"/")
	// Output:
	// hello over HTTP/2.0
	// hello over HTTP/1.1
}

// With Protocols allowing it, a cleartext listener serves HTTP/2 to
// clients with prior knowledge (h2c) next to HTTP/1.1.
func ExampleServer_h2c() {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &sluice.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello over", r.Proto)
		}),
		Protocols: &protocols,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &h2c}
	defer tr.CloseIdleConnections()
	protoOf(&http.Client{Transport: tr}, "http://"+ln.Addr().String()+"/")
	protoOf(http.DefaultClient, "http://"+ln.Addr().String()+"/")
	// Output:
	// hello over HTTP/2.0
	// hello over HTTP/1.1
}
