#!/usr/bin/env bash
# The lab demo: builds a cluster of network namespaces, shows each pod's egress IP, kills a
# gateway, shows the failover, and removes everything. Installs what it needs first (root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root: the lab builds network namespaces" >&2; exit 1; fi
./scripts/install-deps.sh
exec node dist/cli/main.js lab demo -f "${1:-examples/lab.yaml}"
