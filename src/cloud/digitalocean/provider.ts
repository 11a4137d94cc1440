import { isIPv4 } from "node:net";
import { TUNNEL_PORT_MIN, TUNNEL_PORT_MAX } from "../../api/datapath.js";
import { pino, type Logger } from "pino";
import {
  BFD_CONTROL_PORT,
  GatewayFleetSpecError,
  ReservedIPConflictError,
  ReservedIPNotFoundError,
  type CloudProvider,
  type GatewayFleetSpec,
  type GatewayHost,
  type GatewayHostStatus,
  type PortRule,
  type ServiceFirewallSpec,
} from "../provider.js";
import type { DigitalOceanClient } from "./client.js";
import { DigitalOceanApiError, isTransientError, ResourceWaitTimeoutError } from "./errors.js";
import { fleetNames, gatewayOfFleetTag, MANAGED_TAG, serviceFirewallName, type FleetNames } from "./naming.js";
import { realSleep, type Sleep } from "./transport.js";
import type { Droplet, Firewall, FirewallWrite, InboundRule, OutboundRule, ReservedIP, Tag } from "./types.js";
import type { Clock } from "../../util/clock.js";

/**
 * CloudProvider for DigitalOcean.
 *
 * Ownership: gateway droplets carry the fleet tag (see naming.ts) from their create request on,
 * so whatever a crash leaves behind is found again by tag and never created twice. Host `i` is
 * the droplet named `dropletName(i)`; surplus slots, duplicates of a slot and dead droplets
 * (status `off` or `archive`) are deleted, and a missing slot is created again under the same
 * name, so the slot's reserved IP moves to the replacement. Existing droplets are not rebuilt
 * when size, image or user data change. The gateway firewall is found by its name, which embeds
 * a hash of cluster id and gateway name.
 *
 * Reserved IPs carry no tags. An IP the provider allocates is recorded as a tag of its own
 * (`static-egress:rip:<fleet>:<slot>:<ip>`), which outlives droplets. Because the address is
 * unknown until the create call answers, allocation is made crash-safe like this:
 *   1. write an intent record `static-egress:rip-pending:<fleet>:<slot>:<unix time>` (a tag);
 *      the slot's droplet holds no IP at this point;
 *   2. create the IP *assigned to that droplet* (`droplet_id`), so it can be found through it;
 *   3. record it, wait for the assign action, drop the intent.
 * Every ensure/delete first resolves the fleet's intents: an unrecorded IP the slot's droplet
 * holds (after in-flight assignments landed) is the fleet's; then the intent is dropped.
 * Known gap: if the process dies between steps 2 and 3 and then the assignment does not land
 * (the action errors) or someone destroys the droplet before the next reconcile, the IP is left
 * unassigned in the account: nothing distinguishes it from a user's IP whose assignment failed,
 * so it is neither taken nor deleted. Likewise, a record whose IP was deleted is dropped; were the same address
 * handed out again before that (crash between deleting an IP and its record), it would be taken
 * for the fleet's.
 *
 * Firewall of a fleet (applied by the fleet tag):
 *   inbound  UDP 3784 (BFD control) and the nodes' tunnel ports (VXLAN, docs/security-gateway-binding.md)
 *            from the node tag, plus `spec.ports` from the node tag;
 *   outbound all TCP, UDP and ICMP to anywhere (the gateways send the egress traffic, and a DO
 *            firewall without outbound rules blocks all outbound traffic).
 * DO matches tag sources against the droplets' own addresses: pod source addresses would not
 * match, so `spec.sourceCIDRs` (the pod CIDRs) are admitted on the forwarding ports as well.
 */

export interface DigitalOceanProviderOptions {
  client: DigitalOceanClient;
  logger?: Logger;
  sleep?: Sleep;
  now?: Clock["now"];
  /** Interval of state polls (droplet boot, reserved IP unlock), ms (default 2000). */
  pollIntervalMs?: number;
  /** Bound of each wait for an action or an unlock, ms (default 120 s). */
  actionTimeoutMs?: number;
  /** How long ensureGatewayFleet waits for new droplets to become active, ms (default 300 s). */
  dropletActiveTimeoutMs?: number;
  /** Attempts of a lookup-guarded create after ambiguous failures (default 3). */
  createAttempts?: number;
}

interface IpRecord {
  slot: number;
  ip: string;
  tag: string;
}

