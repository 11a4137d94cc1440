import { randomUUID } from "node:crypto";
import {
  findImage,
  findRegion,
  findSize,
  REGION_SLUGS,
  type ImageInfo,
  type RegionInfo,
  type SizeInfo,
} from "./catalog.js";
import { AddressPool, ipToInt } from "./pool.js";
import { StaticEgressError } from "../../util/errors.js";

/**
 * In-memory model of the DigitalOcean resources the stand-in serves. Domain rules follow the
 * public API documentation where it is explicit and are deliberately strict where it is not
 * (documented per rule), so that a client that works here does not rely on leniency:
 *
 * - a droplet is `new` and locked until its create action completes; actions on a locked droplet
 *   answer 422 "Droplet already has a pending event";
 * - a droplet holds at most one reserved IP; assigning a second one answers 422;
 * - a reserved IP with an action in progress is locked; actions on it and its deletion answer 422;
 * - an assigned reserved IP cannot be deleted (422): unassign it first;
 * - firewalls accept only existing tags (at most 5) and existing droplet IDs (at most 10);
 * - tagging a resource needs an existing tag (404), droplet creation creates its tags.
 */

export class StandinError extends StaticEgressError {
  constructor(
    readonly status: number,
    readonly errorId: string,
    message: string,
  ) {
    super(message);
    this.name = "StandinError";
  }
}

const notFound = (what: string): StandinError =>
  new StandinError(404, "not_found", `The resource you were accessing could not be found. (${what})`);
const unprocessable = (message: string): StandinError => new StandinError(422, "unprocessable_entity", message);

export interface ActionTiming {
  /** Milliseconds until the action finishes; Infinity keeps it in progress forever. */
  durationMs: number;
  errored: boolean;
}

export interface StateOptions {
  now: () => number;
  dropletBootMs: number;
  actionDurationMs: number;
  /** Decides duration and outcome of each new action given its default duration (faults hook in here). */
  actionTiming: (type: string, resourceType: string, defaultDurationMs: number) => ActionTiming;
  /** Absolute base URL for links (pagination, action hrefs). */
  baseUrl: () => string;
  /** Address plan of the simulated account (the lab fits it to its own segments). */
  addressing?: StandinAddressing;
}

/**
 * Where the stand-in takes addresses from. Defaults: public IPv4 of droplets from
 * 198.51.100.0/24 and 192.0.2.0/24, reserved IPs from 203.0.113.0/24, one default VPC per region
 * in 10.1xx.0.0/20. The lab replaces them so that droplets land on its own segments.
 */
export interface StandinAddressing {
  publicAddresses?: string[];
  reservedAddresses?: string[];
  /** VPCs created at start (and after reset); one with `isDefault` replaces its region's default. */
  vpcs?: Array<{ region: string; name: string; ipRange: string; isDefault?: boolean; addresses?: string[] }>;
}

type ResourceType = "droplet" | "reserved_ip" | "floating_ip";

export interface DropletRecord {
  id: number;
  name: string;
  region: string;
  size: string;
  imageId: number;
  tags: string[];
  vpcUuid: string;
  userData: string | undefined;
  createdAt: number;
  createActionId: number;
  power: "on" | "off";
  privateIp: string;
  publicIp: string | undefined;
  /** Anchor IPv4 of the public interface (metadata service), where reserved-IP traffic arrives; none without public networking. */
  anchorIp?: string | undefined;
  ipv6: string | undefined;
  features: string[];
}

export interface IpRecord {
  ip: string;
  region: string;
  dropletId: number | null;
  projectId: string;
}

export interface ActionRecord {
  id: number;
  type: string;
  resourceType: ResourceType;
  resourceId: number | null;
  /** The reserved/floating IP an IP action belongs to. */
  ip: string | undefined;
  /** The droplet an action targets (droplet actions, IP assign). */
  dropletId: number | undefined;
  region: string;
  startedAt: number;
  completesAt: number;
  willError: boolean;
  status: "in-progress" | "completed" | "errored";
  completedAt: number | undefined;
  /** Applies the action's effect; false turns the action into `errored`. */
  apply: (() => boolean) | undefined;
}

export interface RuleTarget {
  addresses?: string[];
  droplet_ids?: number[];
  load_balancer_uids?: string[];
  kubernetes_ids?: string[];
  tags?: string[];
}

