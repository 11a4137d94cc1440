import { ListWatch, Watch, type KubernetesObject } from "@kubernetes/client-node";
import type { KubeObject } from "../api/objects.js";
import { API_VERSION, GROUP, VERSION } from "../api/v1alpha1/common.js";
import type { ClusterSource, SourceChange } from "../api/source.js";
import { STATIC_ROUTE_API_VERSION } from "../api/digitalocean-v1/static-route.js";
import type { Logger } from "../util/log.js";
import type { KubeClient } from "./client.js";
import { ANCHOR_ANNOTATION, REPORT_ANNOTATION } from "../api/keys.js";
import { listAllPages } from "./paged-list.js";
import { prunerFor } from "./prune.js";
import { backoffMs } from "../util/backoff.js";

export interface KubeSourceOptions {
  /** Node agents: only the pods of this node. */
  podsOnNode?: string;
  /**
   * The controller with the DigitalOcean plugins keeps Services' externalIPs in step with reserved
   * IPs: watch Services too (left out otherwise: big clusters have many), and wake on changes of a
   * Node's anchor-IP annotation, which nothing else plans with.
   */
  serviceExternalIPs?: boolean;
  /**
   * The controller: wake when a Node's Ready condition changes (reserved IPs leave a NotReady
   * node) and when a node reports a different view of gateway health (instance health in the
   * gateways' status) or another verification result (policies' Verified condition; reported
   * only when a result changes). The rest of a report (a refresh timestamp every few minutes, counts) waits
   * for the periodic pass: thousands of nodes would otherwise keep the controller busy.
   */
  nodeHealth?: boolean;
  /** Node agents: DigitalOcean's StaticRoutes too (docs/static-routes.md). */
  staticRoutes?: boolean;
  /** Items per page of the informers' lists (default 500). */
  pageSize?: number;
}

/**
 * What the controller watches: woken by node health (reserved IPs leave a NotReady node), and
 * with the cloud plugins also Services. One definition for the command and the test harnesses.
 */
export function controllerSourceOptions(cloud: boolean): KubeSourceOptions {
  return { nodeHealth: true, ...(cloud ? { serviceExternalIPs: true } : {}) };
}

interface Watched {
  kind: string;
  apiVersion: string;
  informer: ListWatch<KubernetesObject>;
  /** The start in progress: concurrent starts join it (a second start would abort the first's watch). */
  starting?: Promise<void>;
  /** A restart after a failure, pending. */
  retry?: NodeJS.Timeout;
}

/**
 * ListWatch aborts its own watch request when it is started again or stopped, and reports that
 * abort as an error: not a failure of the API, and no reason to start again (the start that
 * aborted it makes the next watch; a stopped source must stay stopped).
 */
function isOwnAbort(err: unknown): boolean {
  return (err as { name?: string } | undefined)?.name === "AbortError";
}

/**
 * The cluster from the API server: one informer (list + watch, relist on 410) per kind. The
 * caches survive an unreachable API server, so agents keep their last good datapath and never
 * flush. Objects being deleted (deletionTimestamp set, held by our finalizer) are left out:
 * every agent removes their datapath, and then the controller lets them go.
 */
export class KubeSource implements ClusterSource {
  private readonly watched: Watched[] = [];
  private stopped = false;

  constructor(
    private readonly client: KubeClient,
    private readonly logger: Logger,
    private readonly opts: KubeSourceOptions = {},
  ) {}

