package main

import (
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// demo is the embedded upstream: a chat room on /chat (every text message
// goes to every connected client, the sender included) and a page on /
// to try it in a browser.
type demo struct {
	Addr string
	srv  *http.Server
	ln   net.Listener

	mu      sync.Mutex
	members map[net.Conn]*sync.Mutex
}

func startDemo() (*demo, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &demo{Addr: ln.Addr().String(), ln: ln, members: map[net.Conn]*sync.Mutex{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	})
	mux.HandleFunc("GET /chat", d.chat)
	d.srv = &http.Server{Handler: mux}
	go d.srv.Serve(ln)
	return d, nil
}

func (d *demo) Close() error {
	err := d.srv.Close()
	d.mu.Lock()
	for c := range d.members {
		c.Close()
	}
	d.mu.Unlock()
	return err
}

func (d *demo) chat(w http.ResponseWriter, r *http.Request) {
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	wmu := new(sync.Mutex)
	d.mu.Lock()
	d.members[conn] = wmu
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.members, conn)
		d.mu.Unlock()
		conn.Close()
	}()
	for {
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		d.mu.Lock()
		for c, m := range d.members {
			m.Lock()
			_ = wsutil.WriteServerText(c, msg)
			m.Unlock()
		}
		d.mu.Unlock()
	}
}

const page = `<!doctype html>
<meta charset="utf-8">
<title>sluice ws-filter demo</title>
<h1>Chat through sluice</h1>
<p>Messages matching the filter are dropped by the proxy; the others are tagged.</p>
<form id="f"><input id="m" autofocus size="60"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = m => document.getElementById("log").textContent += m + "\n";
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat");
ws.onmessage = e => log(e.data);
ws.onclose = e => log("[closed " + e.code + " " + e.reason + "]");
document.getElementById("f").onsubmit = e => {
  e.preventDefault();
  const m = document.getElementById("m");
  ws.send(m.value);
  m.value = "";
};
</script>
`
