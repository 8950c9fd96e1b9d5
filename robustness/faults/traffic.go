package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Kind is a kind of traffic.
type Kind string

// The traffic kinds of the matrix.
const (
	Small     Kind = "small GET"      // GET of a small body with Content-Length
	Download  Kind = "download"       // GET of a large body of unknown length (chunked)
	Upload    Kind = "chunked upload" // POST of a large body of unknown length (chunked)
	SSE       Kind = "SSE"            // a stream of server-sent events
	WebSocket Kind = "WebSocket echo" // messages echoed over a WebSocket
	GRPC      Kind = "gRPC bidi echo" // messages echoed over a bidirectional gRPC stream
)

// Kinds lists every traffic kind, in the matrix's order.
var Kinds = []Kind{Small, Download, Upload, SSE, WebSocket, GRPC}

// Class is the class of a client's outcome.
type Class string

// The classes of outcomes. OK and the clear failures are acceptable
// outcomes of a fault; Truncated and Corrupt are violations: the client
// was given something that looks like a whole answer and is not one.
const (
	OK        Class = "ok"        // complete and verified
	Status    Class = "status"    // an error status before any of the answer (HTTP status, gRPC code)
	Refused   Class = "reset"     // the connection failed before a response head
	Cut       Class = "cut"       // the connection failed after the response began
	Stalled   Class = "stall"     // nothing moved for the client's idle bound
	Truncated Class = "TRUNCATED" // an answer that ended as if complete, short
	Corrupt   Class = "CORRUPT"   // bytes that are not the ones sent (another request's, or garbage)
)

// Outcome is what the client of one exchange got.
type Outcome struct {
	Class Class
	// Code is the HTTP status (Status), or the gRPC code name.
	Code string
	// Progress says how far the exchange got: bytes, events or messages.
	Progress string
	// Detail is the error, if any.
	Detail string
	// Elapsed is the time from the first byte sent to the outcome.
	Elapsed time.Duration
}

// Violation reports whether the outcome breaks the rule: complete and
// verified, or a clear failure.
func (o Outcome) Violation() bool { return o.Class == Truncated || o.Class == Corrupt }

// String is the outcome in a table cell: "ok", "502", "cut@12.0MiB",
// "stall@3/20 msgs", "TRUNCATED@31.9MiB".
func (o Outcome) String() string {
	s := string(o.Class)
	if o.Class == Status {
		s = o.Code
	} else if o.Code != "" {
		s += " " + o.Code
	}
	if o.Progress != "" && o.Class != OK {
		s += "@" + o.Progress
	}
	return s
}

// Traffic is one exchange of a kind through a proxy, and how the client
// bounds it.
type Traffic struct {
	Kind Kind
	// ID keys the exchange's bytes (Payload).
	ID uint64
	// Size is the body size of Small, Download and Upload.
	Size int64
	// Messages and MessageSize shape WebSocket and GRPC; Pace is the pause
	// between two messages (a paced client) and between two events of SSE.
	Messages, MessageSize int
	Pace                  time.Duration
	// Close asks the upstream for Connection: close (Small and Download),
	// so that the proxy keeps no upstream connection of the exchange.
	Close bool
	// HTTPAddr and GRPCAddr are where the client connects.
	HTTPAddr, GRPCAddr string
	// MidAt is the point at which Mid is called once: after this many
	// body bytes (Download, Upload), or events or echoes (SSE,
	// WebSocket, GRPC). Mid may be nil; it returns a channel closed once
	// what it does (inject a fault) is done, until which the client
	// slows down (bodies) or waits (messages), so that the exchange
	// cannot end first.
	MidAt int64
	Mid   func() <-chan struct{}
	// Idle is how long the client waits without progress, Total how long
	// in all, before it gives up (Stalled).
	Idle, Total time.Duration
	// Delivered, if not nil, tells how much of an Upload the upstream has
	// received: progress the client cannot see once its bytes sit in
	// socket buffers.
	Delivered func() int64
}

// Run makes the exchange and classifies its outcome.
func (t Traffic) Run(ctx context.Context) Outcome {
	wd, ctx := startWatchdog(ctx, t.Idle, t.Total)
	defer wd.stop()
	start := time.Now()
	var o Outcome
	switch t.Kind {
	case Small, Download:
		o = t.get(ctx, wd)
	case Upload:
		o = t.upload(ctx, wd)
	case SSE:
		o = t.sse(ctx, wd)
	case WebSocket:
		o = t.websocket(ctx, wd)
	case GRPC:
		o = t.grpc(ctx, wd)
	default:
		o = Outcome{Class: Refused, Detail: "unknown traffic kind " + string(t.Kind)}
	}
	if o.Class != OK && o.Class != Truncated && o.Class != Corrupt && wd.fired.Load() {
		o.Class = Stalled
	}
	o.Elapsed = time.Since(start)
	return o
}

