package squid

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// Errors of Pool.Do.
var (
	// ErrOverloaded: every helper is busy and the queue is full.
	ErrOverloaded = errors.New("squid: helper queue full")
	// ErrTimeout: no answer within the per-request timeout.
	ErrTimeout = errors.New("squid: helper timed out")
	// ErrHelperDied: the helper handling the request exited or was
	// killed before answering.
	ErrHelperDied = errors.New("squid: helper died")
	// ErrClosed: the pool is closed.
	ErrClosed = errors.New("squid: helper pool closed")
)

// Config describes a pool of helper processes.
type Config struct {
	// Path and Args are the helper program and its arguments.
	Path string
	Args []string
	// Env is the helpers' environment; if nil, the pool's.
	Env []string
	// Stderr receives the helpers' standard error. If nil, os.Stderr.
	Stderr io.Writer

	// Children is the number of helper processes. If zero, 1.
	Children int
	// Concurrency is the number of requests in flight per helper, told
	// apart by channel IDs (Squid's concurrency=N). If zero, a helper
	// gets one request at a time and lines carry no channel ID.
	Concurrency int
	// QueueSize bounds the requests waiting for a free helper; beyond it
	// Do fails with ErrOverloaded at once. If zero, twice the number of
	// request slots (Children × max(Concurrency, 1)).
	QueueSize int
	// Timeout bounds one request, queueing included. A helper that has
	// not answered a request one more Timeout after it timed out is
	// considered hung and restarted. If zero, 10 seconds.
	Timeout time.Duration
	// MaxLine bounds a reply line; a longer one makes the pool restart
	// the helper. If zero, 64 KiB.
	MaxLine int
	// Logger receives helper restarts and protocol errors. If nil,
	// slog.Default().
	Logger *slog.Logger
}

// Pool runs and supervises helper processes: each one is restarted when
// it exits, with a growing delay while it keeps failing.
type Pool struct {
	cfg      Config
	channels bool
	slots    int
	queue    chan *call
	closed   chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	log      *slog.Logger

	mu   sync.Mutex
	live map[*proc]struct{} // running helpers
}

type call struct {
	fields []string
	ctx    context.Context
	reply  chan callResult // buffered 1

	mu   sync.Mutex
	proc *proc // set once written to a helper
	done bool
}

type callResult struct {
	r   Reply
	err error
}

func (c *call) deliver(r Reply, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	c.reply <- callResult{r, err}
}

// Start starts cfg.Children helper processes. It fails if the first one
// cannot be started (a missing program); later failures are retried.
func Start(cfg Config) (*Pool, error) {
	if cfg.Children <= 0 {
		cfg.Children = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 64 << 10
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	p := &Pool{cfg: cfg, channels: cfg.Concurrency > 0, slots: max(cfg.Concurrency, 1),
		closed: make(chan struct{}), log: cfg.Logger}
	if p.log == nil {
		p.log = slog.Default()
	}
	q := cfg.QueueSize
	if q <= 0 {
		q = 2 * cfg.Children * p.slots
	}
	p.queue = make(chan *call, q)
	first, err := p.startProc()
	if err != nil {
		return nil, err
	}
	for i := range cfg.Children {
		p.wg.Add(1)
		if i == 0 {
			go p.supervise(i, first)
		} else {
			go p.supervise(i, nil)
		}
	}
	return p, nil
}

// Do sends one request to a helper and returns its reply. It fails with
// ErrOverloaded when the queue is full, ErrTimeout after cfg.Timeout,
// ErrHelperDied if the helper exits first, a wrapped ErrSyntax for a
// malformed reply, ctx's error when ctx ends, ErrClosed after Close.
// A BH answer is a Reply, not an error.
func (p *Pool) Do(ctx context.Context, fields ...string) (Reply, error) {
	if _, err := AppendRequest(nil, 0, false, fields...); err != nil {
		return Reply{}, err
	}
	select {
	case <-p.closed:
		return Reply{}, ErrClosed
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	c := &call{fields: fields, ctx: ctx, reply: make(chan callResult, 1)}
	select {
	case p.queue <- c:
	default:
		return Reply{}, ErrOverloaded
	}
	select {
	case res := <-c.reply:
		return res.r, res.err
	case <-p.closed:
		c.deliver(Reply{}, ErrClosed)
		return Reply{}, ErrClosed
	case <-ctx.Done():
	}
	c.mu.Lock()
	c.done = true
	pr := c.proc
	c.mu.Unlock()
	if pr != nil {
		// The helper has the request. If it still has not answered after
		// one more timeout, it is hung: restart it.
		time.AfterFunc(p.cfg.Timeout, func() {
			if pr.stillPending(c) {
				p.log.Warn("squid: helper hung, restarting", "pid", pr.pid())
				pr.kill()
			}
		})
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return Reply{}, ErrTimeout
	}
	return Reply{}, ctx.Err()
}

// Close stops the helpers (closing their stdin, then killing those still
// running after a second) and fails the queued requests with ErrClosed.
func (p *Pool) Close() error {
	p.once.Do(func() { close(p.closed) })
	// A helper that neither reads its stdin nor exits would keep its
	// writer blocked: kill whatever still runs after a grace period.
	grace := time.AfterFunc(2*time.Second, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for pr := range p.live {
			pr.kill()
		}
	})
	defer grace.Stop()
	p.wg.Wait()
	for {
		select {
		case c := <-p.queue:
			c.deliver(Reply{}, ErrClosed)
		default:
			return nil
		}
	}
}

func (p *Pool) supervise(i int, pr *proc) {
	defer p.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		if pr == nil {
			var err error
			pr, err = p.startProc()
			if err != nil {
				p.log.Error("squid: cannot start helper", "child", i, "err", err)
			}
		}
		started := time.Now()
		if pr != nil {
			p.serve(pr)
			pr = nil
		}
		select {
		case <-p.closed:
			return
		default:
		}
		if time.Since(started) > 10*time.Second {
			backoff = 50 * time.Millisecond
		}
		p.log.Warn("squid: helper exited, restarting", "child", i, "after", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-p.closed:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// proc is one running helper process.
type proc struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	exited chan struct{} // closed when Wait returned

	mu      sync.Mutex
	pending map[uint64]*call
	dead    chan struct{}
	dying   bool
}

func (p *Pool) startProc() (*proc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(p.cfg.Path, p.cfg.Args...)
	cmd.Env = p.cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, p.cfg.Stderr
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("squid: starting helper %s: %w", p.cfg.Path, err)
	}
	pr := &proc{cmd: cmd, stdin: inW, stdout: outR, exited: make(chan struct{}),
		pending: make(map[uint64]*call), dead: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(pr.exited) }()
	return pr, nil
}

func (pr *proc) pid() int { return pr.cmd.Process.Pid }

// kill ends the helper; the reader then sees EOF and serve cleans up.
func (pr *proc) kill() {
	pr.mu.Lock()
	first := !pr.dying
	pr.dying = true
	pr.mu.Unlock()
	if first {
		close(pr.dead)
		_ = pr.cmd.Process.Kill()
		pr.stdout.Close() // in case a grandchild holds the pipe open
	}
}

func (pr *proc) stillPending(c *call) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, p := range pr.pending {
		if p == c {
			return !pr.dying
		}
	}
	return false
}

