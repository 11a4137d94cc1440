import { isIPv4 } from "node:net";
import type { KubernetesObject } from "@kubernetes/client-node";
import {
  ANCHOR_ANNOTATION,
  HAIMGEL_FLOATING_IP_KEY,
  MANAGED_EXTERNAL_IPS_KEY,
  RESERVED_IP_KEY,
} from "../../api/keys.js";
import { dropletIdOf, type Claim } from "./reserved-ip-rules.js";
import type { AnyObjectMeta } from "../../api/v1alpha1/common.js";

/**
 * Which `spec.externalIPs` a Service that asks for a reserved IP should have: pure rules, no I/O.
 *
 * On DigitalOcean, traffic to a reserved IP arrives at the holder droplet addressed to the
 * droplet's anchor IP; kube-proxy hands it to a Service only if the Service lists that address in
 * `externalIPs`. A Service opts in with the annotation `staticegress.io/reserved-ip: <ip>` (or the
 * haimgel controller's `k8s.haim.dev/floating-ip: <ip>`); node agents publish each node's anchor
 * as the Node annotation `staticegress.io/anchor-ipv4`.
 *
 * - Only anchors are ours: an entry is ours when it is the anchor of some node, or when we wrote
 *   it last time (annotation `staticegress.io/managed-external-ips`, so the anchor of a node that
 *   is gone is removed too). Every other entry is the user's and is kept, in its place.
 * - The Service lists the anchors of the IP's *targets*: the holder, and while the IP moves both
 *   the old and the new holder (the follower patches before the assign call and again after it),
 *   so that arriving traffic always finds the Service.
 * - Tenant safety: the Service gets anchors only when every pod that claims the IP is in its own
 *   namespace; otherwise ours are removed and the Service gets a Warning.
 * - An IP whose holder is not known yet (controller start, API errors) leaves the Service as it is.
 * - A Service that stops asking (annotation removed) but still has our managed annotation gets
 *   back what we wrote last time, and loses that annotation; its other entries stay.
 */

/** Service annotation keys, in the order they are read (the pods' keys; ours wins). */
const SERVICE_IP_KEYS = [RESERVED_IP_KEY, HAIMGEL_FLOATING_IP_KEY] as const;
export { MANAGED_EXTERNAL_IPS_KEY };

export interface ServiceRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** A node with a valid anchor annotation. */
export interface NodeAnchor {
  node: string;
  /** Droplet id from spec.providerID, when it is a DigitalOcean node. */
  hostId?: string;
  anchor: string;
}

export interface ServiceProblem {
  reason: "ExternalIPsRequestInvalid" | "ExternalIPsRefused" | "AnchorIPUnknown";
  message: string;
}

export interface ServiceDecision {
  service: ServiceRef;
  resourceVersion?: string;
  /** The reserved IP it asks for (absent when the annotation is bad). */
  ip?: string;
  /** Set when the Service must change: its new externalIPs and managed annotation (null: remove). */
  patch?: { externalIPs: string[]; managed: string | null };
  problems: ServiceProblem[];
}

interface ServiceLike {
  metadata?: AnyObjectMeta;
  spec?: { externalIPs?: string[] };
}
interface NodeLike {
  metadata?: AnyObjectMeta;
  spec?: { providerID?: string };
}

/** Nodes that published a valid anchor (a malformed annotation counts as none). */
export function nodeAnchors(nodes: readonly KubernetesObject[]): NodeAnchor[] {
  const out: NodeAnchor[] = [];
  for (const n of nodes as NodeLike[]) {
    const anchor = n.metadata?.annotations?.[ANCHOR_ANNOTATION]?.trim();
    if (!anchor || !isIPv4(anchor)) continue;
    const hostId = dropletIdOf(n.spec?.providerID);
    out.push({ node: n.metadata?.name ?? "", ...(hostId ? { hostId } : {}), anchor });
  }
  return out;
}

/** The reserved IP a Service asks for, an error naming the annotation, or undefined (not asked). */
export function serviceRequestedIP(
  annotations: Record<string, string> | undefined,
): { ip: string; key: string } | { error: string } | undefined {
  for (const key of SERVICE_IP_KEYS) {
    const raw = annotations?.[key];
    if (raw === undefined) continue;
    const ip = raw.trim();
    if (isIPv4(ip)) return { ip, key };
    return { error: `annotation ${key}: ${JSON.stringify(raw)} is not an IPv4 address` };
  }
  return undefined;
}

