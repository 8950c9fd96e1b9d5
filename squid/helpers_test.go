package squid

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
)

// newFront serves h as the root package's tests do: with sluice.Server,
// or with net/http's when SLUICE_TEST_FRONT=net/http. Closing the result
// closes the front server and its connections.
func newFront(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	if os.Getenv("SLUICE_TEST_FRONT") == "net/http" {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &sluice.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	s := &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: &closeListener{ln, srv, done}, Config: &http.Server{Handler: h}}
	t.Cleanup(s.Close)
	return s
}

// closeListener closes its Server, and waits for Serve to return, when it
// is closed (httptest.Server.Close closes its Listener).
type closeListener struct {
	net.Listener
	srv  *sluice.Server
	done chan struct{}
}

func (l *closeListener) Close() error {
	err := l.srv.Close()
	<-l.done
	return err
}

type result struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, req *http.Request) result {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{status: res.StatusCode, header: res.Header, body: string(b)}
}

func noRedirect() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// rawExchange writes req to addr on a new connection and returns all that
// comes back until the server closes the connection or 5 s pass.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}
