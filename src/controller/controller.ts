import type { KubernetesObject } from "@kubernetes/client-node";
import { snapshotFromObjects } from "../api/objects.js";
import type { AnyObjectMeta, Condition } from "../api/v1alpha1/common.js";
import type { EgressGatewayStatus } from "../api/v1alpha1/egress-gateway.js";

type InstanceStatus = NonNullable<EgressGatewayStatus["instances"]>[number];
import type { EgressPolicyStatus } from "../api/v1alpha1/egress-policy.js";
import { ReconcileLoop } from "../util/reconcile-loop.js";
import type { ClusterNetwork, PolicyObject, ValidPolicy, Verdict } from "../planner/model.js";
import { Planner, selectPods } from "../planner/plan.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { policyResource, type Resolution } from "../planner/resolve.js";
import { statusOf, type KubeClient, type PolicyKind } from "../kube/client.js";
import type { KubeSource } from "../kube/source.js";
import type { Logger } from "../util/log.js";
import {
  FINALIZER,
  gatewayStatus,
  parseReport,
  policyStatus,
  trafficTotals,
  withoutInstanceTraffic,
  type NodeReport,
} from "./status.js";
import { EventRecorder } from "../kube/events.js";

type Meta = AnyObjectMeta & { name: string };

type Owned = KubernetesObject & { metadata: Meta; spec?: unknown; status?: EgressPolicyStatus & EgressGatewayStatus };

/**
 * What a plugin may do with the cluster: the calls the cloud plugins make, not the whole client
 * (no status or finalizers, no Secrets, no Leases). Adding a call here is a decision. A plugin
 * never writes a status: it hands what it knows to the core (`gatewayInstances`), which writes
 * each object's whole status in one patch, so there is one writer per kind.
 */
export type PluginClient = Pick<KubeClient, "createObjectEvent" | "readGateway" | "patchServiceExternalIPs">;

/** What a plugin's reconcile sees: the same snapshot and plan as the core reconcile. */
export interface ReconcileContext {
  client: PluginClient;
  /** The informers' objects, as the API server sent them (pruned). */
  source: Pick<KubeSource, "raw">;
  snapshot: ReturnType<typeof snapshotFromObjects>;
  planner: Planner;
  now: Date;
  logger: Logger;
  /**
   * Asks for another pass in `afterMs` even if nothing changes in the cluster (a plugin whose
   * outside world changes unseen, e.g. a droplet destroyed in the control panel). Optional so that
   * tests can build a context by hand.
   */
  requestPass?: (afterMs: number) => void;
}

/**
 * A part of the controller that owns something outside the cluster (cloud gateway hosts,
 * reserved IPs). It runs in the same level-triggered pass, after the core, on the leader only.
 */
export interface ControllerPlugin {
  name: string;
  reconcile(ctx: ReconcileContext): Promise<void>;
  /** Called while a gateway is being deleted; return true once its outside resources are gone. */
  releaseGateway?(gateway: KubernetesObject & { metadata: { name: string } }, ctx: ReconcileContext): Promise<boolean>;
  /** Objects whose outside work (cloud calls) failed last time and is being retried. */
  failingJobs?(): number;
  /**
   * The instance list of a gateway this plugin provisions, as it last saw its hosts (health and
   * `since` of unchanged hosts taken from `gateway.status`); undefined when it has no news. The
   * core writes it with the health the nodes report. A plugin with news calls `requestPass`.
   */
  gatewayInstances?(
    gateway: KubernetesObject & { metadata: { name: string }; status?: EgressGatewayStatus },
  ): InstanceStatus[] | undefined;
}

export interface ControllerDeps {
  plugins?: ControllerPlugin[];
  client: KubeClient;
  source: KubeSource;
  network: ClusterNetwork;
  logger: Logger;
  resyncMs?: number;
  /**
   * Longest time one object's step (its API calls) may take. An API request that never answers
   * must not stop the reconcile of every other object: the step is given up and retried.
   */
  stepTimeoutMs?: number;
  now?: () => Date;
  /** Told the outcome of every pass (metrics). */
  onPass?: (pass: PassOutcome) => void;
}

