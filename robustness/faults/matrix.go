package faults

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

// Link is where a fault sits: between the client and the proxy, or
// between the proxy and the upstream.
type Link string

// The two links.
const (
	ClientLink   Link = "client"
	UpstreamLink Link = "upstream"
)

// Links lists both.
var Links = []Link{ClientLink, UpstreamLink}

// Fault is a Toxiproxy toxic put on both directions of a link.
type Fault struct {
	// Name is the fault in the table.
	Name string
	// Type is the toxic's type; "" for no fault (the control row).
	Type string
	// Attrs are the toxic's attributes; KindAttrs, those for a kind that
	// needs others.
	Attrs     toxiproxy.Attributes
	KindAttrs map[Kind]toxiproxy.Attributes
	// Mid injects the toxic at the traffic's mid point (Traffic.MidAt)
	// instead of before it; Small always gets it before.
	Mid bool
	// Linger puts, before the traffic, a reset_peer toxic of toxicity 0
	// (it never runs) on the link: Toxiproxy then sets SO_LINGER 0 on the
	// link's new connections, so that the toxic injected mid-way closes
	// them with a reset. A reset_peer injected on a connection already
	// open would close it with a FIN; one present from the start swallows
	// the first bytes and resets before any byte passed.
	Linger bool
	// Size, if not zero, is the body of Download and Upload under this
	// fault, instead of Config.Size (the slow toxics).
	Size int64
	// Delay is added to the time the proxy gets to return to its
	// resources (slow_close holds connections that long).
	Delay time.Duration
}

// Faults is the matrix's list: a control row, then each toxic.
var Faults = []Fault{
	{Name: "none"},
	{Name: "latency 30±20 ms", Type: "latency", Attrs: toxiproxy.Attributes{"latency": 30, "jitter": 20}},
	{Name: "bandwidth 1000 KB/s", Type: "bandwidth", Attrs: toxiproxy.Attributes{"rate": 1000}, Size: 4 << 20},
	{Name: "slicer 128±96 B", Type: "slicer", Attrs: toxiproxy.Attributes{"average_size": 128, "size_variation": 96, "delay": 20}, Size: 1 << 20},
	{Name: "reset_peer (RST)", Type: "reset_peer", Attrs: toxiproxy.Attributes{"timeout": 0}, Mid: true, Linger: true},
	{Name: "timeout (black hole)", Type: "timeout", Attrs: toxiproxy.Attributes{"timeout": 0}, Mid: true},
	{Name: "limit_data", Type: "limit_data", Attrs: toxiproxy.Attributes{"bytes": 64 << 10}, Mid: true, KindAttrs: map[Kind]toxiproxy.Attributes{
		Small: {"bytes": 2048}, // head and 1-2 KiB of the 16 KiB body
		SSE:   {"bytes": 256},  // 3 more events
	}},
	{Name: "slow_close 1 s", Type: "slow_close", Attrs: toxiproxy.Attributes{"delay": 1000}, Delay: time.Second},
}

// FaultNamed returns the fault whose name starts with prefix.
func FaultNamed(prefix string) (Fault, bool) {
	for _, f := range Faults {
		if strings.HasPrefix(f.Name, prefix) {
			return f, true
		}
	}
	return Fault{}, false
}

// Config sizes the traffic and states the bounds checked.
type Config struct {
	// Bound is every timeout the proxies under test are configured with,
	// so that a fault is answered within seconds: the upstream's response
	// head, an upstream or a client that stops in the middle of a body.
	Bound time.Duration
	// Size is the body of Download and Upload (unless the fault says
	// otherwise), SmallSize that of Small.
	Size, SmallSize int64
	// Messages of MessageSize bytes for WebSocket and GRPC, events for
	// SSE, Pace apart.
	Messages, MessageSize int
	Pace                  time.Duration
	// ClientIdle is how long a client waits without progress before it
	// gives up (longer than the proxies' bounds); BlackHoleIdle the same
	// under a black hole on the client link, where nothing can reach it.
	// Total bounds an exchange in all.
	ClientIdle, BlackHoleIdle, Total time.Duration
	// Settle is how long a proxy gets, after its client is done, to be
	// back within MaxGoroutines, MaxFDs and MaxRSS of its baseline.
	Settle        time.Duration
	MaxGoroutines int
	MaxFDs        int
	MaxRSS        int64
}

