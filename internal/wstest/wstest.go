// Package wstest holds raw WebSocket peers for the tests of the proxy's
// tunnel and of package wsmsg: they speak the handshake and frames by hand
// over net.Conn, so that every byte the proxy sends is visible and a test
// can send what no WebSocket library would.
package wstest

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// Key is the Sec-WebSocket-Key of the handshakes of Dial (RFC 6455 §1.3).
const Key = "dGhlIHNhbXBsZSBub25jZQ=="

// Deadline bounds every blocking read of a test, so that a bug hangs no
// test; it is a safety net, never what a test asserts.
const Deadline = 10 * time.Second

// AcceptKey returns the Sec-WebSocket-Accept for key (RFC 6455 §4.2.2),
// computed here rather than by the code under test.
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// ValidSwitch returns a valid 101 answer to the WebSocket upgrade req.
func ValidSwitch(req *http.Request) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
}

// Upstream accepts connections, reads the upgrade request and answers
// with Respond (by default ValidSwitch).
type Upstream struct {
	// URL is where the upstream listens.
	URL *url.URL
	// Respond returns the raw response to a request. Set it before the
	// first request arrives.
	Respond func(req *http.Request) string
	// Extra is written right behind a response, in the same write.
	Extra []byte

	t     *testing.T
	ln    net.Listener
	conns chan *Peer
}

// Peer is one end of a raw WebSocket connection.
type Peer struct {
	net.Conn
	// R reads Conn; read the connection only through it.
	R *bufio.Reader
	// Req is the upgrade request, for a Peer accepted by an Upstream.
	Req *http.Request
}

// NewUpstream starts an Upstream on loopback; it stops when the test ends.
func NewUpstream(t *testing.T) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{t: t, ln: ln, conns: make(chan *Peer, 16), Respond: ValidSwitch}
	u.URL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				u.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

// serve answers the requests of one connection until one is switched,
// then hands the connection to the test.
func (u *Upstream) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		resp := []byte(u.Respond(req))
		if _, err := c.Write(append(resp, u.Extra...)); err != nil {
			c.Close()
			return
		}
		if bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
			u.conns <- &Peer{Conn: c, R: br, Req: req}
			return
		}
	}
}

// Accept returns the next connection the upstream switched, or fails the
// test after Deadline.
func (u *Upstream) Accept() *Peer {
	u.t.Helper()
	select {
	case c := <-u.conns:
		u.t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(Deadline):
		u.t.Fatal("upstream got no connection")
		return nil
	}
}