/** What one pass did: for metrics and probes, not for control. */
export interface PassOutcome {
  /**
   * full: planned from every object, every policy and gateway (and the plugins) reconciled;
   * keyed: only the statuses that node reports changed, with the last full pass's plan.
   */
  scope?: "full" | "keyed";
  /** Policies and gateways whose status this pass computed. */
  objects?: number;
  durationMs: number;
  /** Objects (or plugins) whose step failed; the loop retries them. */
  failedSteps: number;
  /** Resources the planner found Invalid, e.g. `EgressPolicy/web/checkout`. */
  invalid: string[];
  /** Gateway name -> health of each of its instances, as this pass wrote it (a keyed pass: as last written). */
  instanceHealth: Map<string, string[]>;
}

/**
 * What keyed passes need of the last full pass's plan; reports are updated node by node. Not the
 * snapshot, the planner or the pod selections: at 100,000 pods those are most of a pass's memory,
 * and kept they would be alive twice while the next full pass builds its own.
 */
interface Planned {
  res: Resolution;
  /** Policy resource -> how many pods it selects. */
  podsByPolicy: Map<string, number>;
  verdicts: Map<string, Verdict>;
  validPolicies: Map<string, ValidPolicy>;
  invalid: string[];
  /** Node name -> its last report (fresh when read). */
  reports: Map<string, NodeReport>;
  /** Instance key -> its gateway; gateway -> its valid policies. */
  gatewayOfInstance: Map<string, string>;
  policiesOfGateway: Map<string, string[]>;
}

type Attempt = (what: string, fn: () => Promise<void>) => Promise<void>;

/**
 * Level-triggered: a change to anything planned from (pods, namespaces, policies, gateways, a
 * Node's labels, addresses or readiness) schedules one full pass, which plans once and then, for
 * each policy and gateway, compares the status it should have with the one it has and writes
 * only the difference. A Node whose only news is its report (instance health, unavailable
 * policies, verification) marks only that node dirty: a keyed pass re-reads those nodes' reports
 * and recomputes just the statuses the difference touches, with the last full pass's plan. Events
 * coalesce (dirty flags and one worker), so a storm of reports costs bounded work. Finalizers
 * hold a deleted policy or gateway until no node reports it programmed any more.
 */
export class Controller {
  private readonly loop: ReconcileLoop;
  private resync: NodeJS.Timeout | undefined;
  /** The earliest pass a plugin asked for. */
  private requested: { at: number; timer: NodeJS.Timeout } | undefined;
  private active = false;
  private readonly validator = new SpecValidator();
  /** Something planned from changed (or no plan yet, or the last pass failed): the next pass is full. */
  private planDirty = true;
  /** Nodes whose report changed since the last pass. */
  private readonly dirtyNodes = new Set<string>();
  /** Policies (resource) whose status alone changed since the last pass: their status is recomputed. */
  private readonly dirtyPolicies = new Set<string>();
  private planned: Planned | undefined;
  /** A wake-up scheduled after the current burst of events (see `soon`). */
  private wake: NodeJS.Immediate | undefined;
  /** Gateway -> health of its instances as last written (metrics of keyed passes). */
  private readonly instanceHealth = new Map<string, string[]>();

  private readonly events: EventRecorder;

  constructor(private readonly deps: ControllerDeps) {
    this.loop = new ReconcileLoop(() => this.reconcileAll(), deps.logger);
    this.events = new EventRecorder(deps.client, deps.logger);
  }

  /** Informers run on every replica; call `activate` when this one leads. */
  async startInformers(): Promise<void> {
    await this.deps.source.start((change) => {
      if (!this.active) return;
      if (change?.kind === "Node" && change.reportOnly) this.dirtyNodes.add(change.name);
      else if (change?.statusOnly && (change.kind === "EgressPolicy" || change.kind === "ClusterEgressPolicy"))
        this.dirtyPolicies.add(
          change.kind === "EgressPolicy"
            ? `EgressPolicy/${change.namespace ?? ""}/${change.name}`
            : `ClusterEgressPolicy/${change.name}`,
        );
      else this.planDirty = true;
      this.soon();
    });
  }

