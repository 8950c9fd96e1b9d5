package sluice

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// newTestProxy starts p in front of nothing (the caller sets p.Director)
// behind the test front server (see newFront).
func newTestProxy(t *testing.T, p *Proxy) *httptest.Server {
	t.Helper()
	srv := newFront(t, p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return srv
}

func transparentSetup(t *testing.T) (*Proxy, *wstest.Upstream, *httptest.Server) {
	t.Helper()
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	p := &Proxy{Director: &SingleHost{Target: up.URL}}
	return p, up, newTestProxy(t, p)
}

func TestWebSocketUpgradeDetection(t *testing.T) {
	tests := []struct {
		name, header string
		upgrade      bool
	}{
		{"canonical", "Connection: Upgrade\r\nUpgrade: websocket\r\n", true},
		{"lower case", "connection: upgrade\r\nupgrade: websocket\r\n", true},
		{"token in second position", "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n", true},
		{"upper case", "Connection: UPGRADE\r\nUpgrade: WEBSOCKET\r\n", true},
		{"two Connection lines", "Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: websocket\r\n", true},
		{"no upgrade token", "Connection: keep-alive\r\nUpgrade: websocket\r\n", false},
		{"h2c refused", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, up, srv := transparentSetup(t)
			reqs := make(chan *http.Request, 1)
			up.Respond = func(req *http.Request) string {
				reqs <- req
				if upgradeType(req.Header) == "" {
					return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
				}
				return wstest.ValidSwitch(req)
			}
			c, res := wstest.Dial(t, srv, tt.header, nil)
			defer c.Close()
			got := res.StatusCode == http.StatusSwitchingProtocols
			if got != tt.upgrade {
				t.Fatalf("status %d, want upgrade=%v", res.StatusCode, tt.upgrade)
			}
			req := <-reqs
			if tt.upgrade {
				want := http.Header{"Connection": {"Upgrade"}, "Upgrade": {req.Header.Get("Upgrade")}}
				gotH := http.Header{"Connection": req.Header["Connection"], "Upgrade": req.Header["Upgrade"]}
				if diff := cmp.Diff(want, gotH); diff != "" {
					t.Errorf("upstream request headers (-want +got):\n%s", diff)
				}
			} else if len(req.Header["Upgrade"]) != 0 || len(req.Header["Http2-Settings"]) != 0 {
				t.Errorf("upgrade headers leaked upstream: %v", req.Header)
			}
		})
	}
}

// TestWebSocketKeepsEveryByte: bytes the client sends in the same packet
// as its upgrade request, and bytes the upstream sends with its 101, both
// arrive (golang/go#80875 for httputil).
func TestWebSocketKeepsEveryByte(t *testing.T) {
	_, up, srv := transparentSetup(t)
	fromUp := wstest.RawFrame(true, 0, ws.OpText, false, []byte("hello from upstream"))
	up.Extra = fromUp
	fromClient := wstest.RawFrame(true, 0, ws.OpText, true, []byte("hello from client"))
	c, res := wstest.Dial(t, srv, "", fromClient)
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", res.StatusCode)
	}
	u := up.Accept()
	if got := u.ReadFrame(t); string(got.Data) != "hello from client" || !got.Masked {
		t.Errorf("upstream got %v", got)
	}
	if got := c.ReadFrame(t); string(got.Data) != "hello from upstream" || got.Masked {
		t.Errorf("client got %v", got)
	}
	// And the tunnel goes on both ways, byte for byte.
	big := strings.Repeat("x", 200<<10)
	c.Send(t, wstest.RawFrame(true, 0, ws.OpBinary, true, []byte(big)))
	if got := u.ReadFrame(t); string(got.Data) != big {
		t.Errorf("upstream got %d bytes, want %d", len(got.Data), len(big))
	}
	u.Send(t, wstest.RawFrame(true, 0, ws.OpBinary, false, []byte(big)))
	if got := c.ReadFrame(t); string(got.Data) != big {
		t.Errorf("client got %d bytes, want %d", len(got.Data), len(big))
	}
}