// midPoint calls t.Mid once, when the exchange reaches t.MidAt.
type midPoint struct {
	t      *Traffic
	called bool
	wait   <-chan struct{}
}

func (m *midPoint) at(n int64) {
	if !m.called && m.t.Mid != nil && n >= m.t.MidAt {
		m.called = true
		m.wait = m.t.Mid()
	}
}

// hold slows a body down (a millisecond per read or write) until Mid's
// work is done; with block, it waits for it (at most 5 s). The client
// never stops taking bytes in flight to it: Toxiproxy inserts a toxic on
// a live connection only once its data in flight moves on.
func (m *midPoint) hold(block bool) {
	if m.wait == nil {
		return
	}
	d := time.Millisecond
	if block {
		d = 5 * time.Second
	}
	select {
	case <-m.wait:
		m.wait = nil
	case <-time.After(d):
		if block {
			m.wait = nil
		}
	}
}

// client returns an HTTP/1.1 client of its own (no pooled connection is
// shared between exchanges) that never follows redirects.
func client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 1,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// statusOutcome drains an error response and classifies it.
func statusOutcome(res *http.Response) Outcome {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	return Outcome{Class: Status, Code: strconv.Itoa(res.StatusCode), Detail: strings.TrimSpace(string(b))}
}

// mib formats a byte count.
func mib(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}

// get fetches Small (Content-Length) or Download (chunked) and checks
// every byte.
func (t Traffic) get(ctx context.Context, wd *watchdog) Outcome {
	c := client()
	defer c.CloseIdleConnections()
	path := "/small"
	if t.Kind == Download {
		path = "/bytes"
	}
	url := fmt.Sprintf("http://%s%s?id=%d&n=%d", t.HTTPAddr, path, t.ID, t.Size)
	if t.Close {
		url += "&close=1"
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	res, err := c.Do(req)
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	defer res.Body.Close()
	wd.kick()
	if res.StatusCode != http.StatusOK {
		return statusOutcome(res)
	}
	v := NewVerifier(t.ID, t.Size)
	buf := make([]byte, 32<<10)
	mid := midPoint{t: &t}
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			wd.kick()
			v.Write(buf[:n])
			mid.at(v.Got())
			mid.hold(false)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Outcome{Class: Cut, Progress: mib(v.Got()), Detail: err.Error()}
		}
	}
	switch {
	case v.Bad() >= 0:
		return Outcome{Class: Corrupt, Progress: mib(v.Bad()), Detail: fmt.Sprintf("byte %d differs (got %d bytes)", v.Bad(), v.Got())}
	case !v.Complete():
		return Outcome{Class: Truncated, Progress: mib(v.Got()), Detail: fmt.Sprintf("clean end after %d of %d bytes", v.Got(), t.Size)}
	}
	return Outcome{Class: OK, Progress: mib(v.Got()), Detail: "sha256 " + v.Sum()}
}

// uploadBody is the body of an upload: id's stream, hashed as it is sent.
type uploadBody struct {
	t    Traffic
	p    *Payload
	sum  hash.Hash
	sent atomic.Int64
	wd   *watchdog
	mid  midPoint
}

func (b *uploadBody) Read(p []byte) (int, error) {
	n, err := b.p.Read(p)
	if n > 0 {
		b.sum.Write(p[:n])
		b.wd.kick()
		b.mid.at(b.sent.Add(int64(n)))
		b.mid.hold(false)
	}
	return n, err
}

// upload posts Upload as a chunked body and checks the upstream's answer:
// the length and SHA-256 it received.
func (t Traffic) upload(ctx context.Context, wd *watchdog) Outcome {
	c := client()
	defer c.CloseIdleConnections()
	body := &uploadBody{t: t, p: NewPayload(t.ID, t.Size), sum: sha256.New(), wd: wd}
	body.mid.t = &body.t
	req, err := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://%s/upload?id=%d&n=%d", t.HTTPAddr, t.ID, t.Size), io.NopCloser(body))
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	req.ContentLength = -1 // chunked
	if t.Delivered != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			var last int64
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if n := t.Delivered(); n > last {
						last = n
						wd.kick()
					}
				}
			}
		}()
	}
	res, err := c.Do(req)
	if err != nil {
		return Outcome{Class: Refused, Progress: "sent " + mib(body.sent.Load()), Detail: err.Error()}
	}
	defer res.Body.Close()
	wd.kick()
	if res.StatusCode != http.StatusOK {
		o := statusOutcome(res)
		o.Progress = "sent " + mib(body.sent.Load())
		return o
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	if err != nil {
		return Outcome{Class: Cut, Progress: "answer", Detail: err.Error()}
	}
	want := fmt.Sprintf("ok %d %s", t.Size, hex.EncodeToString(body.sum.Sum(nil)))
	if got := strings.TrimSpace(string(b)); got != want {
		return Outcome{Class: Corrupt, Progress: "answer", Detail: fmt.Sprintf("upstream answered %q, want %q", got, want)}
	}
	return Outcome{Class: OK, Progress: mib(t.Size), Detail: want}
}

