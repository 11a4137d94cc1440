import type { KubernetesObject } from "@kubernetes/client-node";
import type { EgressGatewaySpec, EgressGatewayStatus } from "../../api/v1alpha1/egress-gateway.js";
import {
  FORWARD_ALL_FROM_NODES,
  GatewayFleetSpecError,
  type CloudProvider,
  type GatewayFleetSpec,
  type GatewayHost,
  type PortRule,
} from "../../cloud/provider.js";
import { silentLogger, type Logger } from "../../util/log.js";
import type { ControllerPlugin, ReconcileContext } from "../controller.js";
import { DRAINING, PROVISIONING, UNJUDGED } from "../status.js";
import { KeyedJobs } from "./keyed-jobs.js";
import { DEFAULT_USER_DATA, renderUserData, type UserDataValues } from "./user-data.js";
import type { Clock } from "../../util/clock.js";
import { EventRecorder } from "../../kube/events.js";

export type InstanceStatus = NonNullable<EgressGatewayStatus["instances"]>[number];
type DigitalOceanSpec = NonNullable<EgressGatewaySpec["digitalocean"]>;

interface GatewayObject extends KubernetesObject {
  metadata: { name: string; generation?: number; resourceVersion?: string; uid?: string; deletionTimestamp?: Date };
  spec?: EgressGatewaySpec;
  status?: EgressGatewayStatus;
}

export interface GatewayFleetPluginOptions {
  provider: CloudProvider;
  /** Stable id of this cluster (e.g. the DOKS cluster UUID); part of every ownership tag. */
  clusterId: string;
  /** Cloud-init template with ${GATEWAY} / ${INSTANCE} (see user-data.ts); default DEFAULT_USER_DATA. */
  userDataTemplate?: string;
  /** The template's other values (see user-data.ts). */
  userDataValues?: UserDataValues;
  /** What the gateway firewall admits from the nodes besides BFD (default: all TCP, UDP, ICMP). */
  ports?: PortRule[];
  /**
   * Pod CIDRs admitted on those ports besides the node tag (forwarded packets keep the pods'
   * addresses). Default: the cluster's pod CIDRs from the controller's config.
   */
  sourceCIDRs?: string[];
  /** Converge a gateway's fleet at most this often unless its generation changes (default 60 s). */
  minIntervalMs?: number;
  /** Look for fleets whose gateway is gone this often (default: minIntervalMs). */
  sweepIntervalMs?: number;
  /**
   * Rolling replacement of droplets built from an old size or image: how long one drains (nodes
   * move new connections off it, open ones go on) before it is deleted and rebuilt (default 60 s).
   */
  rollDrainMs?: number;
  /** List the hosts (new ones as Provisioning) when an ensure takes longer than this (default 10 s). */
  progressAfterMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  logger?: Logger;
  now?: Clock["now"];
}

interface FleetState {
  /** Hosts as the last ensure (or a listing after a failed one) returned them. */
  hosts?: GatewayHost[];
  /** Start of the last ensure attempt, and the generation it was for. */
  attemptAt: number;
  generation: number | undefined;
}

/**
 * Runs the droplets of every EgressGateway with `spec.digitalocean` (through
 * CloudProvider.ensureGatewayFleet, which is idempotent and finds its resources by tag) and lists
 * them in `status.instances`, which is what the planner and the agents read. The slow part runs in
 * the background per gateway (a droplet boots for a minute), so the controller's pass is never
 * held up; a gateway is converged again every `minIntervalMs` (a destroyed droplet is replaced
 * then), at once when its spec changes.
 *
 * Status: this plugin knows the list (names, ids, addresses, egress IPs, `Provisioning`,
 * `Draining`) and hands it to the core through `gatewayInstances`; it writes no status itself.
 * The core adds the health the nodes report and writes the whole status in one patch, guarded by
 * the resourceVersion it read. When a job learns something new it asks for a pass.
 *
 * Deletion: releaseGateway deletes the fleet and answers true only once the provider lists no host
 * of it any more; the core holds the finalizer until then. A fleet whose gateway vanished anyway
 * (finalizer removed by hand) or no longer has a `digitalocean` source is found by the periodic
 * sweep over the provider's fleets and deleted once the API server confirms it (not only the cache).
 */
