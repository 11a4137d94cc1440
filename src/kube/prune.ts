import type { KubernetesObject } from "@kubernetes/client-node";
import { HAIMGEL_FLOATING_IP_KEY, KEY_PREFIX } from "../api/keys.js";

/**
 * What the informers keep of each object: only the fields something in static-egress reads
 * (the planner through `podInfo`/`nodeInfo`/`namespaceInfo`, the controller's status and
 * finalizer code, the node agent's CNI checks, the reserved-IP and Service plugins, and
 * KubeSource's own node view). Everything else — managedFields, other tools' annotations,
 * container specs, volumes, most of a pod's status — is dropped before it is cached, so the
 * cache of a large cluster costs a fraction of the objects' JSON.
 *
 * Kept for every object: name, namespace, uid, resourceVersion (informer bookkeeping),
 * creation and deletion timestamps, labels, and our annotations (`staticegress.io/*`
 * and the floating-IP key other tools use). Per kind:
 *
 *   Pod        spec.nodeName, spec.hostNetwork; status.phase, podIP, podIPs, and the Ready
 *              condition (type, status, lastTransitionTime)
 *   Node       spec.podCIDR, podCIDRs, providerID; status InternalIP addresses and the Ready
 *              condition (type, status)
 *   Namespace  metadata only
 *   our kinds  metadata (with generation and finalizers), spec and status whole (the planner validates the
 *              whole spec; status is compared before it is written)
 *   Service    metadata, spec.externalIPs
 *
 * A pruned object is a new plain object; the input is not changed.
 */

/** Annotations static-egress reads, on any kind: its own prefix, and the floating-IP key it honours. */
function isOurAnnotation(key: string): boolean {
  return key.startsWith(KEY_PREFIX) || key === HAIMGEL_FLOATING_IP_KEY;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Copies the listed keys that are present (not undefined) from `from`. */
function pick(from: unknown, keys: readonly string[]): Obj {
  const out: Obj = {};
  if (!isObj(from)) return out;
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  return out;
}

const META_KEYS = [
  "name",
  "namespace",
  "uid",
  "resourceVersion",
  "creationTimestamp",
  "deletionTimestamp",
  "labels",
] as const;

function pruneMetadata(meta: unknown, extra: readonly string[] = []): Obj {
  const out = pick(meta, [...META_KEYS, ...extra]);
  const annotations = isObj(meta) ? meta.annotations : undefined;
  if (isObj(annotations)) {
    const ours: Record<string, unknown> = {};
    let any = false;
    for (const [k, v] of Object.entries(annotations)) {
      if (!isOurAnnotation(k)) continue;
      ours[k] = v;
      any = true;
    }
    if (any) out.annotations = ours;
  }
  return out;
}

/** Sets `key` on `out` when `value` has any field (an empty spec/status is left out). */
function setIfAny(out: Obj, key: string, value: Obj): void {
  if (Object.keys(value).length > 0) out[key] = value;
}

function readyCondition(status: unknown, keys: readonly string[]): Obj[] | undefined {
  const conditions = isObj(status) ? status.conditions : undefined;
  if (!Array.isArray(conditions)) return undefined;
  const ready = conditions.filter((c): c is Obj => isObj(c) && c.type === "Ready").map((c) => pick(c, keys));
  return ready.length > 0 ? ready : undefined;
}

function envelope(o: KubernetesObject): Obj {
  return pick(o, ["apiVersion", "kind"]);
}

export function prunePod(o: KubernetesObject): KubernetesObject {
  const src = o as Obj;
  const out = envelope(o);
  out.metadata = pruneMetadata(o.metadata);
  setIfAny(out, "spec", pick(src.spec, ["nodeName", "hostNetwork"]));
  const status = pick(src.status, ["phase", "podIP", "podIPs"]);
  const ready = readyCondition(src.status, ["type", "status", "lastTransitionTime"]);
  if (ready) status.conditions = ready;
  setIfAny(out, "status", status);
  return out as KubernetesObject;
}

export function pruneNode(o: KubernetesObject): KubernetesObject {
  const src = o as Obj;
  const out = envelope(o);
  out.metadata = pruneMetadata(o.metadata);
  setIfAny(out, "spec", pick(src.spec, ["podCIDR", "podCIDRs", "providerID"]));
  const status: Obj = {};
  const addresses = isObj(src.status) ? src.status.addresses : undefined;
  if (Array.isArray(addresses))
    status.addresses = addresses
      .filter((a): a is Obj => isObj(a) && a.type === "InternalIP")
      .map((a) => pick(a, ["type", "address"]));
  const ready = readyCondition(src.status, ["type", "status"]);
  if (ready) status.conditions = ready;
  setIfAny(out, "status", status);
  return out as KubernetesObject;
}

export function pruneNamespace(o: KubernetesObject): KubernetesObject {
  return { ...envelope(o), metadata: pruneMetadata(o.metadata) } as KubernetesObject;
}

/** Our own kinds: all of spec and status; metadata without managedFields and foreign annotations. */
export function pruneOwn(o: KubernetesObject): KubernetesObject {
  const src = o as Obj;
  const out = envelope(o);
  out.metadata = pruneMetadata(o.metadata, ["generation", "finalizers"]);
  if (src.spec !== undefined) out.spec = src.spec;
  if (src.status !== undefined) out.status = src.status;
  return out as KubernetesObject;
}

export function pruneService(o: KubernetesObject): KubernetesObject {
  const src = o as Obj;
  const out = envelope(o);
  out.metadata = pruneMetadata(o.metadata);
  setIfAny(out, "spec", pick(src.spec, ["externalIPs"]));
  return out as KubernetesObject;
}

/** The pruning for a kind KubeSource watches. */
export function prunerFor(kind: string): (o: KubernetesObject) => KubernetesObject {
  switch (kind) {
    case "Pod":
      return prunePod;
    case "Node":
      return pruneNode;
    case "Namespace":
      return pruneNamespace;
    case "Service":
      return pruneService;
    default:
      return pruneOwn;
  }
}