func TestWebSocketSwitchValidation(t *testing.T) {
	accept := "Sec-WebSocket-Accept: " + wstest.AcceptKey(wstest.Key) + "\r\n"
	tests := []struct {
		name     string
		header   string // client request lines
		response string
		status   int
	}{
		{"valid", "", "Upgrade: websocket\r\nConnection: Upgrade\r\n" + accept, 101},
		{"bad accept", "", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n", 502},
		{"no accept", "", "Upgrade: websocket\r\nConnection: Upgrade\r\n", 502},
		{"other protocol", "", "Upgrade: foo\r\nConnection: Upgrade\r\n" + accept, 502},
		{"no connection upgrade", "", "Upgrade: websocket\r\n" + accept, 502},
		{"offered subprotocol", "Sec-WebSocket-Protocol: chat, superchat\r\n",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: superchat\r\n" + accept, 101},
		{"subprotocol not offered", "Sec-WebSocket-Protocol: chat\r\n",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: other\r\n" + accept, 502},
		{"subprotocol without offer", "",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n" + accept, 502},
		{"offered extension", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n" + accept, 101},
		{"extension not offered", "",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n" + accept, 502},
		{"extension not offered behind an offered one", "Sec-WebSocket-Extensions: permessage-deflate\r\n",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: x-evil permessage-deflate\r\n" + accept, 502},
		{"malformed extensions", "Sec-WebSocket-Extensions: permessage-deflate\r\n",
			"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate; =1\r\n" + accept, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, up, srv := transparentSetup(t)
			up.Respond = func(*http.Request) string { return "HTTP/1.1 101 Switching Protocols\r\n" + tt.response + "\r\n" }
			c, res := wstest.Dial(t, srv, tt.header, nil)
			defer c.Close()
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			if tt.status == 101 {
				for _, k := range []string{"Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
					if strings.Contains(tt.response, k[:16]) && res.Header.Get(k) == "" {
						t.Errorf("%s not relayed: %v", k, res.Header)
					}
				}
			}
		})
	}
}

// TestWebSocketSwitchHopByHop: the 101 keeps Connection: Upgrade and
// Upgrade, and loses every other hop-by-hop field (RFC 9110 §7.6.1).
func TestWebSocketSwitchHopByHop(t *testing.T) {
	_, up, srv := transparentSetup(t)
	up.Respond = func(req *http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\n" +
			"Sec-WebSocket-Accept: " + wstest.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
			"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-End: kept\r\n\r\n"
	}
	c, res := wstest.Dial(t, srv, "", nil)
	defer c.Close()
	if res.StatusCode != 101 {
		t.Fatalf("status %d", res.StatusCode)
	}
	got := res.Header.Clone()
	delete(got, "Date")
	want := http.Header{
		"Connection":           {"Upgrade"},
		"Upgrade":              {"websocket"},
		"Sec-Websocket-Accept": {wstest.AcceptKey(wstest.Key)},
		"X-End":                {"kept"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("101 headers (-want +got):\n%s", diff)
	}
}

// TestWebSocketRefusedKeepsConnection: an upstream that does not switch
// gets its answer relayed, and the client connection serves the next
// request.
func TestWebSocketRefusedKeepsConnection(t *testing.T) {
	_, up, srv := transparentSetup(t)
	up.Respond = func(req *http.Request) string {
		if req.Header.Get("Upgrade") != "" {
			return "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: no\r\n\r\nnope"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"
	}
	c, res := wstest.Dial(t, srv, "", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 403 || string(body) != "nope" || res.Header.Get("X-Why") != "no" {
		t.Fatalf("got %d %q %v", res.StatusCode, body, res.Header)
	}
	c.Send(t, []byte("GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n"))
	res2, err := http.ReadResponse(c.R, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res2.Body)
	if res2.StatusCode != 200 || string(body) != "again" {
		t.Errorf("second request: %d %q", res2.StatusCode, body)
	}
}

func TestWebSocketHalfClose(t *testing.T) {
	_, up, srv := transparentSetup(t)
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	c.Send(t, []byte("last words"))
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = u.SetReadDeadline(time.Now().Add(wstest.Deadline))
	got, err := io.ReadAll(u.R)
	if err != nil || string(got) != "last words" {
		t.Fatalf("upstream read %q, %v; want the bytes then EOF", got, err)
	}
	// The other direction still works after the client's half-close.
	u.Send(t, []byte("reply after half-close"))
	u.Close()
	_ = c.SetReadDeadline(time.Now().Add(wstest.Deadline))
	got, err = io.ReadAll(c.R)
	if err != nil || string(got) != "reply after half-close" {
		t.Fatalf("client read %q, %v", got, err)
	}
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func TestWebSocketResetClosesOtherSide(t *testing.T) {
	for _, side := range []string{"upstream", "client"} {
		t.Run(side+" resets", func(t *testing.T) {
			_, up, srv := transparentSetup(t)
			c, _ := wstest.Dial(t, srv, "", nil)
			u := up.Accept()
			c.Send(t, []byte("x"))
			if _, err := io.ReadFull(u.R, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			victim, other := u, c
			if side == "client" {
				victim, other = c, u
			}
			reset(victim.Conn)
			_ = other.SetReadDeadline(time.Now().Add(wstest.Deadline))
			_, err := other.R.ReadByte()
			if err == nil || isTimeout(err) {
				t.Fatalf("other side still open after reset: %v", err)
			}
		})
	}
}

func TestWebSocketIdleTimeout(t *testing.T) {
	p, up, srv := transparentSetup(t)
	p.WebSocket = &WebSocketConfig{IdleTimeout: 50 * time.Millisecond}
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	code, masked := c.ReadClose(t)
	if code != ws.StatusGoingAway || masked {
		t.Errorf("client got close %d masked=%v, want 1001 unmasked", code, masked)
	}
	code, masked = u.ReadClose(t)
	if code != ws.StatusGoingAway || !masked {
		t.Errorf("upstream got close %d masked=%v, want 1001 masked", code, masked)
	}
	// Both answer; the proxy closes the connections.
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1001, "")))
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1001, "")))
	for _, peer := range []*wstest.Peer{c, u} {
		if _, err := peer.TryReadFrame(); !errors.Is(err, io.EOF) {
			t.Errorf("after close handshake: %v, want EOF", err)
		}
	}
}

// TestWebSocketShutdownMidFrame: Shutdown waits for the frame in flight to
// end before it inserts the close frame, so that both peers see a valid
// stream.
func TestWebSocketShutdownMidFrame(t *testing.T) {
	p, up, srv := transparentSetup(t)
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	whole := wstest.RawFrame(true, 0, ws.OpBinary, false, []byte("0123456789"))
	u.Send(t, whole[:5]) // header and 3 payload bytes
	if _, err := io.ReadFull(c.R, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	// The client side is at a boundary: its close frame goes out now.
	if code, masked := u.ReadClose(t); code != ws.StatusGoingAway || !masked {
		t.Errorf("upstream got close %d masked=%v", code, masked)
	}
	u.Send(t, whole[5:])
	rest := make([]byte, len(whole)-5)
	if _, err := io.ReadFull(c.R, rest); err != nil || string(rest) != string(whole[5:]) {
		t.Fatalf("client got %q, %v", rest, err)
	}
	if code, masked := c.ReadClose(t); code != ws.StatusGoingAway || masked {
		t.Errorf("client got close %d masked=%v", code, masked)
	}
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1001, "")))
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1001, "")))
	u.Close()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// New upgrades are refused.
	c2, res := wstest.Dial(t, srv, "", nil)
	defer c2.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade after Shutdown: %d", res.StatusCode)
	}
}

