#!/usr/bin/env bash
# syscalls-b.sh: system calls per 1 MiB response (scenario B) of
# examples/passthrough and of nginx (one worker, 8 x 32 KiB proxy
# buffers, an upstream keep-alive pool: bench/conf's settings for B),
# each pinned to CPU 0 with the Go origin and wrk -c16 on CPU 1, under
# strace -c -f for 4 s. Needs strace, wrk and nginx (bench/install.sh).
#
#   bench/profile/syscalls-b.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/sluice-syscalls.XXXXXX)}
up=127.0.0.1:19381
for tool in strace wrk nginx taskset; do
	command -v $tool >/dev/null || { echo "syscalls-b: $tool is needed" >&2; exit 1; }
done
(cd "$root/bench" && go build -o "$out/upstream" ./cmd/upstream)
(cd "$root" && go build -o "$out/passthrough" ./examples/passthrough)
mkdir -p "$out/nginx"
cat > "$out/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $out/nginx/nginx.pid;
error_log $out/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $out/nginx/client_body;
    proxy_temp_path $out/nginx/proxy_temp;
    upstream backend { server $up; keepalive 64; }
    server {
        listen 127.0.0.1:19383;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_buffer_size 32k;
            proxy_buffers 8 32k;
            proxy_busy_buffers_size 64k;
        }
    }
}
CONF
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c 1 "$out/upstream" -listen $up >/dev/null 2>&1 & pids+=($!)
# measure NAME PID URL
measure() {
	taskset -c 1 wrk -t1 -c16 -d2s "$3" >/dev/null # warm-up
	timeout 10 strace -c -f -p "$2" -o "$out/$1.strace" >/dev/null 2>&1 &
	local st=$!
	sleep 0.5
	local n
	n=$(taskset -c 1 wrk -t1 -c16 -d4s "$3" | awk '/requests in/ {print $1}')
	sleep 0.5
	kill -INT $st 2>/dev/null || true
	wait $st 2>/dev/null || true
	echo "== $1: $n responses of 1 MiB under strace"
	awk -v n="$n" '$NF ~ /^(read|readv|recvfrom|write|writev|sendfile|splice|epoll_wait|epoll_pwait|futex)$/ {
		calls = $4; errs = (NF == 6) ? $5 : 0
		printf "%-12s %6.1f per response, %.1f of them failed (EAGAIN)\n", $NF, calls / n, errs / n
	}' "$out/$1.strace"
}
taskset -c 0 "$out/passthrough" -listen 127.0.0.1:19382 -upstream http://$up >/dev/null 2>&1 & pids+=($!)
px=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:19382/small && break; sleep 0.1; done
measure sluice $px "http://127.0.0.1:19382/bytes?n=1048576"
kill $px
taskset -c 0 nginx -c "$out/nginx/nginx.conf" -p "$out/nginx" >/dev/null 2>&1 & pids+=($!)
ng=$!
sleep 1
worker=$(pgrep -P $ng | head -1)
measure nginx "${worker:-$ng}" "http://127.0.0.1:19383/bytes?n=1048576"
echo "files in $out"
