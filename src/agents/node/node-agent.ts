import { performance } from "node:perf_hooks";
import { podInfo, snapshotFromObjects, type KubeObject } from "../../api/objects.js";
import { NodeDataplane } from "../../dataplane/node.js";
import type { HealthPort } from "../../dataplane/node-health.js";
import type { ClusterSnapshot, HealthView, InstanceHealth, NodePlan, PodInfo, Verdict } from "../../planner/model.js";
import { STATIC_ROUTE_API_VERSION, type StaticRoute } from "../../api/digitalocean-v1/static-route.js";
import type { StaticRouteWriter } from "../../dataplane/static-routes.js";
import { planStaticRoutes, type StaticRouteNodeView, type StaticRouteOutcome } from "../../planner/static-routes.js";
import type { ProbedInstance } from "../health/monitor.js";
import { Planner } from "../../planner/plan.js";
import { isEligiblePod } from "../../planner/resolve.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import type { Logger } from "../../util/log.js";
import type { AgentConfig } from "../config.js";
import { ReconcileLoop } from "../../util/reconcile-loop.js";
import type { ClusterSource } from "../../api/source.js";

/** Gateway health as this node sees it (BFD sessions, or nothing yet). */
export interface HealthProvider {
  view(): HealthView;
  onChange(listener: () => void): void;
  /** Probe exactly these instances (called with every plan). */
  setInstances?(instances: readonly ProbedInstance[]): Promise<void>;
  /**
   * Present when the provider fails over by itself (the health thread): the dataplane writes its
   * table through it, and the agent does not fail over on its own thread.
   */
  failover?: HealthPort;
}

/** The kinds a node's plan validates (src/planner/resolve.ts). */
const PLANNED_KINDS = ["EgressGateway", "EgressPolicy", "ClusterEgressPolicy"] as const;

/** More pod events than this since the last reconcile take the full path (one plan beats many deltas). */
const FAST_PATH_MAX_PODS = 8;

/**
 * What the last full reconcile planned from, kept for the pod events that follow it (the fast
 * path), and kept current by them. The full reconcile stays the truth: any other event drops it.
 */
interface FastState {
  planner: Planner;
  health: HealthView;
  verdicts: readonly Verdict[];
  /** Every pod of the snapshot by key, as planned. */
  pods: Map<string, PodInfo>;
  /** The node's eligible pods' addresses -> their pod's key ("" when two pods share one: no fast path for it). */
  owners: Map<string, string>;
  /** Valid policies' counted pod addresses (their datapath cost, resolve's), and their destination ranges. */
  addresses: Map<string, number>;
  ranges: Map<string, number>;
  /** Policies whose verification probe follows their first entry: their pods take the full path. */
  verifying: Set<string>;
}

const noHealthChecks: HealthProvider = { view: () => new Map(), onChange: () => undefined };

/** Node-wide static routes (DigitalOcean's StaticRoute, docs/static-routes.md). */
export interface StaticRouteDeps {
  writer: StaticRouteWriter;
  /** Addresses of the API server this node talks to: never routed away. */
  apiServers: readonly string[];
  /** Told what this node did with each StaticRoute, after every apply (status, Events). */
  onOutcomes?: (outcomes: readonly StaticRouteOutcome[], objects: readonly StaticRoute[]) => void;
}

export interface NodeAgentDeps {
  nodeName: string;
  config: AgentConfig;
  source: ClusterSource;
  dataplane: NodeDataplane;
  health?: HealthProvider;
  logger: Logger;
  /** Called after each successful apply (metrics, status, tests). */
  onApplied?: (plan: NodePlan, verdicts: readonly Verdict[]) => void;
  staticRoutes?: StaticRouteDeps;
  /** Addresses of the API server: the node's own traffic to them is never diverted to a gateway. */
  apiServers?: readonly string[];
}

/**
 * Watches the cluster, plans this node's datapath and applies it. Stopping the agent leaves the
 * datapath as it is: a restart or an upgrade never interrupts forwarding, and a fresh agent
 * adopts what it finds (the same plan applies as a no-op on routes and one atomic table swap).
 */
