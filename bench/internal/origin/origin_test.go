package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSmallBodyIsNginxSafe(t *testing.T) {
	if len(SmallBody) != 100 {
		t.Errorf("len(SmallBody) = %d, want 100", len(SmallBody))
	}
	if strings.ContainsAny(SmallBody, "\"'$\\\n\r{};") {
		t.Errorf("SmallBody %q has a byte nginx's return directive would interpret", SmallBody)
	}
}

func TestRoutes(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	t.Cleanup(srv.Close)
	zeros := strings.Repeat("\x00", 300_000)
	digest := sha256.Sum256([]byte(zeros))
	for _, tc := range []struct {
		method, path, body string
		status             int
		wantLen            int64  // response body length, -1: do not check
		wantBody           string // "" : do not check
		chunked            bool
	}{
		{"GET", "/small", "", 200, 100, SmallBody, false},
		{"GET", "/bytes?n=0", "", 200, 0, "", false},
		{"GET", "/bytes?n=1000000", "", 200, 1_000_000, "", false},
		{"GET", "/bytes?n=300000&chunked=1", "", 200, 300_000, "", true},
		{"GET", "/bytes?n=-1", "", 400, -1, "", false},
		{"POST", "/sink", zeros, 200, -1, "{\"bytes\":300000}\n", false},
		{"PUT", "/sink?sha256=1", zeros, 200, -1, "{\"bytes\":300000,\"sha256\":\"" + hex.EncodeToString(digest[:]) + "\"}\n", false},
		{"GET", "/sink", "", 405, -1, "", false},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.wantLen >= 0 && int64(len(b)) != tc.wantLen {
				t.Errorf("body %d bytes, want %d", len(b), tc.wantLen)
			}
			if tc.wantBody != "" && string(b) != tc.wantBody {
				t.Errorf("body %q, want %q", b, tc.wantBody)
			}
			if chunked := resp.ContentLength == -1; tc.status == 200 && chunked != tc.chunked {
				t.Errorf("ContentLength %d, want chunked %v", resp.ContentLength, tc.chunked)
			}
		})
	}
}
