package accesslog_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
)

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func proxyWith(t *testing.T, hook func(*sluice.Record)) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "hello")
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: u}, OnExchange: hook, RequestIDHeader: "X-Request-Id"}
	p.Handle("/denied", sluice.InterceptorFunc(func(w http.ResponseWriter, _ *sluice.ProxyRequest) error {
		return sluice.Errorf(http.StatusForbidden, "no")
	}))
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	t.Cleanup(p.CloseIdleConnections)
	return front.URL
}

func do(t *testing.T, method, target string, header http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

func TestCombined(t *testing.T) {
	var buf syncBuffer
	front := proxyWith(t, accesslog.Combined(&buf))
	do(t, "GET", front+"/a/../hello?q=1", http.Header{
		"User-Agent":    {`curl/8 "quoted"`},
		"Referer":       {"https://example.com/"},
		"Authorization": {"Basic YWxpY2U6c2VjcmV0"}, // alice:secret
	})
	do(t, "GET", front+"/missing", nil)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	// The line nginx would write, with the canonical target.
	re := regexp.MustCompile(`^127\.0\.0\.1 - alice \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /hello\?q=1 HTTP/1\.1" 200 5 "https://example\.com/" "curl/8 \\x22quoted\\x22"$`)
	if !re.MatchString(lines[0]) {
		t.Errorf("line %q does not match %v", lines[0], re)
	}
	if !strings.Contains(lines[1], `"GET /missing HTTP/1.1" 404 19 "-" "Go-http-client/1.1"`) || !strings.HasPrefix(lines[1], "127.0.0.1 - - [") {
		t.Errorf("second line %q", lines[1])
	}
}

func TestSlog(t *testing.T) {
	var buf syncBuffer
	front := proxyWith(t, accesslog.Slog(slog.New(slog.NewJSONHandler(&buf, nil))))
	do(t, "GET", front+"/hello?x=y", http.Header{"User-Agent": {"test"}})
	do(t, "GET", front+"/denied", nil)
	dec := json.NewDecoder(strings.NewReader(buf.String()))
	var lines []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	ok, denied := lines[0], lines[1]
	for k, want := range map[string]any{
		"msg": "access", "level": "INFO", "method": "GET", "path": "/hello", "query": "x=y", "status": 200.0,
		"resp_bytes": 5.0, "client": "127.0.0.1", "user_agent": "test", "proto": "HTTP/1.1",
	} {
		if ok[k] != want {
			t.Errorf("%s = %v, want %v (line %v)", k, ok[k], want, ok)
		}
	}
	if id, _ := ok["request_id"].(string); len(id) != 32 {
		t.Errorf("request_id %v", ok["request_id"])
	}
	if _, ok := ok["upstream"].(string); !ok {
		t.Errorf("no upstream in %v", lines[0])
	}
	if denied["status"] != 403.0 || denied["error_class"] != "policy" || denied["route"] != "/denied" || denied["level"] != "INFO" {
		t.Errorf("denied line %v", denied)
	}
}
