package h1client

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// smuggled is a complete response hidden behind another one: an upstream
// that lets it through hands it to whoever sends the next request on the
// connection.
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

// syncBuffer is a bytes.Buffer safe for a logger written from several
// goroutines.
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

// overrunServer answers the first request of its first connection with
// first (one write, so that every byte of it is there as soon as the
// head is), then, if idle is not nil, writes idle once the test closes
// strayNow (and reports on strayDone); every other request gets
// "c<connection number> <path>".
type overrunServer struct {
	*server
	strayNow  chan struct{}
	strayDone chan struct{}
}

func newOverrunServer(t *testing.T, first, idle string) *overrunServer {
	s := &overrunServer{strayNow: make(chan struct{}), strayDone: make(chan struct{})}
	var mu sync.Mutex
	conns := 0
	s.server = newServer(t, func(c net.Conn, br *bufio.Reader) {
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
				if _, err := io.WriteString(c, first); err != nil {
					return
				}
				if idle != "" {
					select {
					case <-s.strayNow:
					case <-time.After(5 * time.Second):
						return
					}
					io.WriteString(c, idle)
					close(s.strayDone)
				}
				continue
			}
			body := fmt.Sprintf("c%d %s", n, req.URL.Path)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
	})
	return s
}

// pooledConn returns the connection idle in c's pool for addr.
func pooledConn(t *testing.T, c *Client, addr string) *conn {
	t.Helper()
	hp := c.pools()[addr]
	if hp == nil {
		t.Fatal("no pool for", addr)
	}
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if len(hp.idle) != 1 {
		t.Fatalf("%d idle connections, want 1", len(hp.idle))
	}
	return hp.idle[0]
}

// waitReadable blocks until pc's socket has something to read (without
// reading it), so that a test knows bytes the upstream wrote have arrived.
func waitReadable(t *testing.T, pc *conn) {
	t.Helper()
	rc, err := pc.nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	pc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer pc.nc.SetReadDeadline(time.Time{})
	var b [1]byte
	// A callback that returns false makes the runtime wait until the
	// socket is readable, then call it again.
	err = rc.Read(func(fd uintptr) bool { return peekFD(fd, b[:]) != idleEmpty })
	if err != nil {
		t.Fatal("waiting for the stray bytes:", err)
	}
}