export interface FirewallRule {
  protocol: "tcp" | "udp" | "icmp";
  ports: string;
  sources?: RuleTarget;
  destinations?: RuleTarget;
}

export interface FirewallRecord {
  id: string;
  name: string;
  createdAt: number;
  inbound: FirewallRule[];
  outbound: FirewallRule[];
  dropletIds: number[];
  tags: string[];
}

export interface VpcRecord {
  id: string;
  name: string;
  description: string;
  region: string;
  ipRange: string;
  isDefault: boolean;
  createdAt: number;
  pool: AddressPool;
}

export interface DropletCreateInput {
  name: string;
  region?: string;
  size: string;
  image: string | number;
  tags?: string[] | null;
  user_data?: string;
  vpc_uuid?: string;
  ipv6?: boolean;
  monitoring?: boolean;
  backups?: boolean;
  public_networking?: boolean;
}

export interface FirewallInput {
  name: string;
  inbound_rules?: FirewallRule[] | null;
  outbound_rules?: FirewallRule[] | null;
  droplet_ids?: number[] | null;
  tags?: string[] | null;
}

const TAG_NAME = /^[a-zA-Z0-9_\-:]+$/;
const MAX_USER_DATA = 64 * 1024;
const FIREWALL_MAX_DROPLETS = 10;
const FIREWALL_MAX_TAGS = 5;
const PROJECT_ID = "746c6152-2fa2-11ed-92d3-27aaa54e4988";

export class StandinState {
  readonly droplets = new Map<number, DropletRecord>();
  readonly ips = new Map<string, IpRecord>();
  readonly actions = new Map<number, ActionRecord>();
  readonly firewalls = new Map<string, FirewallRecord>();
  /** Lower-cased name -> canonical name (tag names are case-stable, lookups case-insensitive). */
  readonly tags = new Map<string, string>();
  readonly vpcs = new Map<string, VpcRecord>();

  private nextDropletId = 3164444;
  private nextActionId = 36804636;
  private readonly publicPool: AddressPool;
  private readonly reservedPool: AddressPool;
  private ipv6Counter = 1;
  /** Anchor IPs, one per droplet with public networking (DigitalOcean uses 10.x/16 per region). */
  private readonly anchorPool = AddressPool.fromCidr("10.20.0.0/16");

  constructor(private readonly opts: StateOptions) {
    const a = opts.addressing;
    this.publicPool = a?.publicAddresses
      ? new AddressPool([...a.publicAddresses])
      : AddressPool.union(AddressPool.fromCidr("198.51.100.0/24"), AddressPool.fromCidr("192.0.2.0/24"));
    this.reservedPool = a?.reservedAddresses
      ? new AddressPool([...a.reservedAddresses])
      : AddressPool.fromCidr("203.0.113.0/24");
    this.seedVpcs();
  }

  now(): number {
    return this.opts.now();
  }

  /** Drops every resource and re-creates the default VPCs. */
  reset(): void {
    this.droplets.clear();
    this.ips.clear();
    this.actions.clear();
    this.firewalls.clear();
    this.tags.clear();
    this.vpcs.clear();
    this.publicPool.reset();
    this.reservedPool.reset();
    this.anchorPool.reset();
    this.seedVpcs();
  }

  private seedVpcs(): void {
    const extra = this.opts.addressing?.vpcs ?? [];
    for (const v of extra) {
      const id = randomUUID();
      const pool = v.addresses ? new AddressPool([...v.addresses]) : AddressPool.fromCidr(v.ipRange);
      this.vpcs.set(id, {
        id,
        name: v.name,
        description: "",
        region: v.region,
        ipRange: v.ipRange,
        isDefault: v.isDefault ?? false,
        createdAt: this.now(),
        pool,
      });
    }
    REGION_SLUGS.forEach((region, i) => {
      if (extra.some((v) => v.region === region && v.isDefault)) return;
      const ipRange = `10.${100 + i}.0.0/20`;
      const id = randomUUID();
      this.vpcs.set(id, {
        id,
        name: `default-${region}`,
        description: "",
        region,
        ipRange,
        isDefault: true,
        createdAt: this.now(),
        pool: AddressPool.fromCidr(ipRange),
      });
    });
  }

  // ---------------------------------------------------------------- time

