import { ListWatch, Watch, setHeaderOptions, type KubernetesListObject, type V1Pod } from "@kubernetes/client-node";
import type { KubeClient } from "../kube/client.js";
import type { Logger } from "../util/log.js";
import { unwirePod, wirePod, type PodWiring } from "./cni-chain.js";

// Strategic merge: the status's conditions merge by type, so the scheduler's PodScheduled stays.
const statusPatch = setHeaderOptions("Content-Type", "application/strategic-merge-patch+json");

/**
 * What a lab node's kubelet reports besides its addresses: Ready, and room for the pods of a few
 * apps (kube-scheduler fits pods' requests into `allocatable`).
 */
export function labNodeStatus(status: object | undefined): object {
  const resources = { cpu: "16", memory: "64Gi", pods: "110" };
  return {
    ...status,
    capacity: resources,
    allocatable: resources,
    conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "lab kubelet" }],
  };
}

/**
 * The lab's kubelet: for every pod bound to a lab node (by kube-scheduler, or created with its
 * nodeName) it creates the pod's network namespace, runs the CNI chain (Debian's ptp, then ours
 * when installed), and reports the pod Running with its address, as a kubelet would. A pod not
 * bound yet waits for the scheduler's binding (an update with nodeName).
 */
export class LabKubelet {
  private informer: ListWatch<V1Pod> | undefined;
  private readonly wired = new Map<string, PodWiring>();
  private readonly busy = new Set<string>();

  constructor(
    private readonly client: KubeClient,
    private readonly nodes: readonly string[],
    private readonly wiringFor: (pod: { namespace: string; name: string; node: string }) => PodWiring,
    private readonly logger: Logger,
    /** A node's InternalIP, reported as its pods' hostIP (a NetworkPolicy enforcer finds its node's pods by it). */
    private readonly hostIP: (node: string) => string | undefined = () => undefined,
  ) {}

  async start(): Promise<void> {
    const informer = new ListWatch<V1Pod>(
      "/api/v1/pods",
      new Watch(this.client.kubeconfig),
      () => this.client.core.listPodForAllNamespaces() as Promise<KubernetesListObject<V1Pod>>,
      false,
    );
    informer.on("add", (p) => void this.sync(p));
    informer.on("update", (p) => void this.sync(p));
    informer.on("delete", (p) => void this.remove(p));
    informer.on("error", () => setTimeout(() => void informer.start().catch(() => undefined), 1_000));
    this.informer = informer;
    await informer.start();
  }

  private key(p: V1Pod): string {
    return `${p.metadata?.namespace ?? "default"}/${p.metadata?.name}`;
  }

  private async sync(pod: V1Pod): Promise<void> {
    const key = this.key(pod);
    const namespace = pod.metadata?.namespace ?? "default";
    const name = pod.metadata?.name ?? "";
    if (pod.metadata?.deletionTimestamp) return this.terminate(pod);
    const node = pod.spec?.nodeName;
    if (!node || !this.nodes.includes(node) || this.busy.has(key) || this.wired.has(key)) return;
    this.busy.add(key);
    try {
      const wiring = this.wiringFor({ namespace, name, node });
      const ip = await wirePod(wiring);
      this.wired.set(key, wiring);
      const now = new Date();
      await this.client.core.patchNamespacedPodStatus(
        {
          namespace,
          name,
          body: {
            status: {
              phase: "Running",
              podIP: ip,
              podIPs: [{ ip }],
              hostIP: this.hostIP(node),
              startTime: now,
              conditions: [{ type: "Ready", status: "True", lastTransitionTime: now }],
            },
          },
        },
        statusPatch,
      );
      this.logger.info({ pod: key, node, ip }, "pod running");
    } catch (e) {
      this.logger.error({ pod: key, err: (e as Error).message }, "could not start pod");
    } finally {
      this.busy.delete(key);
    }
  }

  /**
   * A graceful deletion (kubectl delete, a Deployment scaled down, its namespace deleted): as a
   * kubelet once the pod's containers stopped (here there are none to stop), the sandbox goes and
   * the pod is deleted for good, else the object (and its namespace) would wait forever.
   */
  private async terminate(pod: V1Pod): Promise<void> {
    const key = this.key(pod);
    if (this.busy.has(key)) return;
    this.busy.add(key);
    try {
      await this.remove(pod);
      await this.client.core.deleteNamespacedPod({
        namespace: pod.metadata?.namespace ?? "default",
        name: pod.metadata?.name ?? "",
        gracePeriodSeconds: 0,
      });
    } catch (e) {
      if ((e as { code?: number }).code !== 404)
        this.logger.error({ pod: key, err: (e as Error).message }, "could not finish a pod's deletion");
    } finally {
      this.busy.delete(key);
    }
  }

  private async remove(pod: V1Pod): Promise<void> {
    const key = this.key(pod);
    const wiring = this.wired.get(key);
    if (!wiring) return;
    this.wired.delete(key);
    await unwirePod(wiring);
    this.logger.info({ pod: key }, "pod removed");
  }

  async stop(): Promise<void> {
    await this.informer?.stop();
  }
}
