#!/usr/bin/env bash
# Installs what static-egress needs on a fresh Debian 12 machine (run as root):
# Debian packages for the datapath and the lab, then the npm dependencies, then the build, then
# the Kubernetes control plane (built from its Go modules once, cached outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."

# buildah, podman, debootstrap, runc: the image tier builds the OCI image and runs it
# (scripts/build-image.sh, test/image; podman runs it with runc: crun refuses hybrid cgroup layouts).
packages=(nftables iproute2 iptables conntrack iperf3 tcpdump frr containernetworking-plugins kubectl procps curl openssl)
# ipset: the lab's NetworkPolicy enforcer (kube-router, built below) keeps its address sets in it.
packages+=(ipset)
# The lab demo (STATIC_EGRESS_INSTALL=demo) needs no image tools: it starts sooner without them.
# prometheus: promtool tests the shipped alert rules; a lab test runs the binary itself (never the service).
# chromium: the live view's lab test drives it headless through playwright-core (a devDependency).
if [ "${STATIC_EGRESS_INSTALL:-all}" = all ]; then packages+=(buildah podman debootstrap runc uidmap prometheus chromium); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # No service may start on install (Prometheus would listen on :9090): a policy-rc.d of our own for this run.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
systemctl disable --now prometheus >/dev/null 2>&1 || true
# FRR is only used as a BFD peer in tests; its own daemons must not run on the host.
systemctl disable --now frr >/dev/null 2>&1 || true

# Node.js: the LTS in scripts/node-env.sh, from the npm registry's binary package, into
# /opt/static-egress/node-v<version> (outside the clone), first on PATH from here on.
. scripts/node-env.sh
if [ "$("$STATIC_EGRESS_NODE_DIR/bin/node" --version 2>/dev/null)" != "v$STATIC_EGRESS_NODE_VERSION" ]; then
  echo "installing Node.js $STATIC_EGRESS_NODE_VERSION into $STATIC_EGRESS_NODE_DIR"
  command -v npm >/dev/null || { echo "npm is needed to fetch Node.js from the npm registry: apt-get install npm" >&2; exit 1; }
  install_node "$STATIC_EGRESS_NODE_DIR" "$STATIC_EGRESS_NODE_ARCH"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # The lock file lists every platform's optional native builds (rolldown's, esbuild's), so a plain
  # `npm ci` installs exactly the locked versions on a fresh clone, as a user would type it.
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# The CNI shim (Go, cni-shim/): built once per source into the cache, copied to dist/cni/.
./scripts/build-cni-shim.sh
# The real control plane the tests and the lab run against (kube-apiserver, etcd, ...), built once
# from their Go modules into a cache outside the clone (scripts/build-k8s.sh). The lab demo needs
# none of it and builds it in the background instead (STATIC_EGRESS_K8S_BUILD=background).
if [ "${STATIC_EGRESS_K8S_BUILD:-now}" = now ]; then ./scripts/build-k8s.sh; fi
