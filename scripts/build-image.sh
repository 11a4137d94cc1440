#!/usr/bin/env bash
# Builds the static-egress OCI image without a Docker engine or a registry (run as root):
#   1. a Debian bookworm root file system from debootstrap (minbase, plus what the agents exec:
#      nftables, iproute2, conntrack, procps), cached in $STATIC_EGRESS_CACHE by package list;
#   2. Node.js (scripts/node-env.sh's version) from the npm registry's binary package, at
#      /usr/local/bin/node as in the node:*-bookworm-slim images;
#   3. the app built from this clone's sources in a temporary copy: npm ci, npm run build (tsc,
#      then scripts/bundle.ts: the CLI's entry as one file),
#      npm prune --omit=dev, the CNI shim for each architecture (scripts/build-cni-shim.sh, at
#      dist/cni/static-egress-shim in the image), and BUILD_ID (a content hash of what ships;
#      the node agent's install-cni init container keys the host's release directory by it);
#   4. buildah assembles and commits it (OCI format) into the local container storage, where
#      podman runs it; with --archive FILE it also writes an OCI archive to load elsewhere.
# The Dockerfile builds the same layout for users with Docker; test/integration/deploy.test.ts
# checks both against the repository.
#
#   ./scripts/build-image.sh [--tag NAME] [--arch amd64|arm64]... [--archive FILE]
#
# With more than one --arch (e.g. --arch amd64 --arch arm64) each is tagged NAME-<arch> and NAME is
# a manifest list of them (the archive then holds all). A foreign architecture runs its package
# scripts under qemu-user-static through binfmt_misc (Debian's qemu-user-static; see docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh
if [ "$(id -u)" != 0 ]; then echo "run as root: debootstrap and buildah need it" >&2; exit 1; fi
tag="localhost/static-egress:$(node -p 'require("./package.json").version')"
archive=""
arches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --arch) arches+=("$2"); shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    *) echo "usage: $0 [--tag NAME] [--arch amd64|arm64]... [--archive FILE]" >&2; exit 2 ;;
  esac