// serve feeds queued requests to pr until it dies or the pool closes.
func (p *Pool) serve(pr *proc) {
	free := make(chan uint64, p.slots)
	for id := range p.slots {
		free <- uint64(id)
	}
	p.mu.Lock()
	if p.live == nil {
		p.live = make(map[*proc]struct{})
	}
	p.live[pr] = struct{}{}
	p.mu.Unlock()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		p.read(pr, free)
		pr.kill()
	}()
	defer func() {
		p.mu.Lock()
		delete(p.live, pr)
		p.mu.Unlock()
		pr.kill()
		<-readerDone
		pr.stdin.Close()
		<-pr.exited
		pr.mu.Lock()
		for id, c := range pr.pending {
			delete(pr.pending, id)
			c.deliver(Reply{}, ErrHelperDied)
		}
		pr.mu.Unlock()
	}()
	var buf []byte
	for {
		var id uint64
		select {
		case id = <-free:
		case <-pr.dead:
			return
		case <-p.closed:
			p.stop(pr)
			return
		}
		var c *call
		select {
		case c = <-p.queue:
		case <-pr.dead:
			return
		case <-p.closed:
			p.stop(pr)
			return
		}
		if c.ctx.Err() != nil {
			free <- id
			continue
		}
		var err error
		buf, err = AppendRequest(buf[:0], id, p.channels, c.fields...)
		if err != nil { // checked in Do; cannot happen
			c.deliver(Reply{}, err)
			free <- id
			continue
		}
		c.mu.Lock()
		c.proc = pr
		c.mu.Unlock()
		pr.mu.Lock()
		pr.pending[id] = c
		pr.mu.Unlock()
		if _, err := pr.stdin.Write(buf); err != nil {
			return
		}
	}
}

// stop asks the helper to exit by closing its stdin, and kills it if it
// is still running after a second.
func (p *Pool) stop(pr *proc) {
	pr.stdin.Close()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-pr.exited:
	case <-t.C:
	}
}

// read delivers the helper's replies until its stdout ends or turns to
// garbage that cannot be matched to a request.
func (p *Pool) read(pr *proc, free chan uint64) {
	br := bufio.NewReaderSize(pr.stdout, 4096)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull && len(long) <= p.cfg.MaxLine {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			if len(long) > p.cfg.MaxLine {
				p.log.Warn("squid: helper reply line too long, restarting helper", "pid", pr.pid())
				return
			}
			line = long
		}
		if err != nil {
			return
		}
		s := string(line[:len(line)-1])
		var id uint64
		if p.channels {
			// The channel ID must be readable even when the rest is not,
			// to hand the error to the right request; if it is not, the
			// helper is out of step and restarted.
			tok, _ := nextToken(s)
			ch, err := strconv.ParseUint(tok, 10, 64)
			if err != nil {
				p.log.Warn("squid: unparseable helper reply, restarting helper", "pid", pr.pid(), "line", clip(s))
				return
			}
			id = ch
		}
		r, perr := ParseReply(s, p.channels)
		pr.mu.Lock()
		c, ok := pr.pending[id]
		delete(pr.pending, id)
		pr.mu.Unlock()
		if !ok {
			p.log.Warn("squid: helper reply for no pending request", "pid", pr.pid(), "channel", id)
			if !p.channels {
				return // out of step: restart
			}
			continue
		}
		c.deliver(r, perr)
		free <- id
	}
}

// Load returns the number of requests in the helpers' hands and the
// number waiting in the queue, for metrics and tests.
func (p *Pool) Load() (inFlight, queued int) {
	p.mu.Lock()
	for pr := range p.live {
		pr.mu.Lock()
		inFlight += len(pr.pending)
		pr.mu.Unlock()
	}
	p.mu.Unlock()
	return inFlight, len(p.queue)
}
