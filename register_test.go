package sluice

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestRegistrar(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet()}
	reg := &Registrar{Pool: pool, Secret: "s3cret", TTL: time.Minute, Allow: func(u *url.URL) error {
		if u.Hostname() != "127.0.0.1" {
			return errors.New("targets must be on loopback")
		}
		return nil
	}}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	c := client(t)
	auth := "Bearer s3cret"

	tests := []struct {
		name       string
		method     string
		query      string
		ctype      string
		body       string
		auth       string
		wantStatus int
		wantBody   string // substring
		wantIDs    []string
	}{
		{"no secret", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001"}`, "", 401, "secret", nil},
		{"wrong secret", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001"}`, "Bearer s3cres", 401, "secret", nil},
		{"json", "POST", "", "application/json", `{"url":"http://127.0.0.1:9001","weight":2}`, auth, 200, `"ttl": 60`, []string{"http://127.0.0.1:9001"}},
		{"ttl shortened", "POST", "", "", `{"id":"b","url":"http://127.0.0.1:9002","ttl":5}`, auth, 200, `"ttl": 5`, []string{"b", "http://127.0.0.1:9001"}},
		{"query", "POST", "?url=http://127.0.0.1:9003&id=c", "", "", auth, 200, `"id": "c"`, []string{"b", "c", "http://127.0.0.1:9001"}},
		{"form", "POST", "", "application/x-www-form-urlencoded", "url=http%3A%2F%2F127.0.0.1%3A9004&id=d&weight=3", auth, 200, `"weight": 3`, []string{"b", "c", "d", "http://127.0.0.1:9001"}},
		{"not allowed", "POST", "", "", `{"url":"http://10.1.1.1:80"}`, auth, 403, "loopback", nil},
		{"bad scheme", "POST", "", "", `{"url":"ftp://127.0.0.1"}`, auth, 400, "scheme", nil},
		{"unknown field", "POST", "", "", `{"url":"http://127.0.0.1:1","color":"red"}`, auth, 400, "unknown field", nil},
		{"trailing data", "POST", "", "", `{"url":"http://127.0.0.1:1"} {}`, auth, 400, "trailing", nil},
		{"too large", "POST", "", "", `{"url":"http://127.0.0.1:1","id":"` + strings.Repeat("x", 5000) + `"}`, auth, 400, "4 KiB", nil},
		{"negative ttl", "POST", "", "", `{"url":"http://127.0.0.1:1","ttl":-1}`, auth, 400, "negative", nil},
		{"delete by id", "DELETE", "?id=c", "", "", auth, 204, "", []string{"b", "d", "http://127.0.0.1:9001"}},
		{"delete by json url", "DELETE", "", "", `{"url":"http://127.0.0.1:9001"}`, auth, 204, "", []string{"b", "d"}},
		{"delete without id", "DELETE", "", "", "", auth, 400, "want id", nil},
		{"list", "GET", "", "", "", auth, 200, `"id": "b"`, []string{"b", "d"}},
		{"method", "PATCH", "", "", "", auth, 405, "not allowed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+"/register"+tt.query, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus || !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("%d %s, want %d with %q", res.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if tt.wantIDs != nil {
				var ids []string
				for _, s := range pool.Stats() {
					ids = append(ids, s.ID)
				}
				if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
					t.Errorf("members (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestRegistrantHeartbeatAndDeregister(t *testing.T) {
	leaktest.Check(t)
	pool := &Pool{Logger: quiet(), SyncInterval: 5 * time.Millisecond}
	runPool(t, pool)
	// A 1 s TTL: the registrant renews every ~333 ms.
	srv := httptest.NewServer(&Registrar{Pool: pool, Secret: "k", TTL: time.Second})
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registrant{Endpoint: srv.URL, Secret: "k", Member: Member{ID: "self", URL: "http://127.0.0.1:9"}, Logger: quiet()}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	eventually(t, "registration", func() bool { return len(pool.Stats()) == 1 })
	// Past several TTLs, the heartbeats keep it.
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if len(pool.Stats()) != 1 {
			t.Fatal("registration lapsed despite heartbeats")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(pool.Stats()); n != 0 {
		t.Errorf("%d members after the registrant stopped, want 0 (deregistered)", n)
	}
}

func TestRegistrantBadEndpoint(t *testing.T) {
	if err := (&Registrant{Endpoint: ""}).Run(context.Background()); err == nil {
		t.Error("empty endpoint accepted")
	}
}

func FuzzParseRegistration(f *testing.F) {
	f.Add([]byte(`{"url":"http://127.0.0.1:9001","weight":2,"ttl":30,"id":"a"}`))
	f.Add([]byte(`{"url":""}`))
	f.Add([]byte(`{"url":"http://h"} x`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"ttl":-5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, err := parseRegistration(body)
		if err != nil {
			return
		}
		if reg.TTL < 0 || len(reg.URL) > 2048 {
			t.Fatalf("accepted %+v", reg)
		}
		// What parses re-encodes and parses to the same value.
		b, _ := json.Marshal(reg)
		again, err := parseRegistration(b)
		if err != nil || again != reg {
			t.Fatalf("round trip: %+v -> %s -> %+v, %v", reg, b, again, err)
		}
		m := Member{ID: reg.ID, URL: reg.URL, Weight: reg.Weight}
		if u, err := m.normalize(); err == nil {
			if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || m.Weight < 1 || m.Weight > MaxWeight {
				t.Fatalf("normalize accepted %+v", m)
			}
		}
	})
}