  /** Completes every action whose time has come, in completion order. */
  tick(): void {
    const now = this.now();
    for (;;) {
      let due: ActionRecord | undefined;
      for (const a of this.actions.values()) {
        if (a.status === "in-progress" && a.completesAt <= now && (!due || a.completesAt < due.completesAt)) due = a;
      }
      if (!due) return;
      this.finish(due);
    }
  }

  private finish(a: ActionRecord): void {
    let ok = !a.willError;
    if (ok && a.apply) ok = a.apply();
    a.status = ok ? "completed" : "errored";
    a.completedAt = Math.max(a.completesAt, a.startedAt);
    if (a.type === "create" && a.resourceType === "droplet" && !ok && a.resourceId !== null) {
      // A failed create leaves no droplet behind.
      this.removeDroplet(a.resourceId);
    }
  }

  /** Earliest completion time among in-progress actions that will ever finish. */
  nextCompletion(): number | undefined {
    let t: number | undefined;
    for (const a of this.actions.values()) {
      if (a.status === "in-progress" && Number.isFinite(a.completesAt))
        t = t === undefined ? a.completesAt : Math.min(t, a.completesAt);
    }
    return t;
  }

  private newAction(
    type: string,
    resourceType: ResourceType,
    resourceId: number | null,
    region: string,
    extra: { ip?: string; dropletId?: number; apply?: () => boolean; durationMs?: number },
  ): ActionRecord {
    const timing = this.opts.actionTiming(type, resourceType, extra.durationMs ?? this.opts.actionDurationMs);
    const duration = timing.durationMs;
    const now = this.now();
    const action: ActionRecord = {
      id: this.nextActionId++,
      type,
      resourceType,
      resourceId,
      ip: extra.ip,
      dropletId: extra.dropletId,
      region,
      startedAt: now,
      completesAt: now + duration,
      willError: timing.errored,
      status: "in-progress",
      completedAt: undefined,
      apply: extra.apply,
    };
    this.actions.set(action.id, action);
    if (duration <= 0) this.finish(action);
    return action;
  }

  private inProgress(pred: (a: ActionRecord) => boolean): ActionRecord | undefined {
    for (const a of this.actions.values()) if (a.status === "in-progress" && pred(a)) return a;
    return undefined;
  }

  // ---------------------------------------------------------------- droplets

  dropletStatus(d: DropletRecord): "new" | "active" | "off" {
    const create = this.actions.get(d.createActionId);
    if (create && create.status !== "completed") return "new";
    return d.power === "off" ? "off" : "active";
  }

  dropletLocked(d: DropletRecord): boolean {
    return this.inProgress((a) => a.resourceType === "droplet" && a.resourceId === d.id) !== undefined;
  }

  getDroplet(id: number): DropletRecord {
    const d = this.droplets.get(id);
    if (!d) throw notFound(`droplet ${id}`);
    return d;
  }

  listDroplets(filter: { tagName?: string; name?: string }): DropletRecord[] {
    let out = [...this.droplets.values()];
    if (filter.tagName !== undefined) {
      const want = filter.tagName.toLowerCase();
      out = out.filter((d) => d.tags.some((t) => t.toLowerCase() === want));
    }
    if (filter.name !== undefined) {
      const want = filter.name.toLowerCase();
      out = out.filter((d) => d.name.toLowerCase() === want);
    }
    return out.sort((a, b) => a.id - b.id);
  }

