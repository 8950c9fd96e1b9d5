#!/usr/bin/env bash
# Builds the starter proxies and runs the shared reverse-proxy benchmark
# (../shared/bench, see its README) with sluice as the candidate, side by
# side with httputil.ReverseProxy, nginx, HAProxy and Caddy.
#
#   bench/run.sh                         # passthrough, all scenarios, 3 repeats of 5 s
#   bench/run.sh --scenarios A           # extra flags go to the harness
#   bench/run.sh --scenarios F,G,H       # the TLS scenarios (h1 over TLS, h2, a handshake per request)
#   SLUICE_BENCH=balancer bench/run.sh --scenarios A   # the balancer with one target
#
# Needs ../shared/bench/install.sh to have run once (wrk, nginx, HAProxy,
# Caddy). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
harness="${SLUICE_BENCH_HARNESS:-../shared/bench/run.sh}"
[ -x "$harness" ] || { echo "bench: $harness not found; see ../shared/bench/README.md" >&2; exit 1; }
mkdir -p bin
case "${SLUICE_BENCH:-passthrough}" in
passthrough)
	go build -o bin/passthrough ./examples/passthrough
	candidate='./bin/passthrough -listen {ADDR} -upstream {UPSTREAM}'
	# F-H (TLS): h2 and http/1.1 by ALPN, no session resumption.
	candidate_tls="$candidate -tls-cert {CERT} -tls-key {KEY} -tls-no-resume"
	name=sluice
	;;
balancer)
	go build -o bin/balancer ./examples/balancer
	candidate='./bin/balancer -listen {ADDR} -backends 0 -target {UPSTREAM} -health-path ""'
	name=sluice-pool
	;;
*)
	echo "bench: SLUICE_BENCH must be passthrough or balancer" >&2
	exit 2
	;;
esac
exec "$harness" --duration 5 --repeat 3 --candidate-name "$name" --candidate "$candidate" \
	${candidate_tls:+--candidate-tls "$candidate_tls"} "$@"
