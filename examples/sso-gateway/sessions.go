package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// user is who a session belongs to.
type user struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

// sessionStore keeps login sessions. Sessions expire ttl after their last
// use (sliding expiry).
type sessionStore interface {
	Create(ctx context.Context, u user) (id string, err error)
	// Get returns the session's user and extends its life.
	Get(ctx context.Context, id string) (u user, ok bool, err error)
	Delete(ctx context.Context, id string) error
}

func newSessionID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// validSessionID keeps odd input away from the store.
func validSessionID(id string) bool {
	if len(id) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

// memoryStore is the default, single-instance store, bounded in size.
type memoryStore struct {
	ttl time.Duration
	max int

	mu       sync.Mutex
	sessions map[string]memSession
}

type memSession struct {
	u       user
	expires time.Time
}

func newMemoryStore(ttl time.Duration) *memoryStore {
	return &memoryStore{ttl: ttl, max: 100000, sessions: make(map[string]memSession)}
}

var errTooManySessions = errors.New("too many sessions")

func (s *memoryStore) Create(_ context.Context, u user) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.max {
		now := time.Now()
		for id, ss := range s.sessions {
			if now.After(ss.expires) {
				delete(s.sessions, id)
			}
		}
		if len(s.sessions) >= s.max {
			return "", errTooManySessions
		}
	}
	id := newSessionID()
	s.sessions[id] = memSession{u: u, expires: time.Now().Add(s.ttl)}
	return id, nil
}

func (s *memoryStore) Get(_ context.Context, id string) (user, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		return user{}, false, nil
	}
	if time.Now().After(ss.expires) {
		delete(s.sessions, id)
		return user{}, false, nil
	}
	ss.expires = time.Now().Add(s.ttl)
	s.sessions[id] = ss
	return ss.u, true, nil
}

func (s *memoryStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, id)
	return nil
}

// redisStore shares sessions between gateway instances through Redis:
// one key per session, expiring with it.
type redisStore struct {
	c   *redis.Client
	ttl time.Duration
}

const redisPrefix = "sso-gateway:session:"

func newRedisStore(addr string, ttl time.Duration) *redisStore {
	return &redisStore{c: redis.NewClient(&redis.Options{Addr: addr}), ttl: ttl}
}

func (s *redisStore) Close() error { return s.c.Close() }

func (s *redisStore) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

func (s *redisStore) Create(ctx context.Context, u user) (string, error) {
	b, err := json.Marshal(u)
	if err != nil {
		return "", err
	}
	id := newSessionID()
	if err := s.c.Set(ctx, redisPrefix+id, b, s.ttl).Err(); err != nil {
		return "", err
	}
	return id, nil
}

func (s *redisStore) Get(ctx context.Context, id string) (user, bool, error) {
	b, err := s.c.GetEx(ctx, redisPrefix+id, s.ttl).Bytes()
	if errors.Is(err, redis.Nil) {
		return user{}, false, nil
	}
	if err != nil {
		return user{}, false, err
	}
	var u user
	if err := json.Unmarshal(b, &u); err != nil {
		return user{}, false, err
	}
	return u, true, nil
}

func (s *redisStore) Delete(ctx context.Context, id string) error {
	return s.c.Del(ctx, redisPrefix+id).Err()
}
