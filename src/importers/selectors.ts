import type { LabelSelector } from "../api/v1alpha1/common.js";

/** The label the API server puts on every Namespace: how a pod's namespace is selected here. */
export const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";

/** A pod selector and a namespace selector: what one of our policies selects by. */
export interface PodAndNamespace {
  pod: LabelSelector;
  ns: LabelSelector;
}

/** JSON with sorted keys: equal selectors compare equal whatever the order in the source. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/** AND of two selectors; undefined when they require different values of one label (nothing matches). */
export function andSelectors(a: LabelSelector, b: LabelSelector): LabelSelector | undefined {
  const labels: Record<string, string> = { ...(a.matchLabels ?? {}) };
  for (const [k, v] of Object.entries(b.matchLabels ?? {})) {
    if (k in labels && labels[k] !== v) return undefined;
    labels[k] = v;
  }
  const exprs = [...(a.matchExpressions ?? []), ...(b.matchExpressions ?? [])];
  return {
    ...(Object.keys(labels).length > 0 ? { matchLabels: labels } : {}),
    ...(exprs.length > 0 ? { matchExpressions: exprs } : {}),
  };
}

/**
 * The OR of several (pod, namespace) selections as one, when one can say it: all equal, or
 * label maps that differ in the value of exactly one label (that label becomes `In` the values).
 * Otherwise the reason it cannot be one selection.
 */
export function orSelections(entries: readonly PodAndNamespace[]): PodAndNamespace | string {
  const unique = [...new Map(entries.map((e) => [canonical(e), e])).values()];
  if (unique.length === 1) return unique[0]!;
  if (unique.some((e) => e.pod.matchExpressions || e.ns.matchExpressions)) return "they use matchExpressions";
  const flat = unique.map((e) => ({
    ...Object.fromEntries(Object.entries(e.pod.matchLabels ?? {}).map(([k, v]) => [`pod\u0000${k}`, v])),
    ...Object.fromEntries(Object.entries(e.ns.matchLabels ?? {}).map(([k, v]) => [`ns\u0000${k}`, v])),
  }));
  const keys = canonical(Object.keys(flat[0]!).sort());
  if (flat.some((f) => canonical(Object.keys(f).sort()) !== keys)) return "they name different labels";
  const differing = Object.keys(flat[0]!).filter((k) => flat.some((f) => f[k] !== flat[0]![k]));
  if (differing.length !== 1) return `they differ in ${differing.length} labels`;
  const key = differing[0]!;
  const [side, label] = key.split("\u0000") as ["pod" | "ns", string];
  const values = [...new Set(flat.map((f) => f[key]!))].sort();
  const base = unique[0]!;
  const without = (s: LabelSelector): LabelSelector => {
    const rest = Object.fromEntries(Object.entries(s.matchLabels ?? {}).filter(([k]) => k !== label));
    return {
      ...(Object.keys(rest).length > 0 ? { matchLabels: rest } : {}),
      matchExpressions: [{ key: label, operator: "In", values }],
    };
  };
  return side === "pod" ? { pod: without(base.pod), ns: base.ns } : { pod: base.pod, ns: without(base.ns) };
}

/** `k=v, k2 In (a,b)` for messages. */
export function describeSelector(s: LabelSelector): string {
  const parts = [
    ...Object.entries(s.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`),
    ...(s.matchExpressions ?? []).map((e) => `${e.key} ${e.operator}${e.values ? ` (${e.values.join(",")})` : ""}`),
  ];
  return parts.length > 0 ? parts.join(", ") : "every node";
}
