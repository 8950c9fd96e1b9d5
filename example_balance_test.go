package sluice_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
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
	pool := &sluice.Pool{}
	for _, name := range []string{"a", "b", "c"} {
		b := nameServer(name)
		defer b.Close()
		pool.Add(ctx, sluice.Member{ID: name, URL: b.URL}, 0)
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
	pool := &sluice.Pool{Policy: sluice.ConsistentHash(sluice.HashHeader("X-User"))}
	for _, name := range []string{"a", "b", "c", "d"} {
		b := nameServer(name)
		defer b.Close()
		pool.Add(ctx, sluice.Member{ID: name, URL: b.URL}, 0)
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

// Targets register themselves through a Registrar; a Registrant keeps the
// registration alive and removes it when its context ends.
func ExampleRegistrar() {
	pool := &sluice.Pool{}
	registrar := httptest.NewServer(&sluice.Registrar{Pool: pool, Secret: "s3cret", TTL: 30 * time.Second})
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
