package wsmsg

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"

	"github.com/sluiceproxy/sluice"
)

// newTestProxy serves p as the root package's tests do: with sluice's
// Server, or with net/http's when SLUICE_TEST_FRONT=net/http. The result
// is an httptest.Server whose Close closes the front server, its
// connections and the Proxy's idle upstream connections.
func newTestProxy(t *testing.T, p *sluice.Proxy) *httptest.Server {
	t.Helper()
	t.Cleanup(p.CloseIdleConnections)
	if os.Getenv("SLUICE_TEST_FRONT") == "net/http" {
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		return srv
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &sluice.Server{Handler: p}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: ln, Config: &http.Server{Handler: p}}
}

// client returns an http.Client whose idle connections are closed when
// the test ends.
func client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
