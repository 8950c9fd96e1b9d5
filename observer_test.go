package sluice

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/leaktest"
)

// observingDirector is a SingleHost that hands every attempt's Result to
// a channel, as a Pool's passive health hears of them.
type observingDirector struct {
	SingleHost
	results chan Result
}

func (d *observingDirector) Observe(pr *ProxyRequest, r Result) { d.results <- r }

// A client that leaves in the middle of a response is no failure of the
// upstream: the Director's Observer (a Pool's passive health) and
// OnAttempt must hear of it as the client's, as the Record does, or a few
// clients closing their event streams take every healthy target out of a
// pool (found by the soak, robustness/soak). An upstream that breaks off
// its body is still the upstream's failure.
func TestObserverClientLeftMidBody(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name string
		// upstream answers the request on its raw connection.
		upstream func(c net.Conn, br *bufio.Reader)
		// leave reads part of the response from the proxy and returns;
		// the connection is closed after it.
		leave func(t *testing.T, br *bufio.Reader)
		want  string // Result.ErrorClass()
		// sluiceFront: the case holds behind sluice.Server only. Behind
		// net/http's server a failed splice(2) to the client does not
		// cancel the request's context (its background read notices the
		// reset client a moment later), and a splice error does not say
		// which socket failed: the Observer, like the Record, may then
		// blame the upstream.
		sluiceFront bool
	}{{
		name: "event stream left while the proxy waits for the next event",
		upstream: func(c net.Conn, br *bufio.Reader) {
			http.ReadRequest(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"9\r\ndata: 1\n\n\r\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, br) // until the proxy closes the connection
		},
		leave: func(t *testing.T, br *bufio.Reader) {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if line, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil || line != "data: 1\n" {
				t.Errorf("first event %q, %v", line, err)
			}
		},
		want: classClient,
	}, {
		name: "download of known length left half way",
		upstream: func(c net.Conn, br *bufio.Reader) {
			http.ReadRequest(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			chunk := []byte(strings.Repeat("d", 64<<10))
			for range 1024 {
				if _, err := c.Write(chunk); err != nil {
					return // the proxy closed the connection
				}
			}
		},
		leave: func(t *testing.T, br *bufio.Reader) {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := io.ReadFull(res.Body, make([]byte, 256<<10)); err != nil {
				t.Error(err)
			}
		},
		want:        classClient,
		sluiceFront: true,
	}, {
		name: "upstream breaks off its event stream",
		upstream: func(c net.Conn, br *bufio.Reader) {
			http.ReadRequest(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"9\r\ndata: 1\n\n\r\n")
		},
		leave: func(t *testing.T, br *bufio.Reader) {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if b, err := io.ReadAll(res.Body); err == nil || string(b) != "data: 1\n\n" {
				t.Errorf("a stream cut by the upstream after %q ended with %v", b, err)
			}
		},
		want: classUpstream,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sluiceFront && netHTTPFront() {
				t.Skip("behind net/http's server a failed splice to the client is not told from the upstream's (see sluiceFront)")
			}
			up := newRawServer(t, tc.upstream)
			u, _ := url.Parse(up.URL())
			d := &observingDirector{SingleHost: SingleHost{Target: u}, results: make(chan Result, 2)}
			attempts := make(chan Result, 2)
			px, _, _ := newProxy(t, up.URL(), func(p *Proxy) {
				p.Director = d
				p.OnAttempt = func(*ProxyRequest) func(Result) { return func(r Result) { attempts <- r } }
			})
			c, err := net.Dial("tcp", hostOf(px))
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
			tc.leave(t, bufio.NewReader(c))
			c.Close()
			for _, ch := range []struct {
				name    string
				results chan Result
			}{{"Observer", d.results}, {"OnAttempt", attempts}} {
				select {
				case r := <-ch.results:
					if got := r.ErrorClass(); got != tc.want {
						t.Errorf("%s heard of class %q (err %v), want %q", ch.name, got, r.Err, tc.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s heard of no end of the attempt", ch.name)
				}
			}
		})
	}
}
