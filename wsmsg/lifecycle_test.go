package wsmsg

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/go-cmp/cmp"
	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/leaktest"
	"github.com/sluiceproxy/sluice/internal/wstest"
)

// closed is what OnClose reported.
type closed struct {
	Code   ws.StatusCode
	Reason string
}

// TestInterceptorOnClose: OnClose runs once, after the end, with the code
// and reason of the first close frame of the session, whoever sent it.
func TestInterceptorOnClose(t *testing.T) {
	tests := []struct {
		name string
		// end ends the session; the peers answer close frames.
		end  func(t *testing.T, p *sluice.Proxy, c, u *wstest.Peer)
		want closed
	}{
		{"client closes", func(t *testing.T, _ *sluice.Proxy, c, u *wstest.Peer) {
			c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1000, "bye")))
			u.ReadClose(t)
			u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1000, "bye")))
		}, closed{1000, "bye"}},
		{"upstream closes without code", func(t *testing.T, _ *sluice.Proxy, c, u *wstest.Peer) {
			u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, nil))
			c.ReadClose(t)
			c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, nil))
		}, closed{ws.StatusNoStatusRcvd, ""}},
		{"handler closes", func(t *testing.T, _ *sluice.Proxy, c, u *wstest.Peer) {
			c.Send(t, wstest.RawFrame(true, 0, ws.OpText, true, []byte("close")))
			answerClose(t, c, u)
		}, closed{4001, "closed by policy"}},
		{"protocol error", func(t *testing.T, _ *sluice.Proxy, c, u *wstest.Peer) {
			c.Send(t, wstest.RawFrame(true, 0, ws.OpText, false, []byte("unmasked")))
			answerClose(t, c, u)
		}, closed{ws.StatusProtocolError, "client: unmasked frame from client"}},
		{"client vanishes", func(t *testing.T, _ *sluice.Proxy, c, u *wstest.Peer) {
			c.Close()
			u.ReadClose(t)
			u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, nil))
		}, closed{ws.StatusGoingAway, "client went away"}},
		{"shutdown", func(t *testing.T, p *sluice.Proxy, c, u *wstest.Peer) {
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(context.Background()) }()
			answerClose(t, c, u)
			if err := <-done; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}, closed{ws.StatusGoingAway, "proxy shutting down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan closed, 2)
			ic := &Interceptor{
				OnMessage: func(s *Session, m *Message) error {
					if string(m.Data) == "close" {
						return &CloseError{Code: 4001, Reason: "closed by policy"}
					}
					return nil
				},
				OnClose: func(s *Session, code ws.StatusCode, reason string) {
					if err := s.Context().Err(); err == nil {
						t.Errorf("OnClose before the session context ended")
					}
					if err := s.Send(ToClient, Text, []byte("late")); err == nil {
						t.Errorf("Send in OnClose succeeded")
					}
					got <- closed{code, reason}
				},
			}
			type recorded struct {
				code      int
				sent, got int64
				status    int
			}
			recs := make(chan recorded, 2)
			p, c, u := frameSetup(t, ic, "", func(p *sluice.Proxy) {
				p.OnExchange = func(rec *sluice.Record) {
					recs <- recorded{rec.CloseCode, rec.RequestBytes, rec.ResponseBytes, rec.Status}
				}
			})
			tt.end(t, p, c, u)
			select {
			case g := <-got:
				if diff := cmp.Diff(tt.want, g); diff != "" {
					t.Errorf("OnClose (-want +got):\n%s", diff)
				}
			case <-time.After(wstest.Deadline):
				t.Fatal("OnClose not called")
			}
			// Both connections are closed when OnClose runs.
			for _, peer := range []*wstest.Peer{c, u} {
				for {
					if _, err := peer.TryReadFrame(); err != nil {
						break
					}
				}
			}
			if len(got) != 0 {
				t.Errorf("OnClose called twice")
			}
			// The exchange's Record: once, with the session's close code
			// and the bytes relayed (a close frame at least went upstream).
			select {
			case r := <-recs:
				if r.code != int(tt.want.Code) || r.status != http.StatusSwitchingProtocols || r.sent == 0 {
					t.Errorf("Record: close code %d status %d bytes %d/%d; want code %d, 101, bytes sent", r.code, r.status, r.sent, r.got, tt.want.Code)
				}
			case <-time.After(wstest.Deadline):
				t.Fatal("no Record")
			}
		})
	}
}

