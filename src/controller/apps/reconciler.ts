import type { KubernetesObject } from "@kubernetes/client-node";
import { validateApp } from "../../api/v1alpha1/app-validate.js";
import type { App, AppStatus, AppUsage } from "../../api/v1alpha1/app.js";
import type { Condition } from "../../api/v1alpha1/common.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import { statusOf, type KubeClient } from "../../kube/client.js";
import type { AppChildKind, AppsClient, AppSource } from "../../kube/apps.js";
import {
  APPLIED_ANNOTATION,
  namespaceOf,
  planApp,
  secretNameOf,
  type AppPlan,
  type AppPlanOptions,
} from "../../planner/apps.js";
import {
  APP_POLICY_NAME,
  dedicatedIPs,
  digitalOceanDedicatedIPs,
  gatewayNameOf,
  planDedicatedEgress,
  planDigitalOceanEgress,
  type GatewayPool,
} from "../../planner/app-egress.js";
import { ON_REMOVAL, type AppsDigitalOcean, type OnRemoval } from "../../api/v1alpha1/apps-digitalocean.js";
import { DEDICATED_IPS_ON_REMOVAL_ANNOTATION } from "../../api/keys.js";
import type { FieldError } from "../../api/v1alpha1/validate.js";
import type { Logger } from "../../util/log.js";
import { KeyedJobs } from "../cloud/keyed-jobs.js";
import { sameStatus } from "../controller.js";
import { FINALIZER } from "../status.js";
import { appStatus, type AppFacts, type EgressFacts } from "./status.js";
import { nextUsage, type InstanceCounters } from "./usage.js";

export interface AppControllerOptions {
  client: KubeClient;
  apps: AppsClient;
  source: AppSource;
  logger: Logger;
  /** The ingress side (docs/apps.md) and DOCR's registry ("" or absent: DOCR components are refused). */
  plan?: AppPlanOptions;
  /** Gateway hosts for DEDICATED_IP apps, two per app (docs/apps.md); absent: none is assigned. */
  gatewayPool?: GatewayPool;
  /**
   * DEDICATED_IP apps on DigitalOcean instead of a pool: each app's gateway is two droplets with
   * two reserved IPs (the fleet plugin makes them); `reservedIPs` reaches the IPs kept or left
   * over once the gateway is gone.
   */
  digitalocean?: { config: AppsDigitalOcean; reservedIPs: AppReservedIPs };
  /** Every App is reconciled this often even without a change (default 30 s). */
  resyncMs?: number;
  /** Secrets are not watched (never read): they are applied again this often, to repair drift (default 10 min). */
  secretRepairMs?: number;
  /** Longest one App's step may take before it is given up and retried (default 30 s). */
  stepTimeoutMs?: number;
  retryBaseMs?: number;
  now?: () => Date;
}

/**
 * The reserved IPs the fleet plugin allocated for an app's gateway, once that gateway is gone
 * (src/cli/controller.ts puts the DigitalOcean provider behind it).
 */
export interface AppReservedIPs {
  /** Those still allocated under the gateway's name (kept for the app's next DEDICATED_IP). */
  allocated(gateway: string): Promise<string[]>;
  /** Deletes them (and any other leftover of the gateway's fleet). */
  release(gateway: string): Promise<void>;
}

type Meta = {
  name?: string;
  generation?: number;
  namespace?: string;
  uid?: string;
  deletionTimestamp?: unknown;
  ownerReferences?: { uid?: string }[];
  annotations?: Record<string, string>;
};
const meta = (o: KubernetesObject | undefined): Meta => (o?.metadata ?? {}) as Meta;
const ownedBy = (o: KubernetesObject | undefined, uid: string | undefined) =>
  uid !== undefined && (meta(o).ownerReferences ?? []).some((r) => r.uid === uid);

/**
 * Reconciles each App by its name (a key-deduplicating queue: one run per App at a time; a change
 * during a run makes one more): its namespace, Deployments, Services, Secrets and NetworkPolicies
 * (src/planner/apps.ts) are applied by server-side apply, what it no longer has is deleted, and
 * the status tells the phase. A finalizer holds a deleted App until its namespace is gone.
 * Informers run on every replica; reconciles only on the leader (`activate`).
 */
