// Package origin is the upstream application of the benchmark: the server
// every proxy under test forwards to. It is deliberately cheap, so that
// the proxy, not the origin, is what a scenario measures.
//
//	GET  /small                 SmallBody (100 bytes, Content-Length)
//	GET  /bytes?n=N             N bytes from one shared buffer, Content-Length
//	GET  /bytes?n=N&chunked=1   the same with chunked transfer coding
//	POST|PUT /sink              reads and discards the body, answers {"bytes":N}
//	                            (with ?sha256=1 also the body's SHA-256)
//	GET  /ws                    WebSocket echo of every data frame
//	GET  /healthz               "ok"
package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// SmallBody is the exact body of GET /small: 100 printable ASCII bytes
// without newline, quotes or '$', so that nginx can serve the same bytes
// with `return 200 "..."` when it stands in as the cheaper upstream.
var SmallBody = func() string {
	s := "small response of the sluice benchmark upstream, padded to exactly one hundred bytes "
	return s + strings.Repeat("-", 100-len(s))
}()

// MaxBytes is the largest n that /bytes accepts.
const MaxBytes = 1 << 40

// MaxFrame is the largest WebSocket frame /ws echoes; a larger one closes
// the connection.
const MaxFrame = 16 << 20

// chunk is the size of the shared /bytes buffer and of the /sink buffers.
const chunk = 256 << 10

var (
	small       = []byte(SmallBody)
	smallLength = []string{strconv.Itoa(len(SmallBody))}
	textPlain   = []string{"text/plain"}
	octets      = []string{"application/octet-stream"}
	jsonType    = []string{"application/json"}

	// payload is read by every /bytes response at once, never written.
	payload = func() []byte {
		b := make([]byte, chunk)
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		return b
	}()

	sinkBuffers = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}
)

// Config tunes the handler. The zero value is ready to use.
type Config struct {
	// WSIdle closes a WebSocket that received nothing for this long.
	// If zero, 5 minutes.
	WSIdle time.Duration
}

// Handler returns the origin's routes.
func Handler(cfg Config) http.Handler {
	if cfg.WSIdle <= 0 {
		cfg.WSIdle = 5 * time.Minute
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/small", serveSmall)
	mux.HandleFunc("/bytes", serveBytes)
	mux.HandleFunc("/sink", serveSink)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveEcho(w, r, cfg.WSIdle) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

func serveSmall(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Content-Length"] = smallLength
	w.Write(small)
}

func serveBytes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.ParseInt(q.Get("n"), 10, 64)
	if err != nil || n < 0 || n > MaxBytes {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h["Content-Type"] = octets
	if q.Get("chunked") != "1" {
		h["Content-Length"] = []string{strconv.FormatInt(n, 10)}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for n > 0 {
		k := min(n, int64(len(payload)))
		if _, err := w.Write(payload[:k]); err != nil {
			return
		}
		n -= k
	}
}

func serveSink(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		http.Error(w, "POST or PUT", http.StatusMethodNotAllowed)
		return
	}
	var sum hash.Hash
	if r.URL.Query().Get("sha256") == "1" {
		sum = sha256.New()
	}
	bp := sinkBuffers.Get().(*[]byte)
	defer sinkBuffers.Put(bp)
	var total int64
	for {
		k, err := r.Body.Read(*bp)
		total += int64(k)
		if sum != nil {
			sum.Write((*bp)[:k])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, "read error: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	out := fmt.Sprintf("{\"bytes\":%d}\n", total)
	if sum != nil {
		out = fmt.Sprintf("{\"bytes\":%d,\"sha256\":%q}\n", total, hex.EncodeToString(sum.Sum(nil)))
	}
	w.Header()["Content-Type"] = jsonType
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(out))}
	io.WriteString(w, out)
}

// serveEcho upgrades to WebSocket and sends every data frame back as an
// unmasked frame of the same opcode and payload, answers pings, and
// returns on a close frame, an error, or idle silence.
func serveEcho(w http.ResponseWriter, r *http.Request, idle time.Duration) {
	conn, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	// The hijacked reader may already hold the client's first frame.
	br, bw := rw.Reader, rw.Writer
	var buf []byte
	for {
		conn.SetReadDeadline(time.Now().Add(idle))
		h, err := ws.ReadHeader(br)
		if err != nil || h.Length > MaxFrame {
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		out := ws.Header{Fin: h.Fin, OpCode: h.OpCode, Length: h.Length}
		switch h.OpCode {
		case ws.OpClose:
			ws.WriteFrame(bw, ws.NewCloseFrame(nil))
			bw.Flush()
			return
		case ws.OpPing:
			out.OpCode = ws.OpPong
		case ws.OpPong:
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(idle))
		if ws.WriteHeader(bw, out) != nil {
			return
		}
		if _, err := bw.Write(p); err != nil || bw.Flush() != nil {
			return
		}
	}
}
