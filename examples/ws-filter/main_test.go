package main

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// startFilter starts the demo chat and the filtering proxy; dial opens a
// client WebSocket through the proxy.
func startFilter(t *testing.T, maxSession time.Duration) (dial func() net.Conn) {
	t.Helper()
	leaktest.Check(t)
	d, err := startDemo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	cfg := config{Drop: regexp.MustCompile(`(?i)\bspam\b`), Tag: "[ok] ", MaxSession: maxSession}
	p := newProxy(&url.URL{Scheme: "http", Host: d.Addr}, cfg)
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return func() net.Conn {
		c, _, _, err := ws.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/chat")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
}

func TestWSFilter(t *testing.T) {
	dial := startFilter(t, 0)
	alice := dial()
	read := func(c net.Conn) string {
		t.Helper()
		msg, err := wsutil.ReadServerText(c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(msg)
	}
	send := func(c net.Conn, m string) {
		t.Helper()
		if err := wsutil.WriteClientText(c, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// A member is in the room once it got its own first message back.
	send(alice, "alice here")
	if got := read(alice); got != "[ok] alice here" {
		t.Fatalf("alice got %q", got)
	}
	bob := dial()
	send(bob, "bob here")
	for _, c := range []net.Conn{bob, alice} {
		if got := read(c); got != "[ok] bob here" {
			t.Fatalf("got %q", got)
		}
	}
	send(alice, "buy SPAM now")
	send(alice, "hello")
	got := []string{read(alice), read(alice), read(bob)}
	want := []string{"[your message was blocked by the proxy]", "[ok] hello", "[ok] hello"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestWSFilterMaxSession(t *testing.T) {
	dial := startFilter(t, 50*time.Millisecond)
	alice := dial()
	for {
		_, err := wsutil.ReadServerText(alice)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			if ce.Code != ws.StatusPolicyViolation {
				t.Errorf("close code %d, want 1008", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
}
