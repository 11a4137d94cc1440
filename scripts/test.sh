#!/usr/bin/env bash
# The whole test suite: typecheck, lint, unit + integration tests, then the lab tier
# (real kernel networking in network namespaces; needs root), then the image tier (the OCI image
# built with buildah and run with podman). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Node.js: the project's LTS (scripts/node-env.sh), which install-deps.sh installs, first on PATH.
. scripts/node-env.sh
if [ "$(id -u)" != 0 ]; then echo "run as root: the lab tier builds network namespaces" >&2; exit 1; fi
./scripts/install-deps.sh
echo "== typecheck";  npm run --silent typecheck
echo "== lint";       npm run --silent lint
echo "== CNI shim (go vet, go test)"; (cd cni-shim && go vet ./... && go test ./...)
echo "== unit and integration tests"; npx vitest run --config vitest.config.ts
echo "== lab tests (network namespaces)"; npx vitest run --config vitest.lab.config.ts
echo "== image tests (buildah builds the image, podman runs it in a loopback-only namespace)"; npx vitest run --config vitest.image.config.ts
