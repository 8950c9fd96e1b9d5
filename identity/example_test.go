package identity_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/identity"
)

func ExampleSigner() {
	signer := &identity.Signer{
		Names: []string{"X-User-Email"},
		Keys:  []identity.Key{{ID: "2026-11", Secret: []byte("a secret of at least 32 bytes....")}},
	}
	// The proxy side (usually the last Authorizer of a Chain).
	h := http.Header{"X-User-Email": {"alice@example.com"}}
	if err := signer.Sign(h); err != nil {
		fmt.Println(err)
	}
	// The upstream side, with the same configuration.
	id, err := signer.Verify(h)
	fmt.Println(id["x-user-email"], err)

	h.Set("X-User-Email", "mallory@example.com")
	_, err = signer.Verify(h)
	fmt.Println(err)
	// Output:
	// alice@example.com <nil>
	// identity: bad signature: signature mismatch
}

// A proxy signs the identity its Authorizers set; the upstream, which
// imports only package identity, checks it.
func ExampleSigner_proxy() {
	signer := &identity.Signer{
		Names: []string{"X-User"},
		Keys:  []identity.Key{{ID: "k1", Secret: []byte("a secret of at least 32 bytes....")}},
		JWT:   true,
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := signer.Verify(r.Header)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprintf(w, "hello %s", id["x-user"])
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	login := sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		pr.Out.Header.Set("X-User", "alice") // as an AuthRequest would
		return sluice.Allow, nil
	})
	sign := sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		return sluice.Allow, signer.Sign(pr.Out.Header) // an error fails closed
	})
	front := httptest.NewServer(&sluice.Proxy{
		Director:        &sluice.SingleHost{Target: target},
		IdentityHeaders: []string{"X-User", identity.DefaultSignatureHeader},
		Authorizer:      sluice.Chain(login, sign),
	})
	defer front.Close()

	for _, url := range []string{front.URL, app.URL} { // through the proxy, then around it
		req, _ := http.NewRequest("GET", url+"/", nil)
		req.Header.Set("X-User", "mallory")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Println(res.StatusCode, strings.TrimSpace(string(b)))
	}
	// Output:
	// 200 hello alice
	// 403 identity: bad signature: no X-Sluice-Identity-Signature header
}
