import { KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from "@kubernetes/client-node";
import { KubeClient } from "../../src/kube/client.js";
import {
  COMPONENT_ACCOUNTS,
  startKubeCluster,
  type ControlPlaneOptions,
  type FaultInjector,
  type KubeCluster,
} from "../../src/lab/control-plane/index.js";

/**
 * Tests' view of a real control plane (src/lab/control-plane): an admin client, clients with our
 * components' own identities (service-account tokens bound by deploy/'s RBAC), the fault proxy's
 * injector, and helpers that create what a kubelet and the controller manager would (Nodes with
 * status, pods with an IP and conditions), through the API like anyone else.
 */

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
export type Component = "controller" | "node-agent" | "gateway-agent";

export interface NodeSpec {
  name: string;
  podCIDR?: string;
  internalIP?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  providerID?: string;
  ready?: "True" | "False" | "Unknown";
}

export interface PodSpec {
  namespace: string;
  name: string;
  node: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Running with this IP (omit: Pending, no IP). */
  ip?: string;
  ready?: boolean;
  readySince?: Date;
}

export interface TestKube {
  readonly cluster: KubeCluster;
  readonly admin: KubeClient;
  readonly faults: FaultInjector;
  adminKubeconfig(): string;
  /** A kubeconfig (YAML) with a component's own token; the node agent's is bound to `node`. */
  kubeconfigFor(component: Component, node?: string): Promise<string>;
  clientFor(component: Component, node?: string): Promise<KubeClient>;
  /** Creates the namespace (and its default service account when no controller manager makes it). */
  ensureNamespace(name: string, labels?: Record<string, string>, annotations?: Record<string, string>): Promise<void>;
  createNode(n: NodeSpec): Promise<void>;
  setNodeReady(name: string, ready: "True" | "False" | "Unknown"): Promise<void>;
  createPod(p: PodSpec): Promise<void>;
  setPodStatus(
    namespace: string,
    name: string,
    s: { ip?: string; ready?: boolean; readySince?: Date; phase?: string },
  ): Promise<void>;
  /** Deleted at once (no kubelet here confirms a graceful deletion). */
  deletePod(namespace: string, name: string): Promise<void>;
  stop(): Promise<void>;
}

function clientOf(text: string): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromString(text);
  return new KubeClient(kc);
}

const ACCOUNT = {
  controller: COMPONENT_ACCOUNTS.controller,
  "node-agent": COMPONENT_ACCOUNTS.nodeAgent,
  "gateway-agent": COMPONENT_ACCOUNTS.gateway,
} as const;

function isConflict(e: unknown): boolean {
  return (e as { code?: number }).code === 409;
}

export async function startTestKube(opts: ControlPlaneOptions = {}): Promise<TestKube> {
  const cluster = await startKubeCluster({ controllerManager: false, ...opts });
  const admin = clientOf(cluster.adminKubeconfig());
  const withKcm = opts.controllerManager === true;
  const kubeconfigFor = (component: Component, node?: string) =>
    cluster.kubeconfigFor(ACCOUNT[component], node ? { node } : {});

  const podStatus = (s: { ip?: string; ready?: boolean; readySince?: Date; phase?: string }) => {
    const since = (s.readySince ?? new Date()).toISOString();
    return {
      phase: s.phase ?? (s.ip ? "Running" : "Pending"),
      ...(s.ip ? { podIP: s.ip, podIPs: [{ ip: s.ip }] } : {}),
      conditions: [{ type: "Ready", status: s.ready === false ? "False" : "True", lastTransitionTime: since }],
    };
  };

  return {
    cluster,
    admin,
    faults: cluster.proxy.faults,
    adminKubeconfig: () => cluster.adminKubeconfig(),
    kubeconfigFor,
    clientFor: async (component, node) => clientOf(await kubeconfigFor(component, node)),
    async ensureNamespace(name, labels = {}, annotations = {}) {
      try {
        await admin.core.createNamespace({ body: { metadata: { name, labels, annotations } } });
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
      if (withKcm) return;
      try {
        await admin.core.createNamespacedServiceAccount({ namespace: name, body: { metadata: { name: "default" } } });
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
    },
    async createNode(n) {
      await admin.core.createNode({
        body: {
          metadata: {
            name: n.name,
            labels: { "kubernetes.io/hostname": n.name, ...n.labels },
            ...(n.annotations ? { annotations: n.annotations } : {}),
          },
          spec: {
            ...(n.podCIDR ? { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] } : {}),
            ...(n.providerID ? { providerID: n.providerID } : {}),
          },
        },
      });
      const status = {
        ...(n.internalIP ? { addresses: [{ type: "InternalIP", address: n.internalIP }] } : {}),
        conditions: [
          {
            type: "Ready",
            status: n.ready ?? "True",
            reason: "KubeletReady",
            message: "",
            lastHeartbeatTime: new Date().toISOString(),
            lastTransitionTime: new Date().toISOString(),
          },
        ],
      };
      await admin.core.patchNodeStatus({ name: n.name, body: { status } }, mergePatch);
    },
    async setNodeReady(name, ready) {
      const conditions = [
        {
          type: "Ready",
          status: ready,
          reason: ready === "True" ? "KubeletReady" : "NodeStatusUnknown",
          message: "",
          lastHeartbeatTime: new Date().toISOString(),
          lastTransitionTime: new Date().toISOString(),
        },
      ];
      await admin.core.patchNodeStatus({ name, body: { status: { conditions } } }, mergePatch);
    },
    async createPod(p) {
      const body: V1Pod = {
        metadata: {
          name: p.name,
          namespace: p.namespace,
          ...(p.labels ? { labels: p.labels } : {}),
          ...(p.annotations ? { annotations: p.annotations } : {}),
        },
        spec: {
          nodeName: p.node,
          containers: [{ name: "app", image: "registry.example/app:1" }],
          automountServiceAccountToken: false,
        },
      };
      await admin.core.createNamespacedPod({ namespace: p.namespace, body });
      if (p.ip)
        await admin.core.patchNamespacedPodStatus(
          { namespace: p.namespace, name: p.name, body: { status: podStatus(p) } },
          mergePatch,
        );
    },
    async setPodStatus(namespace, name, s) {
      await admin.core.patchNamespacedPodStatus({ namespace, name, body: { status: podStatus(s) } }, mergePatch);
    },
    async deletePod(namespace, name) {
      await admin.core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 });
    },
    stop: () => cluster.stop(),
  };
}
