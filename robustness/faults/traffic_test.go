package faults

import (
	"context"
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

// badProxy is a proxy that breaks the rules on purpose: it passes
// requests to the upstream through rewrite, and copies at most limit
// bytes of each response body (and of each request body), then ends it
// as if complete. It shows that the matrix sees what it must flag.
func badProxy(t *testing.T, upstream string, limit int64, rewrite func(*url.URL)) string {
	t.Helper()
	tr := &http.Transport{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := *r.URL
		u.Scheme, u.Host = "http", upstream
		if rewrite != nil {
			rewrite(&u)
		}
		var body io.Reader
		if r.Body != nil {
			body = io.LimitReader(r.Body, limit)
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.ContentLength = -1
		res, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
		w.WriteHeader(res.StatusCode)
		io.Copy(w, io.LimitReader(res.Body, limit)) // then a clean end: the lie
	}))
	t.Cleanup(s.Close)
	t.Cleanup(tr.CloseIdleConnections)
	return strings.TrimPrefix(s.URL, "http://")
}

// The client's checks catch a body cut and ended as if complete, bytes of
// another exchange, an event stream ended before its end event, and the
// upstream's catch an upload cut and ended as if complete; a good path
// passes.
func TestTrafficFlagsViolations(t *testing.T) {
	leaktest.Check(t)
	u, err := StartUpstream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	otherID := func(u *url.URL) {
		q := u.Query()
		q.Set("id", "7")
		u.RawQuery = q.Encode()
	}
	for _, tt := range []struct {
		name   string
		addr   string
		kind   Kind
		want   Class
		upload string
	}{
		{"direct download", u.HTTPAddr, Download, OK, ""},
		{"direct upload", u.HTTPAddr, Upload, OK, "complete"},
		{"direct SSE", u.HTTPAddr, SSE, OK, ""},
		{"direct WebSocket", u.HTTPAddr, WebSocket, OK, ""},
		{"download cut, ended cleanly", badProxy(t, u.HTTPAddr, 100_000, nil), Download, Truncated, ""},
		{"small GET of another exchange", badProxy(t, u.HTTPAddr, 1<<30, otherID), Small, Corrupt, ""},
		{"SSE cut, ended cleanly", badProxy(t, u.HTTPAddr, 200, nil), SSE, Truncated, ""},
		{"upload cut, ended cleanly", badProxy(t, u.HTTPAddr, 100_000, nil), Upload, Status, "truncated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := Traffic{Kind: tt.kind, ID: uint64(time.Now().UnixNano()), Size: 1 << 20, Messages: 5, MessageSize: 1 << 10,
				HTTPAddr: tt.addr, Idle: 5 * time.Second, Total: 10 * time.Second}
			if tt.kind == Small {
				tr.Size = 16 << 10
			}
			o := tr.Run(context.Background())
			if diff := cmp.Diff(tt.want, o.Class); diff != "" {
				t.Errorf("outcome %s (%s), class diff (-want +got):\n%s", o, o.Detail, diff)
			}
			if tt.upload != "" {
				v, ok := u.Upload(tr.ID, 5*time.Second)
				if !ok || v.Result != tt.upload {
					t.Errorf("upstream's verdict %+v, want %s", v, tt.upload)
				}
			}
		})
	}
}

// A Verifier tells a complete stream from a short one, one with a wrong
// byte and one with bytes past its end.
func TestVerifier(t *testing.T) {
	full := make([]byte, 100_000)
	io.ReadFull(NewPayload(42, int64(len(full))), full)
	type got struct {
		Complete bool
		Bad, N   int64
	}
	wrong := append([]byte(nil), full...)
	wrong[12345] ^= 1
	for _, tt := range []struct {
		name string
		body []byte
		want got
	}{
		{"complete", full, got{true, -1, 100_000}},
		{"short", full[:99_999], got{false, -1, 99_999}},
		{"a wrong byte", wrong, got{false, 12345, 100_000}},
		{"a byte past the end", append(append([]byte(nil), full...), 0), got{false, 100_000, 100_001}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(42, int64(len(full)))
			for b := tt.body; len(b) > 0; { // in uneven pieces
				n := min(len(b), 7777)
				v.Write(b[:n])
				b = b[n:]
			}
			if diff := cmp.Diff(tt.want, got{v.Complete(), v.Bad(), v.Got()}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	v := NewVerifier(42, 100_000)
	v.Write(full)
	if v.Sum() != PayloadSum(42, 100_000) {
		t.Error("SHA-256 of the stream differs from PayloadSum")
	}
}