// sse reads Messages events and the end event, each checked.
func (t Traffic) sse(ctx context.Context, wd *watchdog) Outcome {
	c := client()
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/sse?id=%d&events=%d&ms=%d", t.HTTPAddr, t.ID, t.Messages, t.Pace.Milliseconds()), nil)
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := c.Do(req)
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	defer res.Body.Close()
	wd.kick()
	if res.StatusCode != http.StatusOK {
		return statusOutcome(res)
	}
	br := bufio.NewReader(res.Body)
	next := 0
	progress := func() string { return fmt.Sprintf("%d/%d events", next, t.Messages) }
	mid := midPoint{t: &t}
	var event, id, data string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Outcome{Class: Truncated, Progress: progress(), Detail: "the stream ended cleanly before its end event"}
			}
			return Outcome{Class: Cut, Progress: progress(), Detail: err.Error()}
		}
		wd.kick()
		line = strings.TrimSuffix(line, "\n")
		if line != "" {
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "event":
				event = v
			case "id":
				id = v
			case "data":
				data = v
			default:
				return Outcome{Class: Corrupt, Progress: progress(), Detail: fmt.Sprintf("line %q", line)}
			}
			continue
		}
		if event == "end" {
			if next != t.Messages || data != strconv.Itoa(t.Messages) {
				return Outcome{Class: Corrupt, Progress: progress(), Detail: "end event " + data}
			}
			rest, err := io.ReadAll(br)
			switch {
			case err != nil:
				return Outcome{Class: Cut, Progress: "after the end event", Detail: err.Error()}
			case len(rest) > 0:
				return Outcome{Class: Corrupt, Progress: "after the end event", Detail: fmt.Sprintf("%d more bytes", len(rest))}
			}
			return Outcome{Class: OK, Progress: progress()}
		}
		if id != strconv.Itoa(next) || data != EventData(t.ID, next) {
			return Outcome{Class: Corrupt, Progress: progress(), Detail: fmt.Sprintf("event id %q data %q", id, data)}
		}
		next++
		event, id, data = "", "", ""
		mid.at(int64(next))
		mid.hold(true)
	}
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// websocket sends Messages binary messages, each checked when echoed,
// then closes normally.
func (t Traffic) websocket(ctx context.Context, wd *watchdog) Outcome {
	d := ws.Dialer{NetDial: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	conn, br, _, err := d.Dial(ctx, "ws://"+t.HTTPAddr+"/ws")
	if err != nil {
		var se ws.StatusError
		if errors.As(err, &se) {
			return Outcome{Class: Status, Code: strconv.Itoa(int(se)), Detail: err.Error()}
		}
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	defer conn.Close()
	wd.onFire(func() { conn.Close() })
	wd.kick()
	var r io.Reader = conn
	if br != nil {
		r = br
	}
	rw := struct {
		io.Reader
		io.Writer
	}{r, conn}
	mid := midPoint{t: &t}
	for i := range t.Messages {
		progress := fmt.Sprintf("%d/%d msgs", i, t.Messages)
		if i > 0 {
			pause(ctx, t.Pace)
		}
		msg := Message(t.ID, i, t.MessageSize)
		if err := wsutil.WriteClientMessage(conn, ws.OpBinary, msg); err != nil {
			return Outcome{Class: Cut, Progress: progress, Detail: err.Error()}
		}
		got, _, err := wsutil.ReadServerData(rw)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				if ce.Code == ws.StatusNormalClosure {
					return Outcome{Class: Truncated, Progress: progress, Detail: "a normal close before the last echo: " + err.Error()}
				}
				return Outcome{Class: Cut, Code: strconv.Itoa(int(ce.Code)), Progress: progress, Detail: err.Error()}
			}
			return Outcome{Class: Cut, Progress: progress, Detail: err.Error()}
		}
		wd.kick()
		if !bytes.Equal(got, msg) {
			return Outcome{Class: Corrupt, Progress: progress, Detail: fmt.Sprintf("echo of message %d differs (%d bytes)", i, len(got))}
		}
		mid.at(int64(i + 1))
		mid.hold(true)
	}
	// A normal close; its answer is not part of the verdict.
	wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	conn.SetReadDeadline(time.Now().Add(time.Second))
	wsutil.ReadServerData(rw)
	return Outcome{Class: OK, Progress: fmt.Sprintf("%d msgs", t.Messages)}
}