export class NodeAgent {
  private readonly loop: ReconcileLoop;
  /** Compiled once (during the first list): compiling the schemas costs tens of milliseconds per reconcile. */
  private readonly validator = new SpecValidator();
  private resyncTimer: NodeJS.Timeout | undefined;
  private unboundTimer: NodeJS.Timeout | undefined;
  private lastPlan: NodePlan | undefined;
  /** Addresses of the node's pods (any phase) at the last plan, with how many pods hold each. */
  private lastLocalPodIPs = new Map<string, number>();
  private fast: FastState | undefined;
  /** Pods that changed since the last reconcile started (namespace/name), when nothing else did. */
  private readonly pendingPods = new Set<string>();
  /** Something other than a pod changed (or may have) since the last reconcile started. */
  private needFull = true;
  private lastVerdicts = "";
  /** Addresses the CNI plugin reported before the API server did (pod key -> IPs). */
  private readonly admitted = new Map<string, { ips: string[]; at: number }>();

  constructor(private readonly deps: NodeAgentDeps) {
    this.loop = new ReconcileLoop((o) => this.reconcile(o), deps.logger);
  }

  async start(): Promise<void> {
    const health = this.deps.health ?? noHealthChecks;
    if (health.failover) this.deps.dataplane.useHealthPort(health.failover);
    // A selected pod's interface came after its apply (only with a kernel watch): bind it now.
    this.deps.dataplane.onBindable(() => {
      this.needFull = true;
      this.loop.trigger();
    });
    health.onChange(() => {
      // Ahead of the queue: the failover reaches the kernel without waiting for a reconcile
      // (running or queued); the reconcile that follows replans every pod with the new view.
      // The health thread has written it already, from its own event loop.
      if (!health.failover) void this.failOver(health.view());
      this.needFull = true;
      this.loop.trigger();
    });
    const synced = this.deps.source.start((change) => {
      if (change?.kind === "Pod" && change.name)
        this.pendingPods.add(`${change.namespace ?? "default"}/${change.name}`);
      else this.needFull = true;
      this.loop.trigger();
    });
    synced.catch(() => undefined); // awaited below: a failure meanwhile is not unhandled
    // While the informers list (the API server answers meanwhile), compile the validators the
    // first plan needs, a kind at a time between I/O callbacks: ~100 ms off the first datapath.
    for (const kind of PLANNED_KINDS) {
      await new Promise((r) => setImmediate(r));
      this.validator.compile([kind]);
    }
    await synced;
    this.loop.trigger({ verify: true });
    this.resyncTimer = setInterval(() => this.loop.trigger({ verify: true }), this.deps.config.resyncSeconds * 1000);
  }

  private async failOver(view: HealthView): Promise<void> {
    const started = performance.now();
    try {
      const { changed, steps } = await this.deps.dataplane.applyHealthTimed(view);
      if (changed.length > 0)
        this.deps.logger.info(
          { instances: changed, ...steps, durationMs: Math.round(performance.now() - started) },
          "failover applied ahead of the reconcile",
        );
    } catch (e) {
      // The reconcile that follows applies the same health: left to it (and its retries).
      this.deps.logger.warn({ err: (e as Error).message }, "failover ahead of the reconcile failed");
    }
  }

  private async reconcile({ verify }: { verify: boolean }): Promise<void> {
    const pods = [...this.pendingPods];
    const full = verify || this.needFull || pods.length === 0 || pods.length > FAST_PATH_MAX_PODS || !this.fast;
    this.pendingPods.clear();
    this.needFull = false;
    if (!full) {
      try {
        let done = 0;
        for (const key of pods) {
          if (!(await this.reconcilePod(key))) break;
          done++;
        }
        if (done === pods.length) return;
      } catch (e) {
        this.fast = undefined;
        throw e;
      }
    }
    await this.reconcileAll(verify);
  }

