import { isIPv4, isIPv6 } from "node:net";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { PortRule } from "../../cloud/provider.js";
import {
  HAIMGEL_FLOATING_IP_KEY,
  RESERVED_IP_GRANT_KEY,
  RESERVED_IP_KEY,
  RESERVED_IP_PORTS_KEY,
} from "../../api/keys.js";
import type { AnyObjectMeta } from "../../api/v1alpha1/common.js";

/**
 * Who should hold which reserved IP: pure rules, no I/O.
 *
 * A pod asks for a reserved IP with a label that exists (any value) plus an annotation with the
 * address, under either key (ours first):
 *   staticegress.io/reserved-ip     ours
 *   k8s.haim.dev/floating-ip        the haimgel floating-IP controller's, for users coming from it
 * The annotation is read first; without it the label's value is parsed as the address (an IPv4
 * address is a valid label value).
 *
 * The IP belongs on the droplet of a node that runs an *eligible* pod for it: Running, Ready, not
 * being deleted, on a node that still exists, is not NotReady and has a DigitalOcean providerID.
 * It never moves while its holder runs an eligible pod for it. Otherwise it goes to the node of
 * the eligible pod that has been ready longest; with no eligible pod it stays where it is.
 *
 * Tenancy: a pod may ask only for an IP its namespace was granted by a cluster admin, with the
 * Namespace annotation `staticegress.io/reserved-ips: "203.0.113.5, 203.0.113.6"` (tenants
 * cannot edit Namespaces). Without the grant the request is refused and reported, and it counts
 * for nothing: it can neither attract the IP nor disturb the Services of the namespace that owns it.
 */

export { RESERVED_IP_GRANT_KEY };
/** Label/annotation keys in the order they are read. */
const RESERVED_IP_KEYS = [RESERVED_IP_KEY, HAIMGEL_FLOATING_IP_KEY] as const;

/** Whether pods of `namespace` may ask for `ip`. */
export type NamespaceGrants = (namespace: string, ip: string) => boolean;

/** The grants the Namespaces carry (entries that are not IPv4 addresses grant nothing). */
export function namespaceGrants(namespaces: readonly KubernetesObject[]): NamespaceGrants {
  const granted = new Map<string, Set<string>>();
  for (const n of namespaces) {
    const text = n.metadata?.annotations?.[RESERVED_IP_GRANT_KEY];
    if (!n.metadata?.name || text === undefined) continue;
    granted.set(n.metadata.name, new Set(text.split(/[\s,]+/).filter((x) => isIPv4(x))));
  }
  return (namespace, ip) => granted.get(namespace)?.has(ip) === true;
}

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** A pod's request for a reserved IP, and whether it can have it now. */
export interface Claim {
  ip: string;
  pod: PodRef;
  node?: string;
  /** Droplet id of the pod's node (from spec.providerID). */
  hostId?: string;
  eligible: boolean;
  /** Why the pod cannot have the IP now (when not eligible). */
  reason?: string;
  /** Ordering among eligible pods: when the pod became Ready (RFC 3339), else its creation time. */
  readySince: string;
  /** Ports to open on the holder (annotation staticegress.io/reserved-ip-ports). */
  ports?: PortRule[];
}

/** A pod that asks for a reserved IP in a way that cannot be followed (bad address, ...). */
export interface ClaimProblem {
  pod: PodRef;
  message: string;
  /** Event reason (default ReservedIPRequestInvalid). */
  reason?: "ReservedIPNotGranted";
}

type Meta = AnyObjectMeta;
interface PodLike {
  metadata?: Meta;
  spec?: { nodeName?: string };
  status?: { phase?: string; conditions?: { type: string; status: string; lastTransitionTime?: string | Date }[] };
}
interface NodeLike {
  metadata?: Meta;
  spec?: { providerID?: string };
  status?: { conditions?: { type: string; status: string }[] };
}

const PROVIDER_ID = /^digitalocean:\/\/(\d{1,19})$/;

/** The droplet id in a node's `spec.providerID` (`digitalocean://<id>`), or undefined. */
export function dropletIdOf(providerID: string | undefined): string | undefined {
  const m = providerID ? PROVIDER_ID.exec(providerID.trim()) : null;
  return m ? m[1] : undefined;
}

/**
 * The reserved IP a pod asks for: `{ ip }`, `{ error }` when it asks in a way that cannot be
 * followed, or undefined when it does not ask (no label).
 */
