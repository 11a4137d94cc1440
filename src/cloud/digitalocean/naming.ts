import { createHash } from "node:crypto";

/**
 * Names and ownership tags of everything the DigitalOcean provider creates. DO tag names allow
 * letters, digits, `:`, `-` and `_` (max 255); droplet names allow letters, digits, `.` and `-`.
 *
 * Tags on gateway droplets (set in the create request, so a crash right after creation leaves a
 * droplet that is found again):
 *   static-egress                                     every droplet this software manages
 *   static-egress:cluster:<cluster>                   every droplet of one cluster
 *   static-egress:gw:<cluster>:<gateway>              the droplets of one gateway fleet
 * Ownership records of reserved IPs the provider allocated (reserved IPs carry no tags, so the
 * record is a tag of its own, which exists independently of any droplet):
 *   static-egress:rip:<cluster>:<gateway>:<slot>:<a-b-c-d>
 * Intent record written before a reserved IP is created for a slot (crash recovery; the time is
 * Unix seconds):
 *   static-egress:rip-pending:<cluster>:<gateway>:<slot>:<time>
 *
 * <cluster> and <gateway> are escaped: every byte outside [a-z0-9-] becomes `_xx` (hex), so the
 * mapping is injective even under DO's case-insensitive tag lookups, and a `:` inside a name
 * cannot fake a separator. When the escaped pair
 * is too long for the 255-character limit it is replaced by `h-<sha256 prefix>`.
 */

export const MANAGED_TAG = "static-egress";
const MAX_FLEET_KEY = 180;

export function escapeTagComponent(value: string): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const ch = String.fromCharCode(byte);
    out += /[a-z0-9-]/.test(ch) ? ch : `_${byte.toString(16).padStart(2, "0")}`;
  }
  return out;
}

/** Inverse of escapeTagComponent; undefined for text it cannot have produced. */
export function unescapeTagComponent(escaped: string): string | undefined {
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; i++) {
    const ch = escaped[i]!;
    if (/[a-z0-9-]/.test(ch)) {
      bytes.push(ch.charCodeAt(0));
      continue;
    }
    const hex = escaped.slice(i + 1, i + 3);
    if (ch !== "_" || !/^[0-9a-f]{2}$/.test(hex)) return undefined;
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  const value = Buffer.from(bytes).toString("utf8");
  return escapeTagComponent(value) === escaped ? value : undefined;
}

function hash(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex");
}

/** Keeps [A-Za-z0-9.-], turns other runs into `-`, trims to `max` and to alphanumeric ends. */
export function sanitizeResourceName(value: string, max: number): string {
  const cleaned = value
    .replace(/[^A-Za-z0-9.-]+/g, "-")
    .slice(0, max)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
  return cleaned || "x";
}

export interface FleetNames {
  clusterTag: string;
  fleetTag: string;
  /** Prefix of the ownership-record tags of this fleet's allocated reserved IPs. */
  ipRecordPrefix: string;
  firewallName: string;
  dropletName(slot: number): string;
  /** Slot of a droplet name of this fleet, or undefined. */
  slotOf(dropletName: string): number | undefined;
  ipRecordTag(slot: number, ip: string): string;
  parseIpRecordTag(tag: string): { slot: number; ip: string } | undefined;
  /** Prefix of the intent records of this fleet's allocations in progress. */
  pendingPrefix: string;
  pendingTag(slot: number, unixSeconds: number): string;
  parsePendingTag(tag: string): { slot: number; at: number } | undefined;
}

function clusterTag(clusterId: string): string {
  const esc = escapeTagComponent(clusterId);
  return `${MANAGED_TAG}:cluster:${esc.length <= MAX_FLEET_KEY ? esc : `h-${hash(clusterId).slice(0, 40)}`}`;
}

export function fleetNames(clusterId: string, gatewayName: string): FleetNames {
  const escaped = `${escapeTagComponent(clusterId)}:${escapeTagComponent(gatewayName)}`;
  const fleetKey = escaped.length <= MAX_FLEET_KEY ? escaped : `h-${hash(clusterId, gatewayName).slice(0, 40)}`;
  const short = hash("fleet", clusterId, gatewayName).slice(0, 8);
  const dropletPrefix = `se-${sanitizeResourceName(gatewayName, 40)}-${short}-`;
  const ipRecordPrefix = `${MANAGED_TAG}:rip:${fleetKey}:`;
  const pendingPrefix = `${MANAGED_TAG}:rip-pending:${fleetKey}:`;
  return {
    clusterTag: clusterTag(clusterId),
    fleetTag: `${MANAGED_TAG}:gw:${fleetKey}`,
    ipRecordPrefix,
    firewallName: `se-gw-${sanitizeResourceName(gatewayName, 40)}-${short}`,
    dropletName: (slot) => `${dropletPrefix}${slot}`,
    slotOf: (name) => {
      if (!name.startsWith(dropletPrefix)) return undefined;
      const rest = name.slice(dropletPrefix.length);
      return /^(0|[1-9]\d{0,4})$/.test(rest) ? Number(rest) : undefined;
    },
    ipRecordTag: (slot, ip) => `${ipRecordPrefix}${slot}:${ip.replace(/\./g, "-")}`,
    parseIpRecordTag: (tag) => {
      if (!tag.startsWith(ipRecordPrefix)) return undefined;
      const m = /^(0|[1-9]\d{0,4}):(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})$/.exec(tag.slice(ipRecordPrefix.length));
      if (!m) return undefined;
      return { slot: Number(m[1]), ip: `${m[2]}.${m[3]}.${m[4]}.${m[5]}` };
    },
    pendingPrefix,
    pendingTag: (slot, unixSeconds) => `${pendingPrefix}${slot}:${Math.floor(unixSeconds)}`,
    parsePendingTag: (tag) => {
      if (!tag.startsWith(pendingPrefix)) return undefined;
      const m = /^(0|[1-9]\d{0,4}):(\d{1,12})$/.exec(tag.slice(pendingPrefix.length));
      return m ? { slot: Number(m[1]), at: Number(m[2]) } : undefined;
    },
  };
}

/**
 * The gateway whose fleet tag this is, if it is a fleet tag of this cluster. A fleet whose key
 * was hashed (cluster id and gateway name together longer than the tag limit allows) does not
 * say its gateway: undefined.
 */
export function gatewayOfFleetTag(clusterId: string, tag: string): string | undefined {
  const prefix = `${MANAGED_TAG}:gw:${escapeTagComponent(clusterId)}:`;
  // DO compares tag names case-insensitively and may answer in another case than created.
  if (!tag.toLowerCase().startsWith(prefix)) return undefined;
  const gateway = unescapeTagComponent(tag.slice(prefix.length).toLowerCase());
  return gateway !== undefined && fleetNames(clusterId, gateway).fleetTag === `${prefix}${escapeTagComponent(gateway)}`
    ? gateway
    : undefined;
}

/** Name of the firewall that opens a service's ports on the node holding its reserved IP. */
export function serviceFirewallName(clusterId: string, serviceKey: string): string {
  return `se-svc-${sanitizeResourceName(serviceKey, 40)}-${hash("service", clusterId, serviceKey).slice(0, 12)}`;
}