  /** The whole node planned from the whole snapshot and applied: the truth every fast path must agree with. */
  private async reconcileAll(verify: boolean): Promise<void> {
    const { nodeName, config, source, dataplane, logger } = this.deps;
    const started = performance.now();
    this.fast = undefined;
    const fromSource = snapshotFromObjects(source.objects(), config.clusterNetwork);
    for (const [key, a] of this.admitted) {
      const pod = fromSource.pods.find((p) => `${p.namespace}/${p.name}` === key);
      if (pod?.ips.length || (!pod && Date.now() - a.at > 60_000)) this.admitted.delete(key);
    }
    const snapshot = withAdmittedIPs(fromSource, this.admitted);
    const planner = new Planner(snapshot, { validator: this.validator });
    this.reportVerdicts(planner.resolution.verdicts);
    const staticRoutes = await this.staticRouteInput(snapshot, verify);
    // Which gateways to probe does not depend on their health: planned once without it.
    const staticProbes = staticRoutes
      ? planStaticRoutes(staticRoutes.objects, staticRoutes.view, () => undefined).probes
      : [];
    await this.deps.health?.setInstances?.([
      ...[...planner.resolution.instances.values()].map((i) => ({ key: i.key, address: i.address, ...i.health })),
      ...staticProbes,
    ]);
    const healthView = (this.deps.health ?? noHealthChecks).view();
    const plan = planner.planNode(nodeName, healthView);
    if (staticProbes.length > 0) plan.probedPeers = [...new Set(staticProbes.map((p) => p.address))].sort();
    if (plan.nodeEntries && this.deps.apiServers?.length) plan.keepLocal = [...this.deps.apiServers];
    const report = await dataplane.apply(plan, { verify });
    if (staticRoutes && this.deps.staticRoutes) {
      // A gateway that is also an instance shares its BFD session (one per address): its health is the instance's.
      const byAddress = new Map<string, InstanceHealth>();
      for (const i of planner.resolution.instances.values()) {
        const h = healthView.get(i.key);
        if (h) byAddress.set(i.address, h);
      }
      const addressOf = new Map(staticProbes.map((p) => [p.key, p.address]));
      const srPlan = planStaticRoutes(
        staticRoutes.objects,
        staticRoutes.view,
        (key) => healthView.get(key) ?? byAddress.get(addressOf.get(key) ?? ""),
      );
      const changed = await this.deps.staticRoutes.writer.apply(srPlan.routes);
      this.staticRoutesClean = srPlan.routes.length === 0;
      if (changed.added + changed.removed > 0)
        logger.info({ routes: srPlan.routes.length, ...changed }, "static routes programmed");
      this.deps.staticRoutes.onOutcomes?.(srPlan.outcomes, staticRoutes.objects);
    }
    // Pods on this node now and at the last reconcile: a pod that just started has no flows to forget.
    const localPodIPs = new Map<string, number>();
    for (const p of snapshot.pods)
      if (p.nodeName === nodeName) for (const ip of p.ips) localPodIPs.set(ip, (localPodIPs.get(ip) ?? 0) + 1);
    const forget = flowsToForget(this.lastPlan, plan, this.lastLocalPodIPs);
    if (forget.podIPs.length > 0 || forget.marks.length > 0 || forget.undivertedPodIPs.length > 0)
      await dataplane.forgetFlows({
        ...forget,
        keep: plan.entries.map((e) => e.podIP), // re-routed pods are in both: forgotten
        keepUndiverted: localPodIPs.keys(),
      });
    this.lastLocalPodIPs = localPodIPs;
    this.lastPlan = plan;
    this.fast = fastState(planner, healthView, snapshot, nodeName);
    // A selected pod whose interface is not known yet (a bridge port is learned from its first
    // frames) gets nothing diverted; look again soon rather than at the next resync.
    if (report.unbound > 0) this.lookAgainSoon();
    if (report.nftChanged || report.routingAdded || report.routingRemoved) {
      const durationMs = Math.round(performance.now() - started);
      logger.info(
        {
          entries: plan.entries.length,
          instances: plan.instances.length,
          unavailable: plan.unavailable,
          ...report,
          durationMs,
        },
        "datapath programmed",
      );
    }
    this.deps.onApplied?.(plan, planner.resolution.verdicts);
  }

