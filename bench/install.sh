#!/usr/bin/env bash
# Installs what bench/run.sh needs (Debian or Ubuntu packages) and builds
# the harness into bench/bin. Safe to run again: installed packages are
# skipped and the Go build is incremental.
#
#   bench/install.sh            # apt-get (as root, or through sudo) + go build
#   bench/install.sh --no-apt   # the Go build only
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkgs=(wrk nginx haproxy caddy nghttp2-client curl util-linux coreutils)

if [[ "${1:-}" != "--no-apt" ]]; then
	missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		sudo=()
		if [[ $(id -u) -ne 0 ]]; then
			command -v sudo >/dev/null || { echo "install.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
			sudo=(sudo)
		fi
		# Debian starts nginx, HAProxy and Caddy as services on install (on
		# port 80 and others). The benchmark starts its own instances on
		# loopback high ports, so keep the packaged services from starting:
		# without a policy-rc.d, add one for the install that denies it.
		made_policy=""
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
			"${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
			made_policy=1
		fi
		trap '[[ -n "$made_policy" ]] && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
		echo "install.sh: apt-get install ${missing[*]}"
		"${sudo[@]}" apt-get update -qq
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	else
		echo "install.sh: packages already installed"
	fi
fi

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x "$go" ]] || { echo "install.sh: no Go toolchain (set GO=/path/to/go)" >&2; exit 1; }
mkdir -p "$here/bin"
(cd "$here" && "$go" build -trimpath -o "$here/bin/" ./cmd/...)
echo "install.sh: built $(cd "$here/bin" && echo *) in $here/bin"
for t in wrk nginx haproxy caddy h2load curl taskset; do
	command -v "$t" >/dev/null || echo "install.sh: warning: $t is not on PATH" >&2
done