  /**
   * Triggers the loop once the current burst of events is handled. Triggered from the handler, a
   * pass planned the whole cluster inside the first event's handler (a pass runs synchronously up
   * to its first write), and the events after it made a second pass; with events arriving one by
   * one, a pass that writes nothing ended before the next came, so each started its own (main at
   * 20,000 pods under 41.7 report writes/s: 454 full passes for 3,340 writes, its timers starved
   * for 39 s). After the burst, one pass takes it all.
   */
  private soon(): void {
    this.wake ??= setImmediate(() => {
      this.wake = undefined;
      if (this.active) this.loop.trigger();
    });
  }

  activate(): void {
    this.active = true;
    this.full();
    this.resync = setInterval(() => this.full(), this.deps.resyncMs ?? 30_000);
  }

  /** Schedules a full pass (a resync, a plugin's request, activation). */
  private full(): void {
    this.planDirty = true;
    this.soon();
  }

  deactivate(): void {
    this.active = false;
    clearInterval(this.resync);
    clearImmediate(this.wake);
    this.wake = undefined;
    clearTimeout(this.requested?.timer);
    this.requested = undefined;
  }

  private requestPass(afterMs: number): void {
    const at = Date.now() + Math.max(0, afterMs);
    if (this.requested && this.requested.at <= at) return;
    clearTimeout(this.requested?.timer);
    const timer = setTimeout(() => {
      this.requested = undefined;
      if (this.active) this.full();
    }, at - Date.now());
    timer.unref();
    this.requested = { at, timer };
  }

  async idle(): Promise<void> {
    // A wake-up still scheduled is a pass to come: wait until it has started.
    while (this.wake) await new Promise((r) => setImmediate(r));
    return this.loop.idle();
  }

  async stop(): Promise<void> {
    this.deactivate();
    this.loop.stop();
    await this.deps.source.stop();
  }

  private async reconcileAll(): Promise<void> {
    if (!this.active) return;
    const started = performance.now();
    const outcome: PassOutcome = { durationMs: 0, failedSteps: 0, invalid: [], instanceHealth: new Map() };
    // Taken before the pass: events that arrive while it runs are for the next one.
    const full = this.planDirty || !this.planned;
    const nodes = [...this.dirtyNodes];
    const policies = [...this.dirtyPolicies];
    this.planDirty = false;
    this.dirtyNodes.clear();
    this.dirtyPolicies.clear();
    if (!full && nodes.length === 0 && policies.length === 0) return; // a retry or a trigger whose work a pass already did
    outcome.scope = full ? "full" : "keyed";
    try {
      if (full) await this.pass(outcome);
      else await this.keyedPass(outcome, nodes, policies);
    } catch (e) {
      // A pass that threw outside any one object's step failed as a whole: never counted ok.
      outcome.failedSteps = Math.max(outcome.failedSteps, 1);
      // The loop retries with backoff; a full pass redoes whatever this one did not finish.
      this.planDirty = true;
      throw e;
    } finally {
      outcome.durationMs = performance.now() - started;
      this.deps.onPass?.(outcome);
    }
  }

