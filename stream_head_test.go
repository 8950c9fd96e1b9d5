package sluice

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// The head of a streamed response reaches the client before its body
// does: an event stream's at once (EventSource's open event), a long
// poll's once its body is slow to come. The upstream sends its first
// body bytes only after the client got the head, so a proxy that holds
// the head back until the body fails this test (by its deadline).
func TestStreamHeadNotHeldBack(t *testing.T) {
	leaktest.Check(t)
	for _, ct := range []string{"text/event-stream", "application/json"} {
		t.Run(ct, func(t *testing.T) {
			release := make(chan struct{})
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush() // chunked, no body yet
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				w.Write([]byte("data: x\n\n"))
			})
			px, _, _ := newProxy(t, up.URL)
			c := client(t)
			c.Timeout = 10 * time.Second // the head must come long before
			res, err := c.Get(px.URL + "/")
			close(release)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != ct {
				t.Errorf("head: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
		})
	}
}