  async start(onChange: (change: SourceChange) => void): Promise<void> {
    const client = this.client;
    const watch = new Watch(client.kubeconfig);
    const podSelector = this.opts.podsOnNode ? `spec.nodeName=${this.opts.podsOnNode}` : undefined;
    const specs: { kind: string; apiVersion: string; path: string; fieldSelector?: string }[] = [
      { kind: "Pod", apiVersion: "v1", path: "/api/v1/pods", ...(podSelector ? { fieldSelector: podSelector } : {}) },
      { kind: "Node", apiVersion: "v1", path: "/api/v1/nodes" },
      { kind: "Namespace", apiVersion: "v1", path: "/api/v1/namespaces" },
      { kind: "EgressGateway", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/egressgateways` },
      { kind: "EgressPolicy", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/egresspolicies` },
      { kind: "ClusterEgressPolicy", apiVersion: API_VERSION, path: `/apis/${GROUP}/${VERSION}/clusteregresspolicies` },
    ];
    if (this.opts.serviceExternalIPs) specs.push({ kind: "Service", apiVersion: "v1", path: "/api/v1/services" });
    if (this.opts.staticRoutes)
      specs.push({
        kind: "StaticRoute",
        apiVersion: STATIC_ROUTE_API_VERSION,
        path: `/apis/${STATIC_ROUTE_API_VERSION}/staticroutes`,
      });
    const quiet = this.opts.serviceExternalIPs ? [REPORT_ANNOTATION] : [REPORT_ANNOTATION, ANCHOR_ANNOTATION];
    const health = this.opts.nodeHealth === true;
    // Nothing is planned from a partial view: events count only once every kind is listed
    // (a restarted agent that planned with pods but no policies yet would unprogram them).
    let synced = false;
    const nodeViews = new Map<string, NodeView>();
    const staticRouteSpecs = new Map<string, string>();
    const policyViews = new Map<string, string>();
    this.stopped = false;
    for (const s of specs) {
      // Lists in pages and keeps only what is read (src/kube/prune.ts), for lists and watch events alike.
      const prune = prunerFor(s.kind);
      const list = () =>
        listAllPages(
          (q) => client.listPage(s.path, { ...q, ...(s.fieldSelector ? { fieldSelector: s.fieldSelector } : {}) }),
          prune,
          this.opts.pageSize,
        );
      const informer = new ListWatch<KubernetesObject>(
        s.path,
        pruningWatch(watch, prune),
        list,
        false,
        undefined,
        s.fieldSelector,
      );
      const w: Watched = { kind: s.kind, apiVersion: s.apiVersion, informer };
      for (const verb of ["add", "update", "delete"] as const) {
        informer.on(verb, (o) => {
          const name = o.metadata?.name ?? "";
          const change: SourceChange = {
            kind: s.kind,
            name,
            ...(o.metadata?.namespace ? { namespace: o.metadata.namespace } : {}),
          };
          if (s.kind === "Node") {
            const view = nodeView(o, quiet, health);
            const before = nodeViews.get(name);
            if (verb === "delete") nodeViews.delete(name);
            else nodeViews.set(name, view);
            if (verb === "update" && before) {
              const planned = before.planned !== view.planned;
              if (!planned && before.reported === view.reported) return;
              // Only the report's health part changed: the controller updates the statuses it touches.
              if (!planned) change.reportOnly = true;
            }
          }
          if (s.kind === "EgressPolicy" || s.kind === "ClusterEgressPolicy") {
            const key = `${o.metadata?.namespace ?? ""}/${name}`;
            const view = policyView(o);
            const before = policyViews.get(key);
            if (verb === "delete") policyViews.delete(key);
            else policyViews.set(key, view);
            if (verb === "update" && before === view) change.statusOnly = true;
          }
          // Node agents write StaticRoute status (one entry each): only a spec change is news.
          if (s.kind === "StaticRoute") {
            const spec = stableJson((o as { spec?: unknown }).spec ?? null);
            const same = verb === "update" && staticRouteSpecs.get(name) === spec;
            if (verb === "delete") staticRouteSpecs.delete(name);
            else staticRouteSpecs.set(name, spec);
            if (same) return;
          }
          if (synced) onChange(change);
        });
      }
      informer.on("error", (err: unknown) => {
        if (isOwnAbort(err) || this.stopped) return;
        this.logger.warn(
          { kind: s.kind, err: (err as Error)?.message ?? String(err) },
          "watch failed; keeping the cache, retrying",
        );
        // ListWatch stops on error: start it again after a pause (it relists if it must). One
        // pending restart at a time.
        if (w.retry) return;
        w.retry = setTimeout(() => {
          w.retry = undefined;
          if (!this.stopped) void this.startOne(w);
        }, 1_000);
        w.retry.unref();
      });
      this.watched.push(w);
    }
    // The first complete list of every kind, before any planning. ListWatch.start() does not
    // fail when its list fails: a kind without a resourceVersion was not listed; try again.
    await Promise.all(this.watched.map((w) => this.startOne(w)));
    for (let attempt = 1; ; attempt++) {
      const missing = this.watched.filter((w) => !w.informer.latestResourceVersion());
      if (missing.length === 0) break;
      this.logger.warn(
        { kinds: missing.map((w) => w.kind), attempt },
        "initial list failed; retrying before planning anything",
      );
      await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 500, maxMs: 5_000 })));
      await Promise.all(missing.map((w) => this.startOne(w)));
    }
    synced = true;
    this.logger.info({ kinds: this.watched.length }, "informers synced");
  }

  objects(): readonly KubeObject[] {
    const out: KubeObject[] = [];
    for (const w of this.watched) {
      if (w.kind === "Service") continue; // for the cloud plugins (raw), not for planning
      for (const o of w.informer.list()) {
        if (
          (o.metadata as { deletionTimestamp?: unknown } | undefined)?.deletionTimestamp &&
          w.apiVersion === API_VERSION
        )
          continue;
        // List items carry no kind; the informer they came from says what they are.
        out.push({ ...(o as KubeObject), kind: w.kind, apiVersion: w.apiVersion });
      }
    }
    return out;
  }

  pod(namespace: string, name: string): KubeObject | undefined {
    const o = this.get("Pod", name, namespace);
    return o ? { ...(o as KubeObject), kind: "Pod", apiVersion: "v1" } : undefined;
  }

  /** One object of a kind as cached (being deleted or not); undefined when it is not there. */
  get(kind: string, name: string, namespace?: string): KubernetesObject | undefined {
    return this.watched.find((w) => w.kind === kind)?.informer.get(name, namespace);
  }

  /** Objects of our kinds including those being deleted (the controller needs them). */
  raw(kind: string): readonly KubernetesObject[] {
    return this.watched.find((w) => w.kind === kind)?.informer.list() ?? [];
  }

  /** Starts an informer, or joins the start in progress. Never fails (errors reach the "error" handler). */
  private startOne(w: Watched): Promise<void> {
    w.starting ??= w.informer
      .start()
      .catch(() => undefined)
      .finally(() => {
        w.starting = undefined;
        // Stopped while this start waited for its watch: ListWatch made the watch anyway.
        if (this.stopped) void w.informer.stop();
      });
    return w.starting;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watched) {
      clearTimeout(w.retry);
      w.retry = undefined;
    }
    await Promise.all(this.watched.map((w) => w.informer.stop()));
  }
}