// DefaultConfig is the matrix's configuration.
var DefaultConfig = Config{
	Bound:         3 * time.Second,
	Size:          64 << 20,
	SmallSize:     16 << 10,
	Messages:      20,
	MessageSize:   16 << 10,
	Pace:          25 * time.Millisecond,
	ClientIdle:    8 * time.Second, // Bound (cut after up to 1.5 Bound), and time to spare
	BlackHoleIdle: 3 * time.Second,
	Total:         60 * time.Second,
	Settle:        5 * time.Second,
	MaxGoroutines: 4,
	MaxFDs:        2,
	MaxRSS:        16 << 20,
}

// Hop is the path of one kind of traffic through a proxy: the Toxiproxy
// proxy on the client link (whose listener the client connects to), the
// one on the upstream link, and the process serving it.
type Hop struct {
	Front, Back *toxiproxy.Proxy
	Proc        *Process
}

// Subject is a proxy under test: one hop for HTTP/1.1 (and WebSocket)
// traffic, one for gRPC.
type Subject struct {
	Name       string
	HTTP, GRPC Hop
}

func (s *Subject) hop(k Kind) *Hop {
	if k == GRPC {
		return &s.GRPC
	}
	return &s.HTTP
}

// Bins are the programs the Env runs.
type Bins struct {
	// Toxiproxy is Toxiproxy's server; Sluice examples/passthrough;
	// HTTPUtil this module's cmd/httputil; Nginx nginx.
	Toxiproxy, Sluice, HTTPUtil, Nginx string
}

// Env is the matrix's world: the upstream, Toxiproxy, and the proxies
// under test with their links.
type Env struct {
	Config
	Toxi     *toxiproxy.Client
	Upstream *Upstream
	Subjects []*Subject

	dir     string
	procs   []*Process
	lastID  atomic.Uint64
	stopped bool
}

// Start starts the upstream, Toxiproxy and the named proxies ("sluice",
// "nginx", "httputil"), their logs under dir.
func Start(dir string, bins Bins, proxies []string, cfg Config) (_ *Env, err error) {
	e := &Env{Config: cfg, dir: dir}
	e.lastID.Store(uint64(time.Now().UnixNano()) &^ 0xffff_ffff)
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	if e.Upstream, err = StartUpstream(); err != nil {
		return nil, err
	}
	api, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(api, ":")
	tp, err := startProcess("toxiproxy", bins.Toxiproxy, []string{"-host", "127.0.0.1", "-port", port},
		filepath.Join(dir, "toxiproxy.log"), api, "LOG_LEVEL=error")
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, tp)
	e.Toxi = toxiproxy.NewClient(api)
	for _, name := range proxies {
		s, err := e.startSubject(name, bins)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		e.Subjects = append(e.Subjects, s)
	}
	return e, nil
}

func (e *Env) link(name, upstream string) (*toxiproxy.Proxy, error) {
	return e.Toxi.CreateProxy(name, "127.0.0.1:0", upstream)
}