  /** A selected pod is not bound to its interface yet: a full reconcile in a second. */
  private lookAgainSoon(): void {
    if (this.unboundTimer) return;
    this.unboundTimer = setTimeout(() => {
      this.unboundTimer = undefined;
      this.needFull = true;
      this.loop.trigger();
    }, 1_000);
  }

  /**
   * The fast path of one pod event, when nothing else changed since the last full reconcile:
   * that pod's entries planned alone (the last plan's resolution and health), spliced into the
   * last plan, and written as one element delta. False, with nothing changed, when the pod's
   * change reaches further than its own entries (another pod's address, a policy's cost limit or
   * verification probe, a policy without a usable instance, a CNI admission, another node's pod,
   * an apply that cannot start from the last): the caller then reconciles in full.
   */
  private async reconcilePod(key: string): Promise<boolean> {
    const f = this.fast;
    const plan = this.lastPlan;
    if (!f || !plan) return false;
    const { nodeName, source, dataplane, logger } = this.deps;
    const started = performance.now();
    const at = key.indexOf("/");
    const namespace = key.slice(0, at);
    const name = key.slice(at + 1);
    const object = source.pod
      ? source.pod(namespace, name)
      : source
          .objects()
          .find(
            (o: KubeObject) =>
              o.kind === "Pod" && o.metadata?.name === name && (o.metadata?.namespace ?? "default") === namespace,
          );
    const fromSource = object?.apiVersion === "v1" ? podInfo(object) : undefined;
    // As the full path: the address the CNI plugin reported until the API shows one.
    const admitted = this.admitted.get(key);
    const next =
      admitted && fromSource && fromSource.ips.length === 0 ? { ...fromSource, ips: admitted.ips } : fromSource;
    const prev = f.pods.get(key);
    // Another node's pod counts toward policies' costs (a source that holds them): the full plan's.
    for (const p of [prev, next]) if (p && isEligiblePod(p) && p.nodeName !== nodeName) return false;
    const local = (p: PodInfo | undefined) => (p && isEligiblePod(p) ? [p] : []);
    const before = f.planner.planPods(nodeName, f.health, local(prev));
    const after = f.planner.planPods(nodeName, f.health, local(next));
    if (before.failClosedCandidates.length + after.failClosedCandidates.length > 0) return false;
    if (before.unavailable.length + after.unavailable.length > 0) return false;
    if ([...before.entries, ...after.entries].some((e) => f.verifying.has(e.policy))) return false;
    // A policy the pod carries over its cost limit (or back under) changes its verdict.
    const v4 = (p: PodInfo | undefined) => local(p).flatMap((x) => x.ips.filter((ip) => !ip.includes(":"))).length;
    const counted = new Map<string, number>();
    for (const c of before.candidates) counted.set(c, (counted.get(c) ?? 0) - v4(prev));
    for (const c of after.candidates) counted.set(c, (counted.get(c) ?? 0) + v4(next));
    const limit = f.planner.resolution.maxMapElementsPerPolicy;
    for (const [policy, d] of counted)
      if (d !== 0 && ((f.addresses.get(policy) ?? 0) + d) * (f.ranges.get(policy) ?? 0) > limit) return false;
    // Each address of the node is one pod's: a shared one takes the full plan.
    const oldIPs = new Set(before.entries.map((e) => e.podIP));
    for (const ip of oldIPs) if (f.owners.get(ip) !== key) return false;
    const newIPs = new Set(local(next).flatMap((p) => p.ips));
    for (const ip of newIPs) if ((f.owners.get(ip) ?? key) !== key) return false;
    const podsByPolicy: Record<string, number> = { ...plan.podsByPolicy };
    for (const [policy, n] of Object.entries(before.podsByPolicy))
      podsByPolicy[policy] = (podsByPolicy[policy] ?? 0) - n;
    for (const [policy, n] of Object.entries(after.podsByPolicy))
      podsByPolicy[policy] = (podsByPolicy[policy] ?? 0) + n;
    const next_: NodePlan = {
      ...plan,
      entries: withPodEntries(plan.entries, oldIPs, after.entries),
      podsByPolicy: Object.fromEntries(
        Object.entries(podsByPolicy)
          .filter(([, n]) => n > 0)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      ),
    };
    const report = await dataplane.applyPods(next_, { removed: before.entries, added: after.entries });
    if (!report) return false;
    const forget = flowsToForget(
      { ...plan, entries: before.entries },
      { ...next_, entries: after.entries },
      this.lastLocalPodIPs,
    );
    if (forget.podIPs.length > 0 || forget.undivertedPodIPs.length > 0)
      await dataplane.forgetFlows({
        ...forget,
        keep: next_.entries.map((e) => e.podIP),
        keepUndiverted: this.lastLocalPodIPs.keys(),
      });
    // The state the next event starts from.
    if (admitted && fromSource?.ips.length) this.admitted.delete(key);
    if (next) f.pods.set(key, next);
    else f.pods.delete(key);
    for (const ip of oldIPs) f.owners.delete(ip);
    for (const ip of newIPs) f.owners.set(ip, key);
    for (const [policy, d] of counted) f.addresses.set(policy, (f.addresses.get(policy) ?? 0) + d);
    for (const p of [prev, next]) {
      if (p?.nodeName !== nodeName) continue;
      const step = p === prev ? -1 : 1;
      for (const ip of p.ips) {
        const n = (this.lastLocalPodIPs.get(ip) ?? 0) + step;
        if (n > 0) this.lastLocalPodIPs.set(ip, n);
        else this.lastLocalPodIPs.delete(ip);
      }
    }
    this.lastPlan = next_;
    if (report.unbound > 0) this.lookAgainSoon();
    if (report.nftChanged)
      logger.info(
        { pod: key, entries: next_.entries.length, ...report, durationMs: Math.round(performance.now() - started) },
        "datapath programmed for one pod",
      );
    this.deps.onApplied?.(next_, f.verdicts);
    return true;
  }