export class AppController {
  private readonly jobs: KeyedJobs;
  private readonly validator = new SpecValidator();
  private readonly secretsAppliedAt = new Map<string, number>();
  /**
   * Pool gateways this replica planned that the informer may not list yet (by name). Apps are
   * reconciled concurrently and each plans from the cache: without these, two apps planned before
   * either's gateway is seen would take the same free hosts.
   */
  private readonly plannedGateways = new Map<string, KubernetesObject>();
  private active = false;
  private resync: NodeJS.Timeout | undefined;

  constructor(private readonly opts: AppControllerOptions) {
    this.jobs = new KeyedJobs({
      work: (name) => this.withTimeout(name, () => this.reconcile(name)),
      logger: opts.logger.child({ reconciler: "apps" }),
      retryBaseMs: opts.retryBaseMs ?? 1_000,
      retryMaxMs: 60_000,
      failureMessage: "app reconcile failed; retrying",
    });
  }

  /** May run before or after `activate`: Apps listed by the first sync are scheduled either way. */
  async startInformers(): Promise<void> {
    await this.opts.source.start((app) => {
      if (!this.active) return;
      if (app === undefined) this.scheduleAll();
      else this.jobs.schedule(app);
    });
    if (this.active) this.scheduleAll();
  }

  activate(): void {
    this.active = true;
    // What another leader did meanwhile is in the cache; plans of an earlier term are not.
    this.plannedGateways.clear();
    this.scheduleAll();
    this.resync = setInterval(() => this.scheduleAll(), this.opts.resyncMs ?? 30_000);
    this.resync.unref();
  }

  deactivate(): void {
    this.active = false;
    clearInterval(this.resync);
  }

  /** Resolves when no reconcile runs (tests). */
  idle(): Promise<void> {
    return this.jobs.idle();
  }

  async stop(): Promise<void> {
    this.deactivate();
    await this.jobs.stop();
    await this.opts.source.stop();
  }

  private scheduleAll(): void {
    for (const a of this.opts.source.list("App")) if (a.metadata?.name) this.jobs.schedule(a.metadata.name);
  }

