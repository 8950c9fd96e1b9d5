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

// WebSocket upgrades need no route: they are detected by their headers
// and tunnelled byte for byte. Shutdown ends the tunnels with close 1001.
func ExampleProxy_Shutdown() {
	app := echoServer()
	defer app.Close()
	target, _ := url.Parse(app.URL)
	p := &sluice.Proxy{Director: &sluice.SingleHost{Target: target}}
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
