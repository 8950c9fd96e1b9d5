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
	go func() { done <- serve(ctx, ln, "", 5*time.Second, netHTTP) }()
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
	if err := serve(context.Background(), ln, "not a url", time.Second, false); err == nil {
		t.Fatal("serve accepted a bad -upstream")
	}
}