// An upstream that sends more than its framing says (issue 13, finding
// 1) must never have the excess read as the answer to the next request:
// the connection is closed, the event logged, and the next request gets
// its own response on a new connection.
func TestOverrunNeverAnswersNextRequest(t *testing.T) {
	big := strings.Repeat("b", 32<<10)
	tests := []struct {
		name     string
		method   string
		first    string // the upstream's answer to the first request
		idle     string // written once the connection is idle in the pool
		writeTo  bool   // read the first body through WriteTo (the splice path)
		status   int
		body     string // of the first response, as framed
		overruns int    // log lines expected
	}{
		{name: "content-length counted in characters", method: "GET",
			first:  "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nh\u00e9llo",
			status: 200, body: "h\u00e9ll", overruns: 1},
		{name: "content-length shorter than body", method: "GET",
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + smuggled,
			status: 200, body: "first", overruns: 1},
		{name: "content-length shorter than body, WriteTo", method: "GET", writeTo: true,
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + smuggled,
			status: 200, body: "first", overruns: 1},
		{name: "long body shorter than content-length, WriteTo", method: "GET", writeTo: true,
			first:  fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big) + smuggled,
			status: 200, body: big, overruns: 1},
		{name: "chunked body followed by bytes", method: "GET",
			first:  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n" + smuggled,
			status: 200, body: "first", overruns: 1},
		{name: "body after HEAD", method: "HEAD",
			first:  fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(smuggled)) + smuggled,
			status: 200, body: "", overruns: 1},
		{name: "body after 204", method: "GET",
			first:  "HTTP/1.1 204 No Content\r\n\r\n" + smuggled,
			status: 204, body: "", overruns: 1},
		{name: "body after 304", method: "GET",
			first:  "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n" + smuggled,
			status: 304, body: "", overruns: 1},
		// The excess arrives after the connection went back to the pool:
		// only the check before reuse can see it.
		{name: "body after HEAD, sent late", method: "HEAD",
			first:  fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(smuggled)),
			idle:   smuggled,
			status: 200, body: "", overruns: 1},
		{name: "body after 204, sent late", method: "GET",
			first:  "HTTP/1.1 204 No Content\r\n\r\n",
			idle:   smuggled,
			status: 204, body: "", overruns: 1},
		{name: "body after 304, sent late", method: "GET",
			first:  "HTTP/1.1 304 Not Modified\r\n\r\n",
			idle:   smuggled,
			status: 304, body: "", overruns: 1},
		{name: "stray bytes while idle", method: "GET",
			first:  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
			idle:   smuggled,
			status: 200, body: "first", overruns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			s := newOverrunServer(t, tt.first, tt.idle)
			logs := &syncBuffer{}
			c := newClient(t)
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))

			req, _ := http.NewRequest(tt.method, "http://"+s.addr+"/first", nil)
			res, err := c.Do(req, nil)
			if err != nil {
				t.Fatal(err)
			}
			var body []byte
			if tt.writeTo {
				var buf bytes.Buffer // an io.ReaderFrom, like the server's ResponseWriter
				_, err = res.Body.(io.WriterTo).WriteTo(&buf)
				body = buf.Bytes()
			} else {
				body, err = io.ReadAll(res.Body)
			}
			res.Body.Close()
			if err != nil || res.StatusCode != tt.status || string(body) != tt.body {
				t.Fatalf("first response: %d %q (%v), want %d %q", res.StatusCode, truncate(body), err, tt.status, truncate([]byte(tt.body)))
			}
			if tt.idle != "" {
				pc := pooledConn(t, c, s.addr)
				close(s.strayNow)
				<-s.strayDone
				waitReadable(t, pc)
			}

			_, second := get(t, c, "http://"+s.addr+"/second", nil)
			if second != "c2 /second" {
				t.Errorf("second request got %q, want %q (its own answer, on a new connection)", second, "c2 /second")
			}
			_, third := get(t, c, "http://"+s.addr+"/third", nil)
			if third != "c2 /third" {
				t.Errorf("third request got %q, want %q (the new connection reused)", third, "c2 /third")
			}
			logged := logs.String()
			want := fmt.Sprintf("upstream=%s", s.addr)
			if got := strings.Count(logged, "upstream sent more data than its framing"); got != tt.overruns || !strings.Contains(logged, want) {
				t.Errorf("log has %d overrun lines, want %d naming %s:\n%s", got, tt.overruns, want, logged)
			}
		})
	}
}

// A well-behaved upstream keeps its connection: the checks do not cost
// reuse, whatever the framing.
func TestCleanResponsesKeepConnection(t *testing.T) {
	leaktest.Check(t)
	s := newServer(t, keepAlive(func(req *http.Request, body []byte) string {
		if req.Method == "HEAD" {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
		}
		switch req.URL.Path {
		case "/204":
			return "HTTP/1.1 204 No Content\r\n\r\n"
		case "/304":
			return "HTTP/1.1 304 Not Modified\r\n\r\n"
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}))
	logs := &syncBuffer{}
	c := newClient(t)
	c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	var got []string
	for _, path := range []string{"/", "/204", "/304", "/chunked", "/"} {
		res, body := get(t, c, "http://"+s.addr+path, nil)
		got = append(got, fmt.Sprintf("%d %s", res.StatusCode, body))
	}
	req, _ := http.NewRequest("HEAD", "http://"+s.addr+"/", nil)
	res, err := c.Do(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	got = append(got, fmt.Sprintf("HEAD %d", res.StatusCode))
	if diff := cmp.Diff([]string{"200 ok", "204 ", "304 ", "200 ok", "200 ok", "HEAD 200"}, got); diff != "" {
		t.Errorf("responses (-want +got):\n%s", diff)
	}
	if n := s.accepts.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if l := logs.String(); l != "" {
		t.Errorf("unexpected log:\n%s", l)
	}
}
