#!/usr/bin/env bash
# Builds the CNI shim (cni-shim/, Go, standard library only: docs/cni.md) and puts it at
# dist/cni/static-egress-shim, where `static-egress cni install` takes it from (or at OUT).
# Once per source: the binary goes to a cache outside the clone (STATIC_EGRESS_CACHE, default
# /var/cache/static-egress), keyed by a hash of the shim's sources, the Go version and GOARCH.
#
#   ./scripts/build-cni-shim.sh [OUT]          GOARCH=arm64 ./scripts/build-cni-shim.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/cni/static-egress-shim}"
cache="${STATIC_EGRESS_CACHE:-/var/cache/static-egress}"
command -v go >/dev/null || { echo "go is not installed: the CNI shim is built with Go (cni-shim/go.mod names the version)" >&2; exit 1; }
arch="${GOARCH:-$(go env GOARCH)}"
key="$( { (cd cni-shim && find . -name '*.go' ! -name '*_test.go' -o -name 'go.mod' -o -name 'go.sum' | LC_ALL=C sort | xargs sha256sum); go version; echo "$arch"; } | sha256sum | cut -c1-16)"
built="$cache/cni-shim-$key/static-egress"
mkdir -p "$cache"
exec 9>"$cache/.cni-shim.lock"
if ! flock -n 9; then echo "another build of the CNI shim is running; waiting for it"; flock 9; fi
if [ ! -x "$built" ]; then
  echo "building the CNI shim ($arch, $(go version | cut -d' ' -f3)) into $built (once per source)"
  start=$SECONDS
  tmp="$cache/cni-shim-$key.tmp-$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # Static (no libc): it runs on the host, whatever the host's distribution.
  (cd cni-shim && CGO_ENABLED=0 GOARCH="$arch" go build -trimpath -ldflags "-s -w" -o "$tmp/static-egress" .)
  rm -rf "$cache/cni-shim-$key"; mv "$tmp" "$cache/cni-shim-$key"
  echo "built the CNI shim in $((SECONDS - start)) s"
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out.tmp-$$" && mv "$out.tmp-$$" "$out"