export class GatewayFleetPlugin implements ControllerPlugin {
  readonly name = "digitalocean-gateway-fleet";
  private readonly jobs: KeyedJobs;
  private readonly fleets = new Map<string, FleetState>();
  /** Gateways whose cloud resources are gone (deletion done). */
  private readonly released = new Set<string>();
  /** Per gateway: the outdated droplet draining before its replacement (one at a time). */
  private readonly rolling = new Map<string, { host: string; id: string; until: number }>();
  /** Fleets the sweep found without a gateway that wants them; deleted by their gateway's job. */
  private readonly orphans = new Set<string>();
  private lastSweepAt: number | undefined;
  private sweeping = false;
  /** Last error reported per gateway (one Event per distinct error). */
  private readonly reported = new Map<string, string>();
  private ctx: ReconcileContext | undefined;
  private readonly log: Logger;
  private readonly now: Clock["now"];

  constructor(private readonly opts: GatewayFleetPluginOptions) {
    this.log = (opts.logger ?? silentLogger).child({ plugin: this.name });
    this.now = opts.now ?? Date.now;
    this.jobs = new KeyedJobs({
      work: (name) => this.work(name),
      logger: this.log,
      retryBaseMs: opts.retryBaseMs ?? 2_000,
      retryMaxMs: opts.retryMaxMs ?? 60_000,
      onError: (name, err) => void this.report(name, "CloudProvisioningFailed", err.message),
    });
  }

  async reconcile(ctx: ReconcileContext): Promise<void> {
    this.ctx = ctx;
    const present = new Set<string>();
    for (const gw of ctx.source.raw("EgressGateway") as GatewayObject[]) {
      const name = gw.metadata.name;
      present.add(name);
      if (!gw.spec?.digitalocean || gw.metadata.deletionTimestamp) continue;
      this.orphans.delete(name);
      this.released.delete(name); // re-created under the same name
      const state = this.fleets.get(name);
      const specChanged = state !== undefined && state.generation !== gw.metadata.generation;
      const due = state === undefined || this.now() - state.attemptAt >= (this.opts.minIntervalMs ?? 60_000);
      const rolled = this.rolling.get(name);
      const rollDue = rolled !== undefined && this.now() >= rolled.until;
      if (specChanged || ((due || rollDue) && !this.jobs.isBusy(name))) this.jobs.schedule(name);
    }
    for (const name of [...this.fleets.keys()])
      if (!present.has(name) && !this.jobs.isBusy(name)) this.fleets.delete(name);
    for (const name of [...this.released]) if (!present.has(name)) this.released.delete(name);
    const sweepInterval = this.opts.sweepIntervalMs ?? this.opts.minIntervalMs ?? 60_000;
    if (!this.sweeping && (this.lastSweepAt === undefined || this.now() - this.lastSweepAt >= sweepInterval))
      this.startSweep();
    // Nothing in the cluster changes when a droplet dies: come back when the next convergence is due.
    const interval = this.opts.minIntervalMs ?? 60_000;
    const due = [...this.fleets]
      .filter(([name]) => !this.jobs.isBusy(name))
      .map(([, f]) => f.attemptAt + interval - this.now());
    due.push((this.lastSweepAt ?? this.now()) + sweepInterval - this.now());
    ctx.requestPass?.(Math.max(250, Math.min(...due)));
  }

  /** Schedules the deletion of every fleet the provider lists whose gateway does not want it. */
  private startSweep(): void {
    this.sweeping = true;
    this.lastSweepAt = this.now();
    void this.opts.provider
      .listGatewayFleets(this.opts.clusterId)
      .then((names) => {
        for (const name of names) {
          if (this.current(name)?.spec?.digitalocean) continue; // its own job keeps or deletes it
          this.orphans.add(name);
          this.jobs.schedule(name);
        }
      })
      .catch((err: unknown) =>
        this.log.warn({ err: (err as Error).message }, "could not list the cloud's gateway fleets"),
      )
      .finally(() => {
        this.sweeping = false;
      });
  }

  async releaseGateway(
    gateway: KubernetesObject & { metadata: { name: string } },
    ctx: ReconcileContext,
  ): Promise<boolean> {
    this.ctx = ctx;
    if (!(gateway as GatewayObject).spec?.digitalocean) return true;
    const name = gateway.metadata.name;
    if (this.released.has(name)) return true;
    // An ensure still running finishes first (same key), then the run sees the deletion.
    if (!this.jobs.isBusy(name) || this.jobs.isRunning(name)) this.jobs.schedule(name);
    return false;
  }

  /** Waits until no cloud work runs (tests, benchmarks). */
  idle(): Promise<void> {
    return this.jobs.idle();
  }

