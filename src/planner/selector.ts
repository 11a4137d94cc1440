import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, type LabelSelector } from "../api/v1alpha1/common.js";
import type { FieldError } from "../api/v1alpha1/validate.js";

// The same patterns the CRD schema and its CEL rules use.
const LABEL_KEY = new RegExp(LABEL_KEY_PATTERN);
const LABEL_VALUE = new RegExp(LABEL_VALUE_PATTERN);

/** Label syntax and operator/values agreement, as Kubernetes checks them (the CRD's schema and CEL rules check them too). */
export function checkSelector(selector: LabelSelector, field: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (!LABEL_KEY.test(key))
      errors.push({ field: `${field}.matchLabels`, message: `invalid label key ${JSON.stringify(key)}` });
    if (!LABEL_VALUE.test(value)) {
      errors.push({ field: `${field}.matchLabels.${key}`, message: `invalid label value ${JSON.stringify(value)}` });
    }
  }
  (selector.matchExpressions ?? []).forEach((req, i) => {
    const at = `${field}.matchExpressions[${i}]`;
    if (!LABEL_KEY.test(req.key))
      errors.push({ field: `${at}.key`, message: `invalid label key ${JSON.stringify(req.key)}` });
    const values = req.values ?? [];
    if ((req.operator === "In" || req.operator === "NotIn") && values.length === 0) {
      errors.push({ field: `${at}.values`, message: `must be non-empty when operator is ${req.operator}` });
    }
    if ((req.operator === "Exists" || req.operator === "DoesNotExist") && values.length > 0) {
      errors.push({ field: `${at}.values`, message: `must be empty when operator is ${req.operator}` });
    }
  });
  return errors;
}

/**
 * Kubernetes label selector semantics: every matchLabels entry and every expression must hold.
 * An absent selector selects nothing (a node-selecting ClusterEgressPolicy has no podSelector).
 */
export function matches(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>> = {}): boolean {
  if (!selector) return false;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, req.key);
    const value = labels[req.key];
    switch (req.operator) {
      case "In":
        if (!has || !(req.values ?? []).includes(value as string)) return false;
        break;
      case "NotIn":
        if (has && (req.values ?? []).includes(value as string)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
    }
  }
  return true;
}

/**
 * The label keys `selectors` read (matchLabels and matchExpressions). Pods whose labels agree on
 * these keys (`labelProjection`) are matched alike by every one of the selectors, so planning
 * matches such a group once instead of each pod (10,000 pods x 100 policies: 1,000,000 matches).
 */
export function selectorKeys(selectors: Iterable<LabelSelector | undefined>): string[] {
  const keys = new Set<string>();
  // Defensive about shape: this runs over objects not yet validated (a bad one is refused later).
  for (const s of selectors) {
    if (typeof s !== "object" || s === null) continue;
    if (typeof s.matchLabels === "object" && s.matchLabels !== null)
      for (const key of Object.keys(s.matchLabels)) keys.add(key);
    if (Array.isArray(s.matchExpressions))
      for (const req of s.matchExpressions as unknown[]) {
        const key = (req as { key?: unknown } | null)?.key;
        if (typeof key === "string") keys.add(key);
      }
  }
  return [...keys].sort();
}

/** `labels` restricted to `keys`, as a string: equal for two label sets iff they agree on every key (presence and value). */
export function labelProjection(labels: Readonly<Record<string, string>>, keys: readonly string[]): string {
  return JSON.stringify(keys.map((k) => (Object.prototype.hasOwnProperty.call(labels, k) ? [labels[k]] : 0)));
}
