import { ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import type { KubeObject } from "../api/objects.js";
import { API_VERSION, GROUP, VERSION } from "../api/v1alpha1/common.js";
import type { ClusterSource } from "../agents/source/source.js";
import type { Logger } from "../util/log.js";
import type { KubeClient } from "./client.js";

interface Watched {
  kind: string;
  apiVersion: string;
  informer: ListWatch<KubernetesObject>;
}

/**
 * The cluster from the API server: one informer (list + watch, relist on 410) per kind. The
 * caches survive an unreachable API server, so agents keep their last good datapath and never
 * flush. Objects being deleted (deletionTimestamp set, held by our finalizer) are left out:
 * every agent removes their datapath, and then the controller lets them go.
 */
export class KubeSource implements ClusterSource {
  private readonly watched: Watched[] = [];

  constructor(
    private readonly client: KubeClient,
    private readonly logger: Logger,
    private readonly opts: { podsOnNode?: string } = {},
  ) {}

  async start(onChange: () => void): Promise<void> {
    const { core, custom } = this.client;
    const watch = new Watch(this.client.kubeconfig);
    const podSelector = this.opts.podsOnNode ? `spec.nodeName=${this.opts.podsOnNode}` : undefined;
    const custom_ = (plural: string) => async () =>
      (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as KubernetesListObject<KubernetesObject>;
    const specs: { kind: string; apiVersion: string; path: string; list: () => Promise<KubernetesListObject<KubernetesObject>>; fieldSelector?: string }[] = [
      {
        kind: "Pod",
        apiVersion: "v1",
        path: "/api/v1/pods",
        list: () => core.listPodForAllNamespaces(podSelector ? { fieldSelector: podSelector } : {}) as Promise<KubernetesListObject<KubernetesObject>>,
        ...(podSelector ? { fieldSelector: podSelector } : {}),
      },
      { kind: "Node", apiVersion: "v1", path: "/api/v1/nodes", list: () => core.listNode() as Promise<KubernetesListObject<KubernetesObject>> },
      { kind: "Namespace", apiVersion: "v1", path: "/api/v1/namespaces", list: () => core.listNamespace() as Promise<KubernetesListObject<KubernetesObject>> },
      { kind: "EgressGateway", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/egressgateways`, list: custom_("egressgateways") },
      { kind: "EgressPolicy", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/egresspolicies`, list: custom_("egresspolicies") },
      { kind: "ClusterEgressPolicy", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/clusteregresspolicies`, list: custom_("clusteregresspolicies") },
    ];
    for (const s of specs) {
      const informer = new ListWatch<KubernetesObject>(s.path, watch, s.list, false, undefined, s.fieldSelector);
      for (const verb of ["add", "update", "delete"] as const) informer.on(verb, () => onChange());
      informer.on("error", (err: unknown) => {
        this.logger.warn({ kind: s.kind, err: (err as Error)?.message ?? String(err) }, "watch failed; keeping the cache, retrying");
        // ListWatch stops on error: start it again after a pause (it relists).
        setTimeout(() => void informer.start().catch(() => undefined), 1_000).unref();
      });
      this.watched.push({ kind: s.kind, apiVersion: s.apiVersion, informer });
    }
    // The first complete list of every kind, before any planning.
    await Promise.all(this.watched.map((w) => w.informer.start()));
    this.logger.info({ kinds: this.watched.length }, "informers synced");
  }

  objects(): readonly KubeObject[] {
    const out: KubeObject[] = [];
    for (const w of this.watched) {
      for (const o of w.informer.list()) {
        if ((o.metadata as { deletionTimestamp?: unknown } | undefined)?.deletionTimestamp && w.apiVersion === API_VERSION) continue;
        // List items carry no kind; the informer they came from says what they are.
        out.push({ ...(o as KubeObject), kind: w.kind, apiVersion: w.apiVersion });
      }
    }
    return out;
  }

  /** Objects of our kinds including those being deleted (the controller needs them). */
  raw(kind: string): readonly KubernetesObject[] {
    return this.watched.find((w) => w.kind === kind)?.informer.list() ?? [];
  }

  async stop(): Promise<void> {
    await Promise.all(this.watched.map((w) => w.informer.stop()));
  }
}