  private async pass(outcome: PassOutcome): Promise<void> {
    const { source, network } = this.deps;
    const now = this.now();
    this.planned = undefined; // let the last plan go before this one is built
    const snapshot = snapshotFromObjects(source.objects(), network);
    const planner = new Planner(snapshot, { validator: this.validator });
    const res = planner.resolution;
    const reports = new Map<string, NodeReport>();
    for (const n of source.raw("Node")) {
      const name = n.metadata?.name ?? "";
      const r = parseReport(name, n.metadata?.annotations as Record<string, string> | undefined, now.getTime());
      if (r) reports.set(name, r);
    }
    const gatewayOfInstance = new Map<string, string>();
    for (const [gateway, keys] of res.gatewayInstances) for (const k of keys) gatewayOfInstance.set(k, gateway);
    const policiesOfGateway = new Map<string, string[]>();
    for (const p of res.policies)
      policiesOfGateway.set(p.gateway, [...(policiesOfGateway.get(p.gateway) ?? []), p.resource]);
    const plan: Planned = {
      res,
      podsByPolicy: selectPods(snapshot, res).podsByPolicy,
      verdicts: new Map(res.verdicts.map((v) => [v.resource, v])),
      validPolicies: new Map(res.policies.map((p) => [p.resource, p])),
      invalid: res.verdicts.filter((v) => !v.valid).map((v) => v.resource),
      reports,
      gatewayOfInstance,
      policiesOfGateway,
    };
    this.planned = plan;
    outcome.invalid = plan.invalid;
    const reportList = [...reports.values()];
    const { attempt, errors } = this.attempts();
    let objects = 0;
    for (const kind of POLICY_KINDS)
      for (const raw of source.raw(kind) as Owned[]) {
        objects++;
        await this.policyStep(attempt, kind, raw, plan, reportList, now);
      }
    const ctx: ReconcileContext = {
      client: this.deps.client,
      source,
      snapshot,
      planner,
      now,
      logger: this.deps.logger,
      requestPass: (ms) => this.requestPass(ms),
    };
    this.instanceHealth.clear();
    for (const raw of source.raw("EgressGateway") as Owned[]) {
      objects++;
      await this.gatewayStep(attempt, raw, plan, reportList, now, ctx);
    }
    for (const p of this.deps.plugins ?? []) await attempt(`plugin ${p.name}`, () => p.reconcile(ctx));
    outcome.objects = objects;
    outcome.instanceHealth = new Map(this.instanceHealth);
    outcome.failedSteps = errors.length;
    if (errors.length > 0) throw new Error(`${errors.length} reconcile steps failed; first: ${errors[0]!.message}`);
  }

  /**
   * Nodes' reports changed and nothing planned from: re-read those reports and recompute only the
   * statuses their difference touches (see `touchedBy`), with the last full pass's plan; and the
   * status of policies whose status alone changed (our own writes coming back, the gateway
   * agents' traffic entries). The plugins are not run: nothing they read changed (a gateway status
   * this writes comes back as an event, and that event is a full pass).
   */
  private async keyedPass(
    outcome: PassOutcome,
    nodes: readonly string[],
    statusOnly: readonly string[],
  ): Promise<void> {
    const plan = this.planned!;
    const { source } = this.deps;
    const now = this.now();
    const policies = new Set<string>(statusOnly);
    const gateways = new Set<string>();
    for (const name of nodes) {
      const node = source.get("Node", name);
      const before = plan.reports.get(name);
      const after = node
        ? parseReport(name, node.metadata?.annotations as Record<string, string> | undefined, now.getTime())
        : undefined;
      if (after) plan.reports.set(name, after);
      else plan.reports.delete(name);
      touchedBy(before, after, plan, policies, gateways);
    }
    outcome.invalid = plan.invalid;
    const reportList = [...plan.reports.values()];
    const { attempt, errors } = this.attempts();
    let objects = 0;
    if (policies.size > 0)
      for (const kind of POLICY_KINDS)
        for (const raw of source.raw(kind) as Owned[]) {
          if (!policies.has(policyResource({ ...raw, kind } as unknown as PolicyObject))) continue;
          objects++;
          await this.policyStep(attempt, kind, raw, plan, reportList, now);
        }
    for (const name of gateways) {
      const raw = source.get("EgressGateway", name) as Owned | undefined;
      if (!raw) continue;
      objects++;
      await this.gatewayStep(attempt, raw, plan, reportList, now);
    }
    outcome.objects = objects;
    outcome.instanceHealth = new Map(this.instanceHealth);
    outcome.failedSteps = errors.length;
    if (errors.length > 0) throw new Error(`${errors.length} reconcile steps failed; first: ${errors[0]!.message}`);
  }

  private now(): Date {
    return (this.deps.now ?? (() => new Date()))();
  }

