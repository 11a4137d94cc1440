import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../paths.js";

/**
 * Where the real Kubernetes and etcd binaries are: built once by `scripts/build-k8s.sh` (run by
 * `scripts/install-deps.sh`) from the Go modules pinned in test/k8s-bin/*\/go.mod, into a cache
 * outside the clone keyed by version. The go.mod files are the one place the versions live.
 */
const K8S_CACHE_ROOT = process.env.STATIC_EGRESS_CACHE ?? "/var/cache/static-egress";

export type K8sBinary =
  "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "kubectl" | "etcd" | "helm" | "kube-router";

function pinnedVersion(module: "kubernetes" | "etcd" | "helm" | "kube-router", path: string): string {
  const goMod = join(packageRoot(), "test", "k8s-bin", module, "go.mod");
  const text = readFileSync(goMod, "utf8");
  const m = new RegExp(`^\\s*(?:require\\s+)?${path.replace(/[.]/g, "\\.")} (v\\S+)`, "m").exec(text);
  if (!m) throw new Error(`${goMod} does not pin ${path}`);
  return m[1]!;
}

export function kubernetesVersion(): string {
  return pinnedVersion("kubernetes", "k8s.io/kubernetes");
}

function etcdVersion(): string {
  return pinnedVersion("etcd", "go.etcd.io/etcd/server/v3");
}

/** helm, for the chart tests (test/k8s-bin/helm/go.mod). */
function helmVersion(): string {
  return pinnedVersion("helm", "helm.sh/helm/v4");
}

/** kube-router, the lab's NetworkPolicy enforcer (test/k8s-bin/kube-router/go.mod; docs/lab.md). */
function kubeRouterVersion(): string {
  return pinnedVersion("kube-router", "github.com/cloudnativelabs/kube-router/v2");
}

/** The cached binary's path; a clear error if it has not been built yet. */
export function k8sBinary(name: K8sBinary): string {
  const dir =
    name === "etcd"
      ? `etcd-${etcdVersion()}`
      : name === "helm"
        ? `helm-${helmVersion()}`
        : name === "kube-router"
          ? `kube-router-${kubeRouterVersion()}`
          : `kubernetes-${kubernetesVersion()}`;
  const path = join(K8S_CACHE_ROOT, dir, name);
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing: run scripts/build-k8s.sh (or scripts/install-deps.sh), which builds ${name} from its Go module once, into ${K8S_CACHE_ROOT}` +
        ` (if scripts/lab-demo.sh started that build in the background, its progress is in /var/log/static-egress-build-k8s.log)`,
    );
  }
  return path;
}
