package wsmsg

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// frameSetup starts a Proxy whose "/" route relays WebSockets message by
// message with ic, in front of a raw upstream, and opens one session.
func frameSetup(t *testing.T, ic *Interceptor, header string, configure ...func(*sluice.Proxy)) (*sluice.Proxy, *wstest.Peer, *wstest.Peer) {
	t.Helper()
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: up.URL}}
	for _, c := range configure {
		c(p)
	}
	p.Handle("/", ic)
	srv := newTestProxy(t, p)
	c, res := wstest.Dial(t, srv, header, nil)
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", res.StatusCode)
	}
	return p, c, up.Accept()
}

func TestInterceptorVerdicts(t *testing.T) {
	handler := func(s *Session, m *Message) error {
		switch text := string(m.Data); {
		case text == "drop me":
			return ErrDrop
		case text == "inject":
			if err := s.Send(ToClient, Text, []byte("injected to client")); err != nil {
				return err
			}
			m.Data = []byte("inject seen")
		case text == "close":
			return &CloseError{Code: 4001, Reason: "closed by policy"}
		case text == "fail":
			return errors.New("handler bug")
		case m.Direction == ToUpstream:
			m.Data = append([]byte("tagged:"), m.Data...)
			m.Type = Binary
		}
		return nil
	}
	t.Run("pass modify drop inject", func(t *testing.T) {
		_, c, u := frameSetup(t, &Interceptor{OnMessage: handler}, "")
		c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte("drop me")))
		c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte("hello")))
		want := wstest.Frame{Fin: true, Op: ws.OpBinary, Masked: true, Data: []byte("tagged:hello")}
		if diff := cmp.Diff(want, u.ReadFrame(t)); diff != "" {
			t.Errorf("upstream frame (-want +got):\n%s", diff)
		}
		c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte("inject")))
		want = wstest.Frame{Fin: true, Op: ws.OpText, Data: []byte("injected to client")}
		if diff := cmp.Diff(want, c.ReadFrame(t)); diff != "" {
			t.Errorf("client frame (-want +got):\n%s", diff)
		}
		want = wstest.Frame{Fin: true, Op: ws.OpText, Masked: true, Data: []byte("inject seen")}
		if diff := cmp.Diff(want, u.ReadFrame(t)); diff != "" {
			t.Errorf("upstream frame (-want +got):\n%s", diff)
		}
		u.Send(t, wstest.RawFrame(true, 0, ws.OpText, false, []byte("from upstream")))
		want = wstest.Frame{Fin: true, Op: ws.OpText, Data: []byte("from upstream")}
		if diff := cmp.Diff(want, c.ReadFrame(t)); diff != "" {
			t.Errorf("client frame (-want +got):\n%s", diff)
		}
	})
	for _, tt := range []struct {
		msg  string
		code ws.StatusCode
	}{{"close", 4001}, {"fail", ws.StatusInternalServerError}} {
		t.Run(tt.msg, func(t *testing.T) {
			_, c, u := frameSetup(t, &Interceptor{OnMessage: handler}, "")
			c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte(tt.msg)))
			if code, _ := c.ReadClose(t); code != tt.code {
				t.Errorf("client close %d, want %d", code, tt.code)
			}
			if code, _ := u.ReadClose(t); code != tt.code {
				t.Errorf("upstream close %d, want %d", code, tt.code)
			}
		})
	}
}

