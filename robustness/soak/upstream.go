package soak

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Header names shared by the clients, the proxy and the upstreams.
const (
	// headerTarget names the upstream that answered.
	headerTarget = "X-Soak-Target"
	// headerIdentity is set by the proxy's Authorizer only; a client's is
	// removed (Proxy.IdentityHeaders).
	headerIdentity = "X-Soak-Identity"
	// headerIdentitySeen is the identity the upstream received.
	headerIdentitySeen = "X-Soak-Identity-Seen"
	// headerUser is what the client claims; the Authorizer derives the
	// identity from it.
	headerUser = "X-Soak-User"
	// headerDeny asks the Authorizer to refuse the request.
	headerDeny = "X-Soak-Deny"
)

// handler returns the upstream application every target and the origin
// serve. Path prefixes of the proxy's routes ("/solo", "/capture") are
// ignored, so one handler serves every route:
//
//	/health            200 "ok"
//	/small?id=X        "small X\n"
//	/json?n=N          {"n":N,"target":NAME}
//	/upload            "LENGTH SHA256HEX" of the request body
//	/download?size=N&seed=S[&cl=1]   N bytes of the stream of seed S
//	/events?n=N&seed=S               N server-sent events, 5 ms apart
//	/ws                a WebSocket echo
func handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		for _, p := range []string{"/solo", "/capture", "/origin", "/wsmsg"} {
			if rest, ok := strings.CutPrefix(path, p+"/"); ok {
				path = "/" + rest
			}
		}
		w.Header().Set(headerTarget, name)
		if v := r.Header.Get(headerIdentity); v != "" {
			w.Header().Set(headerIdentitySeen, v)
		}
		q := r.URL.Query()
		switch path {
		case "/health":
			io.WriteString(w, "ok\n")
		case "/small":
			io.WriteString(w, "small "+q.Get("id")+"\n")
		case "/json":
			n, _ := strconv.Atoi(q.Get("n"))
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"n": n, "target": name})
		case "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				return // the client or the proxy went away
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/download":
			size, _ := strconv.ParseInt(q.Get("size"), 10, 64)
			seed, _ := strconv.ParseUint(q.Get("seed"), 10, 64)
			if q.Get("cl") == "1" {
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			io.Copy(w, io.LimitReader(newStream(seed), size))
		case "/events":
			events(w, r, q)
		case "/ws":
			echoWebSocket(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// events writes n server-sent events, one every 5 ms, each flushed.
func events(w http.ResponseWriter, r *http.Request, q map[string][]string) {
	n, _ := strconv.Atoi(first(q["n"]))
	seed := first(q["seed"])
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for i := range n {
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s-%d\n\n", i, seed, i); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// echoWebSocket upgrades the request and echoes every data message until
// the client closes.
func echoWebSocket(w http.ResponseWriter, r *http.Request) {
	conn, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	peer := struct {
		io.Reader
		io.Writer
	}{rw.Reader, conn}
	for {
		conn.SetDeadline(time.Now().Add(time.Minute))
		msg, op, err := wsutil.ReadClientData(peer)
		if err != nil {
			return // a close frame (answered by wsutil) or a broken connection
		}
		if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
			return
		}
	}
}

// newStream returns the endless deterministic byte stream of seed: what
// /download sends and what a client hashes to check it.
func newStream(seed uint64) io.Reader {
	var key [32]byte
	for i := range 4 {
		for j := range 8 {
			key[i*8+j] = byte(seed >> (8 * j))
		}
		key[i*8] ^= byte(i)
	}
	return rand.NewChaCha8(key)
}

// streamSum returns the sha256 of the first size bytes of seed's stream.
func streamSum(seed uint64, size int64) string {
	h := sha256.New()
	io.Copy(h, io.LimitReader(newStream(seed), size))
	return hex.EncodeToString(h.Sum(nil))
}

// A Target is an upstream server on a fixed loopback port that can be
// taken down (listener closed, every connection cut, as if the process
// died) and brought back up on the same port. It serves HTTP/1.1 and
// cleartext HTTP/2 with prior knowledge (h2c) on one listener.
type Target struct {
	// Name is what its responses carry in X-Soak-Target.
	Name string
	// Addr is its host:port on 127.0.0.1.
	Addr string

	mu    sync.Mutex
	up    bool
	srv   *http.Server
	ln    net.Listener
	conns map[net.Conn]struct{}
	done  chan struct{} // closed when the serving goroutine of srv returned
}

// NewTarget starts a target on a free loopback port.
func NewTarget(name string) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Target{Name: name, Addr: ln.Addr().String()}
	t.serve(ln)
	return t, nil
}

func (t *Target) serve(ln net.Listener) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	t.conns = make(map[net.Conn]struct{})
	t.ln = &trackingListener{Listener: ln, t: t}
	t.srv = &http.Server{
		Handler:           handler(t.Name),
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          discardLog,
	}
	t.done = make(chan struct{})
	t.up = true
	go func(srv *http.Server, ln net.Listener, done chan struct{}) {
		defer close(done)
		srv.Serve(ln)
	}(t.srv, t.ln, t.done)
}

// Down takes the target down as a crash would: the listener closes (new
// connections are refused) and every open connection, hijacked WebSocket
// ones included, is cut at once. It returns when the server has stopped.
func (t *Target) Down() {
	t.mu.Lock()
	if !t.up {
		t.mu.Unlock()
		return
	}
	t.up = false
	t.ln.Close()
	conns := t.conns
	t.conns = nil
	srv, done := t.srv, t.done
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	srv.Close()
	<-done
}

// Up brings the target back on its port.
func (t *Target) Up() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.up {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago; another listener may hold it briefly
		if ln, err = net.Listen("tcp", t.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("target %s back up on %s: %w", t.Name, t.Addr, err)
	}
	t.serve(ln)
	return nil
}

// Close stops the target for good.
func (t *Target) Close() { t.Down() }

// trackingListener records every accepted connection of its target, so
// that Down can cut them, hijacked ones included.
type trackingListener struct {
	net.Listener
	t *Target
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: l.t}
	l.t.mu.Lock()
	if l.t.conns == nil || l.t.ln != l {
		l.t.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	l.t.conns[tc] = struct{}{}
	l.t.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	t    *Target
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// An Origin is a stable HTTP server (never taken down) reached through the
// proxy as a forward proxy: absolute-form requests and CONNECT tunnels.
type Origin struct {
	Addr string
	srv  *http.Server
	done chan struct{}
}

// NewOrigin starts an origin on a free loopback port.
func NewOrigin() (*Origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &Origin{Addr: ln.Addr().String(), done: make(chan struct{})}
	o.srv = &http.Server{Handler: handler("origin"), ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
	go func() {
		defer close(o.done)
		o.srv.Serve(ln)
	}()
	return o, nil
}

// Close stops the origin.
func (o *Origin) Close() {
	o.srv.Close()
	<-o.done
}

// readLine reads one line without its end.
func readLine(br *bufio.Reader) (string, error) {
	s, err := br.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}