/** The informer's watch, with every object it delivers pruned before the cache sees it (ERROR events as they are). */
export function pruningWatch(watch: Watch, prune: (o: KubernetesObject) => KubernetesObject): Watch {
  const wrapped = Object.create(watch) as Watch;
  wrapped.watch = (path, queryParams, callback, done) =>
    watch.watch(
      path,
      queryParams,
      (phase: string, apiObj: unknown, watchObj?: unknown) =>
        callback(
          phase,
          phase === "ERROR" || typeof apiObj !== "object" || apiObj === null
            ? apiObj
            : prune(apiObj as KubernetesObject),
          watchObj,
        ),
      done,
    );
  return wrapped;
}

/**
 * A Node as its consumers read it: `planned` what planning (and the cloud plugins) read, without
 * the agents' own annotations (`quiet`: the report, and the anchor IP unless the consumer keeps
 * Service externalIPs); `reported` the health part of its report (consumers with `nodeHealth`).
 */
interface NodeView {
  planned: string;
  reported: string;
}

function nodeView(o: KubernetesObject, quiet: readonly string[], health: boolean): NodeView {
  const n = o as KubernetesObject & {
    spec?: { podCIDR?: string; podCIDRs?: string[] };
    status?: { addresses?: unknown; conditions?: { type: string; status: string }[] };
  };
  const annotations = { ...(o.metadata?.annotations ?? {}) };
  for (const k of quiet) delete annotations[k];
  const view: unknown[] = [
    o.metadata?.labels ?? {},
    annotations,
    n.spec?.podCIDR,
    n.spec?.podCIDRs,
    n.status?.addresses,
  ];
  if (health) view.push(n.status?.conditions?.find((c) => c.type === "Ready")?.status);
  return {
    planned: stableJson(view),
    reported: health ? stableJson(reportedHealth(o.metadata?.annotations?.[REPORT_ANNOTATION])) : "",
  };
}

/**
 * JSON with object keys sorted: a listed Node comes through the client's typed deserializer
 * (its own key order, e.g. address before type) and a watched one as the server sent it, so
 * plain JSON of the same node differs between the two and every node's first update after a
 * (re)list would look like a change.
 */
function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(
          Object.entries(val as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)),
        )
      : val,
  );
}

/** The health part of a node's report (instance verdicts, policies without a healthy instance, verification results). */
function reportedHealth(text: string | undefined): unknown {
  if (!text) return null;
  try {
    const r = JSON.parse(text) as { health?: unknown; unavailable?: unknown; verification?: unknown };
    return [r.health ?? null, r.unavailable ?? null, r.verification ?? null];
  } catch {
    return text; // unreadable: any change counts
  }
}

/** What of a policy is not its status: a spec change bumps the generation; the metadata we act on. */
function policyView(o: KubernetesObject): string {
  const m = o.metadata ?? {};
  return stableJson([m.generation, m.labels, m.annotations, m.finalizers, m.deletionTimestamp]);
}