  /** Runs one object's step with a time limit; a failure is collected, not thrown (the others go on). */
  private attempts(): { attempt: Attempt; errors: Error[] } {
    const errors: Error[] = [];
    const stepTimeoutMs = this.deps.stepTimeoutMs ?? 30_000;
    const attempt: Attempt = async (what, fn) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`${what}: no answer from the API within ${stepTimeoutMs} ms`)),
              stepTimeoutMs,
            );
          }),
        ]);
      } catch (e) {
        // One object's failure must not stop the others; the loop retries with backoff.
        if (statusOf(e) === 409 || statusOf(e) === 404) return; // changed or gone meanwhile: the next pass sees it
        this.deps.logger.warn({ what, err: (e as Error).message }, "reconcile step failed");
        errors.push(e as Error);
      } finally {
        clearTimeout(timer);
      }
    };
    return { attempt, errors };
  }

  private policyStep(
    attempt: Attempt,
    kind: (typeof POLICY_KINDS)[number],
    raw: Owned,
    plan: Planned,
    reports: readonly NodeReport[],
    now: Date,
  ): Promise<void> {
    const obj = { ...raw, kind } as unknown as PolicyObject;
    const resource = policyResource(obj);
    const res = plan.res;
    return attempt(resource, async () => {
      if (await this.handleFinalizer(kind, raw, () => reports.some((r) => (r.programmed[resource] ?? 0) > 0))) return;
      const valid = plan.validPolicies.get(resource);
      const status = policyStatus(
        {
          resource,
          generation: raw.metadata.generation,
          verdict: plan.verdicts.get(resource),
          egressIPs: valid ? [...valid.egressIPsByInstance.values()].flat().sort() : [],
          selectedPods: plan.podsByPolicy.get(resource) ?? 0,
          gatewayInstances: valid ? (res.gatewayInstances.get(valid.gateway) ?? []) : [],
          reports,
          verifies: valid?.verification !== undefined,
        },
        raw.status,
        now.toISOString(),
      );
      const traffic = trafficTotals(raw.status, now);
      await this.writeStatus(kind, raw, traffic ? { ...status, traffic } : status);
    });
  }

  /** A gateway's step; `ctx` (for the plugins' release) only in full passes. */
  private gatewayStep(
    attempt: Attempt,
    raw: Owned,
    plan: Planned,
    reports: readonly NodeReport[],
    now: Date,
    ctx?: ReconcileContext,
  ): Promise<void> {
    const resource = `EgressGateway/${raw.metadata.name}`;
    const res = plan.res;
    return attempt(resource, async () => {
      let outsideReleased = true;
      if (raw.metadata.deletionTimestamp) {
        // Releasing outside resources is the plugins' work: a keyed pass leaves a deleting gateway to the full pass.
        if (!ctx) return;
        for (const p of this.deps.plugins ?? [])
          if (p.releaseGateway && !(await p.releaseGateway(raw, ctx))) outsideReleased = false;
      }
      const stillUsed = () =>
        !outsideReleased ||
        res.policies.some(
          (p) => p.gateway === raw.metadata.name && reports.some((r) => (r.programmed[p.resource] ?? 0) > 0),
        );
      if (await this.handleFinalizer("EgressGateway", raw, stillUsed)) return;
      // spec.digitalocean: a cloud plugin knows the instance list (see gatewayStatus).
      const provisioned = (raw.spec as { digitalocean?: unknown } | undefined)?.digitalocean !== undefined;
      let listed: InstanceStatus[] | undefined;
      if (provisioned) for (const p of this.deps.plugins ?? []) listed ??= p.gatewayInstances?.(raw);
      const status = gatewayStatus(
        raw.metadata.name,
        raw.metadata.generation,
        plan.verdicts.get(resource),
        res,
        reports,
        raw.status,
        now.toISOString(),
        { provisioned, ...(listed ? { listed } : {}) },
      );
      this.instanceHealth.set(
        raw.metadata.name,
        (status.instances ?? []).map((i) => i.health),
      );
      await this.writeStatus("EgressGateway", raw, status);
    });
  }

  /**
   * kube-rs' finalizer shape: add it to live objects; on a deleting object, remove it once the
   * cleanup is done (no node still programs it). Returns true when the object is being deleted.
   */
  private async handleFinalizer(kind: PolicyKind, raw: Owned, stillProgrammed: () => boolean): Promise<boolean> {
    const finalizers = raw.metadata.finalizers ?? [];
    const has = finalizers.includes(FINALIZER);
    const ns = kind === "EgressPolicy" ? raw.metadata.namespace : undefined;
    if (!raw.metadata.deletionTimestamp) {
      if (!has)
        await this.deps.client.patchFinalizers(
          kind,
          ns,
          raw.metadata.name,
          [...finalizers, FINALIZER],
          raw.metadata.resourceVersion,
        );
      return false;
    }
    if (has && !stillProgrammed()) {
      await this.deps.client.patchFinalizers(
        kind,
        ns,
        raw.metadata.name,
        finalizers.filter((f) => f !== FINALIZER),
        raw.metadata.resourceVersion,
      );
      this.deps.logger.info({ kind, name: raw.metadata.name }, "every node cleaned up; released");
    }
    return true;
  }

  private async writeStatus(
    kind: PolicyKind,
    raw: Owned,
    status: EgressPolicyStatus | EgressGatewayStatus,
  ): Promise<void> {
    if (sameStatus(withoutInstanceTraffic(raw.status), status)) return;
    const ns = kind === "EgressPolicy" ? raw.metadata.namespace : undefined;
    const rv = raw.metadata.resourceVersion;
    // A gateway's status is written from the cache and a plugin's news: guarded by the
    // resourceVersion read, so an older view never overwrites a newer status (409: next pass).
    if (kind === "EgressGateway" && rv) await this.deps.client.patchStatusAt(kind, ns, raw.metadata.name, status, rv);
    else await this.deps.client.patchStatus(kind, ns, raw.metadata.name, status);
    await this.emitEvents(kind, raw, raw.status?.conditions ?? [], status.conditions ?? []);
  }

  /** An Event whenever a condition turns bad, or good again. */
  private async emitEvents(
    kind: PolicyKind,
    raw: Owned,
    before: readonly Condition[],
    after: readonly Condition[],
  ): Promise<void> {
    for (const c of after) {
      const old = before.find((b) => b.type === c.type);
      if (old && old.status === c.status && old.reason === c.reason) continue;
      // Ready and Verified are good when True; Invalid and Degraded when False.
      const positive = c.type === "Ready" || c.type === "Verified";
      const bad = positive ? c.status === "False" : c.status === "True";
      if (!old && !bad) continue;
      const { namespace, uid } = raw.metadata;
      await this.events.recordOurs(
        kind,
        raw.metadata.name,
        { ...(namespace ? { namespace } : {}), ...(uid ? { uid } : {}) },
        bad ? "Warning" : "Normal",
        c.reason,
        c.message || `${c.type} is ${c.status}`,
      );
    }
  }
}

