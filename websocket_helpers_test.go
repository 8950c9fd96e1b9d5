package sluice

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sluiceproxy/sluice/internal/wsframe"
)

// Raw WebSocket peers for the tests: they speak the handshake and frames
// by hand over net.Conn, so that every byte the proxy sends is visible.

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// testDeadline bounds every blocking read of a test, so that a bug hangs
// no test; it is a safety net, never what a test asserts.
const testDeadline = 10 * time.Second

// rawUpstream accepts connections, reads the upgrade request and answers
// with respond (by default a valid 101 for websocket).
type rawUpstream struct {
	t       *testing.T
	ln      net.Listener
	URL     *url.URL
	conns   chan *rawPeer
	respond func(req *http.Request) string
	extra   []byte // written right behind the response, in the same write
}

type rawPeer struct {
	net.Conn
	br  *bufio.Reader
	req *http.Request
}

func validSwitch(req *http.Request) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
}

func newRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{t: t, ln: ln, conns: make(chan *rawPeer, 16), respond: validSwitch}
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
func (u *rawUpstream) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		resp := []byte(u.respond(req))
		if _, err := c.Write(append(resp, u.extra...)); err != nil {
			c.Close()
			return
		}
		if bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
			u.conns <- &rawPeer{Conn: c, br: br, req: req}
			return
		}
	}
}

func (u *rawUpstream) accept() *rawPeer {
	u.t.Helper()
	select {
	case c := <-u.conns:
		u.t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(testDeadline):
		u.t.Fatal("upstream got no connection")
		return nil
	}
}

// newTestProxy starts p in an httptest server in front of nothing: the
// caller sets p.Director.
func newTestProxy(t *testing.T, p *Proxy) *httptest.Server {
	t.Helper()
	srv := newFront(t, p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return srv
}

// dialUpgrade opens a connection to the proxy and sends an upgrade request
// with extra header lines and, in the same write, the bytes of after.
func dialUpgrade(t *testing.T, srv *httptest.Server, header string, after []byte) (*rawPeer, *http.Response) {
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
	req += "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n\r\n"
	if _, err := c.Write(append([]byte(req), after...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return &rawPeer{Conn: c, br: br}, res
}

// frame is a frame as a test peer sees it, unmasked.
type frame struct {
	Fin    bool
	Rsv    byte
	Op     ws.OpCode
	Masked bool
	Data   []byte
}

func (f frame) String() string {
	return fmt.Sprintf("{fin=%v rsv=%d op=%d masked=%v %q}", f.Fin, f.Rsv, f.Op, f.Masked, f.Data)
}

func (p *rawPeer) readFrame(t *testing.T) frame {
	t.Helper()
	f, err := p.tryReadFrame()
	if err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	return f
}

func (p *rawPeer) tryReadFrame() (frame, error) {
	_ = p.SetReadDeadline(time.Now().Add(testDeadline))
	defer p.SetReadDeadline(time.Time{})
	h, err := wsframe.ReadHeader(p.br)
	if err != nil {
		return frame{}, err
	}
	if h.Length > 1<<24 {
		return frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	data := make([]byte, h.Length)
	if _, err := io.ReadFull(p.br, data); err != nil {
		return frame{}, err
	}
	if h.Masked {
		ws.Cipher(data, h.Mask, 0)
	}
	return frame{Fin: h.Fin, Rsv: h.Rsv, Op: h.OpCode, Masked: h.Masked, Data: data}, nil
}

// readCode reads frames until a close frame and returns its code.
func (p *rawPeer) readClose(t *testing.T) (code uint16, masked bool) {
	t.Helper()
	for {
		f := p.readFrame(t)
		if f.Op != ws.OpClose {
			continue
		}
		if len(f.Data) < 2 {
			return 0, f.Masked
		}
		return binary.BigEndian.Uint16(f.Data), f.Masked
	}
}

// rawFrame encodes a frame; mask it when masked is set.
func rawFrame(fin bool, rsv byte, op ws.OpCode, masked bool, data []byte) []byte {
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

func (p *rawPeer) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func closePayload(code uint16, reason string) []byte {
	return wsframe.CloseBody(code, reason)
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