func (e *Env) startSubject(name string, bins Bins) (*Subject, error) {
	back, err := e.link(name+"_back_http", e.Upstream.HTTPAddr)
	if err != nil {
		return nil, err
	}
	gback, err := e.link(name+"_back_grpc", e.Upstream.GRPCAddr)
	if err != nil {
		return nil, err
	}
	var hp, gp *Process
	var listen, glisten string
	switch name {
	case "sluice":
		if hp, listen, err = StartSluice("sluice", bins.Sluice, e.dir, "http://"+back.Listen, false, e.Bound); err != nil {
			return nil, err
		}
		e.procs = append(e.procs, hp)
		if gp, glisten, err = StartSluice("sluice-grpc", bins.Sluice, e.dir, "h2c://"+gback.Listen, true, e.Bound); err != nil {
			return nil, err
		}
		e.procs = append(e.procs, gp)
	case "nginx":
		if hp, listen, glisten, err = StartNginx(bins.Nginx, e.dir, back.Listen, gback.Listen, e.Bound); err != nil {
			return nil, err
		}
		gp = hp
		e.procs = append(e.procs, hp)
	case "httputil":
		if hp, listen, err = StartHTTPUtil(bins.HTTPUtil, e.dir, "http://"+back.Listen, "http://"+gback.Listen, e.Bound); err != nil {
			return nil, err
		}
		gp, glisten = hp, listen
		e.procs = append(e.procs, hp)
	default:
		return nil, fmt.Errorf("unknown proxy %q (want sluice, nginx or httputil)", name)
	}
	front, err := e.link(name+"_front_http", listen)
	if err != nil {
		return nil, err
	}
	gfront := front
	if glisten != listen {
		if gfront, err = e.link(name+"_front_grpc", glisten); err != nil {
			return nil, err
		}
	}
	return &Subject{Name: name, HTTP: Hop{front, back, hp}, GRPC: Hop{gfront, gback, gp}}, nil
}

// Stop ends every process the Env started.
func (e *Env) Stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].Stop()
	}
	if e.Upstream != nil {
		e.Upstream.Close()
	}
}

// Cell is one case of the matrix.
type Cell struct {
	Fault Fault
	Link  Link
	Kind  Kind
}

// Result is what one case gave on one proxy.
type Result struct {
	Proxy string
	// Process is the process that served the case (sluice serves gRPC
	// with an instance of its own, "sluice-grpc").
	Process string
	Cell    Cell
	// Outcome is the client's.
	Outcome Outcome
	// Upload is the upstream's verdict on an upload (nil: none reached it).
	Upload *UploadVerdict
	// Base is the proxy's resources before the case, End after it: the
	// first sample within the bounds (Back), or the last one.
	Base, End Sample
	Back      bool
	BackAfter time.Duration
	// Next is the outcome of a clean exchange through the same proxy
	// once the fault is removed.
	Next Outcome
	// Err is trouble of the harness (a failed set-up), not of the proxy.
	Err string
}

// Violations lists what breaks the rules: a truncated answer that looks
// complete, bytes that are not the ones sent (at the client, at the
// upstream for an upload, or on the next exchange), resources that did
// not come back, a proxy that died.
func (r Result) Violations() []string {
	var v []string
	if r.Outcome.Violation() {
		v = append(v, fmt.Sprintf("client: %s (%s)", r.Outcome, r.Outcome.Detail))
	}
	if r.Upload != nil && (r.Upload.Result == "truncated" || r.Upload.Result == "corrupt") {
		v = append(v, fmt.Sprintf("upstream got a %s upload (%d bytes) presented as complete", r.Upload.Result, r.Upload.Got))
	}
	if r.Next.Violation() {
		v = append(v, fmt.Sprintf("next exchange: %s (%s)", r.Next, r.Next.Detail))
	}
	if r.Err == "" && !r.Back {
		v = append(v, "resources not back: "+r.delta())
	}
	if r.Err != "" {
		v = append(v, "harness: "+r.Err)
	}
	return v
}

// delta is End-Base.
func (r Result) delta() string {
	var s []string
	if r.Base.Goroutines >= 0 {
		s = append(s, fmt.Sprintf("goroutines %+d", r.End.Goroutines-r.Base.Goroutines))
	}
	s = append(s, fmt.Sprintf("fds %+d", r.End.FDs-r.Base.FDs), fmt.Sprintf("RSS %+.1f MiB", float64(r.End.RSS-r.Base.RSS)/(1<<20)))
	return strings.Join(s, ", ")
}

