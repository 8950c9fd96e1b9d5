package sluice

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestServeShutsDownGracefully(t *testing.T) {
	leaktest.Check(t)
	release := make(chan struct{})
	started := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	u, _ := url.Parse(up.URL)
	p := &Proxy{Director: &SingleHost{Target: u}, Logger: (&logRecorder{}).logger()}
	t.Cleanup(p.CloseIdleConnections)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, &http.Server{Handler: p}, ln, 5*time.Second) }()

	got := make(chan string, 1)
	go func() {
		res, err := client(t).Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- string(b)
	}()
	<-started
	cancel() // shutdown begins with a request in flight
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting 5s after shutdown began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if body := <-got; body != "finished" {
		t.Errorf("in-flight request got %q, want it to finish", body)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v", err)
	}
}