interface PendingRecord {
  slot: number;
  /** Unix seconds when the allocation started (for operators reading the tag). */
  at: number;
  tag: string;
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];
const MAX_USER_DATA = 64 * 1024;
const MAX_COUNT = 100;
const TAG_NAME = /^[a-zA-Z0-9_\-:]{1,255}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class DigitalOceanProvider implements CloudProvider {
  private readonly client: DigitalOceanClient;
  private readonly log: Logger;
  private readonly sleep: Sleep;
  private readonly now: Clock["now"];
  private readonly pollMs: number;
  private readonly actionTimeoutMs: number;
  private readonly activeTimeoutMs: number;
  private readonly createAttempts: number;

  constructor(opts: DigitalOceanProviderOptions) {
    this.client = opts.client;
    this.log = (opts.logger ?? pino({ level: "silent" })).child({ component: "digitalocean-provider" });
    this.sleep = opts.sleep ?? realSleep;
    this.now = opts.now ?? Date.now;
    this.pollMs = opts.pollIntervalMs ?? 2000;
    this.actionTimeoutMs = opts.actionTimeoutMs ?? 120_000;
    this.activeTimeoutMs = opts.dropletActiveTimeoutMs ?? 300_000;
    this.createAttempts = Math.max(1, opts.createAttempts ?? 3);
  }

  // ================================================================== gateway fleets

  async ensureGatewayFleet(spec: GatewayFleetSpec): Promise<GatewayHost[]> {
    validateFleetSpec(spec);
    const names = fleetNames(spec.clusterId, spec.gatewayName);
    const userIPs = spec.reservedIPs ?? [];
    const log = this.log.child({ cluster: spec.clusterId, gateway: spec.gatewayName });

    const tags = await this.client.listTags();
    await this.ensureTags(tags, [MANAGED_TAG, names.clusterTag, names.fleetTag, spec.nodeTag]);
    // Firewall before droplets: new gateways are covered from their first boot.
    await this.ensureFirewall(names.firewallName, gatewayFirewall(spec, names));

    const fleet = await this.fleetDroplets(names, true);
    const records = recordsFrom(names, tags);
    await this.recoverPendingIPs(names, fleet, userIPs, records, pendingsFrom(names, tags));
    let ips = await this.client.listReservedIPs();
    const kept = await this.pruneDroplets(names, spec.count, fleet, ips, log);
    let changed = kept.size !== fleet.length;
    for (let slot = 0; slot < spec.count; slot++) {
      if (kept.has(slot)) continue;
      kept.set(slot, await this.createDroplet(spec, names, slot, log));
      changed = true;
    }
    const booting = [...kept.values()].some((d) => d.status === "new");
    const bySlot = changed || booting ? await this.waitForActive(names, spec.count) : kept;
    if (changed) ips = await this.client.listReservedIPs();
    ips = await this.reconcileIPs(spec, names, bySlot, records, ips, log);
    return hostsOf(names, [...bySlot.values()], ips, spec.count, spec);
  }

  async listGatewayHosts(gatewayName: string, clusterId: string): Promise<GatewayHost[]> {
    const names = fleetNames(clusterId, gatewayName);
    const droplets = await this.client.listDroplets({ tagName: names.fleetTag });
    return hostsOf(names, droplets, await this.client.listReservedIPs(), undefined);
  }

  async deleteGatewayHost(gatewayName: string, clusterId: string, hostId: string): Promise<boolean> {
    const names = fleetNames(clusterId, gatewayName);
    const d = (await this.fleetDroplets(names, false)).find((x) => String(x.id) === hostId);
    if (!d) return false;
    await this.client.deleteDroplet(d.id);
    this.log.info(
      { cluster: clusterId, gateway: gatewayName, droplet: d.id, name: d.name },
      "deleted gateway droplet for a rolling replacement",
    );
    return true;
  }

  /** From the fleet tags, which ensureGatewayFleet creates first and deleteGatewayFleet deletes last. */
  async listGatewayFleets(clusterId: string): Promise<string[]> {
    const gateways = (await this.client.listTags()).map((t) => gatewayOfFleetTag(clusterId, t.name ?? ""));
    return [...new Set(gateways.filter((g) => g !== undefined))].sort();
  }

  async allocatedReservedIPs(gatewayName: string, clusterId: string): Promise<string[]> {
    return recordsFrom(fleetNames(clusterId, gatewayName), await this.client.listTags()).map((r) => r.ip);
  }

  /**
   * Shared tags (static-egress, the cluster tag, the node tag, the pending mark) are left alone.
   * Kept reserved IPs keep their records (tags of their own, apart from the fleet tag, so the
   * sweep of fleets no gateway wants does not see them).
   */
  async deleteGatewayFleet(
    gatewayName: string,
    clusterId: string,
    opts: { keepAllocatedReservedIPs?: boolean } = {},
  ): Promise<void> {
    const names = fleetNames(clusterId, gatewayName);
    const log = this.log.child({ cluster: clusterId, gateway: gatewayName });
    const fleet = await this.fleetDroplets(names, false);
    const tags = await this.client.listTags();
    const records = recordsFrom(names, tags);
    // Attribute interrupted allocations while the droplets (their best link) still exist.
    await this.recoverPendingIPs(names, fleet, [], records, pendingsFrom(names, tags));
    for (const d of fleet) {
      if (await this.client.deleteDroplet(d.id)) log.info({ droplet: d.id, name: d.name }, "deleted gateway droplet");
    }
    if (opts.keepAllocatedReservedIPs)
      log.info({ ips: records.map((r) => r.ip) }, "kept the fleet's allocated reserved IPs for its next use");
    else for (const r of records) await this.releaseOwnedIP(r, log);
    for (const fw of await this.firewallsNamed(names.firewallName)) {
      if (fw.id && (await this.client.deleteFirewall(fw.id))) log.info({ firewall: fw.id }, "deleted gateway firewall");
    }
    await this.client.deleteTag(names.fleetTag);
  }

  /** Droplets of the fleet: by fleet tag, plus cluster-tagged droplets with a fleet name (tag lost). */
  private async fleetDroplets(names: FleetNames, retag: boolean): Promise<Droplet[]> {
    const tagged = await this.client.listDroplets({ tagName: names.fleetTag });
    const ids = new Set(tagged.map((d) => d.id));
    const strays = (await this.client.listDroplets({ tagName: names.clusterTag })).filter(
      (d) => !ids.has(d.id) && names.slotOf(d.name) !== undefined,
    );
    if (retag && strays.length > 0) {
      await this.client.tagResources(
        names.fleetTag,
        strays.map((d) => ({ resource_id: String(d.id), resource_type: "droplet" as const })),
      );
    }
    return [...tagged, ...strays];
  }

  /** Creates the tags that do not exist yet (tag names are case-insensitive). */
  private async ensureTags(existing: Tag[], wanted: string[]): Promise<void> {
    const have = new Set(existing.map((t) => (t.name ?? "").toLowerCase()));
    for (const tag of wanted) {
      if (have.has(tag.toLowerCase())) continue;
      await this.client.createTag(tag);
      have.add(tag.toLowerCase());
    }
  }

  /** Deletes surplus, dead and duplicate droplets; returns the keeper of each slot. */
  private async pruneDroplets(
    names: FleetNames,
    count: number,
    fleet: Droplet[],
    ips: ReservedIP[],
    log: Logger,
  ): Promise<Map<number, Droplet>> {
    const holders = new Set(ips.map(holderOf).filter((x) => x !== undefined));
    const bySlot = new Map<number, Droplet[]>();
    const doomed: Array<{ d: Droplet; why: string }> = [];
    for (const d of fleet) {
      const slot = names.slotOf(d.name);
      if (slot === undefined || slot >= count) doomed.push({ d, why: "surplus" });
      else if (d.status === "off" || d.status === "archive") doomed.push({ d, why: `dead (${d.status})` });
      else bySlot.set(slot, [...(bySlot.get(slot) ?? []), d]);
    }
    const kept = new Map<number, Droplet>();
    for (const [slot, ds] of bySlot) {
      // Keep the one holding a reserved IP, else an active one, else the oldest.
      const rank = (d: Droplet): number => (holders.has(d.id) ? 0 : 2) + (d.status === "active" ? 0 : 1);
      const [keep, ...dups] = [...ds].sort((a, b) => rank(a) - rank(b) || a.id - b.id);
      kept.set(slot, keep as Droplet);
      for (const d of dups) doomed.push({ d, why: "duplicate" });
    }
    for (const { d, why } of doomed) {
      log.info({ droplet: d.id, name: d.name, why }, "deleting gateway droplet");
      await this.client.deleteDroplet(d.id);
    }
    return kept;
  }

  /**
   * Creates the slot's droplet. The POST is not retried blindly: after an ambiguous failure the
   * droplet is looked up by fleet tag and name first, and only created again when absent.
   */
  private async createDroplet(spec: GatewayFleetSpec, names: FleetNames, slot: number, log: Logger): Promise<Droplet> {
    const name = names.dropletName(slot);
    const image = /^\d+$/.test(spec.image) ? Number(spec.image) : spec.image;
    for (let attempt = 1; ; attempt++) {
      try {
        const { droplet } = await this.client.createDroplet({
          name,
          region: spec.region,
          size: spec.size,
          image,
          tags: [MANAGED_TAG, names.clusterTag, names.fleetTag],
          user_data: spec.userData,
          vpc_uuid: spec.vpcUuid,
          ipv6: false,
          monitoring: true,
        });
        log.info({ droplet: droplet.id, name, slot }, "created gateway droplet");
        return droplet;
      } catch (err) {
        if (!isTransientError(err) || attempt >= this.createAttempts) throw err;
        const found = (await this.client.listDroplets({ tagName: names.fleetTag })).find((d) => d.name === name);
        if (found) return found;
        log.warn({ name, attempt, err: errorText(err) }, "droplet create failed; not found by tag, creating again");
      }
    }
  }

  /** Polls until no slot droplet is `new` any more (or the timeout passes); returns them by slot. */
  private async waitForActive(names: FleetNames, count: number): Promise<Map<number, Droplet>> {
    const started = this.now();
    for (;;) {
      const bySlot = new Map<number, Droplet>();
      for (const d of await this.client.listDroplets({ tagName: names.fleetTag })) {
        const slot = names.slotOf(d.name);
        if (slot !== undefined && slot < count && (!bySlot.has(slot) || d.status === "active")) bySlot.set(slot, d);
      }
      const booting = [...bySlot.values()].some((d) => d.status === "new");
      if (!booting || this.now() - started >= this.activeTimeoutMs) return bySlot;
      await this.sleep(this.pollMs);
    }
  }

  /** Gives every active slot its reserved IP; returns the account's reserved IPs afterwards. */
  private async reconcileIPs(
    spec: GatewayFleetSpec,
    names: FleetNames,
    bySlot: Map<number, Droplet>,
    allRecords: IpRecord[],
    ipsNow: ReservedIP[],
    log: Logger,
  ): Promise<ReservedIP[]> {
    let ips = ipsNow;
    let dirty = false;
    const refresh = async (): Promise<ReservedIP[]> => {
      if (dirty) {
        ips = await this.client.listReservedIPs();
        dirty = false;
      }
      return ips;
    };
    const userIPs = spec.reservedIPs ?? [];
    const existing = new Set(ips.map((ip) => ip.ip));
    for (const ip of userIPs.slice(0, spec.count)) if (!existing.has(ip)) throw new ReservedIPNotFoundError(ip);

    // Records: drop stale ones, release IPs whose slot no longer wants an allocated IP.
    const records: IpRecord[] = [];
    for (const r of allRecords) {
      const wanted = spec.allocateReservedIPs === true && r.slot < spec.count && r.slot >= userIPs.length;
      const duplicate = records.some((x) => x.slot === r.slot);
      if (!existing.has(r.ip)) {
        await this.client.deleteTag(r.tag);
      } else if (!wanted || duplicate || userIPs.includes(r.ip)) {
        await this.releaseOwnedIP(r, log);
        dirty = true;
      } else {
        records.push(r);
      }
    }
    const recorded = new Set(records.map((r) => r.ip));

    for (let slot = 0; slot < spec.count; slot++) {
      const d = bySlot.get(slot);
      if (!d || d.status !== "active") continue;
      const want =
        slot < userIPs.length
          ? userIPs[slot]
          : spec.allocateReservedIPs
            ? (records.find((r) => r.slot === slot)?.ip ?? "allocate")
            : undefined;
      if (want === undefined) continue;
      const held = (await refresh()).find((ip) => holderOf(ip) === d.id);
      if (held?.ip === want) continue;
      dirty = true;
      if (held?.ip) {
        // A host holds one IP: what it holds now (another slot's, or one we do not own) goes first.
        log.info({ ip: held.ip, droplet: d.id, ours: recorded.has(held.ip) }, "unassigning reserved IP to make room");
        await this.unassign(held.ip);
      }
      if (want === "allocate") {
        const ip = await this.allocateIP(names, slot, d, userIPs, log);
        records.push({ slot, ip, tag: names.ipRecordTag(slot, ip) });
        recorded.add(ip);
      } else {
        await this.assignReservedIP(want, String(d.id));
        log.info({ ip: want, droplet: d.id, slot }, "reserved IP assigned");
      }
    }
    return refresh();
  }

  /** Allocation protocol, see the class comment. */
  private async allocateIP(
    names: FleetNames,
    slot: number,
    d: Droplet,
    userIPs: string[],
    log: Logger,
  ): Promise<string> {
    const pending: PendingRecord = { slot, at: Math.floor(this.now() / 1000), tag: "" };
    pending.tag = names.pendingTag(slot, pending.at);
    await this.client.createTag(pending.tag);
    for (let attempt = 1; ; attempt++) {
      let ip: string | undefined;
      let actionId: number | undefined;
      try {
        const created = await this.client.createReservedIP({ droplet_id: d.id });
        ip = created.reservedIP.ip;
        actionId = created.actionIds[0];
        if (!ip) throw new Error("reservedIPs_create answered without an address");
      } catch (err) {
        if (!isTransientError(err) || attempt >= this.createAttempts) throw err;
        const recorded = new Set(recordsFrom(names, await this.client.listTags()).map((r) => r.ip));
        const found = await this.pendingIPOf([d.id], recorded, userIPs);
        if (found === undefined) {
          log.warn(
            { droplet: d.id, attempt, err: errorText(err) },
            "reserved IP create failed; none found, creating again",
          );
          continue;
        }
        ip = found;
      }
      await this.client.createTag(names.ipRecordTag(slot, ip));
      log.info({ ip, droplet: d.id, slot }, "allocated reserved IP");
      if (actionId !== undefined)
        await this.client.waitForAction(
          { id: actionId, reservedIP: ip },
          { intervalMs: this.pollMs, timeoutMs: this.actionTimeoutMs },
        );
      else await this.waitUnlocked(ip);
      await this.client.deleteTag(pending.tag);
      return ip;
    }
  }

  /**
   * Crash recovery of allocations: for every intent record of the fleet, records the IP that
   * allocation created (see pendingIPOf), then drops the intent.
   */
  private async recoverPendingIPs(
    names: FleetNames,
    fleet: Droplet[],
    userIPs: string[],
    records: IpRecord[],
    pendings: PendingRecord[],
  ): Promise<void> {
    if (pendings.length === 0) return;
    const recorded = new Set(records.map((r) => r.ip));
    for (const p of pendings) {
      const slotDroplets = fleet.filter((d) => names.slotOf(d.name) === p.slot).map((d) => d.id);
      const ip = await this.pendingIPOf(slotDroplets, recorded, userIPs);
      if (ip !== undefined) {
        const tag = names.ipRecordTag(p.slot, ip);
        await this.client.createTag(tag);
        records.push({ slot: p.slot, ip, tag });
        recorded.add(ip);
        this.log.info({ ip, slot: p.slot }, "recovered a reserved IP allocated before a crash");
      }
      await this.client.deleteTag(p.tag);
    }
  }

  /**
   * The IP an interrupted allocation created, if any. It was created assigned to the slot's
   * droplet, which held no IP then: so an unrecorded, non-user IP that droplet holds is it
   * (waiting first while unassigned IPs are still being assigned). An unassigned IP is never
   * taken: nothing tells it apart from someone else's (a user's IP whose assignment failed looks
   * exactly like ours whose assignment failed).
   */
  private async pendingIPOf(
    dropletIds: number[],
    recorded: Set<string>,
    userIPs: string[],
  ): Promise<string | undefined> {
    const unattributed = (ip: ReservedIP): ip is ReservedIP & { ip: string } =>
      !!ip.ip && !recorded.has(ip.ip) && !userIPs.includes(ip.ip);
    const started = this.now();
    for (;;) {
      const ips = await this.client.listReservedIPs();
      const held = ips.find((ip) => unattributed(ip) && dropletIds.includes(holderOf(ip) ?? -1));
      if (held) return held.ip;
      const inFlight = ips.some((ip) => unattributed(ip) && ip.locked === true && holderOf(ip) === undefined);
      if (!inFlight) return undefined;
      const waited = this.now() - started;
      if (waited >= this.actionTimeoutMs)
        throw new ResourceWaitTimeoutError("unassigned reserved IPs", "settled", waited);
      await this.sleep(this.pollMs);
    }
  }

  /** Deletes an IP the fleet allocated (unassigning it first), then its record. */
  private async releaseOwnedIP(r: IpRecord, log: Logger): Promise<void> {
    const started = this.now();
    for (;;) {
      const ip = await this.client.getReservedIP(r.ip);
      if (!ip) break;
      if (ip.locked !== true) {
        try {
          if (holderOf(ip) !== undefined) {
            const a = await this.client.postReservedIPAction(r.ip, { type: "unassign" });
            await this.client.waitForAction(
              { id: a.id ?? 0, reservedIP: r.ip },
              { intervalMs: this.pollMs, timeoutMs: this.actionTimeoutMs },
            );
            continue;
          }
          await this.client.deleteReservedIP(r.ip);
          log.info({ ip: r.ip }, "released allocated reserved IP");
          break;
        } catch (err) {
          // 422: it got locked meanwhile (an action started); wait and look again.
          if (!(err instanceof DigitalOceanApiError && err.status === 422)) throw err;
        }
      }
      const waited = this.now() - started;
      if (waited >= this.actionTimeoutMs) throw new ResourceWaitTimeoutError(`reserved IP ${r.ip}`, "released", waited);
      await this.sleep(this.pollMs);
    }
    await this.client.deleteTag(r.tag);
  }

  private async unassign(ip: string): Promise<void> {
    await this.waitUnlocked(ip);
    const rip = await this.client.getReservedIP(ip);
    if (!rip || holderOf(rip) === undefined) return;
    const a = await this.client.postReservedIPAction(ip, { type: "unassign" });
    await this.client.waitForAction(
      { id: a.id ?? 0, reservedIP: ip },
      { intervalMs: this.pollMs, timeoutMs: this.actionTimeoutMs },
    );
  }

  private async waitUnlocked(ip: string): Promise<ReservedIP | undefined> {
    const started = this.now();
    for (;;) {
      const rip = await this.client.getReservedIP(ip);
      if (!rip || rip.locked !== true) return rip;
      const waited = this.now() - started;
      if (waited >= this.actionTimeoutMs) throw new ResourceWaitTimeoutError(`reserved IP ${ip}`, "unlocked", waited);
      await this.sleep(this.pollMs);
    }
  }

  // ================================================================== reserved IPs

  async assignReservedIP(ip: string, hostId: string): Promise<void> {
    const dropletId = parseHostId(hostId);
    const started = this.now();
    for (;;) {
      const rip = await this.client.getReservedIP(ip);
      if (!rip) throw new ReservedIPNotFoundError(ip);
      if (rip.locked !== true) {
        if (holderOf(rip) === dropletId) return;
        const other = (await this.client.listReservedIPs()).find((x) => holderOf(x) === dropletId && x.ip !== ip);
        if (other?.ip) throw new ReservedIPConflictError(ip, hostId, other.ip);
        try {
          const a = await this.client.postReservedIPAction(ip, { type: "assign", droplet_id: dropletId });
          const remaining = Math.max(1, this.actionTimeoutMs - (this.now() - started));
          await this.client.waitForAction(
            { id: a.id ?? 0, reservedIP: ip },
            { intervalMs: this.pollMs, timeoutMs: remaining },
          );
          continue; // read back to confirm
        } catch (err) {
          if (err instanceof DigitalOceanApiError && err.status === 422) {
            // Locked IP or a droplet with a pending event; a droplet that is gone will not recover.
            if (!(await this.client.getDroplet(dropletId))) throw err;
          } else if (!isTransientError(err)) {
            throw err;
          }
        }
      }
      const waited = this.now() - started;
      if (waited >= this.actionTimeoutMs)
        throw new ResourceWaitTimeoutError(`reserved IP ${ip}`, `assigned to droplet ${dropletId}`, waited);
      await this.sleep(this.pollMs);
    }
  }

  async reservedIPHolder(ip: string): Promise<string | undefined> {
    const rip = await this.client.getReservedIP(ip);
    if (!rip) throw new ReservedIPNotFoundError(ip);
    const holder = holderOf(rip);
    return holder === undefined ? undefined : String(holder);
  }

  // ================================================================== firewalls

  async ensureServiceFirewall(spec: ServiceFirewallSpec): Promise<string> {
    if (spec.ports.length === 0) throw new GatewayFleetSpecError("ports", "at least one port rule is needed");
    if (spec.hostIds.length > 10)
      throw new GatewayFleetSpecError("hostIds", "a DigitalOcean firewall takes at most 10 droplets by ID");
    spec.ports.forEach((p, i) => validatePortRule(p, `ports[${i}]`));
    const sources = spec.sourceAddresses ?? ANYWHERE;
    const name = serviceFirewallName(spec.clusterId, spec.name);
    const body: FirewallWrite = {
      name,
      inbound_rules: dedupe(
        spec.ports.map((p) => ({ protocol: p.protocol, ports: portsOf(p), sources: { addresses: [...sources] } })),
      ),
      outbound_rules: [],
      droplet_ids: [...new Set(spec.hostIds.map(parseHostId))],
      tags: [],
    };
    return this.ensureFirewall(name, body);
  }

  async deleteServiceFirewall(clusterId: string, name: string): Promise<void> {
    for (const fw of await this.firewallsNamed(serviceFirewallName(clusterId, name))) {
      if (fw.id) await this.client.deleteFirewall(fw.id);
    }
  }

  async existingServiceFirewalls(clusterId: string, names: readonly string[]): Promise<string[]> {
    const have = new Set((await this.client.listFirewalls()).map((fw) => fw.name));
    return names.filter((n) => have.has(serviceFirewallName(clusterId, n)));
  }

  async listReservedIPs(): Promise<string[]> {
    return (await this.client.listReservedIPs()).map((r) => r.ip).filter((ip): ip is string => typeof ip === "string");
  }

  /** Finds the firewall by name (deleting duplicates), creates or updates it; returns its id. */
  private async ensureFirewall(name: string, desired: FirewallWrite): Promise<string> {
    const found = await this.firewallsNamed(name);
    const [keep, ...dups] = found;
    for (const dup of dups) if (dup.id) await this.client.deleteFirewall(dup.id);
    if (keep?.id) {
      if (!sameFirewall(keep, desired)) {
        this.log.info({ firewall: keep.id, name }, "updating firewall");
        await this.client.updateFirewall(keep.id, desired);
      }
      return keep.id;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        const fw = await this.client.createFirewall(desired);
        this.log.info({ firewall: fw.id, name }, "created firewall");
        return required(fw.id, "firewall id");
      } catch (err) {
        if (!isTransientError(err) || attempt >= this.createAttempts) throw err;
        const again = (await this.firewallsNamed(name))[0];
        if (again?.id) return again.id;
      }
    }
  }

  private async firewallsNamed(name: string): Promise<Firewall[]> {
    return (await this.client.listFirewalls())
      .filter((fw) => fw.name === name)
      .sort((a, b) => (a.created_at ?? "").localeCompare(b.created_at ?? "") || (a.id ?? "").localeCompare(b.id ?? ""));
  }
}

