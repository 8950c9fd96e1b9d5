#!/usr/bin/env bash
# profile.sh: where examples/passthrough's CPU goes in scenario A (small
# keep-alive GETs), on loopback: the proxy pinned to CPU 0, the Go origin
# (bench/cmd/upstream, /small: 100 bytes) and wrk on CPU 1.
#
#   bench/profile/profile.sh            # 10 s of perf record -g, then 4 s under strace -c
#   DURATION=20 CONNS=50 bench/profile/profile.sh
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
(cd "$root/bench" && go build -o "$out/upstream" ./cmd/upstream)
(cd "$root" && go build -o "$out/passthrough" ./examples/passthrough)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c 1 "$out/upstream" -listen $up >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$out/passthrough" -listen $px -upstream http://$up >/dev/null 2>&1 & pids+=($!)
proxy=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://$px/small && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c$conns -d2s http://$px/small >/dev/null # warm-up
perf record -F 1999 -g -p $proxy -o "$out/perf.data" -- sleep "$duration" >/dev/null 2>&1 &
rec=$!
taskset -c 1 wrk -t1 -c$conns -d${duration}s http://$px/small | grep -E 'requests in|Requests/sec'
wait $rec
echo "--- where the CPU goes (perf, $duration s)"
python3 "$here/perfsplit.py" "$out/perf.data"
echo "--- system calls per request (strace -c -f, 4 s, wrk -c10)"
timeout 8 strace -c -f -p $proxy -o "$out/strace.txt" >/dev/null 2>&1 &
st=$!
sleep 0.5
n=$(taskset -c 1 wrk -t1 -c10 -d4s http://$px/small | awk '/requests in/ {print $1}')
sleep 1
kill -INT $st 2>/dev/null || true
wait $st 2>/dev/null || true
awk -v n="$n" '$NF ~ /^(read|write|writev|recvfrom|epoll_pwait|epoll_wait|futex|nanosleep)$/ {
	calls = $4; errs = (NF == 6) ? $5 : 0
	printf "%-12s %6.2f per request, %.2f of them failed (EAGAIN)\n", $NF, calls / n, errs / n
}' "$out/strace.txt"
echo "requests under strace: $n; files in $out"
