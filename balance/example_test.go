package balance_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balance"
)

// nameServer starts a demo upstream that answers its name.
func nameServer(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
}

func fetchBody(url string, header ...string) string {
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// A Pool spreads requests over its targets; here round-robin, the default.
func ExamplePool() {
	ctx := context.Background()
	pool := &balance.Pool{}
	for _, name := range []string{"a", "b", "c"} {
		b := nameServer(name)
		defer b.Close()
		if err := pool.Add(ctx, balance.Member{ID: name, URL: b.URL}); err != nil {
			fmt.Println(err)
			return
		}
	}
	proxy := httptest.NewServer(&sluice.Proxy{Director: pool})
	defer proxy.Close()

	var got []string
	for range 6 {
		got = append(got, fetchBody(proxy.URL))
	}
	fmt.Println(strings.Join(got, " "))
	// Output: a b c a b c
}

// ConsistentHash keeps every request of one user on one target, and moves
// only that target's users when it leaves.
func ExampleConsistentHash() {
	ctx := context.Background()
	pool := &balance.Pool{Policy: balance.ConsistentHash(balance.HashHeader("X-User"))}
	for _, name := range []string{"a", "b", "c", "d"} {
		b := nameServer(name)
		defer b.Close()
		if err := pool.Add(ctx, balance.Member{ID: name, URL: b.URL}); err != nil {
			fmt.Println(err)
			return
		}
	}
	proxy := httptest.NewServer(&sluice.Proxy{Director: pool})
	defer proxy.Close()

	first := fetchBody(proxy.URL, "X-User", "alice")
	same := true
	for range 5 {
		same = same && fetchBody(proxy.URL, "X-User", "alice") == first
	}
	fmt.Println("alice always on one target:", same)
	// Output: alice always on one target: true
}

// StickyCookie keeps a browser on the target it first reached: the
// response sets a cookie that later requests carry.
func ExampleStickyCookie() {
	ctx := context.Background()
	pool := &balance.Pool{Policy: balance.StickyCookie("lb", nil)}
	for _, name := range []string{"a", "b", "c"} {
		b := nameServer(name)
		defer b.Close()
		if err := pool.Add(ctx, balance.Member{ID: name, URL: b.URL}); err != nil {
			fmt.Println(err)
			return
		}
	}
	proxy := httptest.NewServer(&sluice.Proxy{Director: pool})
	defer proxy.Close()

	res, err := http.Get(proxy.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	first, _ := io.ReadAll(res.Body)
	res.Body.Close()
	cookie, _, _ := strings.Cut(res.Header.Get("Set-Cookie"), ";")
	same := true
	for range 5 {
		same = same && fetchBody(proxy.URL, "Cookie", cookie) == string(first)
	}
	fmt.Println("first target:", string(first))
	fmt.Println("the cookie keeps the client there:", same)
	// Output:
	// first target: a
	// the cookie keeps the client there: true
}

// StripPrefix removes a path prefix before the target's own path is
// joined in front.
func ExamplePool_stripPrefix() {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	defer target.Close()
	pool := &balance.Pool{StripPrefix: "/app"}
	if err := pool.Add(context.Background(), balance.Member{URL: target.URL + "/v2"}); err != nil {
		fmt.Println(err)
		return
	}
	proxy := httptest.NewServer(&sluice.Proxy{Director: pool})
	defer proxy.Close()

	for _, path := range []string{"/app/users", "/app", "/other"} {
		fmt.Println(path, "->", fetchBody(proxy.URL+path))
	}
	// Output:
	// /app/users -> /v2/users
	// /app -> /v2/
	// /other -> /v2/other
}

// Targets register themselves through a Registrar (a register.Client in
// the target's process keeps the registration alive); here one
// registration sent by hand.
func ExampleRegistrar() {
	pool := &balance.Pool{}
	registrar := httptest.NewServer(&balance.Registrar{Pool: pool, Secret: "s3cret", TTL: 30 * time.Second})
	defer registrar.Close()

	req, _ := http.NewRequest("POST", registrar.URL+"/register",
		strings.NewReader(`{"id": "web-1", "url": "http://127.0.0.1:9001", "weight": 2}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Println(res.Status)
	for _, s := range pool.Stats() {
		fmt.Println(s.ID, s.URL, s.Weight, s.Healthy)
	}
	// Output:
	// 200 OK
	// web-1 http://127.0.0.1:9001 2 true
}