// answerClose reads the close frame each peer gets from the proxy and
// answers it.
func answerClose(t *testing.T, c, u *wstest.Peer) {
	t.Helper()
	code, _ := c.ReadClose(t)
	c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(code, "")))
	code, _ = u.ReadClose(t)
	u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(code, "")))
}

// TestSessionRequestOutlivesSession: what a Session returns stays the
// opening request's after the session ended and the Proxy went on to
// serve other requests with its recycled state (sluice.ProxyRequest is
// pooled; Request used to return it).
func TestSessionRequestOutlivesSession(t *testing.T) {
	leaktest.Check(t)
	up := wstest.NewUpstream(t)
	sessions := make(chan *Session, 1)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: up.URL}}
	p.AddRoute(sluice.Route{
		Pattern: "/",
		Authorizer: sluice.AuthorizerFunc(func(pr *sluice.ProxyRequest) (sluice.Decision, error) {
			pr.Out.Header.Set("X-User", pr.In.Header.Get("X-Name"))
			return sluice.Allow, nil
		}),
		Interceptor: &Interceptor{OnClose: func(s *Session, code ws.StatusCode, reason string) {
			sessions <- s
		}},
	})
	srv := newTestProxy(t, p)
	open := func(name string) *Session {
		t.Helper()
		c, res := wstest.Dial(t, srv, "X-Name: "+name+"\r\n", nil)
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", res.StatusCode)
		}
		u := up.Accept()
		c.Send(t, wstest.RawFrame(true, 0, ws.OpClose, true, wstest.CloseBody(1000, "")))
		u.ReadClose(t)
		u.Send(t, wstest.RawFrame(true, 0, ws.OpClose, false, wstest.CloseBody(1000, "")))
		select {
		case s := <-sessions:
			return s
		case <-time.After(wstest.Deadline):
			t.Fatal("session did not end")
			return nil
		}
	}
	first := open("alice")
	for _, name := range []string{"bob", "carol", "dave"} {
		open(name)
	}
	type view struct {
		User, Path, Host string
		HasBody          bool
		Addr             string
	}
	got := view{
		User: first.Request().Header.Get("X-User"), Path: first.Request().URL.Path, Host: first.Request().URL.Host,
		HasBody: first.Request().Body != http.NoBody, Addr: first.ClientAddr().String(),
	}
	want := view{User: "alice", Path: "/chat", Host: up.URL.Host, Addr: "127.0.0.1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("first session after others (-want +got):\n%s", diff)
	}
	if first.Request().Context().Err() == nil {
		t.Errorf("request context not done after the session ended")
	}
}

// TestInteropPython runs python3-websockets as both the client and the
// upstream through the message-level relay, which terminates
// permessage-deflate on both sides and tags the text it relays to the
// client.
func TestInteropPython(t *testing.T) {
	leaktest.Check(t)
	ic := &Interceptor{
		Compression: CompressionTerminate,
		OnMessage: func(s *Session, m *Message) error {
			if m.Direction == ToClient && m.Type == Text {
				m.Data = append([]byte("tag:"), m.Data...)
			}
			return nil
		},
	}
	got := wstest.PythonConversation(t, "../testdata/ws_interop.py", func(target *url.URL) string {
		p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
		p.Handle("/", ic)
		return newTestProxy(t, p).URL
	})
	want := []string{
		`{"subprotocol": null, "extensions": ["permessage-deflate"]}`,
		`{"text": "tag:hello"}`,
		`{"binary": "000162696e617279"}`,
		`{"text": "tag:fragmented ` + strings.Repeat("text ", 40) + `"}`,
		`{"pong": true}`,
		`{"close": 1000}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("conversation (-want +got):\n%s", diff)
	}
}
