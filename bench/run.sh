#!/usr/bin/env bash
# Runs sluice's reverse-proxy benchmark: sluice (examples/passthrough, so
# sluice.Server in front of a sluice.Proxy) side by side with
# httputil.ReverseProxy, nginx, HAProxy and Caddy, on loopback, proxy
# pinned to CPU 0 and everything else to CPU 1. See bench/README.md.
#
#   bench/install.sh                          # once: wrk, nginx, HAProxy, Caddy, h2load, curl
#   bench/run.sh                              # A-E and E-ws, 5 s runs, 3 interleaved repeats
#   bench/run.sh --scenarios A --duration 3 --repeat 1
#   bench/run.sh --scenarios all              # also the TLS scenarios F, G, H
#   bench/run.sh --candidate 'old=/tmp/passthrough-old -listen {ADDR} -upstream {UPSTREAM}'
#   SLUICE_BENCH=balancer bench/run.sh        # the candidate is balance.Pool with one target
#   SLUICE_BENCH=none bench/run.sh            # the peers only
#   bench/run.sh compare bench/results/RUN_A bench/results/RUN_B
#   bench/run.sh -h                           # every option
#
# Options after the script's name go to bench/cmd/benchrun and override the
# defaults below. Everything stops by itself (each tool has a deadline, the
# whole run --max-runtime); Ctrl-C stops what the run started.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
bin="$here/bin"
go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x "$go" ]] || { echo "bench: no Go toolchain (set GO=/path/to/go)" >&2; exit 1; }

mkdir -p "$bin"
(cd "$here" && "$go" build -trimpath -o "$bin/" ./cmd/...)
if [[ "${1:-}" == "compare" ]]; then
	exec "$bin/benchrun" "$@"
fi

args=()
case "${SLUICE_BENCH:-passthrough}" in
passthrough)
	(cd "$root" && "$go" build -o "$bin/passthrough" ./examples/passthrough)
	plain="$bin/passthrough -listen {ADDR} -upstream {UPSTREAM}"
	args+=(--candidate "sluice=$plain")
	# TLS and HTTP/2 in F-H need passthrough's -tls-* flags (issue 16).
	# (Read the help whole: with pipefail, grep -q closing the pipe early
	# would fail the pipeline.)
	help=$("$bin/passthrough" -h 2>&1 || true)
	if grep -q -- '-tls-no-resume' <<<"$help"; then
		args+=(--candidate-tls "sluice=$plain -tls-cert {CERT} -tls-key {KEY} -tls-no-resume")
	else
		echo "bench: examples/passthrough has no -tls-cert/-tls-no-resume yet: sluice sits out F, G, H" >&2
	fi
	;;
balancer)
	(cd "$root" && "$go" build -o "$bin/balancer" ./examples/balancer)
	args+=(--candidate "sluice-pool=$bin/balancer -listen {ADDR} -backends 0 -target {UPSTREAM} -health-path ''")
	;;
none) ;;
*)
	echo "bench: SLUICE_BENCH must be passthrough, balancer or none" >&2
	exit 2
	;;
esac

# E and E-ws hold 5,000 connections on each side of the proxy: raise the
# open-files limit to the hard limit for everything started from here.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
rev=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
exec "$bin/benchrun" --out "$here/results" --work-dir "$root" --duration 5 --repeat 3 \
	--note "sluice $rev, candidate ${SLUICE_BENCH:-passthrough}" "${args[@]}" "$@"
