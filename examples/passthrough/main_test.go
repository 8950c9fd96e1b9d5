package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestStarterProxiesDemo(t *testing.T) {
	for _, server := range []string{"sluice", "net/http"} {
		t.Run(server, func(t *testing.T) { testStarter(t, server == "net/http") })
	}
}

func testStarter(t *testing.T, netHTTP bool) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, config{timeout: 5 * time.Second, netHTTP: netHTTP}) }()
	base := "http://" + ln.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	res, err := c.Get(base + "/small")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if len(b) != 100 || res.StatusCode != 200 {
		t.Errorf("/small: %d, %d bytes", res.StatusCode, len(b))
	}

	// Server-sent events arrive one by one, not at the end.
	res, err = c.Get(base + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	res.Body.Close()
	if err != nil || !strings.HasPrefix(line, "data: tick 0") {
		t.Errorf("/sse first line %q (%v)", line, err)
	}

	// An upload comes back intact.
	body := strings.Repeat("sluice", 100000)
	res, err = c.Post(base+"/echo", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != body {
		t.Errorf("/echo returned %d bytes, want %d", len(b), len(body))
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestBadUpstreamFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), ln, config{upstream: "not a url", timeout: time.Second}); err == nil {
		t.Fatal("serve accepted a bad -upstream")
	}
}

// -deny answers 403 for its pattern however the client spells the path,
// and 400 for spellings that have no canonical form.
func TestDenyFlag(t *testing.T) {
	for _, server := range []string{"sluice", "net/http"} {
		t.Run(server, func(t *testing.T) {
			leaktest.Check(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- serve(ctx, ln, config{timeout: 5 * time.Second, netHTTP: server == "net/http", deny: []string{"/admin/", "POST /small"}})
			}()
			for _, tc := range []struct {
				method, path string
				status       int
			}{
				{"GET", "/small", 200},
				{"POST", "/small", 403},
				{"GET", "/admin/", 403},
				{"GET", "/admin", 403},
				{"GET", "/ADMIN/../admin/x", 403},
				{"GET", "/small/../admin/x", 403},
				{"GET", "/%61dmin/x", 403},
				{"GET", "//admin/x", 403},
				{"GET", "/admin%2Fx", 400},
				{"GET", "/admin;a/x", 400},
				{"GET", "/a/..%5Cadmin/x", 400},
				{"GET", "/../admin/x", 400},
			} {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(c, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("%s %s: %v", tc.method, tc.path, err)
				}
				res.Body.Close()
				c.Close()
				if res.StatusCode != tc.status {
					t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	if err := checkPattern("GET /{bad"); err == nil {
		t.Error("-deny accepted a bad pattern")
	}
}