  /** Whether the kernel held none of our static routes after the last apply (then, with no objects, there is nothing to read). */
  private staticRoutesClean = false;

  /**
   * The StaticRoutes and what this node knows of itself (its subnets from the kernel), or
   * undefined when not enabled or when there is nothing to do: without objects (and none of our
   * routes left) the kernel is read only on `verify`, so pods' reconciles pay nothing for it.
   */
  private async staticRouteInput(
    snapshot: ClusterSnapshot,
    verify: boolean,
  ): Promise<{ objects: StaticRoute[]; view: StaticRouteNodeView } | undefined> {
    const deps = this.deps.staticRoutes;
    if (!deps) return undefined;
    const objects = this.deps.source
      .objects()
      .filter((o) => o.kind === "StaticRoute" && o.apiVersion === STATIC_ROUTE_API_VERSION) as unknown as StaticRoute[];
    if (objects.length === 0 && this.staticRoutesClean && !verify) return undefined;
    const node = snapshot.nodes.find((n) => n.name === this.deps.nodeName) ?? {
      name: this.deps.nodeName,
      labels: {},
      annotations: {},
      podCIDRs: [],
    };
    const connected = objects.length > 0 ? await deps.writer.connectedSubnets() : [];
    return { objects, view: { node, connected, apiServers: deps.apiServers, network: snapshot.network } };
  }

  private reportVerdicts(verdicts: readonly Verdict[]): void {
    const text = JSON.stringify(verdicts.filter((v) => !v.valid));
    if (text === this.lastVerdicts) return;
    this.lastVerdicts = text;
    for (const v of verdicts)
      if (!v.valid) this.deps.logger.warn({ resource: v.resource, errors: v.errors }, "invalid resource ignored");
  }