func TestWebSocketShutdownContext(t *testing.T) {
	p, up, srv := transparentSetup(t)
	c, _ := wstest.Dial(t, srv, "", nil)
	u := up.Accept()
	// The client sees the 101 a moment before the tunnel is registered.
	deadline := time.Now().Add(wstest.Deadline)
	for {
		if all, _ := p.conns.snapshot(); len(all) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tunnel never registered")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with a done context: %v", err)
	}
	for _, peer := range []*wstest.Peer{c, u} {
		_ = peer.SetReadDeadline(time.Now().Add(wstest.Deadline))
		if _, err := io.ReadAll(peer.R); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("peer not closed: %v", err)
		}
	}
}

// TestUpgradeOtherProtocol: upgrades other than WebSocket are tunnelled
// byte for byte.
func TestUpgradeOtherProtocol(t *testing.T) {
	_, up, srv := transparentSetup(t)
	up.Respond = func(*http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/2\r\nConnection: upgrade\r\n\r\nbanner"
	}
	c, res := wstest.Dial(t, srv, "Connection: Upgrade\r\nUpgrade: foo/2\r\n", []byte("early"))
	if res.StatusCode != 101 || res.Header.Get("Upgrade") != "foo/2" {
		t.Fatalf("got %d %v", res.StatusCode, res.Header)
	}
	u := up.Accept()
	got := make([]byte, 5)
	if _, err := io.ReadFull(u.R, got); err != nil || string(got) != "early" {
		t.Errorf("upstream got %q %v", got, err)
	}
	got = make([]byte, 6)
	if _, err := io.ReadFull(c.R, got); err != nil || string(got) != "banner" {
		t.Errorf("client got %q %v", got, err)
	}
}