  /** `fixed` addresses bypass the pools (droplets made behind the API's back, e.g. the lab's nodes). */
  createDroplet(
    input: DropletCreateInput,
    fixed?: { privateIp: string; publicIp?: string },
  ): { droplet: DropletRecord; action: ActionRecord } {
    const regionSlug = input.region ?? REGION_SLUGS[0]!;
    const region = findRegion(regionSlug);
    if (!region) throw unprocessable(`Region ${JSON.stringify(regionSlug)} is not available.`);
    const size = findSize(input.size);
    if (!size || !size.regions.includes(region.slug))
      throw unprocessable(`Size ${JSON.stringify(input.size)} is not available in ${region.slug}.`);
    const image = findImage(input.image);
    if (!image)
      throw unprocessable(`You specified an invalid image for Droplet creation: ${JSON.stringify(input.image)}.`);
    if (input.user_data !== undefined && Buffer.byteLength(input.user_data) > MAX_USER_DATA) {
      throw unprocessable("user_data must not exceed 64 KiB.");
    }
    let vpc: VpcRecord | undefined;
    if (input.vpc_uuid !== undefined) {
      vpc = this.vpcs.get(input.vpc_uuid);
      if (!vpc) throw unprocessable(`VPC ${input.vpc_uuid} was not found.`);
      if (vpc.region !== region.slug) throw unprocessable(`VPC ${input.vpc_uuid} is not in region ${region.slug}.`);
    } else {
      vpc = [...this.vpcs.values()].find((v) => v.region === region.slug && v.isDefault);
      if (!vpc) throw unprocessable(`region ${region.slug} has no default VPC`);
    }
    const tags = this.canonicalTags(input.tags ?? [], true);
    const privateIp = fixed ? fixed.privateIp : vpc.pool.take();
    const publicIp = input.public_networking === false ? undefined : fixed ? fixed.publicIp : this.publicPool.take();
    if (!privateIp || (input.public_networking !== false && !publicIp)) {
      if (privateIp) vpc.pool.release(privateIp);
      if (publicIp) this.publicPool.release(publicIp);
      throw unprocessable("The stand-in ran out of addresses.");
    }
    const id = this.nextDropletId++;
    const features = ["private_networking"];
    if (input.ipv6) features.push("ipv6");
    if (input.monitoring) features.push("monitoring");
    if (input.backups) features.push("backups");
    const droplet: DropletRecord = {
      id,
      name: input.name,
      region: region.slug,
      size: size.slug,
      imageId: image.id,
      tags,
      vpcUuid: vpc.id,
      userData: input.user_data,
      createdAt: this.now(),
      createActionId: 0,
      power: "on",
      privateIp,
      publicIp,
      anchorIp: publicIp ? this.anchorPool.take() : undefined,
      ipv6: input.ipv6 ? `2001:db8:0:1::${(this.ipv6Counter++).toString(16)}` : undefined,
      features,
    };
    this.droplets.set(id, droplet);
    const action = this.newAction("create", "droplet", id, region.slug, { durationMs: this.opts.dropletBootMs });
    droplet.createActionId = action.id;
    return { droplet, action };
  }

  destroyDroplet(id: number): void {
    this.getDroplet(id);
    this.removeDroplet(id);
  }

  destroyDropletsByTag(tagName: string): void {
    for (const d of this.listDroplets({ tagName })) this.removeDroplet(d.id);
  }

  private removeDroplet(id: number): void {
    const d = this.droplets.get(id);
    if (!d) return;
    this.droplets.delete(id);
    for (const ip of this.ips.values()) if (ip.dropletId === id) ip.dropletId = null;
    for (const fw of this.firewalls.values()) fw.dropletIds = fw.dropletIds.filter((x) => x !== id);
    this.vpcs.get(d.vpcUuid)?.pool.release(d.privateIp);
    if (d.publicIp) this.publicPool.release(d.publicIp);
    if (d.anchorIp) this.anchorPool.release(d.anchorIp);
  }

  dropletAction(
    id: number,
    body: { type: string; name?: string; size?: string; image?: string | number },
  ): ActionRecord {
    const d = this.getDroplet(id);
    if (this.dropletLocked(d)) throw unprocessable("Droplet already has a pending event.");
    let apply: (() => boolean) | undefined;
    const alive = (): DropletRecord | undefined => this.droplets.get(id);
    switch (body.type) {
      case "power_off":
      case "shutdown":
        apply = () => {
          const cur = alive();
          if (cur) cur.power = "off";
          return cur !== undefined;
        };
        break;
      case "power_on":
      case "power_cycle":
      case "reboot":
        apply = () => {
          const cur = alive();
          if (cur) cur.power = "on";
          return cur !== undefined;
        };
        break;
      case "rename":
        if (!body.name) throw unprocessable("rename requires name.");
        apply = () => {
          const cur = alive();
          if (cur && body.name) cur.name = body.name;
          return cur !== undefined;
        };
        break;
      case "resize":
        if (!body.size || !findSize(body.size)) throw unprocessable("resize requires a valid size.");
        apply = () => {
          const cur = alive();
          if (cur && body.size) cur.size = body.size;
          return cur !== undefined;
        };
        break;
      case "rebuild": {
        const image = body.image === undefined ? undefined : findImage(body.image);
        if (!image) throw unprocessable("rebuild requires a valid image.");
        apply = () => {
          const cur = alive();
          if (cur) cur.imageId = image.id;
          return cur !== undefined;
        };
        break;
      }
      default:
        apply = () => alive() !== undefined;
    }
    return this.newAction(body.type, "droplet", id, d.region, { dropletId: id, apply });
  }

