package accesslog_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/accesslog"
)

func ExampleCombined() {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	// The time stamp is replaced so that the output is stable.
	stamp := regexp.MustCompile(`\[[^]]+\]`)
	p := &sluice.Proxy{
		Director: &sluice.SingleHost{Target: u},
		OnExchange: accesslog.Combined(writerFunc(func(b []byte) (int, error) {
			return os.Stdout.Write(stamp.ReplaceAll(b, []byte("[06/Dec/2026:12:00:00 +0000]")))
		})),
	}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()

	req, _ := http.NewRequest("GET", front.URL+"/a/./b?c=d", nil)
	req.Header.Set("User-Agent", "example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	// Output:
	// 127.0.0.1 - - [06/Dec/2026:12:00:00 +0000] "GET /a/b?c=d HTTP/1.1" 200 5 "-" "example"
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