  idle(): Promise<void> {
    return this.loop.idle();
  }

  /**
   * Called by the CNI plugin (through the agent's socket) during the pod's ADD, before the
   * container starts: the pod's diversion is programmed with the address the runtime just
   * gave it, so its first packet already leaves through its gateway. Resolves after the
   * datapath is applied, with the policy that selected the pod (if any).
   */
  async admitPod(
    req: { namespace: string; name: string; ips: string[] },
    waitForPodMs = 2_000,
  ): Promise<{ known: boolean; policy: string | undefined }> {
    const key = `${req.namespace}/${req.name}`;
    const deadline = Date.now() + waitForPodMs;
    // The pod object may reach our watch a moment after the runtime calls CNI.
    while (!this.knowsPod(req.namespace, req.name) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    this.admitted.set(key, { ips: req.ips, at: Date.now() });
    this.pendingPods.add(key);
    // Its own pass (the first to start after the admission), not every pass triggered behind it.
    // A failed apply must not look like "programmed, not selected": the plugin then quarantines.
    if (!(await this.loop.pass())) throw new Error("the datapath could not be programmed; see the agent log");
    const policy = this.lastPlan?.entries.find((e) => req.ips.includes(e.podIP))?.policy;
    return { known: this.knowsPod(req.namespace, req.name), policy };
  }

  /** The pod is gone (CNI DEL): forget its admitted address. */
  async releasePod(req: { namespace: string; name: string }): Promise<void> {
    if (this.admitted.delete(`${req.namespace}/${req.name}`)) {
      this.pendingPods.add(`${req.namespace}/${req.name}`);
      await this.loop.pass();
    }
  }

  private knowsPod(namespace: string, name: string): boolean {
    return this.deps.source
      .objects()
      .some((o) => o.kind === "Pod" && o.metadata?.name === name && (o.metadata?.namespace ?? "default") === namespace);
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    clearTimeout(this.unboundTimer);
    this.loop.stop();
    await this.deps.source.stop();
  }
}

/**
 * The snapshot with the addresses the CNI plugin reported for pods whose status does not yet
 * carry them (the kubelet writes status after the sandbox is up). The API's address wins once
 * it is there.
 */
function withAdmittedIPs(snapshot: ClusterSnapshot, admitted: ReadonlyMap<string, { ips: string[] }>): ClusterSnapshot {
  if (admitted.size === 0) return snapshot;
  const pods = snapshot.pods.map((p) => {
    const a = admitted.get(`${p.namespace}/${p.name}`);
    return a && p.ips.length === 0 ? { ...p, ips: a.ips } : p;
  });
  return { ...snapshot, pods };
}

type Entry = NodePlan["entries"][number];

/** The fast path's starting point after a full reconcile (undefined: pod events take the full path too). */
function fastState(
  planner: Planner,
  health: HealthView,
  snapshot: ClusterSnapshot,
  node: string,
): FastState | undefined {
  const res = planner.resolution;
  // A policy refused for its cost may come back under the limit with any pod: only the full plan can tell.
  if (res.verdicts.some((v) => !v.valid && v.errors.some((e) => e.message.startsWith("datapath cost"))))
    return undefined;
  const owners = new Map<string, string>();
  const pods = new Map<string, PodInfo>();
  for (const p of snapshot.pods) {
    const key = `${p.namespace}/${p.name}`;
    pods.set(key, p);
    if (p.nodeName !== node || !isEligiblePod(p)) continue;
    for (const ip of p.ips) owners.set(ip, owners.has(ip) ? "" : key);
  }
  return {
    planner,
    health,
    verdicts: res.verdicts,
    pods,
    owners,
    addresses: new Map(res.selectedAddresses),
    ranges: new Map(res.policies.map((p) => [p.resource, p.destinations.length])),
    verifying: new Set(res.policies.filter((p) => p.verification).map((p) => p.resource)),
  };
}

/** `entries` (sorted) without those of `podIPs`, with `added` (sorted) in their places: a new array. */
function withPodEntries(entries: readonly Entry[], podIPs: ReadonlySet<string>, added: readonly Entry[]): Entry[] {
  const out = entries.slice();
  const lowerBound = (e: Entry) => {
    let lo = 0;
    let hi = out.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareKey(out[mid]!, e) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  for (const ip of podIPs) {
    const from = lowerBound({ podIP: ip, dst: { from: -1, to: -1 } } as Entry);
    let to = from;
    while (to < out.length && out[to]!.podIP === ip) to++;
    out.splice(from, to - from);
  }
  for (const e of added) out.splice(lowerBound(e), 0, e);
  return out;
}

/** Entries by pod address, then destination range (the planner's order). */
function compareKey(a: Entry, b: Entry): number {
  if (a.podIP !== b.podIP) return a.podIP < b.podIP ? -1 : 1;
  return a.dst.from - b.dst.from || a.dst.to - b.dst.to;
}

function sortedByKey(entries: readonly Entry[]): boolean {
  for (let i = 1; i < entries.length; i++) if (compareKey(entries[i - 1]!, entries[i]!) >= 0) return false;
  return true;
}

/**
 * Which established flows must be re-planned: diverted flows of pods whose policy for a
 * destination changed or went away, and those pinned to an instance that just went down
 * (`podIPs`, `marks`); and flows the map did not divert (UNDIVERTED_BIT) of pods that now divert
 * a destination they did not before (`undivertedPodIPs`), so none stays on the node's path.
 * Flows pinned to a healthy instance stay (that is what lets a drained instance finish).
 */
export function flowsToForget(
  before: NodePlan | undefined,
  after: NodePlan,
  /** Pods on the node at `before` (only those can have undiverted flows to forget). */
  existedBefore: { has(ip: string): boolean } = new Set(),
): { podIPs: string[]; marks: number[]; undivertedPodIPs: string[] } {
  if (!before) return { podIPs: [], marks: [], undivertedPodIPs: [] };
  const pods = new Set<string>();
  const grown = new Set<string>();
  // A policy that became invalid keeps its name but now drops (no instance): its open flows,
  // which would restore their old mark from conntrack, must be forgotten too.
  const sameDecider = (a: Entry, b: Entry) => a.policy === b.policy && (a.instance === "") === (b.instance === "");
  const was = before.entries;
  const now = after.entries;
  if (sortedByKey(was) && sortedByKey(now)) {
    // Plans come sorted by pod address and destination: one merge walk, no key strings (a
    // 30,000-entry plan took 140 ms with a map of keys per side, on every reconcile).
    let i = 0;
    let j = 0;
    while (i < was.length || j < now.length) {
      const c = i >= was.length ? 1 : j >= now.length ? -1 : compareKey(was[i]!, now[j]!);
      if (c === 0) {
        if (!sameDecider(was[i]!, now[j]!)) pods.add(was[i]!.podIP);
        i++;
        j++;
      } else if (c < 0) pods.add(was[i++]!.podIP);
      else {
        if (existedBefore.has(now[j]!.podIP)) grown.add(now[j]!.podIP);
        j++;
      }
    }
  } else {
    const key = (e: Entry) => `${e.podIP}|${e.dst.from}|${e.dst.to}`;
    const nowByKey = new Map<string, Entry>();
    for (const e of now) nowByKey.set(key(e), e);
    const wasKeys = new Set(was.map(key));
    for (const e of was) {
      const n = nowByKey.get(key(e));
      if (!n || !sameDecider(e, n)) pods.add(e.podIP);
    }
    for (const e of now) if (!wasKeys.has(key(e)) && existedBefore.has(e.podIP)) grown.add(e.podIP);
  }
  const wasDown = new Set(before.instances.filter((i) => i.route === "blackhole").map((i) => i.key));
  const marks = after.instances.filter((i) => i.route === "blackhole" && !wasDown.has(i.key)).map((i) => i.mark);
  return { podIPs: [...pods].sort(), marks, undivertedPodIPs: [...grown].sort() };
}