  /** Objects whose cloud work failed last time and is being retried (metrics). */
  failingJobs(): number {
    return this.jobs.failing();
  }

  async stop(): Promise<void> {
    await this.jobs.stop();
  }

  private current(name: string): GatewayObject | undefined {
    return (this.ctx?.source.raw("EgressGateway") as GatewayObject[] | undefined)?.find(
      (g) => g.metadata.name === name,
    );
  }

  private async work(name: string): Promise<void> {
    const gw = this.current(name);
    if (!gw?.spec?.digitalocean) {
      if (this.orphans.has(name)) await this.deleteOrphan(name);
      return;
    }
    if (gw.metadata.deletionTimestamp) return this.release(gw);
    const state: FleetState = { ...this.fleets.get(name), attemptAt: this.now(), generation: gw.metadata.generation };
    this.fleets.set(name, state);
    let spec: GatewayFleetSpec;
    try {
      spec = this.fleetSpec(
        name,
        gw.spec.digitalocean,
        this.opts.sourceCIDRs ?? [...(this.ctx?.snapshot.network.podCIDRs ?? [])],
      );
    } catch (err) {
      if (!(err instanceof GatewayFleetSpecError)) throw err;
      // A controller flag is missing: retrying cannot help; the next convergence tries again.
      await this.report(name, "InvalidCloudSpec", err.message);
      return;
    }
    let hosts: GatewayHost[];
    const ensuring = this.opts.provider.ensureGatewayFleet(spec);
    // A droplet boots for a minute: meanwhile list what exists (new hosts as Provisioning), once.
    let finished = false;
    const progress = setTimeout(() => {
      void this.opts.provider
        .listGatewayHosts(name, this.opts.clusterId)
        .then(async (listed) => {
          if (finished) return;
          state.hosts = listed;
          this.ctx?.requestPass?.(0);
        })
        .catch((err: unknown) =>
          this.log.debug({ gateway: name, err: (err as Error).message }, "progress listing failed"),
        );
    }, this.opts.progressAfterMs ?? 10_000);
    progress.unref();
    try {
      hosts = await ensuring;
    } catch (err) {
      if (err instanceof GatewayFleetSpecError) {
        // Retrying cannot help; the next spec change (or minIntervalMs) tries again.
        await this.report(name, "InvalidCloudSpec", err.message);
        return;
      }
      // Show what exists meanwhile (hosts still booting are listed as Provisioning).
      const listed = await this.opts.provider.listGatewayHosts(name, this.opts.clusterId).catch(() => undefined);
      if (listed) {
        state.hosts = listed;
        this.ctx?.requestPass?.(0);
      }
      throw err;
    } finally {
      finished = true;
      clearTimeout(progress);
    }
    state.hosts = hosts;
    this.reported.delete(name);
    await this.roll(name, hosts);
    this.ctx?.requestPass?.(this.opts.minIntervalMs ?? 60_000);
    this.log.info({ gateway: name, hosts: hosts.map((h) => `${h.name}:${h.status}`) }, "gateway fleet converged");
    this.ctx?.requestPass?.(0);
  }

  private async release(gw: GatewayObject): Promise<void> {
    const name = gw.metadata.name;
    const keep = gw.spec?.digitalocean?.keepAllocatedReservedIPs === true;
    await this.opts.provider.deleteGatewayFleet(name, this.opts.clusterId, { keepAllocatedReservedIPs: keep });
    const left = await this.opts.provider.listGatewayHosts(name, this.opts.clusterId);
    if (left.length > 0)
      throw new Error(`EgressGateway ${name}: ${left.length} droplets still listed after deleting the fleet`);
    this.released.add(name);
    this.fleets.delete(name);
    this.log.info({ gateway: name }, "gateway fleet deleted");
    // The next pass sees releaseGateway answer true and lets the finalizer go.
    this.ctx?.requestPass?.(0);
  }

