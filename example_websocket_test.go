package sluice_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sluiceproxy/sluice"
)

// echoServer is a WebSocket upstream that sends every text message back.
func echoServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			msg, err := wsutil.ReadClientText(conn)
			if err != nil {
				return
			}
			if err := wsutil.WriteServerText(conn, msg); err != nil {
				return
			}
		}
	}))
}

// chat sends each message through url; after those ending in "?" or
// "!" it prints the next thing that comes back.
func chat(url string, msgs ...string) {
	conn, _, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(url, "http")+"/chat")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	for _, m := range msgs {
		if err := wsutil.WriteClientText(conn, []byte(m)); err != nil {
			fmt.Println(err)
			return
		}
		if strings.HasSuffix(m, "?") || strings.HasSuffix(m, "!") {
			msg, err := wsutil.ReadServerText(conn)
			if err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println(string(msg))
		}
	}
}

// WebSocket upgrades need no route: they are detected by their headers
// and tunnelled byte for byte. Shutdown ends the tunnels with close 1001.
func ExampleProxy_Shutdown() {
	app := echoServer()
	defer app.Close()
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: sluice.SingleHost(target, false)}
	front := httptest.NewServer(p)
	defer front.Close()

	conn, _, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(front.URL, "http")+"/chat")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	_ = wsutil.WriteClientText(conn, []byte("hello"))
	msg, _ := wsutil.ReadServerText(conn)
	fmt.Println(string(msg))

	go p.Shutdown(context.Background())
	_, err = wsutil.ReadServerText(conn)
	fmt.Println(err)
	// Output:
	// hello
	// ws closed: 1001 proxy shutting down
}

// A WebSocketInterceptor on a route sees every message: here it drops
// those that mention a secret, tags the others and ends the session on
// "bye!" with a close code of its own.
func ExampleWebSocketInterceptor() {
	app := echoServer()
	defer app.Close()
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: sluice.SingleHost(target, false)}
	p.Handle("/chat", &sluice.WebSocketInterceptor{
		Message: func(s *sluice.WebSocketSession, m *sluice.WebSocketMessage) error {
			switch text := string(m.Data); {
			case m.Direction == sluice.ToClient:
				return nil
			case strings.Contains(text, "secret"):
				return sluice.ErrDropMessage
			case text == "bye!":
				return &sluice.CloseError{Code: 4000, Reason: "see you"}
			}
			m.Data = append([]byte("checked: "), m.Data...)
			return nil
		},
	})
	front := httptest.NewServer(p)
	defer front.Close()

	chat(front.URL, "hello!", "the secret is 42", "how are you?", "bye!")
	// Output:
	// checked: hello!
	// checked: how are you?
	// ws closed: 4000 see you
}
