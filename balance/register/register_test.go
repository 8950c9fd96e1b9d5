package register_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/balance/register"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestClientRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		c    register.Client
		want string
	}{
		{"no endpoint", register.Client{URL: "http://127.0.0.1:9"}, "endpoint"},
		{"endpoint not a URL", register.Client{Endpoint: "lb:8079/register", URL: "http://127.0.0.1:9"}, "endpoint"},
		{"endpoint without host", register.Client{Endpoint: "http:///register", URL: "http://127.0.0.1:9"}, "endpoint"},
		{"no target URL", register.Client{Endpoint: "http://127.0.0.1:9/register"}, "target URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A canceled context: Run must refuse before sending anything.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := tt.c.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want an error naming the %s", err, tt.want)
			}
		})
	}
}

// fakeRegistrar records what a Client sends and answers with answer.
type fakeRegistrar struct {
	mu     sync.Mutex
	got    []string // method and body
	answer register.Registration
}

func (f *fakeRegistrar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.got = append(f.got, r.Method+" "+r.Header.Get("Authorization")+" "+string(bytes.TrimSpace(b)))
	f.mu.Unlock()
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	json.NewEncoder(w).Encode(f.answer)
}

// TestClientProtocol: what a Client sends (JSON registration with the TTL
// in whole seconds, bearer secret, then a DELETE by ID), and that it
// logs the Registrar's warning.
func TestClientProtocol(t *testing.T) {
	leaktest.Check(t)
	f := &fakeRegistrar{
		answer: register.Registration{ID: "web-1", URL: "http://127.0.0.1:9", TTLSeconds: 10, Warning: "ttl 90 s capped to 10 s"}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	warned := make(chan string, 1)
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("warning")) {
			select {
			case warned <- string(p):
			default:
			}
		}
		return len(p), nil
	}), nil))
	c := &register.Client{Endpoint: srv.URL, ID: "web-1", URL: "http://127.0.0.1:9", Weight: 2,
		HealthPath: "/status", TTL: 90 * time.Second, Secret: "k", Logger: logger}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case line := <-warned:
		if !strings.Contains(line, "capped to 10 s") {
			t.Errorf("logged %q, want the Registrar's warning", line)
		}
	case <-time.After(10 * time.Second):
		t.Error("the Registrar's warning was not logged")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{
		`POST Bearer k {"id":"web-1","url":"http://127.0.0.1:9","weight":2,"ttl":90,"health_path":"/status"}`,
		`DELETE Bearer k {"id":"web-1","url":""}`,
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff(want, f.got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