  /**
   * Rolling replacement, one droplet at a time: a droplet built from another size or image than
   * the spec asks is drained first (status `Draining`: nodes move new connections off it), and
   * only when every slot is Up; after rollDrainMs it is deleted, and the next convergence builds
   * the slot again from the spec, under the same name, and gives it its reserved IP back. A fleet
   * of one droplet is not rolled (there is nowhere to drain to): replace it by hand.
   */
  private async roll(name: string, hosts: readonly GatewayHost[]): Promise<void> {
    const gw = this.current(name);
    const d = gw?.spec?.digitalocean;
    if (!gw || !d || gw.metadata.deletionTimestamp) return;
    const drainMs = this.opts.rollDrainMs ?? 60_000;
    const instances = gw.status?.instances ?? [];
    let current = this.rolling.get(name);
    if (!current) {
      // After a restart: a droplet the status shows draining goes on draining from when it began.
      const was = instances.find((i) => i.health === DRAINING);
      const host = was && hosts.find((h) => h.name === was.name && h.id === was.id);
      if (host) {
        current = { host: host.name, id: host.id, until: (was.since ? Date.parse(was.since) : this.now()) + drainMs };
        this.rolling.set(name, current);
      }
    }
    if (current) {
      if (!hosts.some((h) => h.id === current.id)) {
        this.rolling.delete(name); // gone already: its slot is being rebuilt
        return;
      }
      if (this.now() < current.until) {
        this.ctx?.requestPass?.(current.until - this.now());
        return;
      }
      await this.opts.provider.deleteGatewayHost(name, this.opts.clusterId, current.id);
      this.rolling.delete(name);
      await this.event(
        name,
        "Normal",
        "RollingReplacement",
        `Replacing instance ${current.host} (droplet ${current.id}) with one built from the current spec`,
      );
      this.jobs.schedule(name); // build the slot again now, not at the next interval
      return;
    }
    const count = d.count ?? 2;
    // Every slot Up as judged by the nodes, for the droplets there are now (a status written
    // before the last replacement still shows the old droplet Up).
    const settled =
      count > 1 &&
      hosts.length === count &&
      hosts.every((h) => h.status === "active" && instances.some((i) => i.id === h.id && i.health === "Up")) &&
      instances.length === count;
    const next = hosts.filter((h) => h.outdated).sort((a, b) => a.index - b.index)[0];
    if (!settled || !next) return;
    this.rolling.set(name, { host: next.name, id: next.id, until: this.now() + drainMs });
    this.log.info(
      { gateway: name, instance: next.name, droplet: next.id, drainMs },
      "draining an outdated droplet before replacing it",
    );
    await this.event(
      name,
      "Normal",
      "RollingReplacement",
      `Instance ${next.name} (droplet ${next.id}) was built from another size or image than the ` +
        `spec asks: draining it for ${Math.round(drainMs / 1000)} s, then replacing it`,
    );
    this.ctx?.requestPass?.(drainMs);
  }

  private async event(name: string, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const uid = this.current(name)?.metadata.uid;
    if (this.ctx)
      await new EventRecorder(this.ctx.client, this.log).recordOurs(
        "EgressGateway",
        name,
        uid ? { uid } : {},
        type,
        reason,
        message,
      );
  }

  /** A fleet without a gateway that wants it: deleted once the API server (not a cache) agrees. */
  private async deleteOrphan(name: string): Promise<void> {
    const live = (await this.ctx?.client.readGateway(name)) as GatewayObject | undefined;
    // The cache lagged (the gateway's own job runs next), or a deletion finished meanwhile.
    if (
      !this.ctx ||
      live?.spec?.digitalocean ||
      !(await this.opts.provider.listGatewayFleets(this.opts.clusterId)).includes(name)
    ) {
      this.orphans.delete(name);
      return;
    }
    const why = live ? "the gateway has no digitalocean source any more" : "the gateway is gone";
    this.log.warn({ gateway: name, reason: why }, "deleting a gateway fleet no gateway wants");
    await this.opts.provider.deleteGatewayFleet(name, this.opts.clusterId);
    this.orphans.delete(name); // kept until done: a failed deletion is retried by the job
    this.fleets.delete(name);
    await this.event(
      name,
      "Normal",
      "CloudFleetDeleted",
      `Deleted the DigitalOcean droplets, firewall and allocated reserved IPs of gateway ${name}: ${why}`,
    );
  }

  private fleetSpec(name: string, d: DigitalOceanSpec, sourceCIDRs: string[]): GatewayFleetSpec {
    return {
      gatewayName: name,
      clusterId: this.opts.clusterId,
      region: d.region,
      size: d.size,
      image: d.image ?? "debian-12-x64",
      ...(d.vpcUUID ? { vpcUuid: d.vpcUUID } : {}),
      count: d.count ?? 2,
      ...(d.reservedIPs ? { reservedIPs: d.reservedIPs } : {}),
      allocateReservedIPs: d.allocateReservedIPs ?? true,
      userData: renderUserData(this.opts.userDataTemplate ?? DEFAULT_USER_DATA, name, this.opts.userDataValues),
      nodeTag: d.nodeTag,
      ports: [...(this.opts.ports ?? FORWARD_ALL_FROM_NODES)],
      ...(sourceCIDRs.length > 0 ? { sourceCIDRs } : {}),
    };
  }