// ==================================================================== pure helpers

function recordsFrom(names: FleetNames, tags: Tag[]): IpRecord[] {
  const out: IpRecord[] = [];
  for (const t of tags) {
    const parsed = t.name ? names.parseIpRecordTag(t.name) : undefined;
    if (parsed && t.name) out.push({ ...parsed, tag: t.name });
  }
  return out.sort((a, b) => a.slot - b.slot || a.ip.localeCompare(b.ip));
}

function pendingsFrom(names: FleetNames, tags: Tag[]): PendingRecord[] {
  const out: PendingRecord[] = [];
  for (const t of tags) {
    const parsed = t.name ? names.parsePendingTag(t.name) : undefined;
    if (parsed && t.name) out.push({ ...parsed, tag: t.name });
  }
  return out.sort((a, b) => a.at - b.at || a.slot - b.slot);
}

function hostsOf(
  names: FleetNames,
  droplets: Droplet[],
  ips: ReservedIP[],
  count: number | undefined,
  spec?: GatewayFleetSpec,
): GatewayHost[] {
  const held = new Map<number, string>();
  for (const ip of ips) {
    const h = holderOf(ip);
    if (h !== undefined && ip.ip) held.set(h, ip.ip);
  }
  const hosts: GatewayHost[] = [];
  for (const d of droplets) {
    const index = names.slotOf(d.name);
    if (index === undefined || (count !== undefined && index >= count)) continue;
    const host = toHost(d, index, held.get(d.id));
    if (spec)
      host.outdated = d.size_slug !== spec.size || (String(d.image?.id) !== spec.image && d.image?.slug !== spec.image);
    hosts.push(host);
  }
  return hosts.sort((a, b) => a.index - b.index || Number(a.id) - Number(b.id));
}

