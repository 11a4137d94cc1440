import type { KubernetesObject } from "@kubernetes/client-node";
import { snapshotFromObjects } from "../api/objects.js";
import type { AnyObjectMeta, Condition } from "../api/v1alpha1/common.js";
import type { EgressGatewayStatus } from "../api/v1alpha1/egress-gateway.js";

type InstanceStatus = NonNullable<EgressGatewayStatus["instances"]>[number];
import type { EgressPolicyStatus } from "../api/v1alpha1/egress-policy.js";
import { ReconcileLoop } from "../util/reconcile-loop.js";
import type { ClusterNetwork, PolicyObject } from "../planner/model.js";
import { Planner, selectPods } from "../planner/plan.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { policyResource } from "../planner/resolve.js";
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
  durationMs: number;
  /** Objects (or plugins) whose step failed; the loop retries them. */
  failedSteps: number;
  /** Resources the planner found Invalid, e.g. `EgressPolicy/web/checkout`. */
  invalid: string[];
  /** Gateway name -> health of each of its instances, as this pass wrote it. */
  instanceHealth: Map<string, string[]>;
}

/**
 * Level-triggered: every change (of any kind) schedules one reconcile of the whole state,
 * which plans once and then, for each policy and gateway, compares the status it should have
 * with the one it has and writes only the difference. Finalizers hold a deleted policy or
 * gateway until no node reports it programmed any more.
 */
export class Controller {
  private readonly loop: ReconcileLoop;
  private resync: NodeJS.Timeout | undefined;
  /** The earliest pass a plugin asked for. */
  private requested: { at: number; timer: NodeJS.Timeout } | undefined;
  private active = false;
  private readonly validator = new SpecValidator();

  private readonly events: EventRecorder;

  constructor(private readonly deps: ControllerDeps) {
    this.loop = new ReconcileLoop(() => this.reconcileAll(), deps.logger);
    this.events = new EventRecorder(deps.client, deps.logger);
  }

  /** Informers run on every replica; call `activate` when this one leads. */
  async startInformers(): Promise<void> {
    await this.deps.source.start(() => {
      if (this.active) this.loop.trigger();
    });
  }

  activate(): void {
    this.active = true;
    this.loop.trigger();
    this.resync = setInterval(() => this.loop.trigger(), this.deps.resyncMs ?? 30_000);
  }

  deactivate(): void {
    this.active = false;
    clearInterval(this.resync);
    clearTimeout(this.requested?.timer);
    this.requested = undefined;
  }

  private requestPass(afterMs: number): void {
    const at = Date.now() + Math.max(0, afterMs);
    if (this.requested && this.requested.at <= at) return;
    clearTimeout(this.requested?.timer);
    const timer = setTimeout(() => {
      this.requested = undefined;
      if (this.active) this.loop.trigger();
    }, at - Date.now());
    timer.unref();
    this.requested = { at, timer };
  }

  idle(): Promise<void> {
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
    try {
      await this.pass(outcome);
    } catch (e) {
      // A pass that threw outside any one object's step failed as a whole: never counted ok.
      outcome.failedSteps = Math.max(outcome.failedSteps, 1);
      throw e;
    } finally {
      outcome.durationMs = performance.now() - started;
      this.deps.onPass?.(outcome);
    }
  }

  private async pass(outcome: PassOutcome): Promise<void> {
    const { source, network } = this.deps;
    const now = (this.deps.now ?? (() => new Date()))();
    const snapshot = snapshotFromObjects(source.objects(), network);
    const planner = new Planner(snapshot, { validator: this.validator });
    const res = planner.resolution;
    const selection = selectPods(snapshot, res);
    const verdicts = new Map(res.verdicts.map((v) => [v.resource, v]));
    outcome.invalid = res.verdicts.filter((v) => !v.valid).map((v) => v.resource);
    const validPolicies = new Map(res.policies.map((p) => [p.resource, p]));
    const reports: NodeReport[] = [];
    for (const n of source.raw("Node")) {
      const r = parseReport(
        n.metadata?.name ?? "",
        n.metadata?.annotations as Record<string, string> | undefined,
        now.getTime(),
      );
      if (r) reports.push(r);
    }
    const errors: Error[] = [];
    const stepTimeoutMs = this.deps.stepTimeoutMs ?? 30_000;
    const attempt = async (what: string, fn: () => Promise<void>) => {
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

    for (const kind of ["EgressPolicy", "ClusterEgressPolicy"] as const) {
      for (const raw of source.raw(kind) as Owned[]) {
        const obj = { ...raw, kind } as unknown as PolicyObject;
        const resource = policyResource(obj);
        await attempt(resource, async () => {
          if (await this.handleFinalizer(kind, raw, () => reports.some((r) => (r.programmed[resource] ?? 0) > 0)))
            return;
          const verdict = verdicts.get(resource);
          const valid = validPolicies.get(resource);
          const status = policyStatus(
            {
              resource,
              generation: raw.metadata.generation,
              verdict,
              egressIPs: valid ? [...valid.egressIPsByInstance.values()].flat().sort() : [],
              selectedPods: selection.podsByPolicy.get(resource) ?? 0,
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
    for (const raw of source.raw("EgressGateway") as Owned[]) {
      const resource = `EgressGateway/${raw.metadata.name}`;
      await attempt(resource, async () => {
        let outsideReleased = true;
        if (raw.metadata.deletionTimestamp) {
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
          verdicts.get(resource),
          res,
          reports,
          raw.status,
          now.toISOString(),
          { provisioned, ...(listed ? { listed } : {}) },
        );
        outcome.instanceHealth.set(
          raw.metadata.name,
          (status.instances ?? []).map((i) => i.health),
        );
        await this.writeStatus("EgressGateway", raw, status);
      });
    }
    for (const p of this.deps.plugins ?? []) await attempt(`plugin ${p.name}`, () => p.reconcile(ctx));
    outcome.failedSteps = errors.length;
    if (errors.length > 0) throw new Error(`${errors.length} reconcile steps failed; first: ${errors[0]!.message}`);
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