export function requestedIP(
  labels: Record<string, string> | undefined,
  annotations: Record<string, string> | undefined,
): { ip: string; key: string } | { error: string } | undefined {
  for (const key of RESERVED_IP_KEYS) {
    if (labels?.[key] === undefined) continue;
    const fromAnnotation = annotations?.[key];
    const raw = (fromAnnotation ?? labels[key] ?? "").trim();
    const where = fromAnnotation !== undefined ? `annotation ${key}` : `label ${key} (no annotation ${key})`;
    if (isIPv4(raw)) return { ip: raw, key };
    if (isIPv6(raw)) return { error: `${where}: ${JSON.stringify(raw)} is IPv6; only IPv4 reserved IPs are supported` };
    return { error: `${where}: ${JSON.stringify(raw)} is not an IPv4 address` };
  }
  return undefined;
}

/** Parses `tcp/443, udp/51820, tcp/8000-8100, icmp`; the error names the bad item. */
export function parsePorts(text: string): PortRule[] | { error: string } {
  const out: PortRule[] = [];
  for (const raw of text
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [proto, ports, extra] = raw.toLowerCase().split("/");
    if (proto === "icmp" && ports === undefined) {
      out.push({ protocol: "icmp" });
      continue;
    }
    const m = ports !== undefined ? /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports) : null;
    const lo = m ? Number(m[1]) : NaN;
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
    if ((proto !== "tcp" && proto !== "udp") || extra !== undefined || !m || lo < 1 || hi > 65535 || hi < lo) {
      return {
        error: `annotation ${RESERVED_IP_PORTS_KEY}: ${JSON.stringify(raw)} is not tcp/<port>, udp/<port>, <proto>/<from>-<to> or icmp`,
      };
    }
    out.push({ protocol: proto, ports });
  }
  return out;
}

const time = (t: string | Date | undefined): string => (t instanceof Date ? t.toISOString() : (t ?? ""));

/**
 * Reads the claims of all labelled pods, judged against the nodes. With `grants`, a pod whose
 * namespace was not granted the IP is a problem, not a claim.
 */
export function readClaims(
  pods: readonly KubernetesObject[],
  nodes: readonly KubernetesObject[],
  grants?: NamespaceGrants,
): { claims: Claim[]; problems: ClaimProblem[] } {
  const nodesByName = new Map<string, NodeLike>();
  for (const n of nodes as NodeLike[]) if (n.metadata?.name) nodesByName.set(n.metadata.name, n);
  const claims: Claim[] = [];
  const problems: ClaimProblem[] = [];
  for (const p of pods as PodLike[]) {
    const meta = p.metadata ?? {};
    const pod: PodRef = {
      namespace: meta.namespace ?? "default",
      name: meta.name ?? "",
      ...(meta.uid ? { uid: meta.uid } : {}),
    };
    const asked = requestedIP(meta.labels, meta.annotations);
    if (!asked) continue;
    if ("error" in asked) {
      problems.push({ pod, message: asked.error });
      continue;
    }
    if (grants && !grants(pod.namespace, asked.ip)) {
      problems.push({
        pod,
        reason: "ReservedIPNotGranted",
        message:
          `namespace ${pod.namespace} may not use reserved IP ${asked.ip}: a cluster admin ` +
          `grants it with the annotation ${RESERVED_IP_GRANT_KEY} on the Namespace`,
      });
      continue;
    }
    let ports: PortRule[] | undefined;
    const portsText = meta.annotations?.[RESERVED_IP_PORTS_KEY];
    if (portsText !== undefined) {
      const parsed = parsePorts(portsText);
      if ("error" in parsed) problems.push({ pod, message: parsed.error });
      else if (parsed.length > 0) ports = parsed;
    }
    const ready = p.status?.conditions?.find((c) => c.type === "Ready");
    const nodeName = p.spec?.nodeName;
    const node = nodeName ? nodesByName.get(nodeName) : undefined;
    const hostId = dropletIdOf(node?.spec?.providerID);
    const nodeReady = node?.status?.conditions?.find((c) => c.type === "Ready");
    let reason: string | undefined;
    if (meta.deletionTimestamp) reason = "pod is being deleted";
    else if (p.status?.phase !== "Running") reason = `pod is ${p.status?.phase ?? "not running"}`;
    else if (ready?.status !== "True") reason = "pod is not Ready";
    else if (!nodeName) reason = "pod has no node";
    else if (!node) reason = `node ${nodeName} is gone`;
    else if (nodeReady && nodeReady.status !== "True") reason = `node ${nodeName} is not Ready`;
    else if (!hostId) reason = `node ${nodeName} has no DigitalOcean providerID (digitalocean://<droplet id>)`;
    claims.push({
      ip: asked.ip,
      pod,
      ...(nodeName ? { node: nodeName } : {}),
      ...(hostId ? { hostId } : {}),
      eligible: reason === undefined,
      ...(reason ? { reason } : {}),
      readySince: time(ready?.lastTransitionTime) || time(meta.creationTimestamp),
      ...(ports ? { ports } : {}),
    });
  }
  return { claims, problems };
}

