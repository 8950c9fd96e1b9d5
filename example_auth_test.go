package sluice_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
)

// fetch sends req and returns the status and body as one line.
func fetch(c *http.Client, req *http.Request) string {
	res, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(b)))
}

func ExampleAuthRequest() {
	// The auth service: a valid token gets 200 and the user's name.
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer alice-token" {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Auth-User", "alice")
	}))
	defer auth.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %q", r.Header.Get("X-Auth-User"))
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	p := &sluice.Proxy{
		Director:        &sluice.SingleHost{Target: target},
		IdentityHeaders: []string{"X-Auth-User"}, // never taken from a client
		Authorizer: &sluice.AuthRequest{
			URL:                 auth.URL,
			AuthResponseHeaders: []string{"X-Auth-User"},
			CacheKey:            sluice.HeaderKey("Authorization"),
			CacheTTL:            10 * time.Second,
		},
	}
	front := httptest.NewServer(p)
	defer front.Close()

	for _, token := range []string{"", "Bearer alice-token"} {
		req, _ := http.NewRequest("GET", front.URL+"/", nil)
		req.Header.Set("X-Auth-User", "root") // a spoofing attempt
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		fmt.Println(fetch(http.DefaultClient, req))
	}
	// Output:
	// 401 who are you?
	// 200 hello "alice"
}

func ExampleChain() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-User"))
	}))
	defer app.Close()
	target, _ := url.Parse(app.URL)

	apiKey := sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
		if pr.In.Header.Get("X-Api-Key") != "k1" {
			return sluice.Deny(http.StatusUnauthorized, "bad key"), nil
		}
		pr.Out.Header.Set("X-User", "service-1")
		return sluice.Allow, nil
	})
	p := &sluice.Proxy{
		Director:        &sluice.SingleHost{Target: target},
		IdentityHeaders: []string{"X-User"},
		// Cheap checks first: the first deny wins.
		Authorizer: sluice.Chain(sluice.AllowFrom(netip.MustParsePrefix("127.0.0.0/8")), apiKey),
	}
	front := httptest.NewServer(p)
	defer front.Close()

	for _, key := range []string{"nope", "k1"} {
		req, _ := http.NewRequest("GET", front.URL+"/", nil)
		req.Header.Set("X-Api-Key", key)
		fmt.Println(fetch(http.DefaultClient, req))
	}
	// Output:
	// 401 bad key
	// 200 hello service-1
}
