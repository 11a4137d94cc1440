import { createHash } from "node:crypto";
import type { KubeObject } from "../api/objects.js";
import { API_VERSION, type LabelSelector } from "../api/v1alpha1/common.js";
import { parseCidr, parseIPv4 } from "../util/ipv4.js";
import { GATEWAY_NODE_LABEL, IMPORTED_FROM_ANNOTATION, IMPORTED_FROM_LABEL } from "../api/keys.js";
import type { Finding } from "./types.js";

export { GATEWAY_NODE_LABEL };

/** `Kind/name` or `Kind/namespace/name`, how findings and annotations name a source object. */
export function refer(o: KubeObject, namespace?: string): string {
  const ns = namespace ?? o.metadata?.namespace;
  return `${o.kind ?? "?"}/${ns ? `${ns}/` : ""}${o.metadata?.name ?? "?"}`;
}

export function groupOf(apiVersion: string | undefined): string {
  const slash = (apiVersion ?? "").indexOf("/");
  return slash < 0 ? "" : (apiVersion ?? "").slice(0, slash);
}

/**
 * A DNS-1123 label (what our names are) from parts: lower case, other characters as '-'; over
 * 63 characters, cut and made unique by a hash of the whole.
 */
export function dnsName(...parts: string[]): string {
  const whole = parts.join("-");
  const clean =
    whole
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-")
      .replace(/-+/g, "-")
      .replace(/^-+|-+$/g, "") || "imported";
  if (clean.length <= 63) return clean;
  return `${clean.slice(0, 52).replace(/-+$/, "")}-${shortHash(whole)}`;
}

export function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 10);
}

export function isIPv4(text: unknown): text is string {
  if (typeof text !== "string") return false;
  try {
    parseIPv4(text);
    return true;
  } catch {
    return false;
  }
}

export function isIPv4Cidr(text: unknown): text is string {
  if (typeof text !== "string") return false;
  try {
    parseCidr(text);
    return true;
  } catch {
    return false;
  }
}

export function isIPv6Like(text: unknown): boolean {
  return typeof text === "string" && text.includes(":");
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `ignored` findings for the fields of `value` that a converter does not know (so none is dropped silently). */
export function unknownFields(value: unknown, path: string, known: readonly string[], source: string): Finding[] {
  if (!isObject(value)) return [];
  return Object.keys(value)
    .filter((k) => !known.includes(k))
    .map((k) => ({
      verdict: "ignored" as const,
      source,
      field: `${path}.${k}`,
      reason: "unknown field: no equivalent in static-egress",
    }));
}

/**
 * A peer's label selector (the Kubernetes shape) as ours, or the reason it is not one. Label
 * keys and values are judged later by our own validator, which names the field.
 */
export function readSelector(raw: unknown): LabelSelector | string {
  if (raw === undefined || raw === null) return {};
  if (!isObject(raw)) return "not a label selector";
  const out: LabelSelector = {};
  const { matchLabels, matchExpressions, ...rest } = raw;
  const extra = Object.keys(rest);
  if (extra.length > 0) return `unknown selector field ${extra[0]}`;
  if (matchLabels !== undefined) {
    if (!isObject(matchLabels) || Object.values(matchLabels).some((v) => typeof v !== "string"))
      return "matchLabels must map label keys to string values";
    if (Object.keys(matchLabels).length > 0) out.matchLabels = { ...(matchLabels as Record<string, string>) };
  }
  if (matchExpressions !== undefined) {
    if (!Array.isArray(matchExpressions)) return "matchExpressions must be a list";
    const exprs: NonNullable<LabelSelector["matchExpressions"]> = [];
    for (const e of matchExpressions as unknown[]) {
      if (
        !isObject(e) ||
        typeof e.key !== "string" ||
        !["In", "NotIn", "Exists", "DoesNotExist"].includes(e.operator as string)
      )
        return "matchExpressions entries need a key and an operator In, NotIn, Exists or DoesNotExist";
      const values = e.values;
      if (values !== undefined && (!Array.isArray(values) || values.some((v) => typeof v !== "string")))
        return "matchExpressions values must be strings";
      exprs.push({
        key: e.key,
        operator: e.operator as "In",
        ...(Array.isArray(values) && values.length > 0 ? { values: [...(values as string[])] } : {}),
      });
    }
    if (exprs.length > 0) out.matchExpressions = exprs;
  }
  return out;
}

/** Metadata of a made object: its name (and namespace), the source's labels, and where it came from. */
export function importedMetadata(
  source: string,
  from: readonly string[],
  name: string,
  namespace?: string,
  labels?: Record<string, string>,
): KubeObject["metadata"] & { name: string } {
  return {
    name,
    ...(namespace ? { namespace } : {}),
    labels: { ...(labels ?? {}), [IMPORTED_FROM_LABEL]: source },
    annotations: { [IMPORTED_FROM_ANNOTATION]: from.join(",") },
  };
}

/** Our object envelope around a spec. */
export function ours(
  kind: "EgressGateway" | "EgressPolicy" | "ClusterEgressPolicy",
  metadata: KubeObject["metadata"] & { name: string },
  spec: Record<string, unknown>,
): KubeObject & { metadata: { name: string } } {
  return { apiVersion: API_VERSION, kind, metadata, spec };
}

/**
 * Source labels copied to what is made; the annotations are not (they belong to the peer's
 * tooling), which is reported, except kubectl's own record of the last apply.
 */
export function sourceLabels(o: KubeObject): Record<string, string> {
  return { ...(o.metadata?.labels ?? {}) };
}

export function annotationFindings(o: KubeObject, source: string): Finding[] {
  return Object.keys(o.metadata?.annotations ?? {})
    .filter((k) => k !== "kubectl.kubernetes.io/last-applied-configuration")
    .map((k) => ({
      verdict: "ignored" as const,
      source,
      field: `metadata.annotations.${k}`,
      reason: "annotations of the source object are not copied (labels are)",
    }));
}
