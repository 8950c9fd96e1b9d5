package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/websocket"

	"github.com/sluiceproxy/sluice/examples/internal/demo"
	"github.com/sluiceproxy/sluice/identity"
)

// demoApp is an embedded analysis tool behind the gateway. It trusts the
// identity headers only after checking their signature.
type demoApp struct {
	*demo.Server
	name     string
	verifier *identity.Signer
}

func startApp(name string, verifier *identity.Signer) (*demoApp, error) {
	a := &demoApp{name: name, verifier: verifier}
	srv, err := demo.Start(a.handler())
	if err != nil {
		return nil, err
	}
	a.Server = srv
	return a, nil
}

var appPage = template.Must(template.New("app").Parse(`<!doctype html>
<title>{{.App}}</title>
<h1>{{.App}}</h1>
<p>Signed in as <b>{{.Name}}</b> &lt;{{.Email}}&gt; (identity signature: {{.Signature}}).</p>
<p>Identity headers as this app received them:</p>
<pre>{{range .Headers}}{{.}}
{{end}}</pre>
<ul>
<li><a href="download?n=1073741824">download 1 GiB</a> (streamed through the gateway)</li>
<li>upload: <code>curl -b {{.Cookie}}=... -T bigfile http://GATEWAY/tools/{{.App}}/upload</code></li>
</ul>
<p>WebSocket echo: <input id=msg value="hello"> <button onclick="ws.send(msg.value)">send</button></p>
<pre id=log></pre>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname.replace(/[^/]*$/, "") + "ws");
ws.onmessage = e => { log.textContent += "echo: " + e.data + "\n"; };
ws.onopen = () => { log.textContent += "connected\n"; };
ws.onclose = () => { log.textContent += "closed\n"; };
</script>
`))

func (a *demoApp) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		sig := "valid"
		if err := a.verify(r); err != nil {
			sig = "INVALID: " + err.Error()
		}
		var headers []string
		for _, k := range []string{headerEmail, headerName, headerAudience, a.verifier.Header} {
			headers = append(headers, k+": "+r.Header.Get(k))
		}
		visits, _ := strconv.Atoi(cookieValue(r, a.name+"_visits"))
		http.SetCookie(w, &http.Cookie{Name: a.name + "_visits", Value: strconv.Itoa(visits + 1), Path: "/", HttpOnly: true})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = appPage.Execute(w, map[string]any{
			"App": a.name, "Email": r.Header.Get(headerEmail), "Name": r.Header.Get(headerName),
			"Signature": sig, "Headers": headers, "Cookie": sessionCookie,
		})
	})
	// whoami is the API view of the same: what the app believes.
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		sig := "valid"
		if err := a.verify(r); err != nil {
			sig = "invalid"
		}
		fmt.Fprintf(w, "app=%s email=%s name=%s signature=%s\n", a.name, r.Header.Get(headerEmail), r.Header.Get(headerName), sig)
	})
	// request shows the headers the app received, as JSON: what the
	// gateway forwards (identity, cookies) and nothing else.
	mux.HandleFunc("GET /request", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	})
	mux.HandleFunc("GET /download", demo.Download)
	mux.HandleFunc("PUT /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "received %d bytes\n", n)
	})
	mux.Handle("GET /ws", websocket.Server{Handler: func(c *websocket.Conn) {
		c.MaxPayloadBytes = 1 << 20
		for {
			var msg string
			if err := websocket.Message.Receive(c, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(c, msg); err != nil {
				return
			}
		}
	}})
	return mux
}

// verify checks that the gateway signed the request's identity for this
// app: the signature, and the audience it covers.
func (a *demoApp) verify(r *http.Request) error {
	vals, err := a.verifier.Verify(r.Header)
	if err != nil {
		return err
	}
	if aud := vals[strings.ToLower(headerAudience)]; aud != a.name {
		return fmt.Errorf("identity signed for %q, not for %s", aud, a.name)
	}
	return nil
}

func cookieValue(r *http.Request, name string) string {
	if c, err := r.Cookie(name); err == nil {
		return c.Value
	}
	return ""
}