done
host_arch="$(dpkg --print-architecture)"
[ ${#arches[@]} -gt 0 ] || arches=("$host_arch")
for tool in debootstrap buildah; do command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install buildah podman debootstrap" >&2; exit 1; }; done
cache="${STATIC_EGRESS_CACHE:-/var/cache/static-egress}"
# The Debian mirror apt already uses on this machine.
mirror="$(sed -nE 's#^URIs:[[:space:]]*(\S+/debian)/?$#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
[ -n "$mirror" ] || mirror="$(sed -nE 's#^deb[[:space:]]+(\S+/debian)/?[[:space:]]+bookworm[[:space:]].*#\1#p' /etc/apt/sources.list 2>/dev/null | head -1)"
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
# What the agents exec (src/dataplane, src/cni): nft, ip, conntrack, sysctl. The same list as the Dockerfile's.
packages=(nftables iproute2 conntrack procps)
start=$SECONDS

# --- 3. the app ---------------------------------------------------------------------------------
app="$(mktemp -d)"
ctr=""
cleanup() { rm -rf "$app"; if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
cp package.json package-lock.json tsconfig.json tsconfig.build.json "$app/"
cp -R src "$app/src"
mkdir "$app/scripts" && cp scripts/bundle.ts "$app/scripts/"
(
  cd "$app"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  npm run --silent build
  npm prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null
  # Tests never ship: tsconfig.build.json leaves *.test.ts out of dist.
  if find dist -name '*.test.js' | grep -q .; then echo "a test file is in dist/" >&2; exit 1; fi
)
# The CNI shim is per architecture; each build goes to the image's dist/cni/static-egress-shim.
for arch in "${arches[@]}"; do GOARCH="$arch" ./scripts/build-cni-shim.sh "$app/cni-shim-$arch"; done
(cd "$app" && find dist node_modules package.json cni-shim-* -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16 >BUILD_ID)

# build_arch <tag>: the image for $arch.
build_arch() {
  # --- 1. the Debian root file system ------------------------------------------------------------
  key="$(printf '%s\n' bookworm "$arch" "${packages[@]}" | sha256sum | cut -c1-12)"
  rootfs="$cache/rootfs-bookworm-$arch-$key.tar"
  if [ ! -f "$rootfs" ]; then
    echo "debootstrap bookworm ($arch, ${packages[*]}) from $mirror (once; cached as $rootfs)"
    work="$(mktemp -d "$cache/.debootstrap-XXXXXX")"
    case "$arch" in arm64) qemu=aarch64 ;; amd64) qemu=x86_64 ;; *) qemu="$arch" ;; esac
    if [ "$arch" != "$host_arch" ] && [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]; then
      echo "building for $arch on $host_arch needs qemu-user-static registered with binfmt_misc: apt-get install qemu-user-static; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; /lib/systemd/systemd-binfmt" >&2
      exit 1
    fi
    debootstrap --variant=minbase --arch="$arch" --include="$(IFS=,; echo "${packages[*]}")" bookworm "$work/root" "$mirror" >"$work/log" 2>&1 ||
      { tail -20 "$work/log" >&2; echo "debootstrap failed (log above)" >&2; exit 1; }
    # Smaller: no package lists or caches, docs, man pages or locales.
    rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/var/cache/apt/* "$work/root"/var/cache/debconf/*-old \
      "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* "$work/root"/var/log/*
    find "$work/root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    # The image's non-root user, uid/gid 1000 like the node images' `node` user.
    echo "node:x:1000:1000::/home/node:/bin/sh" >>"$work/root/etc/passwd"
    echo "node:x:1000:" >>"$work/root/etc/group"
    mkdir -p "$work/root/home/node" && chown 1000:1000 "$work/root/home/node"
    tar -C "$work/root" --numeric-owner -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
    rm -rf "$work"
  fi

  # --- 2. Node.js ---------------------------------------------------------------------------------
  case "$arch" in amd64) node_arch=x64 ;; arm64) node_arch=arm64 ;; *) echo "no Node.js binary package for $arch" >&2; exit 1 ;; esac
  node_dir="$cache/node-v$STATIC_EGRESS_NODE_VERSION-linux-$node_arch"
  [ -x "$node_dir/bin/node" ] || install_node "$node_dir" "$node_arch"

  # --- 4. the image ---------------------------------------------------------------------------------
  ctr="$(buildah from --arch "$arch" scratch)"
  buildah add "$ctr" "$rootfs" / >/dev/null
  buildah copy --chmod 0755 "$ctr" "$node_dir/bin/node" /usr/local/bin/node >/dev/null
  buildah copy "$ctr" "$node_dir/LICENSE" /usr/local/share/doc/node/LICENSE >/dev/null
  buildah copy "$ctr" "$app/package.json" "$app/BUILD_ID" /app/ >/dev/null
  buildah copy "$ctr" "$app/node_modules" /app/node_modules >/dev/null
  buildah copy "$ctr" "$app/dist" /app/dist >/dev/null
  buildah copy --chmod 0755 "$ctr" "$app/cni-shim-$arch" /app/dist/cni/static-egress-shim >/dev/null
  # Node's compile cache of the bundled CLI (NODE_COMPILE_CACHE below): written now by the very
  # Node.js binary the image ships, so a new node's agent does not compile it again (~50-70 ms of
  # CPU off every start). Per uid, as Node keys it: root (the node agent), 1000 (the controller,
  # the gateway agent); portable (paths relative to the cache), so it holds at /app. Read-only at
  # run time (a read-only root file system is fine; Node then writes nothing). Only for the host's
  # architecture (a foreign one would run under qemu): the others start without one.
  if [ "$arch" = "$host_arch" ]; then
    rm -rf "$app/.compile-cache" && mkdir -m 0755 "$app/.compile-cache" && chmod 0755 "$app"
    for uid in 0 1000; do
      chown "$uid:$uid" "$app/.compile-cache"
      setpriv --reuid="$uid" --regid="$uid" --clear-groups env NODE_COMPILE_CACHE="$app/.compile-cache" \
        NODE_COMPILE_CACHE_PORTABLE=1 "$node_dir/bin/node" "$app/dist/cli/main.js" agent node --help >/dev/null
    done
    # Node writes its cache files 0600 and buildah copies them as root's: readable by every uid.
    chmod -R a+rX "$app/.compile-cache"
    buildah copy "$ctr" "$app/.compile-cache" /app/.compile-cache >/dev/null
  fi
  buildah config \
    --os linux --arch "$arch" \
    --env NODE_ENV=production --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_COMPILE_CACHE=/app/.compile-cache --env NODE_COMPILE_CACHE_PORTABLE=1 \
    --workingdir /app --user 1000:1000 \
    --entrypoint '["node", "/app/dist/cli/main.js"]' --cmd '' \
    --label org.opencontainers.image.title=static-egress \
    --label org.opencontainers.image.version="$(node -p 'require("./package.json").version')" \
    --label io.static-egress.build-id="$(cat "$app/BUILD_ID")" \
    --label io.static-egress.node-version="$STATIC_EGRESS_NODE_VERSION" \
    "$ctr" >/dev/null
  buildah commit --quiet --format oci --rm "$ctr" "$1" >/dev/null
  ctr=""
  echo "built $1 ($arch, Node.js $STATIC_EGRESS_NODE_VERSION, build $(cat "$app/BUILD_ID")): $(buildah images --format '{{.Size}}' "$1" | head -1) after $((SECONDS - start)) s"
}

if [ ${#arches[@]} -eq 1 ]; then
  arch="${arches[0]}"; build_arch "$tag"
else
  # The name goes to the list: an image or a list of that name from an earlier build is replaced.
  buildah manifest rm "$tag" >/dev/null 2>&1 || buildah rmi "$tag" >/dev/null 2>&1 || true
  buildah manifest create "$tag" >/dev/null
  for arch in "${arches[@]}"; do
    build_arch "$tag-$arch"
    buildah manifest add --arch "$arch" "$tag" "containers-storage:$tag-$arch" >/dev/null
  done
  echo "manifest list $tag: ${arches[*]}"
fi
if [ -n "$archive" ]; then
  rm -f "$archive"
  if [ ${#arches[@]} -eq 1 ]; then buildah push --quiet "$tag" "oci-archive:$archive:$tag"; else buildah manifest push --quiet --all "$tag" "oci-archive:$archive"; fi
  echo "wrote $archive ($(du -h "$archive" | cut -f1))"
fi