// grpc sends Messages messages on a bidirectional stream, each checked
// when echoed, then half-closes and expects status OK.
func (t Traffic) grpc(ctx context.Context, wd *watchdog) Outcome {
	cc, err := grpc.NewClient("passthrough:///"+t.GRPCAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return Outcome{Class: Refused, Detail: err.Error()}
	}
	defer cc.Close()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, echoMethod)
	if err != nil {
		return grpcFailure(err, 0, "0 msgs")
	}
	mid := midPoint{t: &t}
	for i := range t.Messages {
		progress := fmt.Sprintf("%d/%d msgs", i, t.Messages)
		if i > 0 {
			pause(ctx, t.Pace)
		}
		msg := Message(t.ID, i, t.MessageSize)
		if err := stream.SendMsg(&msg); err != nil && !errors.Is(err, io.EOF) {
			return grpcFailure(err, i, progress)
		}
		// On io.EOF the stream ended: RecvMsg says how.
		var got []byte
		if err := stream.RecvMsg(&got); err != nil {
			if errors.Is(err, io.EOF) {
				return Outcome{Class: Truncated, Progress: progress, Detail: "status OK before the last echo"}
			}
			return grpcFailure(err, i, progress)
		}
		wd.kick()
		if !bytes.Equal(got, msg) {
			return Outcome{Class: Corrupt, Progress: progress, Detail: fmt.Sprintf("echo of message %d differs (%d bytes)", i, len(got))}
		}
		mid.at(int64(i + 1))
		mid.hold(true)
	}
	if err := stream.CloseSend(); err != nil {
		return grpcFailure(err, t.Messages, "half-close")
	}
	var extra []byte
	switch err := stream.RecvMsg(&extra); {
	case errors.Is(err, io.EOF):
		return Outcome{Class: OK, Progress: fmt.Sprintf("%d msgs", t.Messages)}
	case err == nil:
		return Outcome{Class: Corrupt, Progress: "after the last echo", Detail: "one more message"}
	default:
		return grpcFailure(err, t.Messages, "status")
	}
}

// grpcFailure classifies a failed gRPC stream: a code before any echo is
// a failure before the answer (Status), after one a cut stream.
func grpcFailure(err error, echoed int, progress string) Outcome {
	st := status.Convert(err)
	class := Cut
	if echoed == 0 && st.Code() != codes.Canceled && st.Code() != codes.DeadlineExceeded {
		class = Status
	}
	return Outcome{Class: class, Code: st.Code().String(), Progress: progress, Detail: st.Message()}
}

// watchdog gives up an exchange after idle without progress, or total in
// all: it cancels the exchange's context and runs the functions given to
// onFire (closing a hijacked connection, say).
type watchdog struct {
	idle    time.Duration
	timer   *time.Timer
	cancel  context.CancelFunc
	stopped atomic.Bool
	fired   atomic.Bool
	once    sync.Once

	mu    sync.Mutex
	funcs []func()
}

func startWatchdog(parent context.Context, idle, total time.Duration) (*watchdog, context.Context) {
	ctx, cancel := context.WithTimeout(parent, total)
	w := &watchdog{idle: idle, cancel: cancel}
	w.timer = time.AfterFunc(idle, w.fire)
	context.AfterFunc(ctx, w.fire)
	return w, ctx
}

func (w *watchdog) fire() {
	if w.stopped.Load() {
		return
	}
	w.once.Do(func() {
		w.fired.Store(true)
		w.cancel()
		w.mu.Lock()
		funcs := w.funcs
		w.mu.Unlock()
		for _, f := range funcs {
			f()
		}
	})
}

// kick records progress.
func (w *watchdog) kick() {
	if !w.fired.Load() {
		w.timer.Reset(w.idle)
	}
}

func (w *watchdog) onFire(f func()) {
	w.mu.Lock()
	w.funcs = append(w.funcs, f)
	w.mu.Unlock()
}

func (w *watchdog) stop() {
	w.stopped.Store(true)
	w.timer.Stop()
	w.cancel()
}