  gatewayInstances(gw: GatewayObject): InstanceStatus[] | undefined {
    const hosts = this.fleets.get(gw.metadata.name)?.hosts;
    const d = gw.spec?.digitalocean;
    if (!hosts || !d || gw.metadata.deletionTimestamp) return undefined;
    const draining = this.rolling.get(gw.metadata.name)?.host;
    return instancesFromHosts(hosts, gw.status?.instances, new Date(this.now()).toISOString(), {
      userReservedIPs: d.reservedIPs ?? [],
      allocate: d.allocateReservedIPs ?? true,
      count: d.count ?? 2,
      ...(draining ? { draining } : {}),
    });
  }

  /** One Warning Event per distinct error of a gateway. */
  private async report(name: string, reason: string, message: string): Promise<void> {
    if (this.reported.get(name) === message) return;
    this.reported.set(name, message);
    await this.event(name, "Warning", reason, message);
  }
}

/**
 * status.instances for a fleet's hosts, slot by slot. An instance's name is its droplet's name
 * (stable across replacement: a replaced slot keeps its name, so its planner key and mark stay).
 * A host is `Provisioning` while it is not active, or while it lacks the reserved IP its slot
 * should have (its egress IP is then the one it is getting: the slot's previous one, or the user's);
 * otherwise an unchanged host keeps the health and `since` the core gave it.
 *
 * A slot whose host vanished (destroyed, not replaced yet) keeps its entry as `Provisioning`, up
 * to `count` entries: its name and egress IPs stay, so policies naming them stay valid and nodes
 * drain it instead of seeing the gateway shrink for a moment.
 */
export function instancesFromHosts(
  hosts: readonly GatewayHost[],
  previous: readonly InstanceStatus[] | undefined,
  now: string,
  opts: { userReservedIPs: readonly string[]; allocate: boolean; count?: number; draining?: string },
): InstanceStatus[] {
  const listed = [...hosts]
    .sort((a, b) => a.index - b.index)
    .map((h) => {
      const old = previous?.find((i) => i.name === h.name);
      const wantsReserved = h.index < opts.userReservedIPs.length || opts.allocate;
      const waitingForIP = wantsReserved && !h.reservedIPv4;
      const egressIPs = h.reservedIPv4
        ? [h.reservedIPv4]
        : waitingForIP
          ? old?.egressIPs.length
            ? [...old.egressIPs]
            : opts.userReservedIPs[h.index]
              ? [opts.userReservedIPs[h.index]!]
              : []
          : h.publicIPv4
            ? [h.publicIPv4]
            : [];
      const base = { name: h.name, id: h.id, address: h.privateIPv4 ?? "", egressIPs };
      if (h.status !== "active" || waitingForIP) {
        return { ...base, health: PROVISIONING, since: old?.health === PROVISIONING && old.since ? old.since : now };
      }
      if (h.name === opts.draining)
        return { ...base, health: DRAINING, since: old?.health === DRAINING && old.since ? old.since : now };
      if (old && old.id === h.id && old.health !== PROVISIONING && old.health !== DRAINING && old.health !== "") {
        return { ...base, health: old.health, ...(old.since ? { since: old.since } : {}) };
      }
      return { ...base, health: UNJUDGED, since: now };
    });
  if (opts.count === undefined || !previous) return listed;
  const names = new Set(listed.map((i) => i.name));
  const kept: { at: number; entry: InstanceStatus }[] = [];
  previous.forEach((old, position) => {
    if (names.has(old.name) || listed.length + kept.length >= opts.count!) return;
    kept.push({
      at: position,
      entry: { ...old, health: PROVISIONING, since: old.health === PROVISIONING && old.since ? old.since : now },
    });
  });
  if (kept.length === 0) return listed;
  const slotOf = new Map(hosts.map((h) => [h.name, h.index]));
  return [...listed.map((entry) => ({ at: slotOf.get(entry.name) ?? 0, entry })), ...kept]
    .sort((a, b) => a.at - b.at)
    .map((x) => x.entry);
}