  dropletActionsByTag(tagName: string, body: { type: string }): ActionRecord[] {
    const targets = this.listDroplets({ tagName });
    const locked = targets.find((d) => this.dropletLocked(d));
    if (locked) throw unprocessable(`Droplet ${locked.id} already has a pending event.`);
    return targets.map((d) => this.dropletAction(d.id, body));
  }

  // ---------------------------------------------------------------- reserved / floating IPs

  getIp(ip: string): IpRecord {
    const rec = this.ips.get(ip);
    if (!rec) throw notFound(`reserved IP ${ip}`);
    return rec;
  }

  ipLocked(ip: string): boolean {
    return this.inProgress((a) => a.ip === ip) !== undefined;
  }

  listIps(): IpRecord[] {
    return [...this.ips.values()].sort((a, b) => ipToInt(a.ip) - ipToInt(b.ip));
  }

  /** The droplet an IP holds or is being assigned to. */
  private dropletBusyWithIp(dropletId: number, exceptIp?: string): boolean {
    for (const ip of this.ips.values()) if (ip.dropletId === dropletId && ip.ip !== exceptIp) return true;
    return (
      this.inProgress((a) => a.type === "assign_ip" && a.dropletId === dropletId && a.ip !== exceptIp) !== undefined
    );
  }

  private checkAssignable(d: DropletRecord, region: string, ip?: string): void {
    if (this.dropletStatus(d) === "new" || this.dropletLocked(d)) {
      throw unprocessable("Droplet already has a pending event.");
    }
    if (d.region !== region) throw unprocessable(`Droplet ${d.id} is not in region ${region}.`);
    if (this.dropletBusyWithIp(d.id, ip)) throw unprocessable(`Droplet ${d.id} already has a reserved IP.`);
  }

  createIp(
    input: { region?: string; droplet_id?: number; project_id?: string },
    kind: "reserved_ip" | "floating_ip",
  ): { ip: IpRecord; action?: ActionRecord } {
    let region: string;
    let droplet: DropletRecord | undefined;
    if (input.droplet_id !== undefined) {
      droplet = this.droplets.get(input.droplet_id);
      if (!droplet) throw unprocessable(`Droplet ${input.droplet_id} was not found.`);
      region = droplet.region;
      this.checkAssignable(droplet, region);
    } else {
      if (!input.region || !findRegion(input.region))
        throw unprocessable(`Region ${JSON.stringify(input.region)} is not available.`);
      region = input.region;
    }
    const addr = this.reservedPool.take();
    if (!addr) throw unprocessable("The stand-in ran out of reserved IPs.");
    const rec: IpRecord = { ip: addr, region, dropletId: null, projectId: input.project_id ?? PROJECT_ID };
    this.ips.set(addr, rec);
    if (droplet) return { ip: rec, action: this.assignAction(rec, droplet.id, kind) };
    return { ip: rec };
  }

  deleteIp(ip: string): void {
    const rec = this.getIp(ip);
    if (this.ipLocked(ip)) throw unprocessable("Reserved IP has a pending event.");
    if (rec.dropletId !== null) throw unprocessable("Assigned reserved IP cannot be released; unassign it first.");
    this.ips.delete(ip);
    this.reservedPool.release(ip);
  }

  ipAction(ip: string, body: { type: string; droplet_id?: number }, kind: "reserved_ip" | "floating_ip"): ActionRecord {
    const rec = this.getIp(ip);
    if (this.ipLocked(ip)) throw unprocessable("Reserved IP already has a pending event.");
    if (body.type === "assign") {
      if (body.droplet_id === undefined) throw unprocessable("assign requires droplet_id.");
      const d = this.droplets.get(body.droplet_id);
      if (!d) throw unprocessable(`Droplet ${body.droplet_id} was not found.`);
      if (rec.dropletId === d.id) throw unprocessable(`Reserved IP ${ip} is already assigned to droplet ${d.id}.`);
      this.checkAssignable(d, rec.region, ip);
      return this.assignAction(rec, d.id, kind);
    }
    if (body.type === "unassign") {
      if (rec.dropletId === null) throw unprocessable(`Reserved IP ${ip} is not assigned.`);
      return this.newAction("unassign_ip", kind, ipToInt(ip), rec.region, {
        ip,
        apply: () => {
          const cur = this.ips.get(ip);
          if (cur) cur.dropletId = null;
          return cur !== undefined;
        },
      });
    }
    throw unprocessable(`unknown action type ${body.type}`);
  }

