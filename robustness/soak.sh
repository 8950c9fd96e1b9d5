#!/usr/bin/env bash
# soak.sh runs sluice's soak (robustness/soak, see its package doc): the
# proxy in a process of its own, every kind of exchange through it, the
# upstream targets flapping; it exits 1 on an unexplained failure or a
# resource that grows. Flags go to the program (-h lists them); paths are
# the caller's.
#
#   robustness/soak.sh                                  # one hour
#   robustness/soak.sh -duration 60s                    # the CI run
#   robustness/soak.sh -duration 1h -png docs/soak.png  # the picture in docs/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -C "$here" -o "$tmp/soak" ./soak/cmd/soak
"$tmp/soak" "$@"
