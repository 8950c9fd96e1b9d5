package sluice

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// TestWebSocketInteropPython runs python3-websockets as both the client
// and the upstream through the transparent tunnel, which leaves the
// permessage-deflate they negotiate to them. Package wsmsg runs the same
// conversation through its message-level relay.
func TestWebSocketInteropPython(t *testing.T) {
	leaktest.Check(t)
	got := wstest.PythonConversation(t, "testdata/ws_interop.py", func(target *url.URL) string {
		return newTestProxy(t, &Proxy{Director: &SingleHost{Target: target}}).URL
	})
	want := []string{
		`{"subprotocol": null, "extensions": ["permessage-deflate"]}`,
		`{"text": "hello"}`,
		`{"binary": "000162696e617279"}`,
		`{"text": "fragmented ` + strings.Repeat("text ", 40) + `"}`,
		`{"pong": true}`,
		`{"close": 1000}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conversation (-want +got):\n%s", diff)
	}
}
