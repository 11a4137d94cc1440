import { parseAllDocuments } from "yaml";
import type { EgressGateway } from "./v1alpha1/egress-gateway.js";
import { API_VERSION, type ObjectMeta } from "./v1alpha1/common.js";
import type { ClusterNetwork, ClusterSnapshot, NamespaceInfo, NodeInfo, PodInfo, PolicyObject } from "./cluster.js";
import { StaticEgressError } from "../util/errors.js";

/** A Kubernetes object as it arrives from the API or a file: only the envelope is trusted. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: Partial<Pick<ObjectMeta, "name" | "namespace" | "labels" | "annotations" | "creationTimestamp">>;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

class DocumentError extends StaticEgressError {}

/** Parses a multi-document YAML file of Kubernetes objects; names the document that is broken. */
export function parseDocuments(text: string, source: string): KubeObject[] {
  const out: KubeObject[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    if (doc.errors.length > 0) throw new DocumentError(`${source}: document ${i + 1}: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) return;
    if (typeof value !== "object" || Array.isArray(value))
      throw new DocumentError(`${source}: document ${i + 1} is not an object`);
    const obj = value as KubeObject;
    if (obj.kind === "List" && Array.isArray((value as { items?: unknown }).items))
      out.push(...(value as { items: KubeObject[] }).items);
    else out.push(obj);
  });
  return out;
}

export function podInfo(o: KubeObject): PodInfo {
  const spec = (o.spec ?? {}) as { nodeName?: string; hostNetwork?: boolean };
  const status = (o.status ?? {}) as { podIP?: string; podIPs?: { ip?: unknown }[]; phase?: string };
  // Only the envelope is trusted: an entry without an address is skipped, not passed on as undefined.
  const listed = status.podIPs?.map((p) => p?.ip).filter((ip): ip is string => typeof ip === "string" && ip !== "");
  const ips = listed ?? (status.podIP ? [status.podIP] : []);
  return {
    namespace: o.metadata?.namespace ?? "default",
    name: o.metadata?.name ?? "",
    labels: o.metadata?.labels ?? {},
    ...(spec.nodeName ? { nodeName: spec.nodeName } : {}),
    ips,
    ...(status.phase ? { phase: status.phase } : {}),
    ...(spec.hostNetwork ? { hostNetwork: true } : {}),
  };
}

export function nodeInfo(o: KubeObject): NodeInfo {
  const spec = (o.spec ?? {}) as { podCIDR?: string; podCIDRs?: string[] };
  const status = (o.status ?? {}) as { addresses?: { type: string; address: string }[] };
  const internalIP = status.addresses?.find((a) => a.type === "InternalIP")?.address;
  return {
    name: o.metadata?.name ?? "",
    labels: o.metadata?.labels ?? {},
    annotations: o.metadata?.annotations ?? {},
    ...(internalIP ? { internalIP } : {}),
    podCIDRs: spec.podCIDRs ?? (spec.podCIDR ? [spec.podCIDR] : []),
  };
}

export function namespaceInfo(o: KubeObject): NamespaceInfo {
  return { name: o.metadata?.name ?? "", labels: o.metadata?.labels ?? {} };
}

/**
 * Builds the planner's snapshot from Kubernetes objects. Objects of kinds we do not read are
 * ignored; our own kinds are passed on as they are (the planner validates them, so one bad
 * policy is reported on itself and does not stop the others).
 */
export function snapshotFromObjects(objects: readonly KubeObject[], network: ClusterNetwork): ClusterSnapshot {
  const policies: PolicyObject[] = [];
  const gateways: EgressGateway[] = [];
  const pods: PodInfo[] = [];
  const nodes: NodeInfo[] = [];
  const namespaces: NamespaceInfo[] = [];
  for (const o of objects) {
    const ours = o.apiVersion === API_VERSION;
    if (ours && (o.kind === "EgressPolicy" || o.kind === "ClusterEgressPolicy"))
      policies.push(withEnvelope(o) as unknown as PolicyObject);
    else if (ours && o.kind === "EgressGateway") gateways.push(withEnvelope(o) as unknown as EgressGateway);
    else if (o.apiVersion === "v1" && o.kind === "Pod") pods.push(podInfo(o));
    else if (o.apiVersion === "v1" && o.kind === "Node") nodes.push(nodeInfo(o));
    else if (o.apiVersion === "v1" && o.kind === "Namespace") namespaces.push(namespaceInfo(o));
  }
  // A namespace that is only implied by its pods still has (empty) labels.
  const known = new Set(namespaces.map((n) => n.name));
  for (const p of pods) {
    if (known.has(p.namespace)) continue;
    known.add(p.namespace);
    namespaces.push({ name: p.namespace, labels: {} });
  }
  return { policies, gateways, pods, nodes, namespaces, network };
}

function withEnvelope(o: KubeObject): KubeObject {
  return { ...o, metadata: { ...o.metadata, name: o.metadata?.name ?? "" }, spec: o.spec ?? {} };
}