const POLICY_KINDS = ["EgressPolicy", "ClusterEgressPolicy"] as const;

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * What a node's new report (`after`, undefined: none or expired) changes against its last
 * (`before`): a policy whose programmed count, unavailable mode or verification result there
 * differs; a gateway whose instance's health there differs (any judgement: it counts who judged);
 * and every policy of a gateway whose instance turned down or back (their Degraded condition).
 */
export function touchedBy(
  before: NodeReport | undefined,
  after: NodeReport | undefined,
  plan: Pick<Planned, "gatewayOfInstance" | "policiesOfGateway">,
  policies: Set<string>,
  gateways: Set<string>,
): void {
  const perPolicy = [
    [before?.programmed, after?.programmed],
    [before?.unavailable, after?.unavailable],
    [before?.verification, after?.verification],
  ] as const;
  for (const [b, a] of perPolicy)
    for (const key of new Set([...Object.keys(b ?? {}), ...Object.keys(a ?? {})]))
      if (!same(b?.[key], a?.[key])) policies.add(key);
  const bh = before?.health ?? {};
  const ah = after?.health ?? {};
  for (const key of new Set([...Object.keys(bh), ...Object.keys(ah)])) {
    if (bh[key] === ah[key]) continue;
    // Keys are gateway/instance; one the plan does not know (yet) names its gateway before the slash.
    const gateway = plan.gatewayOfInstance.get(key) ?? key.split("/")[0]!;
    gateways.add(gateway);
    if ((bh[key] === "down") !== (ah[key] === "down"))
      for (const p of plan.policiesOfGateway.get(gateway) ?? []) policies.add(p);
  }
}

/** Equal apart from key order: compares the JSON of both with sorted keys. */
export function sameStatus(a: unknown, b: unknown): boolean {
  return stable(a ?? {}) === stable(b ?? {});
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y)))
      : val,
  );
}
