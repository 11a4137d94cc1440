#!/usr/bin/env bash
# Builds the real control-plane binaries the tests and the lab run against, from their Go modules
# at the versions pinned in test/k8s-bin/{kubernetes,etcd,helm}/go.mod: kube-apiserver,
# kube-controller-manager and kubectl (k8s.io/kubernetes, with its staging
# modules replaced by the matching k8s.io/* releases), etcd (go.etcd.io/etcd/server/v3),
# helm (helm.sh/helm/v4, for the chart tests) and kube-router (test/k8s-bin/kube-router: the lab's
# NetworkPolicy enforcer, docs/lab.md).
# Once: the binaries go to a cache outside the clone (STATIC_EGRESS_CACHE, default
# /var/cache/static-egress), keyed by version and by the go.sum they were built from; a binary
# added to a list below is missing from the cache, so that set is built again (Go's build cache
# makes it quick).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${STATIC_EGRESS_CACHE:-/var/cache/static-egress}"
command -v go >/dev/null || { echo "go is not installed: the control-plane binaries are built from Go modules" >&2; exit 1; }
mkdir -p "$cache"
# One build at a time (the lab demo may have started one in the background): a second run waits,
# then finds the binaries built.
exec 9>"$cache/.build.lock"
if ! flock -n 9; then echo "another build of the control plane is running (log: ${STATIC_EGRESS_BUILD_LOG:-its terminal}); waiting for it"; flock 9; fi

# build <module dir> <version> <out dir> <packages...>
build() {
  local mod="$1" version="$2" out="$3"; shift 3
  local stamp; stamp="$(sha256sum "test/k8s-bin/$mod/go.sum" | cut -c1-16)"
  local names=(); for p in "$@"; do if [ "$p" = . ]; then names+=("$mod"); else names+=("$(basename "$p")"); fi; done
  local have=1; for n in "${names[@]}"; do [ -x "$out/$n" ] || have=0; done
  if [ -f "$out/.built-from-$stamp" ] && [ "$have" = 1 ]; then return 0; fi
  echo "building ${names[*]} $version from the Go module proxy into $out (once; progress below)"
  local start=$SECONDS tmp="$out.tmp-$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local ldflags="-s -w"
  if [ "$mod" = kubernetes ]; then
    local minor="${version#v1.}"; minor="${minor%%.*}"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  fi
  if [ "$mod" = helm ]; then ldflags+=" -X helm.sh/helm/v4/internal/version.version=$version"; fi
  if [ "$mod" = kube-router ]; then ldflags+=" -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version"; fi
  # `go build -v` names each package as it is compiled: count them as progress.
  (cd "test/k8s-bin/$mod" && go mod download && go build -v -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") 2>&1 |
    awk -v what="${names[*]}" '/^go: / { print; next } { n++; if (n % 250 == 0) { printf "  %s: %d packages compiled\n", what, n; fflush() } }'
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "building ${names[*]} failed" >&2; exit 1; }
  touch "$tmp/.built-from-$stamp"
  rm -rf "$out"; mv "$tmp" "$out"
  echo "built ${names[*]} $version in $((SECONDS - start)) s"
}

# pinned <module dir> <module path>: the version go.mod requires.
pinned() { sed -nE "s#^[[:space:]]*(require[[:space:]]+)?$2 (v[^ ]+).*#\\2#p" "test/k8s-bin/$1/go.mod" | head -1; }
k8s_version="$(pinned kubernetes k8s.io/kubernetes)"
etcd_version="$(pinned etcd go.etcd.io/etcd/server/v3)"
helm_version="$(pinned helm helm.sh/helm/v4)"
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] && [ -n "$helm_version" ] || { echo "cannot read the pinned versions from test/k8s-bin/*/go.mod" >&2; exit 1; }
build etcd "$etcd_version" "$cache/etcd-$etcd_version" .
# kube-scheduler: the lab's Kubernetes mode schedules the pods of Deployments (Apps) with it.
build kubernetes "$k8s_version" "$cache/kubernetes-$k8s_version" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
build helm "$helm_version" "$cache/helm-$helm_version" helm.sh/helm/v4/cmd/helm
# kube-router's NetworkPolicy controller: the lab's enforcer (test only, never shipped; docs/lab.md).
kube_router_version="$(pinned kube-router github.com/cloudnativelabs/kube-router/v2)"
[ -n "$kube_router_version" ] || { echo "cannot read the pinned kube-router version from test/k8s-bin/kube-router/go.mod" >&2; exit 1; }
build kube-router "$kube_router_version" "$cache/kube-router-$kube_router_version" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