// TestInterceptorFragments: a fragmented message reaches the
// handler whole; control frames between its fragments go through at once.
func TestInterceptorFragments(t *testing.T) {
	var got []string
	ic := &Interceptor{OnMessage: func(s *Session, m *Message) error {
		got = append(got, string(m.Data))
		return nil
	}}
	_, c, u := frameSetup(t, ic, "")
	c.Send(t, wstest.RawFrame(false, 0, ws.OpText, true, []byte("Hel")))
	c.Send(t, wstest.RawFrame(true, 0, ws.OpPing, true, []byte("p1")))
	c.Send(t, wstest.RawFrame(false, 0, ws.OpContinuation, true, []byte("lo, ")))
	c.Send(t, wstest.RawFrame(true, 0, ws.OpContinuation, true, []byte("wörld")))
	want := []wstest.Frame{
		{Fin: true, Op: ws.OpPing, Masked: true, Data: []byte("p1")},
		{Fin: true, Op: ws.OpText, Masked: true, Data: []byte("Hello, wörld")},
	}
	for _, w := range want {
		if diff := cmp.Diff(w, u.ReadFrame(t)); diff != "" {
			t.Errorf("upstream frame (-want +got):\n%s", diff)
		}
	}
	u.Send(t, wstest.RawFrame(true, 0, ws.OpPong, false, []byte("p1")))
	if diff := cmp.Diff(wstest.Frame{Fin: true, Op: ws.OpPong, Data: []byte("p1")}, c.ReadFrame(t)); diff != "" {
		t.Errorf("client frame (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Hello, wörld"}, got); diff != "" {
		t.Errorf("handler saw (-want +got):\n%s", diff)
	}
	// A close started by the client is relayed end to end.
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1000, "bye")))
	if diff := cmp.Diff(wstest.Frame{Fin: true, Op: ws.OpClose, Masked: true, Data: wstest.CloseBody(1000, "bye")}, u.ReadFrame(t)); diff != "" {
		t.Errorf("upstream close (-want +got):\n%s", diff)
	}
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1000, "bye")))
	if diff := cmp.Diff(wstest.Frame{Fin: true, Op: ws.OpClose, Data: wstest.CloseBody(1000, "bye")}, c.ReadFrame(t)); diff != "" {
		t.Errorf("client close (-want +got):\n%s", diff)
	}
	if _, err := c.TryReadFrame(); !errors.Is(err, io.EOF) {
		t.Errorf("client connection after close handshake: %v, want EOF", err)
	}
}

// TestInterceptorValidation covers what Autobahn sections 1-7
// check of an endpoint, for frames from the client and from the upstream.
func TestInterceptorValidation(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 126)
	huge := append([]byte{0x82, 0xff}, binary.BigEndian.AppendUint64(nil, 1<<62)...)
	huge = append(huge, 1, 2, 3, 4)
	tests := []struct {
		name     string
		fromUp   bool
		raw      []byte
		wantCode ws.StatusCode
	}{
		{"unmasked client frame", false, wstest.RawFrame(true, 0, ws.OpText, false, []byte("x")), 1002},
		{"masked upstream frame", true, wstest.RawFrame(true, 0, ws.OpText, true, []byte("x")), 1002},
		{"rsv1 without extension", false, wstest.RawFrame(true, 4, ws.OpText, true, []byte("x")), 1002},
		{"rsv2", false, wstest.RawFrame(true, 2, ws.OpBinary, true, []byte("x")), 1002},
		{"rsv3 on ping", false, wstest.RawFrame(true, 1, ws.OpPing, true, nil), 1002},
		{"reserved opcode 3", false, wstest.RawFrame(true, 0, 3, true, nil), 1002},
		{"reserved opcode 11", true, wstest.RawFrame(true, 0, 11, false, nil), 1002},
		{"ping over 125 bytes", false, wstest.RawFrame(true, 0, ws.OpPing, true, long), 1002},
		{"fragmented ping", false, wstest.RawFrame(false, 0, ws.OpPing, true, nil), 1002},
		{"continuation first", false, wstest.RawFrame(true, 0, ws.OpContinuation, true, []byte("x")), 1002},
		{"text inside fragmented", false, append(wstest.RawFrame(false, 0, ws.OpText, true, []byte("a")),
			wstest.RawFrame(true, 0, ws.OpText, true, []byte("b"))...), 1002},
		{"invalid utf-8", false, wstest.RawFrame(true, 0, ws.OpText, true, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}), 1007},
		{"invalid utf-8 across fragments", true, append(wstest.RawFrame(false, 0, ws.OpText, false, []byte{0xf4, 0x90}),
			wstest.RawFrame(true, 0, ws.OpContinuation, false, []byte{0x80, 0x80})...), 1007},
		{"claimed length over limit", false, huge, 1009},
		{"message over limit in fragments", false, append(wstest.RawFrame(false, 0, ws.OpBinary, true, make([]byte, 600)),
			wstest.RawFrame(true, 0, ws.OpContinuation, true, make([]byte, 600))...), 1009},
		{"close with 1 byte", false, wstest.RawFrame(true, 0, ws.OpClose, true, []byte{3}), 1002},
		{"close code 1005", false, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1005, "")), 1002},
		{"close code 1006", true, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1006, "")), 1002},
		{"close code 999", false, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(999, "")), 1002},
		{"close code 2000", false, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(2000, "")), 1002},
		{"close reason not utf-8", false, wstest.RawFrame(true, 0, ws.OpClose, true, append(wstest.CloseBody(1000, ""), 0xff)), 1007},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, u := frameSetup(t, &Interceptor{MaxMessageSize: 1000}, "")
			if tt.fromUp {
				u.Send(t, tt.raw)
			} else {
				c.Send(t, tt.raw)
			}
			cc, cm := c.ReadClose(t)
			uc, um := u.ReadClose(t)
			if cc != tt.wantCode || uc != tt.wantCode {
				t.Errorf("close codes client=%d upstream=%d, want %d", cc, uc, tt.wantCode)
			}
			if cm || !um {
				t.Errorf("masking: client close masked=%v, upstream close masked=%v", cm, um)
			}
		})
	}
}