  private assignAction(rec: IpRecord, dropletId: number, kind: ResourceType): ActionRecord {
    const ip = rec.ip;
    return this.newAction("assign_ip", kind, ipToInt(ip), rec.region, {
      ip,
      dropletId,
      apply: () => {
        const cur = this.ips.get(ip);
        const d = this.droplets.get(dropletId);
        if (!cur || !d) return false;
        cur.dropletId = dropletId;
        return true;
      },
    });
  }

  ipActions(ip: string): ActionRecord[] {
    this.getIp(ip);
    return [...this.actions.values()].filter((a) => a.ip === ip);
  }

  // ---------------------------------------------------------------- tags

  canonicalTags(names: string[], create: boolean): string[] {
    const out: string[] = [];
    for (const name of names) {
      if (!TAG_NAME.test(name) || name.length > 255)
        throw unprocessable(`Tag name ${JSON.stringify(name)} contains invalid characters.`);
      let canonical = this.tags.get(name.toLowerCase());
      if (!canonical) {
        if (!create) throw unprocessable(`Tag ${JSON.stringify(name)} does not exist.`);
        canonical = name;
        this.tags.set(name.toLowerCase(), name);
      }
      if (!out.includes(canonical)) out.push(canonical);
    }
    return out;
  }

  getTag(name: string): string {
    const t = this.tags.get(name.toLowerCase());
    if (!t) throw notFound(`tag ${name}`);
    return t;
  }

  createTag(name: string): string {
    return this.canonicalTags([name], true)[0]!;
  }

  deleteTag(name: string): void {
    const t = this.getTag(name);
    this.tags.delete(t.toLowerCase());
    for (const d of this.droplets.values()) d.tags = d.tags.filter((x) => x !== t);
    for (const fw of this.firewalls.values()) fw.tags = fw.tags.filter((x) => x !== t);
  }

  tagResources(name: string, resources: Array<{ resource_id?: string; resource_type?: string }>, add: boolean): void {
    const t = this.getTag(name);
    const droplets: DropletRecord[] = [];
    for (const r of resources) {
      if (r.resource_type !== "droplet") {
        throw unprocessable(`resource type ${JSON.stringify(r.resource_type)} is not supported by the stand-in`);
      }
      const d = this.droplets.get(Number(r.resource_id));
      if (!d) throw notFound(`droplet ${r.resource_id}`);
      droplets.push(d);
    }
    for (const d of droplets) {
      if (add && !d.tags.includes(t)) d.tags.push(t);
      if (!add) d.tags = d.tags.filter((x) => x !== t);
    }
  }

  taggedDroplets(name: string): DropletRecord[] {
    return [...this.droplets.values()].filter((d) => d.tags.includes(name));
  }

  // ---------------------------------------------------------------- firewalls

  getFirewall(id: string): FirewallRecord {
    const fw = this.firewalls.get(id);
    if (!fw) throw notFound(`firewall ${id}`);
    return fw;
  }

  createFirewall(input: FirewallInput): FirewallRecord {
    const fw: FirewallRecord = {
      id: randomUUID(),
      name: input.name,
      createdAt: this.now(),
      inbound: [],
      outbound: [],
      dropletIds: [],
      tags: [],
    };
    this.applyFirewallInput(fw, input);
    this.firewalls.set(fw.id, fw);
    return fw;
  }

  updateFirewall(id: string, input: FirewallInput): FirewallRecord {
    const fw = this.getFirewall(id);
    const next = { ...fw };
    this.applyFirewallInput(next, input);
    this.firewalls.set(id, next);
    return next;
  }

  deleteFirewall(id: string): void {
    this.getFirewall(id);
    this.firewalls.delete(id);
  }