  private async withTimeout(name: string, fn: () => Promise<void>): Promise<void> {
    if (!this.active) return;
    const ms = this.opts.stepTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fn(),
        new Promise<never>(
          (_, reject) =>
            (timer = setTimeout(() => reject(new Error(`App/${name}: no answer from the API within ${ms} ms`)), ms)),
        ),
      ]);
    } catch (e) {
      // Changed meanwhile (409): the informer brings the new state and schedules again.
      if (statusOf(e) === 409) return;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private async reconcile(name: string): Promise<void> {
    const app = this.opts.source.get("App", name) as (App & { metadata: { deletionTimestamp?: string } }) | undefined;
    if (!app) {
      this.secretsAppliedAt.delete(name);
      return; // deleted: the finalizer made sure its objects went first
    }
    const finalizers = app.metadata.finalizers ?? [];
    if (app.metadata.deletionTimestamp) {
      if (finalizers.includes(FINALIZER) && (await this.cleanup(app))) {
        await this.opts.apps.patchAppFinalizers(
          name,
          finalizers.filter((f) => f !== FINALIZER),
          app.metadata.resourceVersion,
        );
        this.opts.logger.info({ app: name }, "app's namespace is gone; released");
      }
      return;
    }
    if (!finalizers.includes(FINALIZER)) {
      // The patch brings the App back through the informer, which schedules the next step.
      await this.opts.apps.patchAppFinalizers(name, [...finalizers, FINALIZER], app.metadata.resourceVersion);
      return;
    }
    const now = (this.opts.now ?? (() => new Date()))();
    const facts = await this.converge(app, now.getTime());
    await this.writeStatus(app, appStatus(facts, app.metadata.generation, app.status, now.toISOString()));
  }

  /** Applies what the App should be made of and removes the rest; says what it found. */
  private async converge(app: App, now: number): Promise<AppFacts> {
    const { apps, source } = this.opts;
    const name = app.metadata.name;
    // Validated on a copy: defaults are filled in for planning, never written back.
    const copy = structuredClone(app);
    const errors = validateApp(copy, this.validator, { docrRegistry: this.opts.plan?.docrRegistry ?? "" });
    errors.push(...onRemovalErrors(app));
    // Nothing is created for an invalid spec; what runs from the last valid one keeps running.
    if (errors.length > 0) return { kind: "invalid", errors };
    const plan = planApp(copy, this.opts.plan);
    const nsName = namespaceOf(name);
    const ns = source.get("Namespace", nsName);
    if (ns && !ownedBy(ns, app.metadata.uid)) {
      return {
        kind: "conflict",
        message: meta(ns).deletionTimestamp
          ? `namespace ${nsName} is still being deleted`
          : `namespace ${nsName} exists and was not made for this app; static-egress does not take it over`,
      };
    }
    const live = (kind: "Deployment" | "Service" | "NetworkPolicy") =>
      new Map(
        source
          .list(kind, name)
          .filter((o) => meta(o).namespace === nsName && ownedBy(o, app.metadata.uid))
          .map((o) => [meta(o).name ?? "", o]),
      );
    const changed = (want: KubernetesObject, have: KubernetesObject | undefined) =>
      meta(have).annotations?.[APPLIED_ANNOTATION] !== meta(want).annotations?.[APPLIED_ANNOTATION];

    if (changed(plan.namespace, ns)) await apps.applyChild(plan.namespace);
    const deployments = live("Deployment");
    const services = live("Service");
    const policies = live("NetworkPolicy");
    // Policies first: no pod of the app runs a moment without its isolation.
    for (const p of plan.networkPolicies) if (changed(p, policies.get(p.metadata.name ?? ""))) await apps.applyChild(p);
    // Secrets before the Deployments that read them; applied when a Deployment changes (every
    // spec change does) and every secretRepairMs (Secrets are never read back).
    const rolling = plan.deployments.some((d) => changed(d, deployments.get(d.metadata?.name ?? "")));
    const repairDue = now - (this.secretsAppliedAt.get(name) ?? 0) >= (this.opts.secretRepairMs ?? 600_000);
    if (rolling || repairDue) {
      for (const s of plan.secrets) await apps.applyChild(s);
      this.secretsAppliedAt.set(name, now);
    }
    // The app's own egress before its pods change: they start with it.
    const egress = this.opts.digitalocean
      ? await this.convergeDigitalOceanEgress(copy, nsName, this.opts.digitalocean)
      : await this.convergeEgress(copy, nsName, app.status?.dedicated_ips ?? []);
    for (const d of plan.deployments) if (changed(d, deployments.get(d.metadata?.name ?? ""))) await apps.applyChild(d);
    for (const s of plan.services) if (changed(s, services.get(s.metadata?.name ?? ""))) await apps.applyChild(s);
    await this.removeStale(
      plan,
      nsName,
      { Deployment: deployments, Service: services, NetworkPolicy: policies },
      rolling || repairDue,
    );
    return {
      kind: "applied",
      namespace: nsName,
      usage: this.usage(app, nsName, new Date(now).toISOString()),
      components: plan.components.map((c) => ({
        name: c.name,
        kind: c.kind,
        deployment: source
          .list("Deployment", name)
          .find((d) => meta(d).namespace === nsName && meta(d).name === c.name),
      })),
      egress,
    };
  }

  /**
   * A DEDICATED_IP app's gateway and policy (src/planner/app-egress.ts), applied when they
   * differ; removed when the app no longer asks for them. Says what its dedicated IPs are.
   */
  private async convergeEgress(
    app: App,
    ns: string,
    previous: NonNullable<AppStatus["dedicated_ips"]>,
  ): Promise<EgressFacts> {
    const { apps, source } = this.opts;
    const name = app.metadata.name;
    const uid = app.metadata.uid;
    const ownGateway = source
      .list("EgressGateway", name)
      .find((g) => meta(g).name === gatewayNameOf(name) && ownedBy(g, uid));
    const ownPolicy = source
      .list("EgressPolicy", name)
      .find((p) => meta(p).namespace === ns && meta(p).name === APP_POLICY_NAME && ownedBy(p, uid));
    const plan = planDedicatedEgress(app, this.opts.gatewayPool, this.knownGateways() as never);
    // Recorded before the first await: the next app's plan sees these hosts taken.
    if (plan.kind === "planned") this.plannedGateways.set(gatewayNameOf(name), plan.gateway);
    else this.plannedGateways.delete(gatewayNameOf(name));
    if (plan.kind === "none") {
      if (ownPolicy) await apps.deleteChild("EgressPolicy", ns, APP_POLICY_NAME);
      if (ownGateway) await apps.deleteChild("EgressGateway", "", gatewayNameOf(name));
      return { state: "none", dedicatedIPs: previous.map((d) => ({ ...d, status: "REMOVED" as const })) };
    }
    if (plan.kind === "exhausted")
      return { state: this.opts.gatewayPool ? "exhausted" : "unconfigured", free: plan.free, dedicatedIPs: previous };
    const changed = (want: KubernetesObject, have: KubernetesObject | undefined) =>
      meta(have).annotations?.[APPLIED_ANNOTATION] !== meta(want).annotations?.[APPLIED_ANNOTATION];
    if (changed(plan.gateway, ownGateway)) await apps.applyChild(plan.gateway);
    if (changed(plan.policy, ownPolicy)) await apps.applyChild(plan.policy);
    const policyReady = (
      (ownPolicy as { status?: { conditions?: Condition[] } } | undefined)?.status?.conditions ?? []
    ).some((c) => c.type === "Ready" && c.status === "True");
    const gatewayStatus = (ownGateway as { status?: { instances?: { name: string; health?: string }[] } } | undefined)
      ?.status;
    return { state: "planned", dedicatedIPs: dedicatedIPs(plan.hosts, gatewayStatus, policyReady, previous) };
  }

  /** The gateways as the informer lists them, with what this replica planned since in their place. */
  private knownGateways(): KubernetesObject[] {
    const known = new Map(this.opts.source.list("EgressGateway").map((g) => [meta(g).name ?? "", g]));
    for (const [name, planned] of this.plannedGateways) {
      const digest = (g: KubernetesObject | undefined) => meta(g).annotations?.[APPLIED_ANNOTATION];
      if (digest(known.get(name)) === digest(planned)) this.plannedGateways.delete(name);
      else known.set(name, planned);
    }
    return [...known.values()];
  }

  /**
   * On DigitalOcean: the app's gateway (two droplets, two reserved IPs allocated by the fleet
   * plugin) and, once its status lists both IPs, the policy naming them. When the app no longer
   * asks for them: the gateway is deleted (the fleet deletes the droplets; the reserved IPs go
   * with them, or stay allocated for the app as it chose), and once it is gone the IPs are
   * released or recorded as kept.
   */
  private async convergeDigitalOceanEgress(
    app: App,
    ns: string,
    digitalocean: NonNullable<AppControllerOptions["digitalocean"]>,
  ): Promise<EgressFacts> {
    const { apps, source } = this.opts;
    const name = app.metadata.name;
    const uid = app.metadata.uid;
    const previous = app.status?.dedicated_ips ?? [];
    const kept = app.status?.kept_ips ?? [];
    const onRemoval = onRemovalOf(app, digitalocean.config);
    const ownGateway = source
      .list("EgressGateway", name)
      .find((g) => meta(g).name === gatewayNameOf(name) && ownedBy(g, uid)) as GatewayWithStatus | undefined;
    const ownPolicy = source
      .list("EgressPolicy", name)
      .find((p) => meta(p).namespace === ns && meta(p).name === APP_POLICY_NAME && ownedBy(p, uid)) as
      PolicyWithStatus | undefined;
    const removed = previous.map((d) => ({ ...d, status: "REMOVED" as const }));
    if (app.spec.egress?.type !== "DEDICATED_IP") {
      if (ownPolicy) await apps.deleteChild("EgressPolicy", ns, APP_POLICY_NAME);
      if (ownGateway) {
        if (!meta(ownGateway).deletionTimestamp) await apps.deleteChild("EgressGateway", "", gatewayNameOf(name));
        return { state: "removing", dedicatedIPs: removed, keptIPs: kept };
      }
      const before = app.status?.conditions?.find((c) => c.type === "DedicatedEgress");
      // Settled: never dedicated, or released, or kept as the app still wants.
      const settled = before?.reason === "Released" || before?.reason === "Kept";
      const settling =
        (before !== undefined && !settled) ||
        previous.some((d) => d.status !== "REMOVED") ||
        (onRemoval === "release" && kept.length > 0);
      if (!settling)
        return {
          state: before?.reason === "Kept" ? "kept" : before ? "released" : "none",
          dedicatedIPs: removed,
          keptIPs: kept,
        };
      // Gone from the cache; the API server confirms it (a gateway made a moment ago may not be cached yet).
      if (await this.opts.client.readGateway(gatewayNameOf(name)))
        return { state: "removing", dedicatedIPs: removed, keptIPs: kept };
      if (onRemoval === "release") {
        await digitalocean.reservedIPs.release(gatewayNameOf(name));
        return { state: "released", dedicatedIPs: removed, keptIPs: [] };
      }
      const allocated = await digitalocean.reservedIPs.allocated(gatewayNameOf(name));
      return { state: "kept", dedicatedIPs: removed, keptIPs: allocated };
    }
    const plan = planDigitalOceanEgress(app, digitalocean.config, onRemoval === "keep", ownGateway?.status);
    const changed = (want: KubernetesObject, have: KubernetesObject | undefined) =>
      meta(have).annotations?.[APPLIED_ANNOTATION] !== meta(want).annotations?.[APPLIED_ANNOTATION];
    if (changed(plan.gateway, ownGateway)) await apps.applyChild(plan.gateway);
    // Until both IPs are known the policy stays as it is (absent at first: the app leaves with its node's IP).
    const policyChanged = plan.policy !== undefined && changed(plan.policy, ownPolicy);
    if (plan.policy && policyChanged) await apps.applyChild(plan.policy);
    const ready =
      !policyChanged &&
      (ownPolicy?.status?.conditions ?? []).some(
        (c) =>
          c.type === "Ready" &&
          c.status === "True" &&
          (c.observedGeneration === undefined || c.observedGeneration === meta(ownPolicy).generation),
      );
    const dedicated = digitalOceanDedicatedIPs(plan, { ready, egressIPs: ownPolicy?.spec?.egressIPs ?? [] }, previous);
    // The IPs are in use again (the fleet takes kept ones back by itself).
    if (!plan.policy) return { state: "provisioning", dedicatedIPs: dedicated, keptIPs: [] };
    return { state: "planned", dedicatedIPs: dedicated, keptIPs: [] };
  }

  /**
   * The app's usage: what its gateways' agents counted on its policy (`status.traffic.instances`,
   * each instance's kernel counters) added to what the App's status has (docs/apps.md#usage).
   */
  private usage(app: App, ns: string, now: string): AppUsage | undefined {
    const policy = this.opts.source
      .list("EgressPolicy", app.metadata.name)
      .find((p) => meta(p).namespace === ns && meta(p).name === APP_POLICY_NAME && ownedBy(p, app.metadata.uid)) as
      (PolicyWithStatus & { status?: { traffic?: { instances?: InstanceCounters[] } } }) | undefined;
    return nextUsage(app.status?.usage, policy?.status?.traffic?.instances ?? [], policy?.spec?.egressIPs ?? [], now);
  }

  /** Deletes what the App no longer has: objects it made (owner and namespace checked) that are not planned. */
  private async removeStale(
    plan: AppPlan,
    ns: string,
    live: Record<"Deployment" | "Service" | "NetworkPolicy", Map<string, KubernetesObject>>,
    secretsToo: boolean,
  ): Promise<void> {
    const wanted: Record<string, Set<string>> = {
      Deployment: new Set(plan.deployments.map((d) => d.metadata?.name ?? "")),
      Service: new Set(plan.services.map((s) => s.metadata?.name ?? "")),
      NetworkPolicy: new Set(plan.networkPolicies.map((p) => p.metadata.name ?? "")),
    };
    for (const kind of ["Deployment", "Service", "NetworkPolicy"] as const) {
      for (const objName of live[kind].keys()) {
        if (wanted[kind]!.has(objName)) continue;
        await this.opts.apps.deleteChild(kind, ns, objName);
        // A removed component's Secret goes with its Deployment (Secrets are not watched).
        if (kind === "Deployment") await this.opts.apps.deleteChild("Secret", ns, secretNameOf(objName));
      }
    }
    if (!secretsToo) return;
    // A component that no longer has SECRET variables: its Secret goes (gone already is fine).
    const withSecret = new Set(plan.secrets.map((s) => s.metadata?.name ?? ""));
    for (const c of plan.components)
      if (!withSecret.has(c.secret)) await this.opts.apps.deleteChild("Secret", ns, c.secret);
  }

  /**
   * Deletes the App's gateway and namespace (everything in it goes with it); true once both are
   * gone. On DigitalOcean its reserved IPs are released too, kept ones included: nothing stays
   * allocated for an app that no longer exists.
   */
  private async cleanup(app: App): Promise<boolean> {
    const nsName = namespaceOf(app.metadata.name);
    this.plannedGateways.delete(gatewayNameOf(app.metadata.name));
    const gateway = this.opts.source.list("EgressGateway", app.metadata.name).find((g) => ownedBy(g, app.metadata.uid));
    if (gateway && !meta(gateway).deletionTimestamp)
      await this.opts.apps.deleteChild("EgressGateway", "", meta(gateway).name ?? "");
    const released = gateway === undefined && (await this.releaseReservedIPs(app));
    const ns = this.opts.source.get("Namespace", nsName);
    if (!ns) return released;
    if (!ownedBy(ns, app.metadata.uid)) return released; // not ours: never deleted
    if (!meta(ns).deletionTimestamp) {
      await this.opts.apps.deleteChild("Namespace" as AppChildKind, "", nsName);
      await this.event(app, "Normal", "Deleting", `deleting namespace ${nsName} and everything the app runs`);
    }
    return false; // the namespace informer's delete event schedules the App again
  }

  /** Apps whose reserved IPs were released on deletion (one release per deletion; by uid). */
  private readonly releasedApps = new Set<string>();

  /** On DigitalOcean, once the gateway is gone (the API server confirms it): releases every IP left under its name. */
  private async releaseReservedIPs(app: App): Promise<boolean> {
    const digitalocean = this.opts.digitalocean;
    const uid = app.metadata.uid ?? app.metadata.name;
    if (!digitalocean || this.releasedApps.has(uid)) return true;
    if (await this.opts.client.readGateway(gatewayNameOf(app.metadata.name))) return false;
    await digitalocean.reservedIPs.release(gatewayNameOf(app.metadata.name));
    this.releasedApps.add(uid);
    return true;
  }

  private async writeStatus(app: App, status: AppStatus): Promise<void> {
    if (sameStatus(app.status, status)) return;
    await this.opts.apps.patchAppStatus(app.metadata.name, status);
    await this.emitEvents(app, app.status?.conditions ?? [], status.conditions ?? []);
  }

  /** An Event whenever a condition turns bad, or good again (as the core controller does). */
  private async emitEvents(app: App, before: readonly Condition[], after: readonly Condition[]): Promise<void> {
    for (const c of after) {
      const old = before.find((b) => b.type === c.type);
      if (old && old.status === c.status && old.reason === c.reason) continue;
      const bad =
        (c.type === "Ready" && c.status === "False" && c.reason !== "Deploying") ||
        (c.type === "Invalid" && c.status === "True");
      if (!old && !bad && c.type !== "Ready") continue;
      await this.event(app, bad ? "Warning" : "Normal", c.reason, c.message || `${c.type} is ${c.status}`);
    }
  }

  private async event(app: App, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    await this.opts.client
      .createObjectEvent({
        involved: {
          apiVersion: app.apiVersion ?? "staticegress.io/v1alpha1",
          kind: "App",
          name: app.metadata.name,
          ...(app.metadata.uid ? { uid: app.metadata.uid } : {}),
        },
        type,
        reason,
        message,
        component: "static-egress-controller",
      })
      .catch((e: unknown) => this.opts.logger.warn({ err: (e as Error).message }, "could not record an event"));
  }
}