// Text is the result in a table cell.
func (r Result) Text() string {
	if r.Err != "" {
		return "harness: " + r.Err
	}
	s := r.Outcome.String()
	if r.Outcome.Violation() {
		s = "**⚠ " + s + "**"
	}
	if r.Cell.Kind == Upload && r.Outcome.Class != OK {
		up := "none"
		if r.Upload != nil {
			up = r.Upload.Result
		}
		if r.Upload != nil && (up == "truncated" || up == "corrupt") {
			up = "**⚠ " + up + "**"
		}
		s += " (up: " + up + ")"
	}
	if !r.Back {
		s += " **⚠ not back: " + r.delta() + "**"
	}
	if r.Next.Class != OK {
		s += " · next: " + r.Next.String()
		if r.Next.Violation() {
			s = s + " **⚠**"
		}
	}
	return s
}

func (e *Env) nextID() uint64 { return e.lastID.Add(1) }

// cycle drops every connection through a Toxiproxy proxy.
func cycle(p *toxiproxy.Proxy) error {
	if err := p.Disable(); err != nil {
		return err
	}
	return p.Enable()
}

// probe makes one clean, small exchange through hop: a GET with
// Connection: close from the upstream, or a one-message gRPC echo.
func (e *Env) probe(ctx context.Context, hop *Hop, k Kind) Outcome {
	t := Traffic{Kind: Small, ID: e.nextID(), Size: 1 << 10, Close: true, HTTPAddr: hop.Front.Listen,
		Idle: e.ClientIdle, Total: e.ClientIdle}
	if k == GRPC {
		t = Traffic{Kind: GRPC, ID: t.ID, Messages: 1, MessageSize: 1 << 10, GRPCAddr: hop.Front.Listen,
			Idle: e.ClientIdle, Total: e.ClientIdle}
	}
	return t.Run(ctx)
}

// traffic is the exchange of a case.
func (e *Env) traffic(c Cell, hop *Hop) Traffic {
	t := Traffic{Kind: c.Kind, ID: e.nextID(), HTTPAddr: hop.Front.Listen, GRPCAddr: hop.Front.Listen,
		Messages: e.Messages, MessageSize: e.MessageSize, Pace: e.Pace, Idle: e.ClientIdle, Total: e.Total, MidAt: 3}
	switch c.Kind {
	case Small:
		t.Size = e.SmallSize
	case Download, Upload:
		t.Size = e.Size
		if c.Fault.Size != 0 {
			t.Size = c.Fault.Size
		}
		t.MidAt = t.Size / 8
	}
	if c.Fault.Type == "timeout" && c.Link == ClientLink {
		t.Idle = e.BlackHoleIdle
	}
	if c.Kind == Upload {
		t.Delivered = func() int64 { return e.Upstream.UploadProgress(t.ID) }
	}
	return t
}

// toxics adds the cell's toxic to both directions of its link, or with
// linger the Fault.Linger marker.
func (e *Env) toxics(c Cell, hop *Hop, linger bool) error {
	p := hop.Front
	if c.Link == UpstreamLink {
		p = hop.Back
	}
	typ, name, toxicity, attrs := c.Fault.Type, c.Fault.Type, float32(1), c.Fault.Attrs
	if a, ok := c.Fault.KindAttrs[c.Kind]; ok {
		attrs = a
	}
	if linger {
		typ, name, toxicity, attrs = "reset_peer", "linger", 0, toxiproxy.Attributes{"timeout": 0}
	}
	for _, stream := range []string{"upstream", "downstream"} {
		if _, err := p.AddToxic(name+"_"+stream, typ, stream, toxicity, attrs); err != nil {
			return fmt.Errorf("adding %s on the %s link: %w", name, c.Link, err)
		}
	}
	return nil
}

