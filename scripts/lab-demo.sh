#!/usr/bin/env bash
# The lab demo: builds a cluster of network namespaces, shows each pod's egress IP, kills a
# gateway, shows the failover, and removes everything. Installs what it needs first (root).
set -euo pipefail
cd "$(dirname "$0")/.."
# Node.js: the project's LTS (scripts/node-env.sh), which install-deps.sh installs, first on PATH.
. scripts/node-env.sh
if [ "$(id -u)" != 0 ]; then echo "run as root: the lab builds network namespaces" >&2; exit 1; fi
STATIC_EGRESS_INSTALL=demo STATIC_EGRESS_K8S_BUILD=background ./scripts/install-deps.sh
# The demo's lab runs without an API server (file mode), so it need not wait for the real control
# plane (kube-apiserver, etcd: minutes to build the first time). That is built in the background,
# at the lowest priority, for `lab up --mode kubernetes` and the tests.
log=/var/log/static-egress-build-k8s.log
if [ -z "$(find "${STATIC_EGRESS_CACHE:-/var/cache/static-egress}" -maxdepth 2 -name kube-apiserver 2>/dev/null)" ]; then
  echo "building the Kubernetes control plane in the background (progress: tail -f $log)"
fi
STATIC_EGRESS_BUILD_LOG="$log" nohup nice -n 19 ./scripts/build-k8s.sh >"$log" 2>&1 &
exec node dist/cli/main.js lab demo -f "${1:-examples/lab.yaml}"
