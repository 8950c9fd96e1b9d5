// Package soak is sluice's soak: a load generator that mixes every
// capability of the proxy for a given duration against upstream targets
// that go down and come back on a schedule (a flapping upstream), while it
// samples the proxy's goroutines, open descriptors and resident memory.
//
// The proxy (RunProxy) runs in a process of its own, which Run starts from
// the same executable (ProxyMain), so that what is sampled is the proxy's
// alone: its
// descriptors and RSS are read from /proc/PID, its goroutines from an
// admin listener of its own. The targets, the stable origin and the
// clients run in the driving process.
//
// Every exchange a client makes ends in one of four ways: it succeeded and
// its bytes were verified (sha256 for uploads and downloads, every event
// of a stream, every WebSocket message); the client left on purpose
// (abandoned uploads and streams); it failed clearly (a 502, 503 or 504
// before the response headers, or a response or session aborted after
// them, never a body that ends cleanly with the wrong bytes); or it failed
// in any other way. A clear failure is "injected" when an outage explains
// it: for a route with a pool behind it, a target went down while the
// exchange was under way or at most CutGrace before it started (the pool
// steers new requests around a target that is down, so only those under
// way may fail); for the route to a
// lone target, the exchange overlapped one of its outages. Every other
// failure is a violation, and so is a resource that grows after warm-up
// (see Flat) or that does not come back to its baseline after the load.
// Linux only (/proc).
package soak
