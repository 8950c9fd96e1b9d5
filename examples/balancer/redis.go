package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluiceproxy/sluice/balance"
)

// RedisRegistry is a balance.Registry in Redis, so that several balancer
// instances share one pool: a target registered through any of them is
// used by all, and a down mark set by one is honored by all.
//
// Layout, under Prefix:
//
//	PREFIX:members      set of member IDs
//	PREFIX:m:ID         the member as JSON, with the registration TTL as
//	                    the key's expiry (PX), so a registration whose
//	                    heartbeats stop vanishes by itself
//	PREFIX:down:ID      "1" while the member is marked down (PX)
//
// IDs whose member key expired are dropped from the set when Members
// sees them, by a script that checks the key still does not exist (a
// concurrent re-registration is never lost).
type RedisRegistry struct {
	// Client is the Redis client; it must not be nil.
	Client redis.UniversalClient
	// Prefix namespaces the keys; pools sharing a Prefix share members.
	// If empty, "sluice:pool".
	Prefix string
}

func (r *RedisRegistry) prefix() string {
	if r.Prefix != "" {
		return r.Prefix
	}
	return "sluice:pool"
}

func (r *RedisRegistry) setKey() string             { return r.prefix() + ":members" }
func (r *RedisRegistry) memberKey(id string) string { return r.prefix() + ":m:" + id }
func (r *RedisRegistry) downKey(id string) string   { return r.prefix() + ":down:" + id }

// Put implements balance.Registry.
func (r *RedisRegistry) Put(ctx context.Context, m balance.Member, ttl time.Duration) error {
	if m.ID == "" {
		m.ID = m.URL
	}
	m.Down = false
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if ttl < 0 {
		ttl = 0 // Set with 0: no expiry, what Pool.Add asks for
	}
	_, err = r.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, r.setKey(), m.ID)
		p.Set(ctx, r.memberKey(m.ID), b, ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis registry put: %w", err)
	}
	return nil
}

// Delete implements balance.Registry.
func (r *RedisRegistry) Delete(ctx context.Context, id string) error {
	_, err := r.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, r.setKey(), id)
		p.Del(ctx, r.memberKey(id), r.downKey(id))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis registry delete: %w", err)
	}
	return nil
}

// dropExpired removes an ID from the set only if its member key is gone.
var dropExpired = redis.NewScript(`
if redis.call("EXISTS", KEYS[2]) == 0 then
	return redis.call("SREM", KEYS[1], ARGV[1])
end
return 0`)

// Members implements balance.Registry: two round trips (the set, then the
// member and down keys in one pipeline).
func (r *RedisRegistry) Members(ctx context.Context) ([]balance.Member, error) {
	ids, err := r.Client.SMembers(ctx, r.setKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis registry members: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	keys := make([]string, 0, 2*len(ids))
	for _, id := range ids {
		keys = append(keys, r.memberKey(id))
	}
	for _, id := range ids {
		keys = append(keys, r.downKey(id))
	}
	vals, err := r.Client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis registry members: %w", err)
	}
	out := make([]balance.Member, 0, len(ids))
	for i, id := range ids {
		s, ok := vals[i].(string)
		if !ok {
			if err := dropExpired.Run(ctx, r.Client, []string{r.setKey(), r.memberKey(id)}, id).Err(); err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("redis registry cleanup: %w", err)
			}
			continue
		}
		var m balance.Member
		if err := json.NewDecoder(strings.NewReader(s)).Decode(&m); err != nil {
			continue // not ours: skip rather than fail the whole pool
		}
		m.ID = id
		m.Down = vals[len(ids)+i] != nil
		out = append(out, m)
	}
	return out, nil
}

// MarkDown implements balance.Registry.
func (r *RedisRegistry) MarkDown(ctx context.Context, id string, d time.Duration) error {
	var err error
	if d <= 0 {
		err = r.Client.Del(ctx, r.downKey(id)).Err()
	} else {
		err = r.Client.Set(ctx, r.downKey(id), "1", d).Err()
	}
	if err != nil {
		return fmt.Errorf("redis registry mark down: %w", err)
	}
	return nil
}
