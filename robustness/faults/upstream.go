package faults

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/grpc"
)

// Upstream is the origin server behind every proxy of the matrix, the
// same program for all of them. Its HTTP/1.1 listener serves:
//
//	GET  /small?id=ID&n=N    N bytes of ID's stream, with Content-Length
//	GET  /bytes?id=ID&n=N    the same, of unknown length (chunked)
//	POST /upload?id=ID&n=N   checks the body against ID's stream (Upload)
//	GET  /sse?id=ID&events=E&ms=M   E server-sent events M ms apart, then "event: end"
//	GET  /ws                 a WebSocket echo
//
// and close=1 on any of them adds Connection: close to the response (the
// harness's own requests use it, so that the proxies keep no upstream
// connection of theirs). Its gRPC listener (h2c) serves faults.Echo/Stream,
// a bidirectional stream that echoes every message.
type Upstream struct {
	// HTTPAddr and GRPCAddr are the listeners' host:port.
	HTTPAddr, GRPCAddr string

	srv  *http.Server
	gsrv *grpc.Server

	mu      sync.Mutex
	uploads map[uint64]UploadVerdict
	running map[uint64]*upload
}

// upload is an upload the upstream is reading.
type upload struct {
	got  atomic.Int64  // bytes read so far
	done chan struct{} // closed when the verdict is in
}

// UploadVerdict is what the upstream saw of an upload.
type UploadVerdict struct {
	// Result is "complete" (every byte, then the body's end), "aborted"
	// (the body failed: the proxy cut it, a clear failure), "truncated"
	// (the body ended cleanly but short: a violation) or "corrupt" (a
	// byte differs from the stream: a violation).
	Result string
	// Got is the number of bytes read.
	Got int64
	// Sum is the SHA-256 of the bytes read, in hex.
	Sum string
}

// StartUpstream starts an Upstream on loopback ports.
func StartUpstream() (*Upstream, error) {
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		hl.Close()
		return nil, err
	}
	u := &Upstream{HTTPAddr: hl.Addr().String(), GRPCAddr: gl.Addr().String(), uploads: map[uint64]UploadVerdict{}, running: map[uint64]*upload{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", u.serveBytes)
	mux.HandleFunc("GET /bytes", u.serveBytes)
	mux.HandleFunc("POST /upload", u.serveUpload)
	mux.HandleFunc("GET /sse", u.serveSSE)
	mux.HandleFunc("GET /ws", u.serveWS)
	u.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	u.gsrv = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	u.gsrv.RegisterService(&echoService, struct{}{})
	go u.srv.Serve(hl)
	go u.gsrv.Serve(gl)
	return u, nil
}

// Close stops the Upstream and ends its connections.
func (u *Upstream) Close() {
	u.srv.Close()
	u.gsrv.Stop()
}

// Upload returns the verdict on the upload of id, if it reached the
// upstream; if the upstream is still reading it, Upload waits up to d for
// the body to end.
func (u *Upstream) Upload(id uint64, d time.Duration) (UploadVerdict, bool) {
	u.mu.Lock()
	up, ok := u.running[id]
	u.mu.Unlock()
	if !ok {
		return UploadVerdict{}, false
	}
	select {
	case <-up.done:
	case <-time.After(d):
		return UploadVerdict{Result: "still reading", Got: -1}, true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	v, ok := u.uploads[id]
	return v, ok
}

// UploadProgress returns how many bytes of the upload of id the upstream
// has read so far (0 if it has not seen it).
func (u *Upstream) UploadProgress(id uint64) int64 {
	u.mu.Lock()
	up, ok := u.running[id]
	u.mu.Unlock()
	if !ok {
		return 0
	}
	return up.got.Load()
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// params reads the id and n of a request.
func params(r *http.Request) (id uint64, n int64, err error) {
	id, err = strconv.ParseUint(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("bad id: %w", err)
	}
	if s := r.URL.Query().Get("n"); s != "" {
		if n, err = strconv.ParseInt(s, 10, 64); err != nil || n < 0 {
			return 0, 0, fmt.Errorf("bad n %q", s)
		}
	}
	return id, n, nil
}

func closeIfAsked(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("close") == "1" {
		w.Header().Set("Connection", "close")
	}
}

// serveBytes answers /small (with Content-Length) and /bytes (chunked).
func (u *Upstream) serveBytes(w http.ResponseWriter, r *http.Request) {
	id, n, err := params(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	closeIfAsked(w, r)
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.URL.Path == "/small" {
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	}
	buf := make([]byte, 32<<10)
	io.CopyBuffer(w, NewPayload(id, n), buf)
}

// serveUpload checks an upload and records its verdict.
func (u *Upstream) serveUpload(w http.ResponseWriter, r *http.Request) {
	id, n, err := params(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	closeIfAsked(w, r)
	up := &upload{done: make(chan struct{})}
	u.mu.Lock()
	u.running[id] = up
	u.mu.Unlock()
	v := NewVerifier(id, n)
	_, err = io.CopyBuffer(v, countingReader{r.Body, &up.got}, make([]byte, 32<<10))
	verdict := UploadVerdict{Got: v.Got(), Sum: v.Sum()}
	switch {
	case v.Bad() >= 0 && v.Bad() < v.Got():
		verdict.Result = "corrupt"
	case err != nil:
		verdict.Result = "aborted"
	case v.Complete():
		verdict.Result = "complete"
	default:
		verdict.Result = "truncated"
	}
	u.mu.Lock()
	u.uploads[id] = verdict
	u.mu.Unlock()
	close(up.done)
	if verdict.Result != "complete" {
		http.Error(w, verdict.Result, http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "ok %d %s\n", verdict.Got, verdict.Sum)
}

// serveSSE sends events M ms apart, each flushed, then an end event.
func (u *Upstream) serveSSE(w http.ResponseWriter, r *http.Request) {
	id, _, err := params(r)
	events, err2 := strconv.Atoi(r.URL.Query().Get("events"))
	ms, err3 := strconv.Atoi(r.URL.Query().Get("ms"))
	if err := errors.Join(err, err2, err3); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	closeIfAsked(w, r)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	f := http.NewResponseController(w)
	for i := range events {
		if i > 0 {
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, EventData(id, i)); err != nil {
			return
		}
		if f.Flush() != nil {
			return
		}
	}
	fmt.Fprintf(w, "event: end\ndata: %d\n\n", events)
}

// serveWS echoes every WebSocket message; 30 s of silence ends it.
func (u *Upstream) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer conn.Close()
	for {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
			return
		}
	}
}

// rawCodec carries gRPC messages as raw bytes (*[]byte), so that the echo
// needs no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

// echoService is faults.Echo: one bidirectional method, Stream.
var echoService = grpc.ServiceDesc{
	ServiceName: "faults.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			var m []byte
			for {
				if err := stream.RecvMsg(&m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := stream.SendMsg(&m); err != nil {
					return err
				}
			}
		},
	}},
}

// echoMethod is the full name of faults.Echo/Stream.
const echoMethod = "/faults.Echo/Stream"