// Run runs one case on proxy s: a clean path and a probe, the baseline,
// the fault and the exchange, the wait for the resources, then the fault
// removed and a probe again.
func (e *Env) Run(ctx context.Context, s *Subject, c Cell) Result {
	hop := s.hop(c.Kind)
	r := Result{Proxy: s.Name, Process: hop.Proc.Name, Cell: c}
	fail := func(err error) Result { r.Err = err.Error(); return r }
	if err := e.Toxi.ResetState(); err != nil {
		return fail(err)
	}
	for _, p := range []*toxiproxy.Proxy{hop.Front, hop.Back} {
		if err := cycle(p); err != nil {
			return fail(err)
		}
	}
	if o := e.probe(ctx, hop, c.Kind); o.Class != OK {
		return fail(fmt.Errorf("probe before the case: %s (%s)", o, o.Detail))
	}
	base, err := e.settle(hop.Proc)
	if err != nil {
		return fail(err)
	}
	r.Base = base
	t := e.traffic(c, hop)
	var mid chan error // the mid-way injection's result
	if c.Fault.Type != "" {
		if c.Fault.Mid && c.Kind != Small {
			if c.Fault.Linger {
				if err := e.toxics(c, hop, true); err != nil {
					return fail(err)
				}
			}
			mid = make(chan error, 1)
			// Asynchronously: the client must keep reading while
			// Toxiproxy inserts the toxic, which waits for the link's
			// data in flight to move on.
			t.Mid = func() <-chan struct{} {
				done := make(chan struct{})
				go func() {
					defer close(done)
					mid <- e.toxics(c, hop, false)
				}()
				return done
			}
		} else if err := e.toxics(c, hop, false); err != nil {
			return fail(err)
		}
	}
	r.Outcome = t.Run(ctx)
	if mid != nil {
		select {
		case err := <-mid:
			if err != nil {
				return fail(err)
			}
		case <-time.After(100 * time.Millisecond):
			if r.Outcome.Class == OK {
				r.Err = "the exchange ended before the fault was injected (raise the size)"
				return r
			}
			if err := <-mid; err != nil {
				return fail(err)
			}
		}
	}
	if c.Kind == Upload {
		if v, ok := e.Upstream.Upload(t.ID, e.Settle); ok {
			r.Upload = &v
		}
	}
	r.End, r.Back, r.BackAfter, err = e.await(hop.Proc, base, e.Settle+c.Fault.Delay)
	if err != nil {
		return fail(err)
	}
	if err := e.Toxi.ResetState(); err != nil {
		return fail(err)
	}
	r.Next = e.probe(ctx, hop, c.Kind)
	return r
}

// settle samples p until two samples 100 ms apart agree on goroutines
// and descriptors (at most 3 s), and returns the last.
func (e *Env) settle(p *Process) (Sample, error) {
	prev, err := p.Sample()
	if err != nil {
		return Sample{}, err
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		s, err := p.Sample()
		if err != nil {
			return Sample{}, err
		}
		if s.Goroutines == prev.Goroutines && s.FDs == prev.FDs {
			return s, nil
		}
		prev = s
	}
	return prev, nil
}

// within reports whether s is within the bounds of base.
func (e *Env) within(base, s Sample) bool {
	return (base.Goroutines < 0 || s.Goroutines <= base.Goroutines+e.MaxGoroutines) &&
		s.FDs <= base.FDs+e.MaxFDs && s.RSS <= base.RSS+e.MaxRSS
}

// await samples p every 100 ms until it is within the bounds of base, for
// at most d.
func (e *Env) await(p *Process, base Sample, d time.Duration) (Sample, bool, time.Duration, error) {
	start := time.Now()
	for {
		s, err := p.Sample()
		if err != nil {
			return Sample{}, false, 0, err
		}
		if e.within(base, s) {
			return s, true, time.Since(start), nil
		}
		if time.Since(start) > d {
			return s, false, time.Since(start), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Cells lists the matrix's cases: the control row for each kind, then
// each fault on each link for each kind.
func Cells(faults []Fault, links []Link, kinds []Kind) []Cell {
	var cells []Cell
	for _, f := range faults {
		ls := links
		if f.Type == "" {
			ls = []Link{""}
		}
		for _, l := range ls {
			for _, k := range kinds {
				cells = append(cells, Cell{Fault: f, Link: l, Kind: k})
			}
		}
	}
	return cells
}

var errNoProxy = errors.New("no such proxy")

// Subject returns the proxy under test named name.
func (e *Env) Subject(name string) (*Subject, error) {
	for _, s := range e.Subjects {
		if s.Name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", errNoProxy, name)
}
