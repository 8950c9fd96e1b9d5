package soak

import (
	"context"
	"sync"
	"time"
)

// Schedule says when a target is down: for Down out of every Period,
// starting Offset after the flapping starts.
type Schedule struct {
	Period, Down, Offset time.Duration
}

// downAt reports whether the schedule has the target down at elapsed.
func (s Schedule) downAt(elapsed time.Duration) bool {
	if elapsed < s.Offset {
		return false
	}
	return (elapsed-s.Offset)%s.Period < s.Down
}

// outage is one time a target was down: from Start to End (zero while it
// still is). Taking it down (closing its listener and cutting every
// connection) took from Start to Cut.
type outage struct {
	Start, Cut, End time.Time
}

// Flapper takes targets down and brings them back up on their schedules,
// and remembers every outage, to tell which failures they explain.
type Flapper struct {
	mu      sync.Mutex
	outages map[*Target][]outage
	errs    []error
}

// flap runs the schedules until ctx ends, then brings every target up.
// tick is the resolution of the schedule.
func (f *Flapper) flap(ctx context.Context, sched map[*Target]Schedule, tick time.Duration) {
	f.mu.Lock()
	if f.outages == nil {
		f.outages = make(map[*Target][]outage)
	}
	f.mu.Unlock()
	start := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		for tg, s := range sched {
			f.set(tg, s.downAt(time.Since(start)))
		}
		select {
		case <-ctx.Done():
			for tg := range sched {
				f.set(tg, false)
			}
			return
		case <-t.C:
		}
	}
}

// set takes tg down or brings it up, recording the outage.
func (f *Flapper) set(tg *Target, down bool) {
	f.mu.Lock()
	o := f.outages[tg]
	isDown := len(o) > 0 && o[len(o)-1].End.IsZero()
	f.mu.Unlock()
	switch {
	case down && !isDown:
		// The outage starts before the first connection is cut, so that
		// every failure it causes ends after its start.
		f.mu.Lock()
		f.outages[tg] = append(f.outages[tg], outage{Start: time.Now()})
		f.mu.Unlock()
		tg.Down()
		f.mu.Lock()
		o := f.outages[tg]
		o[len(o)-1].Cut = time.Now()
		f.mu.Unlock()
	case !down && isDown:
		err := tg.Up()
		f.mu.Lock()
		o := f.outages[tg]
		o[len(o)-1].End = time.Now()
		if err != nil {
			f.errs = append(f.errs, err)
		}
		f.mu.Unlock()
	}
}

// CutGrace is how long after a target's connections were cut an exchange
// that starts may still fail because of it: a connection the target
// closed is known closed to the proxy only once the goroutine reading it
// has run, and meanwhile a request may be written on it (HTTP/2
// multiplexes new streams on its one connection without a check; an
// HTTP/1.1 connection is peeked before reuse). On a busy machine that
// takes milliseconds.
const CutGrace = 250 * time.Millisecond

// explains reports whether the outages of targets explain a clear failure
// of an exchange that ran from start to end. For a target with others
// behind it in a pool (pooled), only the taking down of the target
// (from an outage's Start to its Cut, plus CutGrace) overlapping the
// exchange does: the pool steers new requests around a target that is
// down, so the only exchanges it may fail are those under way on the
// target while its connections were cut. For a target on its own, any
// outage that overlaps the exchange does: its requests fail with 502
// while it is down.
func (f *Flapper) explains(targets []*Target, pooled bool, start, end time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tg := range targets {
		for _, o := range f.outages[tg] {
			if pooled {
				cut := o.Cut
				if cut.IsZero() {
					cut = time.Now() // being cut now
				}
				if !o.Start.After(end) && !cut.Add(CutGrace).Before(start) {
					return true
				}
				continue
			}
			if !o.Start.After(end) && (o.End.IsZero() || !o.End.Before(start)) {
				return true
			}
		}
	}
	return false
}

// downCount returns how many of targets are down now, and the number of
// outages so far.
func (f *Flapper) downCount(targets []*Target) (down, outages int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tg := range targets {
		o := f.outages[tg]
		outages += len(o)
		if len(o) > 0 && o[len(o)-1].End.IsZero() {
			down++
		}
	}
	return down, outages
}

func (f *Flapper) err() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errs...)
}
