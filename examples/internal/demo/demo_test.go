package demo

import (
	"io"
	"net/http"
	"testing"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

func TestDownload(t *testing.T) {
	leaktest.Check(t)
	s, err := Start(http.HandlerFunc(Download))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	for _, tc := range []struct {
		query  string
		status int
		n      int64
	}{
		{"?n=200000", 200, 200000},
		{"?n=0", 200, 0},
		{"?n=-1", 400, -1},
		{"", 400, -1},
	} {
		res, err := c.Get("http://" + s.Addr + "/" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || (tc.n >= 0 && (n != tc.n || res.ContentLength != tc.n)) {
			t.Errorf("%q: status %d, %d bytes, Content-Length %d", tc.query, res.StatusCode, n, res.ContentLength)
		}
	}
}