export type Decision =
  /** The holder runs an eligible pod for the IP: leave it. */
  | { ip: string; kind: "keep"; host: string }
  /** Move (or first assign) the IP to `host`, the node of `pod`. */
  | { ip: string; kind: "assign"; host: string; from: string | undefined; pod: PodRef }
  /** No eligible pod: the IP stays where it is (it is never unassigned). */
  | { ip: string; kind: "hold"; reason: string }
  /** Eligible pods exist, but only on droplets that hold another reserved IP (a droplet holds one). */
  | { ip: string; kind: "blocked"; reason: string };

/** Droplets that may take the IP, best first: ready longest, then by pod name. */
export function eligibleHosts(claims: readonly Claim[]): { host: string; pod: PodRef }[] {
  const seen = new Set<string>();
  const out: { host: string; pod: PodRef }[] = [];
  const order = claims
    .filter((c): c is Claim & { hostId: string } => c.eligible && c.hostId !== undefined)
    .sort(
      (a, b) =>
        a.readySince.localeCompare(b.readySince) ||
        `${a.pod.namespace}/${a.pod.name}`.localeCompare(`${b.pod.namespace}/${b.pod.name}`),
    );
  for (const c of order) {
    if (seen.has(c.hostId)) continue;
    seen.add(c.hostId);
    out.push({ host: c.hostId, pod: c.pod });
  }
  return out;
}

/**
 * Decides every claimed IP at once, given who holds each IP now (`holders`: IP -> droplet id, or
 * undefined when unassigned; an IP missing from the map counts as unassigned). Kept holders are
 * settled first, so a move never targets a droplet that keeps another IP.
 */
export function decideReservedIPs(
  claims: readonly Claim[],
  holders: ReadonlyMap<string, string | undefined>,
): Decision[] {
  const byIP = new Map<string, Claim[]>();
  for (const c of claims) byIP.set(c.ip, [...(byIP.get(c.ip) ?? []), c]);
  const ips = [...byIP.keys()].sort();
  const decisions = new Map<string, Decision>();
  const taken = new Set<string>();
  for (const h of holders.values()) if (h !== undefined) taken.add(h);
  for (const ip of ips) {
    const holder = holders.get(ip);
    if (holder !== undefined && eligibleHosts(byIP.get(ip)!).some((e) => e.host === holder))
      decisions.set(ip, { ip, kind: "keep", host: holder });
  }
  for (const ip of ips) {
    if (decisions.has(ip)) continue;
    const candidates = eligibleHosts(byIP.get(ip)!);
    const holder = holders.get(ip);
    if (candidates.length === 0) {
      const why = [
        ...new Set(byIP.get(ip)!.map((c) => `${c.pod.namespace}/${c.pod.name}: ${c.reason ?? "not eligible"}`)),
      ].join("; ");
      decisions.set(ip, { ip, kind: "hold", reason: `no Running and Ready pod on a usable node (${why})` });
      continue;
    }
    const pick = candidates.find((c) => !taken.has(c.host));
    if (!pick) {
      decisions.set(ip, {
        ip,
        kind: "blocked",
        reason:
          `every node with a Ready pod for it ` +
          `(droplets ${candidates.map((c) => c.host).join(", ")}) already holds another reserved IP; a droplet holds one`,
      });
      continue;
    }
    taken.add(pick.host);
    decisions.set(ip, { ip, kind: "assign", host: pick.host, from: holder, pod: pick.pod });
  }
  return ips.map((ip) => decisions.get(ip)!);
}

/** Union of the ports the IP's pods ask for, in a stable order (empty: no firewall). */
export function portsOfIP(claims: readonly Claim[]): PortRule[] {
  const seen = new Map<string, PortRule>();
  for (const c of claims) for (const p of c.ports ?? []) seen.set(`${p.protocol}/${p.ports ?? ""}`, p);
  return [...seen.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, p]) => p);
}
