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
    // Nothing is planned from a partial view: events count only once every kind is listed
    // (a restarted agent that planned with pods but no policies yet would unprogram them).
    let synced = false;
    const nodeViews = new Map<string, string>();
    for (const s of specs) {
      const informer = new ListWatch<KubernetesObject>(s.path, watch, s.list, false, undefined, s.fieldSelector);
      for (const verb of ["add", "update", "delete"] as const) {
        informer.on(verb, (o) => {
          if (s.kind === "Node" && verb === "update" && !nodeChanged(nodeViews, o)) return;
          if (s.kind === "Node") nodeViews.set(o.metadata?.name ?? "", nodeView(o));
          if (synced) onChange();
        });
      }
      informer.on("error", (err: unknown) => {
        this.logger.warn({ kind: s.kind, err: (err as Error)?.message ?? String(err) }, "watch failed; keeping the cache, retrying");
        // ListWatch stops on error: start it again after a pause (it relists).
        setTimeout(() => void informer.start().catch(() => undefined), 1_000).unref();
      });
      this.watched.push({ kind: s.kind, apiVersion: s.apiVersion, informer });
    }
    // The first complete list of every kind, before any planning. ListWatch.start() does not
    // fail when its list fails: a kind without a resourceVersion was not listed; try again.
    await Promise.all(this.watched.map((w) => w.informer.start()));
    for (let attempt = 1; ; attempt++) {
      const missing = this.watched.filter((w) => !w.informer.latestResourceVersion());
      if (missing.length === 0) break;
      this.logger.warn({ kinds: missing.map((w) => w.kind), attempt }, "initial list failed; retrying before planning anything");
      await new Promise((r) => setTimeout(r, Math.min(500 * attempt, 5_000)));
      await Promise.all(missing.map((w) => w.informer.start().catch(() => undefined)));
    }
    synced = true;
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

const REPORT_ANNOTATION = "staticegress.io/report";

/** What planning reads of a Node; the agents' own report annotation is not part of it. */
function nodeView(o: KubernetesObject): string {
  const n = o as KubernetesObject & { spec?: { podCIDR?: string; podCIDRs?: string[] }; status?: { addresses?: unknown } };
  const annotations = { ...(o.metadata?.annotations ?? {}) };
  delete annotations[REPORT_ANNOTATION];
  return JSON.stringify([o.metadata?.labels ?? {}, annotations, n.spec?.podCIDR, n.spec?.podCIDRs, n.status?.addresses]);
}

/**
 * Node agents report through an annotation on their Node, every few minutes each: thousands of
 * nodes would otherwise wake every agent many times a second for nothing it plans with.
 */
function nodeChanged(views: Map<string, string>, o: KubernetesObject): boolean {
  return views.get(o.metadata?.name ?? "") !== nodeView(o);
}