function gatewayFirewall(spec: GatewayFleetSpec, names: FleetNames): FirewallWrite {
  const fromNodes = { tags: [spec.nodeTag] };
  // Forwarded packets carry the pods' addresses: those are admitted too, on the forwarding ports.
  const forwarded = spec.sourceCIDRs?.length ? { tags: [spec.nodeTag], addresses: [...spec.sourceCIDRs] } : fromNodes;
  const inbound: InboundRule[] = [
    { protocol: "udp", ports: String(BFD_CONTROL_PORT), sources: fromNodes },
    { protocol: "udp", ports: `${TUNNEL_PORT_MIN}-${TUNNEL_PORT_MAX}`, sources: fromNodes },
    ...spec.ports.map((p) => ({ protocol: p.protocol, ports: portsOf(p), sources: forwarded })),
  ];
  const outbound: OutboundRule[] = (["tcp", "udp", "icmp"] as const).map((protocol) => ({
    protocol,
    ports: "0",
    destinations: { addresses: [...ANYWHERE] },
  }));
  return {
    name: names.firewallName,
    inbound_rules: dedupe(inbound),
    outbound_rules: outbound,
    tags: [names.fleetTag],
    droplet_ids: [],
  };
}

/** DO port string: "0" means all ports (and is what ICMP rules carry). */
function portsOf(p: PortRule): string {
  if (p.protocol === "icmp") return "0";
  const ports = (p.ports ?? "all").trim();
  return ports === "all" || ports === "1-65535" ? "0" : ports;
}