  firewallDroplets(id: string, dropletIds: number[], add: boolean): void {
    const fw = this.getFirewall(id);
    if (add) {
      const ids = this.existingDroplets(dropletIds);
      const merged = [...new Set([...fw.dropletIds, ...ids])];
      if (merged.length > FIREWALL_MAX_DROPLETS)
        throw unprocessable(`A firewall can be applied to at most ${FIREWALL_MAX_DROPLETS} droplets by ID.`);
      fw.dropletIds = merged;
    } else {
      fw.dropletIds = fw.dropletIds.filter((x) => !dropletIds.includes(x));
    }
  }

  firewallTags(id: string, tags: string[], add: boolean): void {
    const fw = this.getFirewall(id);
    if (add) {
      const merged = [...new Set([...fw.tags, ...this.canonicalTags(tags, false)])];
      if (merged.length > FIREWALL_MAX_TAGS)
        throw unprocessable(`A firewall can be applied to at most ${FIREWALL_MAX_TAGS} tags.`);
      fw.tags = merged;
    } else {
      const drop = new Set(tags.map((t) => t.toLowerCase()));
      fw.tags = fw.tags.filter((t) => !drop.has(t.toLowerCase()));
    }
  }

  private applyFirewallInput(fw: FirewallRecord, input: FirewallInput): void {
    const inbound = (input.inbound_rules ?? []).map((r) => this.checkRule(r, "sources"));
    const outbound = (input.outbound_rules ?? []).map((r) => this.checkRule(r, "destinations"));
    if (inbound.length + outbound.length === 0) throw unprocessable("A firewall needs at least one rule.");
    const tags = this.canonicalTags(input.tags ?? [], false);
    if (tags.length > FIREWALL_MAX_TAGS)
      throw unprocessable(`A firewall can be applied to at most ${FIREWALL_MAX_TAGS} tags.`);
    const dropletIds = this.existingDroplets(input.droplet_ids ?? []);
    if (dropletIds.length > FIREWALL_MAX_DROPLETS)
      throw unprocessable(`A firewall can be applied to at most ${FIREWALL_MAX_DROPLETS} droplets by ID.`);
    fw.name = input.name;
    fw.inbound = inbound;
    fw.outbound = outbound;
    fw.tags = tags;
    fw.dropletIds = dropletIds;
  }

  private checkRule(rule: FirewallRule, side: "sources" | "destinations"): FirewallRule {
    const target = rule[side];
    if (!target) throw unprocessable(`firewall rule needs ${side}`);
    const ports = rule.protocol === "icmp" ? "0" : normalizePorts(rule.ports);
    const clean: RuleTarget = {};
    if (target.addresses?.length) clean.addresses = [...target.addresses];
    if (target.droplet_ids?.length) clean.droplet_ids = this.existingDroplets(target.droplet_ids);
    if (target.load_balancer_uids?.length) clean.load_balancer_uids = [...target.load_balancer_uids];
    if (target.kubernetes_ids?.length) clean.kubernetes_ids = [...target.kubernetes_ids];
    if (target.tags?.length) clean.tags = this.canonicalTags(target.tags, false);
    if (Object.keys(clean).length === 0) throw unprocessable(`firewall rule ${side} must name at least one target`);
    return { protocol: rule.protocol, ports, [side]: clean };
  }

  private existingDroplets(ids: number[]): number[] {
    for (const id of ids) if (!this.droplets.has(id)) throw unprocessable(`Droplet ${id} was not found.`);
    return [...new Set(ids)];
  }

  // ---------------------------------------------------------------- rendering (API shapes)

  regionObject(slug: string): RegionInfo {
    const r = findRegion(slug);
    if (!r) throw new Error(`stand-in bug: unknown region ${slug}`);
    return { ...r, features: [...r.features], sizes: [...r.sizes] };
  }

