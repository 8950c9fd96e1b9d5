package sluice

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// One response per request (issue 13, finding 1): when an upstream sends
// more than its framing says, the excess must never become the response
// of the next client whose request reuses the connection. Two clients,
// one after the other, through the proxy: the second gets its own answer.
func TestUpstreamOverrunNeverReachesNextClient(t *testing.T) {
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
	big := strings.Repeat("p", 64<<10) // the first client's private page
	// A body long enough that the engine splices it (4 MiB and more; a
	// shorter one is copied) is handed over as a LimitedReader over the
	// socket: what follows it must stay there and fail the check before
	// reuse.
	spliced := strings.Repeat("s", 5<<20)
	tests := []struct {
		name   string
		method string
		first  string
		status int
		body   string
	}{
		{"content-length shorter than body", "GET",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big) + smuggled, 200, big},
		{"content-length shorter than a spliced body", "GET",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(spliced), spliced) + smuggled, 200, spliced},
		{"content-length counted in characters", "GET",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nh\u00e9llo", 200, "h\u00e9ll"},
		{"body after HEAD", "HEAD",
			fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(smuggled)) + smuggled, 200, ""},
		{"body after 204", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + smuggled, 204, ""},
		{"body after 304", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled, 304, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			var mu sync.Mutex
			conns := 0
			up := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				mu.Lock()
				conns++
				n := conns
				mu.Unlock()
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if n == 1 && i == 0 {
						if _, err := io.WriteString(c, tt.first); err != nil {
							return
						}
						continue
					}
					body := fmt.Sprintf("c%d %s", n, req.URL.Path)
					if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
						return
					}
				}
			})
			front, _, logs := newProxy(t, up.URL())

			req, _ := http.NewRequest(tt.method, front.URL+"/first", nil)
			res, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != tt.status || string(b) != tt.body {
				t.Fatalf("first client: %d, %d bytes (%v), want %d, %d bytes", res.StatusCode, len(b), err, tt.status, len(tt.body))
			}

			res, err = client(t).Get(front.URL + "/second")
			if err != nil {
				t.Fatal(err)
			}
			b, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != 200 || string(b) != "c2 /second" {
				t.Errorf("second client: %d %q (%v), want 200 %q (its own answer, on a new upstream connection)",
					res.StatusCode, truncateString(string(b)), err, "c2 /second")
			}
			if l := logs.String(); !strings.Contains(l, "upstream sent more data than its framing") || !strings.Contains(l, up.addr) {
				t.Errorf("log does not report the overrun of %s:\n%s", up.addr, l)
			}
		})
	}
}

func truncateString(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
