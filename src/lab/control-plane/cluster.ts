import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import YAML from "yaml";
import { serviceAccountKubeconfig, tokenKubeconfig, type ServiceAccountRef } from "./tokens.js";
import { runCommand } from "../../util/exec.js";
import { packageRoot } from "../paths.js";
import { k8sBinary, kubernetesVersion } from "./binaries.js";
import { httpsRequest } from "./https.js";
import { makePki, type ControlPlanePki } from "./pki.js";
import { ProcessGroup, removeLeftovers, RUN_ROOT } from "./processes.js";

/**
 * A real Kubernetes control plane on loopback, for the tests, the lab and the benchmarks: etcd,
 * kube-apiserver (TLS with a generated CA, service-account tokens, RBAC and admission on, as a
 * real cluster has them) and, by default, kube-controller-manager (namespace deletion, garbage
 * collection, default service accounts, Deployments). Our CRDs, RBAC and admission policy are
 * installed from deploy/ (rendered by kustomize) before it is handed out; components get
 * kubeconfigs with their own service-account tokens, bound by that RBAC.
 */

export interface ControlPlaneOptions {
  /** Extra IP addresses the serving certificate must be valid for (the lab's in-namespace API address). */
  extraIPs?: readonly string[];
  /** Run kube-controller-manager (default true). Its node lifecycle controller stays off: our nodes have no kubelet. */
  controllerManager?: boolean;
  /** Run kube-scheduler (default false). */
  scheduler?: boolean;
  /**
   * The API server's watch cache (default true, as in a real cluster). Off: watches are served by
   * etcd itself, so compacting etcd makes a watch from an older resourceVersion end with 410 Gone.
   */
  watchCache?: boolean;
  /** Install deploy/ (CRDs, namespace, service accounts, RBAC, admission policy). Default true. */
  install?: boolean;
  /** The API server's secure port (default: a free one). The lab keeps it across restarts. */
  port?: number;
  /** Extra kube-apiserver flags (`--name=value`). */
  apiServerFlags?: readonly string[];
  log?: (line: string) => void;
}

export type { ServiceAccountRef };

/** Our components' service accounts (deploy/kustomize/serviceaccounts.yaml). */
export const COMPONENT_ACCOUNTS = {
  controller: { namespace: "static-egress", name: "static-egress-controller" },
  nodeAgent: { namespace: "static-egress", name: "static-egress-node-agent" },
  gateway: { namespace: "static-egress", name: "static-egress-gateway" },
} as const satisfies Record<string, ServiceAccountRef>;

