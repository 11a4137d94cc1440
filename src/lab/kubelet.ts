import { ListWatch, Watch, setHeaderOptions, type KubernetesListObject, type V1Pod } from "@kubernetes/client-node";
import type { KubeClient } from "../kube/client.js";
import type { Logger } from "../util/log.js";
import { unwirePod, wirePod, type PodWiring } from "./cni-chain.js";

const mergePatch = setHeaderOptions("Content-Type", "application/merge-patch+json");

/**
 * The lab's kubelet: for every pod bound to a lab node it creates the pod's network
 * namespace, runs the CNI chain (Debian's ptp, then ours when installed), and reports the pod
 * Running with its address, as a kubelet would. Pods without a node are bound round-robin.
 */
export class LabKubelet {
  private informer: ListWatch<V1Pod> | undefined;
  private readonly wired = new Map<string, PodWiring>();
  private readonly busy = new Set<string>();
  private next = 0;

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
    if (this.busy.has(key) || this.wired.has(key)) return;
    this.busy.add(key);
    try {
      let node = pod.spec?.nodeName;
      if (!node) {
        node = this.nodes[this.next++ % this.nodes.length]!;
        await this.client.core.createNamespacedPodBinding({
          namespace,
          name,
          body: { metadata: { name }, target: { kind: "Node", name: node } },
        });
      }
      if (!this.nodes.includes(node)) return;
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
        mergePatch,
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