  renderDroplet(d: DropletRecord): Record<string, unknown> {
    const size = findSize(d.size) as SizeInfo;
    const image = findImage(d.imageId) as ImageInfo;
    const vpc = this.vpcs.get(d.vpcUuid);
    const v4: Array<Record<string, string>> = [
      {
        ip_address: d.privateIp,
        netmask: "255.255.240.0",
        gateway: vpc ? firstHost(vpc.ipRange) : "0.0.0.0",
        type: "private",
      },
    ];
    if (d.publicIp) {
      v4.push({ ip_address: d.publicIp, netmask: "255.255.255.0", gateway: gatewayOf(d.publicIp), type: "public" });
    }
    const v6 = d.ipv6 ? [{ ip_address: d.ipv6, netmask: 64, gateway: "2001:db8:0:1::1", type: "public" }] : [];
    return {
      id: d.id,
      name: d.name,
      memory: size.memory,
      vcpus: size.vcpus,
      disk: size.disk,
      disk_info: [{ type: "local", size: { amount: size.disk, unit: "gib" } }],
      locked: this.dropletLocked(d),
      status: this.dropletStatus(d),
      kernel: null,
      created_at: iso(d.createdAt),
      features: [...d.features],
      backup_ids: [],
      next_backup_window: null,
      snapshot_ids: [],
      image: { ...image, regions: [...image.regions], tags: [...image.tags] },
      volume_ids: [],
      size: { ...size, regions: [...size.regions] },
      size_slug: size.slug,
      networks: { v4, v6 },
      region: this.regionObject(d.region),
      tags: [...d.tags],
      vpc_uuid: d.vpcUuid,
    };
  }

  renderAction(a: ActionRecord): Record<string, unknown> {
    return {
      id: a.id,
      status: a.status,
      type: a.type,
      started_at: iso(a.startedAt),
      completed_at: a.completedAt === undefined ? null : iso(a.completedAt),
      resource_id: a.resourceId,
      resource_type: a.resourceType,
      region: this.regionObject(a.region),
      region_slug: a.region,
    };
  }

  renderIp(rec: IpRecord): Record<string, unknown> {
    const d = rec.dropletId === null ? undefined : this.droplets.get(rec.dropletId);
    return {
      ip: rec.ip,
      region: this.regionObject(rec.region),
      droplet: d ? this.renderDroplet(d) : null,
      locked: this.ipLocked(rec.ip),
      project_id: rec.projectId,
    };
  }

  renderFirewall(fw: FirewallRecord): Record<string, unknown> {
    return {
      id: fw.id,
      name: fw.name,
      status: "succeeded",
      created_at: iso(fw.createdAt),
      pending_changes: [],
      inbound_rules: fw.inbound.map(cloneRule),
      outbound_rules: fw.outbound.map(cloneRule),
      droplet_ids: [...fw.dropletIds],
      tags: [...fw.tags],
    };
  }

  renderTag(name: string): Record<string, unknown> {
    const tagged = this.taggedDroplets(name).sort((a, b) => b.id - a.id);
    const last = tagged[0];
    const lastUri = last ? `${this.opts.baseUrl()}/v2/droplets/${last.id}` : undefined;
    const droplets = lastUri ? { count: tagged.length, last_tagged_uri: lastUri } : { count: 0 };
    return {
      name,
      resources: {
        ...droplets,
        droplets,
        images: { count: 0 },
        volumes: { count: 0 },
        volume_snapshots: { count: 0 },
        databases: { count: 0 },
      },
    };
  }

  renderVpc(v: VpcRecord): Record<string, unknown> {
    return {
      id: v.id,
      urn: `do:vpc:${v.id}`,
      name: v.name,
      description: v.description,
      region: v.region,
      ip_range: v.ipRange,
      default: v.isDefault,
      created_at: iso(v.createdAt),
    };
  }

  actionHref(id: number): string {
    return `${this.opts.baseUrl()}/v2/actions/${id}`;
  }
}

function cloneRule(r: FirewallRule): Record<string, unknown> {
  return JSON.parse(JSON.stringify(r)) as Record<string, unknown>;
}

/** "0", "all" and "1-65535" mean every port; otherwise a port or an ascending range. */
function normalizePorts(ports: string): string {
  const p = ports.trim();
  if (p === "0" || p === "all" || p === "1-65535") return p === "all" ? "0" : p;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(p);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo < 1 || hi > 65535 || hi < lo) throw unprocessable(`invalid ports ${JSON.stringify(ports)}`);
  return p;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function firstHost(cidr: string): string {
  const [base] = cidr.split("/");
  const parts = (base ?? "0.0.0.0").split(".");
  parts[3] = "1";
  return parts.join(".");
}

function gatewayOf(ip: string): string {
  const parts = ip.split(".");
  parts[3] = "1";
  return parts.join(".");
}
