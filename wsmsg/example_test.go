package wsmsg_test

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
	"github.com/sluiceproxy/sluice/wsmsg"
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

// An Interceptor on a route sees every message: here it drops those that
// mention a secret, tags the others and ends the session on "bye!" with a
// close code of its own, which OnClose reports once the session is over.
func ExampleInterceptor() {
	app := echoServer()
	defer app.Close()
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
	closed := make(chan string, 1)
	p.Handle("/chat", &wsmsg.Interceptor{
		OnMessage: func(s *wsmsg.Session, m *wsmsg.Message) error {
			switch text := string(m.Data); {
			case m.Direction == wsmsg.ToClient:
				return nil
			case strings.Contains(text, "secret"):
				return wsmsg.ErrDrop
			case text == "bye!":
				return &wsmsg.CloseError{Code: 4000, Reason: "see you"}
			}
			m.Data = append([]byte("checked: "), m.Data...)
			return nil
		},
		OnClose: func(s *wsmsg.Session, code ws.StatusCode, reason string) {
			closed <- fmt.Sprintf("session on %s ended: %d %s", s.Request().URL.Path, code, reason)
		},
	})
	front := httptest.NewServer(p)
	defer front.Close()

	chat(front.URL, "hello!", "the secret is 42", "how are you?", "bye!")
	fmt.Println(<-closed)
	// Output:
	// checked: hello!
	// checked: how are you?
	// ws closed: 4000 see you
	// session on /chat ended: 4000 see you
}
