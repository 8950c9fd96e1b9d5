package idle

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/bench/internal/origin"
)

func TestOpenAndAlive(t *testing.T) {
	srv := httptest.NewServer(origin.Handler(origin.Config{}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		open func() (net.Conn, error)
	}{
		{"http", func() (net.Conn, error) { return OpenHTTP(addr, "/small", 5*time.Second) }},
		{"websocket", func() (net.Conn, error) { return OpenWebSocket(addr, "/ws", 5*time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.open()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !Alive(c) {
				t.Fatal("Alive = false for a connection the server keeps")
			}
		})
	}
	// Once the server has closed them, the same connections are not alive.
	c, err := OpenHTTP(addr, "/small", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.CloseClientConnections()
	deadline := time.Now().Add(5 * time.Second)
	for Alive(c) {
		if time.Now().After(deadline) {
			t.Fatal("Alive = true 5 s after the server closed the connection")
		}
	}
}

// A server that does not keep the connection, or does not echo, fails the
// open: the scenario must not count it as an idle connection.
func TestOpenRefusesWhatIsNotIdle(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	mux.HandleFunc("/404", http.NotFound)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK) // no upgrade
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		open func() (net.Conn, error)
	}{
		{"connection close", func() (net.Conn, error) { return OpenHTTP(addr, "/close", 5*time.Second) }},
		{"status 404", func() (net.Conn, error) { return OpenHTTP(addr, "/404", 5*time.Second) }},
		{"no upgrade", func() (net.Conn, error) { return OpenWebSocket(addr, "/ws", 5*time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.open()
			if err == nil {
				c.Close()
				t.Fatal("open succeeded")
			}
		})
	}
}