func TestInterceptorValidCloseCodes(t *testing.T) {
	for _, code := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		_, c, u := frameSetup(t, &Interceptor{}, "")
		c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(code, "r")))
		if got, _ := u.ReadClose(t); got != code {
			t.Errorf("close %d relayed as %d", code, got)
		}
	}
}

func TestInterceptorStripsCompression(t *testing.T) {
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	var offer atomic.Value
	up.Respond = func(req *http.Request) string {
		offer.Store(strings.Join(req.Header["Sec-Websocket-Extensions"], ","))
		return wstest.ValidSwitch(req)
	}
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: up.URL}}
	p.Handle("/", &Interceptor{})
	srv := newTestProxy(t, p)
	c, res := wstest.Dial(t, srv, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", nil)
	defer c.Close()
	up.Accept()
	if got := offer.Load(); got != "" {
		t.Errorf("upstream saw offer %q", got)
	}
	if got := res.Header.Get("Sec-WebSocket-Extensions"); got != "" {
		t.Errorf("client got extensions %q", got)
	}
}

func deflateTest(t *testing.T, p []byte) []byte {
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestSpeed)
	fw.Write(p)
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func inflateTest(t *testing.T, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

func TestInterceptorTerminatesCompression(t *testing.T) {
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	var offer atomic.Value
	up.Respond = func(req *http.Request) string {
		offer.Store(req.Header.Get("Sec-WebSocket-Extensions"))
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n" +
			"Sec-WebSocket-Accept: " + wstest.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
	}
	var seen []string
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: up.URL}}
	p.Handle("/", &Interceptor{
		Compression:    CompressionTerminate,
		MaxMessageSize: 4096,
		OnMessage: func(s *Session, m *Message) error {
			seen = append(seen, string(m.Data))
			m.Data = bytes.ToUpper(m.Data)
			return nil
		},
	})
	srv := newTestProxy(t, p)
	c, res := wstest.Dial(t, srv, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n", nil)
	u := up.Accept()
	if got := offer.Load(); got != deflateOffer {
		t.Errorf("upstream offer %q", got)
	}
	if got := res.Header.Get("Sec-WebSocket-Extensions"); got != deflateResponse {
		t.Errorf("client extensions %q", got)
	}
	msg := strings.Repeat("compress me please ", 10)
	c.Send(t, wstest.RawFrame(true, 4, ws.OpText, true, deflateTest(t, []byte(msg))))
	f := u.ReadFrame(t)
	if f.Rsv != 4 || string(inflateTest(t, f.Data)) != strings.ToUpper(msg) {
		t.Errorf("upstream frame rsv=%d %q", f.Rsv, f.Data)
	}
	u.Send(t, wstest.RawFrame(true, 4, ws.OpText, false, deflateTest(t, []byte("short"))))
	if f := c.ReadFrame(t); f.Rsv != 0 || string(f.Data) != "SHORT" {
		t.Errorf("client frame %v", f)
	}
	if diff := cmp.Diff([]string{msg, "short"}, seen); diff != "" {
		t.Errorf("handler saw (-want +got):\n%s", diff)
	}
	// A compression bomb is cut at the limit: 1009.
	c.Send(t, wstest.RawFrame(true, 4, ws.OpBinary, true, deflateTest(t, make([]byte, 1<<20))))
	if code, _ := c.ReadClose(t); code != 1009 {
		t.Errorf("bomb: close %d", code)
	}
}

