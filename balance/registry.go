package balance

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// A Registry stores the membership of a Pool, and the down marks that
// let Pools sharing it agree on health. A Registry shared by several
// proxy instances (for instance in Redis) gives them one pool: a target
// registered through one instance is used by all, and its registration
// expires everywhere when its heartbeats stop.
//
// Implementations must be safe for concurrent use. Entries with a TTL
// must vanish by themselves when it runs out (so that a dead instance's
// registrations and marks do not outlive it).
type Registry interface {
	// Put adds m, or replaces the member with m's ID. With ttl > 0 (from
	// Pool.Register) the member expires ttl after the last Put; with
	// ttl == 0 (from Pool.Add) it stays until Delete.
	Put(ctx context.Context, m Member, ttl time.Duration) error

	// Delete removes the member with the given ID and its down mark. It
	// is not an error if there is none.
	Delete(ctx context.Context, id string) error

	// Members returns the unexpired members, with Down set on those that
	// have an unexpired down mark.
	Members(ctx context.Context) ([]Member, error)

	// MarkDown marks the member with the given ID as down for d, for
	// every Pool using the Registry; d <= 0 clears the mark.
	MarkDown(ctx context.Context, id string, d time.Duration) error
}

// MemoryRegistry is a Registry in the process memory, the default of a
// Pool. Several Pools of one process may share one. The zero value is an
// empty registry.
type MemoryRegistry struct {
	mu      sync.Mutex
	members map[string]memoryEntry
	down    map[string]time.Time
}

type memoryEntry struct {
	m       Member
	expires time.Time // zero: never
}

// Put implements Registry.
func (r *MemoryRegistry) Put(_ context.Context, m Member, ttl time.Duration) error {
	if _, err := m.normalize(); err != nil {
		return err
	}
	m.Down = false
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.members == nil {
		r.members = make(map[string]memoryEntry)
	}
	e := memoryEntry{m: m}
	if ttl > 0 {
		e.expires = time.Now().Add(ttl)
	}
	r.members[m.ID] = e
	return nil
}

// Delete implements Registry.
func (r *MemoryRegistry) Delete(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.members, id)
	delete(r.down, id)
	return nil
}

// Members implements Registry. Expired entries are dropped.
func (r *MemoryRegistry) Members(context.Context) ([]Member, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]Member, 0, len(r.members))
	for id, e := range r.members {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(r.members, id)
			delete(r.down, id)
			continue
		}
		m := e.m
		if until, ok := r.down[id]; ok {
			if now.Before(until) {
				m.Down = true
			} else {
				delete(r.down, id)
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// MarkDown implements Registry.
func (r *MemoryRegistry) MarkDown(_ context.Context, id string, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d <= 0 {
		delete(r.down, id)
		return nil
	}
	if _, ok := r.members[id]; !ok {
		return nil
	}
	if r.down == nil {
		r.down = make(map[string]time.Time)
	}
	r.down[id] = time.Now().Add(d)
	return nil
}