export interface ControlPlane {
  /** https://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  readonly caPem: string;
  readonly dir: string;
  readonly version: string;
  /** The cluster-admin bearer token (group system:masters): also what the fault proxy's control endpoint asks for. */
  readonly adminToken: string;
  /** A kubeconfig (YAML) for cluster-admin (group system:masters), at `server` (default: url). */
  adminKubeconfig(server?: string): string;
  /** A client-node KubeConfig for cluster-admin. */
  adminConfig(): KubeConfig;
  /**
   * A kubeconfig whose token is a service account's (TokenRequest API). `node`: the token is bound
   * to that Node and carries its name, as a pod's projected token on that node does.
   */
  serviceAccountKubeconfig(
    sa: ServiceAccountRef,
    opts?: { node?: string; server?: string; expirationSeconds?: number },
  ): Promise<string>;
  /** Stops and starts kube-apiserver again on the same port with the same state (a real restart). */
  restartApiServer(): Promise<void>;
  /** Compacts etcd at its current revision; returns the revision. */
  compactEtcd(): Promise<number>;
  /** The last lines of a component's log. */
  logTail(component: "etcd" | "kube-apiserver" | "kube-controller-manager" | "kube-scheduler", lines?: number): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(what());
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The kinds of deploy/ that make up access and schema; the workloads (Deployment, DaemonSet) are not run here. */
const INSTALLED_KINDS = new Set([
  "CustomResourceDefinition",
  "Namespace",
  "ServiceAccount",
  "ClusterRole",
  "ClusterRoleBinding",
  "Role",
  "RoleBinding",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
  "ConfigMap",
]);

/** deploy/ as kustomize renders it (the user's `kubectl apply -k deploy`), without the workloads. */
async function renderedInstall(): Promise<KubernetesObject[]> {
  const { stdout } = await runCommand(k8sBinary("kubectl"), ["kustomize", join(packageRoot(), "deploy")]);
  return YAML.parseAllDocuments(stdout)
    .map((d) => d.toJSON() as KubernetesObject | null)
    .filter((o): o is KubernetesObject => o !== null && INSTALLED_KINDS.has(o.kind ?? ""));
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const log = opts.log ?? (() => undefined);
  removeLeftovers();
  const group = new ProcessGroup(mkdtempSync(join(ensureRunRoot(), "cp-")));
  try {
    return await boot(group, opts, log);
  } catch (e) {
    await group.stop().catch(() => undefined);
    throw e;
  }
}

function ensureRunRoot(): string {
  mkdirSync(RUN_ROOT, { recursive: true, mode: 0o700 });
  return RUN_ROOT;
}

async function boot(
  group: ProcessGroup,
  opts: ControlPlaneOptions,
  log: (line: string) => void,
): Promise<ControlPlane> {
  const dir = group.dir;
  const version = kubernetesVersion();
  const binaries = {
    etcd: k8sBinary("etcd"),
    apiserver: k8sBinary("kube-apiserver"),
    kcm: opts.controllerManager === false ? undefined : k8sBinary("kube-controller-manager"),
    scheduler: opts.scheduler ? k8sBinary("kube-scheduler") : undefined,
  };
  const pki: ControlPlanePki = await makePki(dir, opts.extraIPs ?? []);
  const adminToken = randomBytes(24).toString("hex");
  writeFileSync(join(dir, "tokens.csv"), `${adminToken},static-egress-test-admin,admin-uid,"system:masters"\n`, {
    mode: 0o600,
  });

  const [etcdClient, etcdPeer] = [await freePort(), await freePort()];
  const port = opts.port ?? (await freePort());
  const url = `https://127.0.0.1:${port}`;
  const etcdUrl = `http://127.0.0.1:${etcdClient}`;
  log(`starting etcd on ${etcdUrl}`);
  group.start("etcd", binaries.etcd, [
    "--name=static-egress-test",
    `--data-dir=${join(dir, "etcd")}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-cluster=static-egress-test=http://127.0.0.1:${etcdPeer}`,
    // Test data: durability across a machine crash is not needed, speed is.
    "--unsafe-no-fsync",
    "--quota-backend-bytes=8589934592",
    "--log-level=warn",
  ]);
  await waitUntil(
    async () => (await fetch(`${etcdUrl}/health`)).ok,
    20_000,
    () => `etcd did not start:\n${group.logTail("etcd")}`,
  );

  const apiArgs = [
    `--etcd-servers=${etcdUrl}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${port}`,
    `--tls-cert-file=${pki.servingCert}`,
    `--tls-private-key-file=${pki.servingKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--token-auth-file=${join(dir, "tokens.csv")}`,
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${pki.saPub}`,
    `--service-account-signing-key-file=${pki.saKey}`,
    "--service-cluster-ip-range=10.96.0.0/12",
    "--authorization-mode=RBAC",
    "--allow-privileged=true",
    // The `kubernetes` Service cannot point at a loopback address; nothing here needs it.
    "--endpoint-reconciler-type=none",
    "--profiling=false",
    `--watch-cache=${opts.watchCache === false ? "false" : "true"}`,
    ...(opts.apiServerFlags ?? []),
  ];
  const startApiServer = async (): Promise<void> => {
    log(`starting kube-apiserver ${version} on ${url}`);
    group.start("kube-apiserver", binaries.apiserver, apiArgs);
    await waitUntil(
      async () => {
        if (group.exited("kube-apiserver")) throw new Error("exited");
        return (
          (await httpsRequest(`${url}/readyz`, { ca: pki.caPem, token: adminToken, timeoutMs: 2_000 })).status === 200
        );
      },
      90_000,
      () => `kube-apiserver did not become ready:\n${group.logTail("kube-apiserver")}`,
    ).catch((e: Error) => {
      throw new Error(
        group.exited("kube-apiserver") ? `kube-apiserver exited:\n${group.logTail("kube-apiserver")}` : e.message,
      );
    });
  };
  await startApiServer();

  const adminKubeconfig = (server = url) => tokenKubeconfig(server, pki.caPem, adminToken, "static-egress-admin");
  writeFileSync(join(dir, "admin.kubeconfig"), adminKubeconfig(), { mode: 0o600 });
  const adminConfig = () => {
    const kc = new KubeConfig();
    kc.loadFromString(adminKubeconfig());
    return kc;
  };

  if (binaries.kcm) {
    log("starting kube-controller-manager");
    group.start("kube-controller-manager", binaries.kcm, [
      `--kubeconfig=${join(dir, "admin.kubeconfig")}`,
      "--bind-address=127.0.0.1",
      "--secure-port=0",
      "--leader-elect=false",
      // Our test nodes have no kubelet: the node lifecycle controller would taint and evict them.
      "--controllers=*,-nodelifecycle",
      `--service-account-private-key-file=${pki.saKey}`,
      `--root-ca-file=${pki.caCert}`,
      "--use-service-account-credentials=false",
      "--concurrent-gc-syncs=5",
    ]);
  }
  if (binaries.scheduler) {
    log("starting kube-scheduler");
    group.start("kube-scheduler", binaries.scheduler, [
      `--kubeconfig=${join(dir, "admin.kubeconfig")}`,
      "--bind-address=127.0.0.1",
      "--secure-port=0",
      "--leader-elect=false",
    ]);
  }

  if (opts.install !== false) {
    log("installing deploy/: CRDs, namespace, service accounts, RBAC, admission policy");
    await install(dir, url);
  }
  if (binaries.kcm) {
    // Pods need their namespace's default service account, which the controller manager makes.
    await waitUntil(
      async () =>
        (
          await httpsRequest(`${url}/api/v1/namespaces/default/serviceaccounts/default`, {
            ca: pki.caPem,
            token: adminToken,
          })
        ).status === 200,
      60_000,
      () =>
        `kube-controller-manager did not create the default service account:\n${group.logTail("kube-controller-manager")}`,
    );
  }

  return {
    url,
    port,
    caPem: pki.caPem,
    dir,
    version,
    adminToken,
    adminKubeconfig,
    adminConfig,
    serviceAccountKubeconfig: (sa, o = {}) =>
      serviceAccountKubeconfig(adminConfig(), sa, {
        server: o.server ?? url,
        caPem: pki.caPem,
        ...(o.node ? { node: o.node } : {}),
        ...(o.expirationSeconds ? { expirationSeconds: o.expirationSeconds } : {}),
      }),
    async restartApiServer() {
      await group.stopOne("kube-apiserver");
      await startApiServer();
    },
    async compactEtcd() {
      const post = async (path: string, body: unknown) => {
        const res = await fetch(`${etcdUrl}${path}`, { method: "POST", body: JSON.stringify(body) });
        if (!res.ok) throw new Error(`etcd ${path}: ${res.status} ${await res.text()}`);
        return (await res.json()) as { header?: { revision?: string } };
      };
      // The current revision, from a read of any key.
      const revision = Number(
        (await post("/v3/kv/range", { key: Buffer.from("/").toString("base64") })).header?.revision ?? 0,
      );
      await post("/v3/kv/compaction", { revision: String(revision), physical: true });
      return revision;
    },
    logTail: (component, lines) => group.logTail(component, lines),
    stop: () => group.stop(),
  };
}

/**
 * Installs deploy/'s objects with `kubectl apply --server-side`, as a user installs them, and
 * waits until the CRDs are served. (Not through client-node's typed models: they drop the
 * `x-kubernetes-*` keywords of nested schema properties, so CEL rules and list types would be
 * silently lost.)
 */
async function install(dir: string, url: string): Promise<void> {
  const objects = await renderedInstall();
  const order = (o: KubernetesObject) => (o.kind === "CustomResourceDefinition" ? 0 : o.kind === "Namespace" ? 1 : 2);
  const kubectl = (args: string[], input?: string) =>
    runCommand(k8sBinary("kubectl"), ["--kubeconfig", join(dir, "admin.kubeconfig"), "--server", url, ...args], {
      timeoutMs: 120_000,
      ...(input !== undefined ? { input } : {}),
    });
  const sorted = [...objects].sort((a, b) => order(a) - order(b));
  const crds = sorted.filter((o) => o.kind === "CustomResourceDefinition");
  const rest = sorted.filter((o) => o.kind !== "CustomResourceDefinition");
  const yaml = (list: KubernetesObject[]) => list.map((o) => YAML.stringify(o)).join("---\n");
  try {
    await kubectl(["apply", "--server-side", "--field-manager=static-egress-install", "-f", "-"], yaml(crds));
    await kubectl([
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      ...crds.map((c) => `customresourcedefinition/${c.metadata!.name!}`),
    ]);
    await kubectl(["apply", "--server-side", "--field-manager=static-egress-install", "-f", "-"], yaml(rest));
  } catch (e) {
    throw new Error(`installing deploy/: ${(e as Error).message}`, { cause: e });
  }
}