// Dial opens a connection to srv and sends a WebSocket upgrade request for
// /chat with extra header lines and, in the same write, the bytes of
// after. It returns the connection and the response to the upgrade.
func Dial(t *testing.T, srv *httptest.Server, header string, after []byte) (*Peer, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /chat HTTP/1.1\r\nHost: example.test\r\n" + header
	if !strings.Contains(strings.ToLower(header), "connection:") {
		req += "Connection: Upgrade\r\n"
	}
	if !strings.Contains(strings.ToLower(header), "upgrade:") {
		req += "Upgrade: websocket\r\n"
	}
	req += "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + Key + "\r\n\r\n"
	if _, err := c.Write(append([]byte(req), after...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(Deadline))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return &Peer{Conn: c, R: br}, res
}

// Frame is a frame as a test peer sees it, unmasked.
type Frame struct {
	Fin    bool
	Rsv    byte
	Op     ws.OpCode
	Masked bool
	Data   []byte
}

func (f Frame) String() string {
	return fmt.Sprintf("{fin=%v rsv=%d op=%d masked=%v %q}", f.Fin, f.Rsv, f.Op, f.Masked, f.Data)
}

// ReadFrame reads one frame, failing the test if there is none within
// Deadline.
func (p *Peer) ReadFrame(t *testing.T) Frame {
	t.Helper()
	f, err := p.TryReadFrame()
	if err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	return f
}

// TryReadFrame reads one frame within Deadline.
func (p *Peer) TryReadFrame() (Frame, error) {
	_ = p.SetReadDeadline(time.Now().Add(Deadline))
	defer p.SetReadDeadline(time.Time{})
	h, err := wsframe.ReadHeader(p.R)
	if err != nil {
		return Frame{}, err
	}
	if h.Length > 1<<24 {
		return Frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	data := make([]byte, h.Length)
	if _, err := io.ReadFull(p.R, data); err != nil {
		return Frame{}, err
	}
	if h.Masked {
		ws.Cipher(data, h.Mask, 0)
	}
	return Frame{Fin: h.Fin, Rsv: h.Rsv, Op: h.OpCode, Masked: h.Masked, Data: data}, nil
}

// ReadClose reads frames until a close frame and returns its code (0 for
// none) and whether it was masked.
func (p *Peer) ReadClose(t *testing.T) (code ws.StatusCode, masked bool) {
	t.Helper()
	for {
		f := p.ReadFrame(t)
		if f.Op != ws.OpClose {
			continue
		}
		if len(f.Data) < 2 {
			return 0, f.Masked
		}
		return ws.StatusCode(binary.BigEndian.Uint16(f.Data)), f.Masked
	}
}

// Send writes b, failing the test on error.
func (p *Peer) Send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// RawFrame encodes one frame, masked with a fixed key when masked is set.
// Any header is allowed, valid or not.
func RawFrame(fin bool, rsv byte, op ws.OpCode, masked bool, data []byte) []byte {
	var b bytes.Buffer
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Length: int64(len(data)), Masked: masked}
	if masked {
		h.Mask = [4]byte{1, 2, 3, 4}
	}
	b.Write(wsframe.AppendHeader(nil, h))
	p := append([]byte(nil), data...)
	if masked {
		ws.Cipher(p, h.Mask, 0)
	}
	b.Write(p)
	return b.Bytes()
}

// CloseBody returns the payload of a close frame (RFC 6455 §5.5.1), any
// code allowed.
func CloseBody(code ws.StatusCode, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(b, reason...)
}

// Python returns a Python interpreter that has the websockets package
// (Debian: python3-websockets), or skips the test. With
// SLUICE_REQUIRE_REAL=1 (CI) it fails instead.
func Python(t *testing.T) string {
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

// PythonConversation runs the conversation of script (testdata/ws_interop.py
// of the root package) between python3-websockets peers: it starts the
// script's server, calls proxy with the server's URL to get the base URL
// (http://host:port) of a proxy in front of it, runs the script's client
// through that proxy to /echo, and returns the JSON lines the client
// printed. It skips or fails the test as Python does.
func PythonConversation(t *testing.T, script string, proxy func(upstream *url.URL) string) []string {
	t.Helper()
	py := Python(t)
	server := exec.Command(py, script, "server")
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
	base := proxy(&url.URL{Scheme: "http", Host: "127.0.0.1:" + strings.TrimSpace(port)})
	out, err := exec.Command(py, script, "client", "ws"+strings.TrimPrefix(base, "http")+"/echo").CombinedOutput()
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
	return got
}

// EchoUpstream is a minimal WebSocket echo endpoint: it answers the
// handshake and sends every message back unmasked, as a server must.
func EchoUpstream(tb testing.TB) *url.URL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if _, err := io.WriteString(c, ValidSwitch(req)); err != nil {
					return
				}
				rd := &wsframe.Reader{Src: br, Masked: true, MaxMessage: 1 << 20}
				scratch := make([]byte, 64<<10)
				for {
					ev, err := rd.Next()
					if err != nil || ev.OpCode == ws.OpClose {
						return
					}
					if err := wsframe.WriteFrame(c, scratch, ev.OpCode, 0, false, ev.Payload); err != nil {
						return
					}
				}
			}()
		}
	}()
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// Client opens a WebSocket to /bench through the server at addr and
// returns the raw connection and its reader.
func Client(tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	req := "GET /bench HTTP/1.1\r\nHost: bench.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + Key + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		tb.Fatalf("handshake: %v %v", res, err)
	}
	return c, br
}
