#!/usr/bin/env bash
# profile.sh: where examples/passthrough's CPU goes in scenario A (small
# keep-alive GETs) or D (WebSocket echo), on loopback: the proxy pinned to
# CPU 0, the Go origin (bench/cmd/upstream: /small, 100 bytes; /ws, an
# echo) and the load (wrk; bench/cmd/wsload) on CPU 1.
#
#   bench/profile/profile.sh            # 10 s of perf record -g, then 4 s under strace -c
#   DURATION=20 CONNS=50 bench/profile/profile.sh
#   SCENARIO=D bench/profile/profile.sh # 64 WebSocket connections, 128-byte messages
#   SCENARIO=F bench/profile/profile.sh # A over TLS (HTTP/1.1 keep-alive, wrk)
#   SCENARIO=G bench/profile/profile.sh # HTTP/2 over TLS (h2load, 16 connections x 16 streams)
#   SCENARIO=H bench/profile/profile.sh # a full TLS handshake per request (h2load, 16 connections)
#
# Prints perfsplit's categories and the system calls per request. Needs
# perf, strace and wrk (bench/install.sh installs wrk). Everything it
# starts stops with it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/sluice-profile.XXXXXX)}
duration=${DURATION:-10}
conns=${CONNS:-50}
up=127.0.0.1:19281
px=127.0.0.1:19282
for tool in perf strace wrk taskset; do
	command -v $tool >/dev/null || { echo "profile: $tool is needed" >&2; exit 1; }
done
scenario=${SCENARIO:-A}
(cd "$root/bench" && go build -o "$out/upstream" ./cmd/upstream && go build -o "$out/wsload" ./cmd/wsload)
(cd "$root" && go build -o "$out/passthrough" ./examples/passthrough)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c 1 "$out/upstream" -listen $up >/dev/null 2>&1 & pids+=($!)
tlsflags=()
if [ "$scenario" = F ] || [ "$scenario" = G ] || [ "$scenario" = H ]; then
	command -v h2load >/dev/null || { echo "profile: h2load is needed" >&2; exit 1; }
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
		-keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
	tlsflags=(-tls-cert "$out/cert.pem" -tls-key "$out/key.pem" -tls-no-resume)
fi
taskset -c 0 "$out/passthrough" -listen $px -upstream http://$up "${tlsflags[@]}" >/dev/null 2>&1 & pids+=($!)
proxy=$!
for _ in $(seq 50); do curl -skf -o /dev/null http://$px/small && break; curl -skf -o /dev/null https://$px/small && break; sleep 0.1; done
# load SECONDS CONNS: the scenario's load for that long; prints the
# number of requests (A) or round trips (D) it made last.
load() {
	if [ "$scenario" = H ]; then
		# h2load runs a count, not a time: about 1,500 handshakes a second.
		taskset -c 1 h2load --h1 -t 1 -c "$2" -m 1 -H 'Connection: close' -n $(( $1 * 1500 )) https://$px/small |
			awk '/^requests:/ {print $8}'
	elif [ "$scenario" = G ]; then
		taskset -c 1 h2load -t 1 -c 16 -m 16 -n $(( $1 * 10000 )) https://$px/small | awk '/^requests:/ {print $8}'
	elif [ "$scenario" = F ]; then
		taskset -c 1 wrk -t1 -c"$2" -d"${1}s" https://$px/small | awk '/requests in/ {print $1}'
	elif [ "$scenario" = D ]; then
		taskset -c 1 "$out/wsload" -url ws://$px/ws -c "$2" -d "${1}s" -warmup 0s |
			python3 -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(d["round_trips"])'
	else
		taskset -c 1 wrk -t1 -c"$2" -d"${1}s" http://$px/small | awk '/requests in/ {print $1}'
	fi
}
unit=request
[ "$scenario" = D ] && { unit="round trip"; conns=${CONNS:-64}; }
[ "$scenario" = H ] && { unit=handshake; conns=${CONNS:-16}; }
load 2 "$conns" >/dev/null # warm-up
perf record -F 1999 -g -p $proxy -o "$out/perf.data" -- sleep "$duration" >/dev/null 2>&1 &
rec=$!
echo "$(load "$duration" "$conns") ${unit}s in $duration s"
wait $rec
echo "--- where the CPU goes (perf, $duration s)"
python3 "$here/perfsplit.py" "$out/perf.data"
echo "--- system calls per $unit (strace -c -f, 4 s, 10 connections)"
timeout 8 strace -c -f -p $proxy -o "$out/strace.txt" >/dev/null 2>&1 &
st=$!
sleep 0.5
n=$(load 4 10)
sleep 1
kill -INT $st 2>/dev/null || true
wait $st 2>/dev/null || true
awk -v n="$n" -v unit="$unit" '$NF ~ /^(read|write|writev|recvfrom|epoll_pwait|epoll_wait|futex|nanosleep)$/ {
	calls = $4; errs = (NF == 6) ? $5 : 0
	printf "%-12s %6.2f per %s, %.2f of them failed (EAGAIN)\n", $NF, calls / n, unit, errs / n
}' "$out/strace.txt"
echo "${unit}s under strace: $n; files in $out"
