package sluice

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// pythonWebsockets returns a Python interpreter that has the websockets
// package (Debian: python3-websockets), or skips the test. With
// SLUICE_REQUIRE_REAL=1 (CI) it fails instead.
func pythonWebsockets(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import websockets").Run() == nil {
			return path
		}
	}
	msg := "python3 with the websockets package not found: apt-get install python3-websockets"
	if os.Getenv("SLUICE_REQUIRE_REAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestWebSocketInteropPython runs python3-websockets as both the client
// and the upstream, through the transparent tunnel and through the
// frame-level interceptor (which terminates permessage-deflate on both
// sides and tags the text it relays).
func TestWebSocketInteropPython(t *testing.T) {
	py := pythonWebsockets(t)
	tests := []struct {
		name string
		ic   *WebSocketInterceptor
		want []string
	}{
		{"transparent", nil, []string{
			`{"subprotocol": null, "extensions": ["permessage-deflate"]}`,
			`{"text": "hello"}`,
			`{"binary": "000162696e617279"}`,
			`{"text": "fragmented ` + strings.Repeat("text ", 40) + `"}`,
			`{"pong": true}`,
			`{"close": 1000}`,
		}},
		{"frame level", &WebSocketInterceptor{
			Compression: CompressionTerminate,
			Message: func(s *WebSocketSession, m *WebSocketMessage) error {
				if m.Direction == ToClient && m.Type == TextMessage {
					m.Data = append([]byte("tag:"), m.Data...)
				}
				return nil
			},
		}, []string{
			`{"subprotocol": null, "extensions": ["permessage-deflate"]}`,
			`{"text": "tag:hello"}`,
			`{"binary": "000162696e617279"}`,
			`{"text": "tag:fragmented ` + strings.Repeat("text ", 40) + `"}`,
			`{"pong": true}`,
			`{"close": 1000}`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			server := exec.Command(py, "testdata/ws_interop.py", "server")
			stdin, _ := server.StdinPipe()
			stdout, _ := server.StdoutPipe()
			server.Stderr = os.Stderr
			if err := server.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stdin.Close()
				_ = server.Wait()
			})
			port, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("python server: %v", err)
			}
			target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strings.TrimSpace(port)}
			p := &Proxy{Director: SingleHost(target, false)}
			if tt.ic != nil {
				p.Handle("/", tt.ic)
			}
			srv := newTestProxy(t, p)
			out, err := exec.Command(py, "testdata/ws_interop.py", "client", "ws"+strings.TrimPrefix(srv.URL, "http")+"/echo").CombinedOutput()
			if err != nil {
				t.Fatalf("python client: %v\n%s", err, out)
			}
			var got []string
			for line := range bytes.Lines(out) {
				var v any
				if json.Unmarshal(line, &v) != nil {
					t.Fatalf("python client said: %s", out)
				}
				got = append(got, strings.TrimSpace(string(line)))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("conversation (-want +got):\n%s", diff)
			}
		})
	}
}