func TestInterceptorTimers(t *testing.T) {
	t.Run("max session time", func(t *testing.T) {
		_, c, u := frameSetup(t, &Interceptor{MaxSessionTime: 30 * time.Millisecond}, "")
		if code, _ := c.ReadClose(t); code != ws.StatusPolicyViolation {
			t.Errorf("client close %d", code)
		}
		if code, _ := u.ReadClose(t); code != ws.StatusPolicyViolation {
			t.Errorf("upstream close %d", code)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		_, c, u := frameSetup(t, &Interceptor{IdleTimeout: 30 * time.Millisecond}, "")
		if code, _ := c.ReadClose(t); code != ws.StatusGoingAway {
			t.Errorf("client close %d", code)
		}
		if code, _ := u.ReadClose(t); code != ws.StatusGoingAway {
			t.Errorf("upstream close %d", code)
		}
	})
	t.Run("proxy pings", func(t *testing.T) {
		_, c, u := frameSetup(t, &Interceptor{PingInterval: 20 * time.Millisecond}, "")
		f := c.ReadFrame(t)
		if f.Op != ws.OpPing || f.Masked || !strings.HasPrefix(string(f.Data), pingPrefix) {
			t.Fatalf("client got %v", f)
		}
		// The answer is not forwarded: the next frame the upstream sees
		// after its own pings is the message.
		c.Send(t, wstest.RawFrame(true, 0, ws.OpPong, true, f.Data))
		c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte("after pong")))
		for {
			f := u.ReadFrame(t)
			if f.Op == ws.OpPing {
				if !f.Masked {
					t.Errorf("ping to upstream not masked")
				}
				continue
			}
			if f.Op != ws.OpText || string(f.Data) != "after pong" {
				t.Errorf("upstream got %v", f)
			}
			break
		}
	})
}

func TestInterceptorReauthorize(t *testing.T) {
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	var calls atomic.Int32
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: up.URL}}
	p.AddRoute(sluice.Route{
		Pattern:     "/",
		Interceptor: &Interceptor{ReauthorizeInterval: 10 * time.Millisecond},
		Authorizer: sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
			if calls.Add(1) >= 3 {
				return sluice.Deny(http.StatusForbidden, "revoked"), nil
			}
			return sluice.Allow, nil
		}),
	})
	srv := newTestProxy(t, p)
	c, res := wstest.Dial(t, srv, "", nil)
	if res.StatusCode != 101 {
		t.Fatalf("status %d", res.StatusCode)
	}
	u := up.Accept()
	if code, _ := c.ReadClose(t); code != ws.StatusPolicyViolation {
		t.Errorf("client close %d", code)
	}
	if code, _ := u.ReadClose(t); code != ws.StatusPolicyViolation {
		t.Errorf("upstream close %d", code)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("authorizer called %d times, want 3", n)
	}
}

func TestInterceptorShutdown(t *testing.T) {
	p, c, u := frameSetup(t, &Interceptor{}, "")
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	if code, masked := c.ReadClose(t); code != ws.StatusGoingAway || masked {
		t.Errorf("client close %d masked=%v", code, masked)
	}
	if code, masked := u.ReadClose(t); code != ws.StatusGoingAway || !masked {
		t.Errorf("upstream close %d masked=%v", code, masked)
	}
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1001, "")))
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1001, "")))
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestInterceptorPlainRequests: a route with a
// Interceptor forwards its plain HTTP requests as usual.
func TestInterceptorPlainRequests(t *testing.T) {
	leaktest.Check(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.URL.Path)
	}))
	defer up.Close()
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: mustParse(t, up.URL)}}
	p.Handle("/", &Interceptor{})
	srv := newTestProxy(t, p)
	res, err := client(t).Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "plain /x" {
		t.Errorf("got %q", body)
	}
}