function dedupe<T>(rules: T[]): T[] {
  const seen = new Set<string>();
  return rules.filter((r) => {
    const k = JSON.stringify(r);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

type RuleLike = { protocol?: string; ports?: string; sources?: unknown; destinations?: unknown };

function normRules(rules: readonly RuleLike[] | null | undefined): string {
  const norm = (rules ?? []).map((r) => {
    const target = (r.sources ?? r.destinations ?? {}) as Record<string, unknown>;
    const t: Record<string, unknown> = {};
    for (const key of ["addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags"]) {
      const v = target[key];
      if (Array.isArray(v) && v.length > 0)
        t[key] = v.map((x) => (key === "tags" ? String(x).toLowerCase() : x)).sort();
    }
    const ports = r.protocol === "icmp" ? "0" : r.ports === "all" || r.ports === "1-65535" ? "0" : r.ports;
    return JSON.stringify([r.protocol, ports, t]);
  });
  return JSON.stringify(norm.sort());
}

function sameFirewall(fw: Firewall, want: FirewallWrite): boolean {
  const tags = (xs: readonly string[] | null | undefined): string =>
    JSON.stringify((xs ?? []).map((t) => t.toLowerCase()).sort());
  const ids = (xs: readonly number[] | null | undefined): string =>
    JSON.stringify([...(xs ?? [])].sort((a, b) => a - b));
  return (
    fw.name === want.name &&
    normRules(fw.inbound_rules) === normRules(want.inbound_rules) &&
    normRules(fw.outbound_rules) === normRules(want.outbound_rules) &&
    tags(fw.tags) === tags(want.tags) &&
    ids(fw.droplet_ids) === ids(want.droplet_ids)
  );
}

function holderOf(ip: ReservedIP): number | undefined {
  const d = ip.droplet;
  if (d && typeof d === "object" && "id" in d && typeof d.id === "number") return d.id;
  return undefined;
}

function toHost(d: Droplet, index: number, reservedIPv4: string | undefined): GatewayHost {
  const v4 = d.networks.v4 ?? [];
  const status: GatewayHostStatus = d.status;
  return {
    id: String(d.id),
    name: d.name,
    index,
    privateIPv4: v4.find((n) => n.type === "private")?.ip_address,
    publicIPv4: v4.find((n) => n.type === "public" && n.ip_address !== reservedIPv4)?.ip_address,
    reservedIPv4,
    status,
  };
}

function parseHostId(hostId: string): number {
  if (!/^[1-9]\d{0,15}$/.test(hostId))
    throw new GatewayFleetSpecError("hostId", `${JSON.stringify(hostId)} is not a droplet id`);
  return Number(hostId);
}

function required<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`DigitalOcean answer lacks ${what}`);
  return v;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function validatePortRule(p: PortRule, field: string): void {
  if (!["tcp", "udp", "icmp"].includes(p.protocol))
    throw new GatewayFleetSpecError(`${field}.protocol`, `unknown protocol ${JSON.stringify(p.protocol)}`);
  if (p.protocol === "icmp" || p.ports === undefined) return;
  const ports = p.ports.trim();
  if (ports === "all" || ports === "0") return;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo < 1 || hi > 65535 || hi < lo)
    throw new GatewayFleetSpecError(`${field}.ports`, `invalid ports ${JSON.stringify(p.ports)}`);
}

export function validateFleetSpec(spec: GatewayFleetSpec): void {
  const nonEmpty = (field: keyof GatewayFleetSpec): void => {
    const v = spec[field];
    if (typeof v !== "string" || v.trim() === "") throw new GatewayFleetSpecError(field, "must be a non-empty string");
  };
  (["gatewayName", "clusterId", "region", "size", "image"] as const).forEach(nonEmpty);
  if (!Number.isInteger(spec.count) || spec.count < 0 || spec.count > MAX_COUNT) {
    throw new GatewayFleetSpecError("count", `must be an integer from 0 to ${MAX_COUNT}`);
  }
  if (!TAG_NAME.test(spec.nodeTag))
    throw new GatewayFleetSpecError("nodeTag", "tags may hold letters, digits, ':', '-' and '_' (at most 255)");
  if (spec.vpcUuid !== undefined && !UUID.test(spec.vpcUuid))
    throw new GatewayFleetSpecError("vpcUuid", "must be a UUID");
  if (Buffer.byteLength(spec.userData) > MAX_USER_DATA)
    throw new GatewayFleetSpecError("userData", "must not exceed 64 KiB");
  const ips = spec.reservedIPs ?? [];
  ips.forEach((ip, i) => {
    if (!isIPv4(ip))
      throw new GatewayFleetSpecError(`reservedIPs[${i}]`, `${JSON.stringify(ip)} is not an IPv4 address`);
  });
  if (new Set(ips).size !== ips.length) throw new GatewayFleetSpecError("reservedIPs", "must not repeat an address");
  spec.ports.forEach((p, i) => validatePortRule(p, `ports[${i}]`));
  (spec.sourceCIDRs ?? []).forEach((c, i) => {
    const [ip, bits] = c.split("/");
    if (!ip || !isIPv4(ip) || !/^\d{1,2}$/.test(bits ?? "") || Number(bits) > 32)
      throw new GatewayFleetSpecError(`sourceCIDRs[${i}]`, `${JSON.stringify(c)} is not an IPv4 CIDR`);
  });
}