const splitList = (text: string | undefined): string[] =>
  (text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * Decides every Service that asks for a reserved IP. `targets(ip)` gives the droplets whose anchors
 * the IP's Services list now ([holder]; [old, new] while it moves; [] when it is unassigned), or
 * undefined when the holder is not known yet: such Services are left out of the answer.
 */
export function decideServiceExternalIPs(input: {
  services: readonly KubernetesObject[];
  anchors: readonly NodeAnchor[];
  claims: readonly Claim[];
  targets: (ip: string) => readonly string[] | undefined;
}): ServiceDecision[] {
  const allAnchors = new Set(input.anchors.map((a) => a.anchor));
  const anchorOf = new Map<string, NodeAnchor>();
  for (const a of input.anchors) if (a.hostId !== undefined) anchorOf.set(a.hostId, a);
  const out: ServiceDecision[] = [];
  for (const s of input.services as ServiceLike[]) {
    const meta = s.metadata ?? {};
    const asked = serviceRequestedIP(meta.annotations);
    const managed = meta.annotations?.[MANAGED_EXTERNAL_IPS_KEY];
    if (!asked && managed === undefined) continue;
    const service: ServiceRef = {
      namespace: meta.namespace ?? "default",
      name: meta.name ?? "",
      ...(meta.uid ? { uid: meta.uid } : {}),
    };
    if (!asked) {
      // No longer ours: only what we wrote counts as ours (a node's anchor the user lists stays).
      const patch = externalIPsFor(s.spec?.externalIPs ?? [], managed, [], new Set());
      out.push({
        service,
        ...(meta.resourceVersion ? { resourceVersion: meta.resourceVersion } : {}),
        problems: [],
        ...(patch ? { patch } : {}),
      });
      continue;
    }
    const problems: ServiceProblem[] = [];
    let want: string[] = [];
    if ("error" in asked) {
      problems.push({ reason: "ExternalIPsRequestInvalid", message: asked.error });
    } else {
      const foreign = input.claims.filter((c) => c.ip === asked.ip && c.pod.namespace !== service.namespace);
      if (foreign.length > 0) {
        const who = [...new Set(foreign.map((c) => `${c.pod.namespace}/${c.pod.name}`))].sort().slice(0, 5).join(", ");
        problems.push({
          reason: "ExternalIPsRefused",
          message:
            `${asked.ip} is claimed by pods in other namespaces (${who}); a Service ` +
            `gets the anchor IPs of a reserved IP only when every pod claiming ` +
            `it is in the Service's namespace ${service.namespace}`,
        });
      } else {
        const targets = input.targets(asked.ip);
        if (targets === undefined) continue; // holder not known yet: leave it as it is
        for (const host of targets) {
          const a = anchorOf.get(host);
          if (a) want.push(a.anchor);
          else problems.push({ reason: "AnchorIPUnknown", message: anchorUnknown(asked.ip, host, input.claims) });
        }
        want = [...new Set(want)];
      }
    }
    const decision: ServiceDecision = {
      service,
      ...(meta.resourceVersion ? { resourceVersion: meta.resourceVersion } : {}),
      ...("ip" in asked ? { ip: asked.ip } : {}),
      problems,
    };
    const patch = externalIPsFor(
      s.spec?.externalIPs ?? [],
      meta.annotations?.[MANAGED_EXTERNAL_IPS_KEY],
      want,
      allAnchors,
    );
    if (patch) decision.patch = patch;
    out.push(decision);
  }
  return out;
}

function anchorUnknown(ip: string, host: string, claims: readonly Claim[]): string {
  const node = claims.find((c) => c.hostId === host)?.node;
  return node
    ? `${ip} is on node ${node} (droplet ${host}), which has no annotation ${ANCHOR_ANNOTATION}; run its node agent with --anchor-ip-from digitalocean-metadata`
    : `${ip} is on droplet ${host}, which is no node of this cluster with annotation ${ANCHOR_ANNOTATION}`;
}

/**
 * The Service's new externalIPs and managed annotation, or undefined when it already has them.
 * Entries that are ours (`anchors`, or `managed` last time) are removed unless wanted; the user's
 * stay in place; wanted anchors not yet listed are appended.
 */
export function externalIPsFor(
  current: readonly string[],
  managed: string | undefined,
  want: readonly string[],
  anchors: ReadonlySet<string>,
): { externalIPs: string[]; managed: string | null } | undefined {
  const ours = new Set([...anchors, ...splitList(managed)]);
  const wanted = new Set(want);
  const next: string[] = [];
  for (const e of current) if ((!ours.has(e) || wanted.has(e)) && !next.includes(e)) next.push(e);
  for (const w of want) if (!next.includes(w)) next.push(w);
  const nextManaged = want.length > 0 ? [...want].sort().join(",") : null;
  const same =
    next.length === current.length && next.every((e, i) => e === current[i]) && (managed ?? null) === nextManaged;
  return same ? undefined : { externalIPs: next, managed: nextManaged };
}