type GatewayWithStatus = KubernetesObject & {
  status?: { instances?: { name: string; id?: string; egressIPs?: string[]; health?: string }[] };
};
type PolicyWithStatus = KubernetesObject & {
  metadata?: { generation?: number };
  spec?: { egressIPs?: string[] };
  status?: { conditions?: Condition[] };
};

/** The app's choice for its reserved IPs on REMOVED: its annotation, else the controller's default (release). */
function onRemovalOf(app: App, config: AppsDigitalOcean): OnRemoval {
  const v = app.metadata.annotations?.[DEDICATED_IPS_ON_REMOVAL_ANNOTATION];
  return v === "keep" || v === "release" ? v : (config.onRemoval ?? "release");
}

/** A misspelt choice makes the App invalid (nothing changes, no IP is released on a typo). */
function onRemovalErrors(app: App): FieldError[] {
  const v = app.metadata.annotations?.[DEDICATED_IPS_ON_REMOVAL_ANNOTATION];
  if (v === undefined || (ON_REMOVAL as readonly string[]).includes(v)) return [];
  return [
    {
      field: `metadata.annotations[${DEDICATED_IPS_ON_REMOVAL_ANNOTATION}]`,
      message: `must be ${ON_REMOVAL.join(" or ")}, not ${JSON.stringify(v)}`,
    },
  ];
}
