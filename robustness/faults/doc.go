// Package faults is sluice's fault matrix: Toxiproxy between a client and
// a proxy, and between the proxy and an upstream, one toxic at a time
// (latency with jitter, a bandwidth limit, tiny segments, a reset in
// the middle of a body, a black hole, a cut after N bytes, a slow
// close), for each kind of traffic (a small GET, a large download of
// unknown length, a large chunked upload, server-sent events, a
// WebSocket echo, a gRPC bidirectional stream), through sluice
// (examples/passthrough), nginx and httputil.ReverseProxy (cmd/httputil).
//
// Each case records the client's outcome, which must be complete and
// verified byte for byte (SHA-256 of the bytes) or a clear failure (an
// error status before the answer, a failed connection after it), never
// an answer that ends as if complete and is short, never bytes of
// another exchange; and the proxy's resources (goroutines, open
// descriptors, RSS), which must come back near their baseline.
//
// cmd/faultmatrix runs the matrix and prints it as Markdown (run.sh
// builds what it needs); the package's test runs a few cases against
// sluice in CI. docs/robustness.md has the table measured and its command.
package faults
