#!/usr/bin/env bash
# Runs sluice's fault matrix (package faults) against sluice
# (examples/passthrough), nginx and httputil.ReverseProxy (cmd/httputil),
# built from this checkout, and prints the table as Markdown on standard
# output (a line per case on standard error as it goes). Arguments go to
# cmd/faultmatrix (e.g. -proxies sluice -faults reset,timeout -kinds grpc).
# Needs Go and nginx (/usr/sbin/nginx); installs Toxiproxy's server if it
# is missing. The whole matrix takes about 15 minutes on two cores.
#
#   robustness/faults/run.sh > table.md
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
toxi="${TOXIPROXY_SERVER:-$(go env GOPATH)/bin/toxiproxy/server}"
[ -x "$toxi" ] || GOBIN="$(dirname "$toxi")" go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0
go build -o "$bin/passthrough" ./examples/passthrough
(cd robustness && go build -o "$bin/" ./faults/cmd/faultmatrix ./faults/cmd/httputil)
"$bin/faultmatrix" -toxiproxy "$toxi" -sluice "$bin/passthrough" -httputil "$bin/httputil" "$@"
