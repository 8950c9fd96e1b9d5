// Package balance is load balancing for a sluice.Proxy: a Pool is a
// sluice.Director that spreads requests over a dynamic set of upstream
// targets with a Policy, keeps them healthy with active (HealthCheck)
// and passive (PassiveHealth) checks, and counts per-target statistics
// (Stats). Targets join and leave with Pool.Add, Pool.Register and
// Pool.Remove, or register themselves over HTTP through a Registrar; the
// target's side of that protocol is package balance/register, which an
// upstream application imports without pulling in the proxy.
//
//	pool := &balance.Pool{
//		Policy: balance.LeastConnections(),
//		Health: &balance.HealthCheck{Path: "/healthz"},
//	}
//	if err := pool.Add(ctx, balance.Member{URL: "http://10.0.0.5:8080"}); err != nil {
//		return err
//	}
//	go pool.Run(ctx) // health checks, registration expiry, shared-registry sync
//	proxy := &sluice.Proxy{Director: pool}
//
// Policies: RoundRobin, WeightedRoundRobin, LeastConnections,
// RandomTwoChoices, ConsistentHash (keyed by HashHeader, HashCookie or
// HashClientIP) and StickyCookie; a new policy implements Policy.
// Several proxy instances share one pool through a shared Registry (the
// balancer example has one in Redis).
//
// Configuration follows the convention of the whole module: structs
// with exported fields whose zero value is useful, each field documented
// with what zero or nil means, set before first use and not changed
// after; functions return ready values (RoundRobin()), and a value that
// runs in the background has a Run(ctx) method that returns when ctx
// ends.
//
// See docs/load-balancing.md in the repository for the design, the
// measured cost of each policy and what is not supported.
package balance
