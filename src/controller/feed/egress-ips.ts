import { createHash } from "node:crypto";
import { PUBLISH_EGRESS_IPS_ANNOTATION } from "../../api/keys.js";
import { parseIPv4 } from "../../util/ipv4.js";
import { APP_POLICY_NAME } from "../../planner/app-egress.js";
import { APP_LABEL, namespaceOf } from "../../planner/apps.js";

/*
 * The egress-IP feed (docs/explain.md): a JSON document per published policy or App (its egress
 * IPs, gateway and when the IPs last changed) and one of all of them, for partners' allowlist
 * automation. Opt-in: a policy's `spec.publishEgressIPs: true`, an App's annotation
 * `staticegress.io/publish-egress-ips: "true"`. Pure: the controller serves what this builds from
 * its informers (src/controller/feed/http.ts), `static-egress egress-ips` prints the same from
 * the API. The IPs are the ones the controller resolved (status.egressIPs: valid and owned), never
 * what a spec merely asks for; lastChange is status.egressIPsChangedAt, kept in the API.
 */

/** An object as the informers (or the API) give it: only what the feed reads. */
export interface FeedObject {
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: unknown;
  status?: unknown;
}

export type FeedRef =
  | { kind: "EgressPolicy"; namespace: string; name: string }
  | { kind: "ClusterEgressPolicy"; name: string }
  | { kind: "App"; name: string };

/** One published policy or App. */
export interface EgressIPsEntry {
  kind: FeedRef["kind"];
  namespace?: string;
  name: string;
  /** Where its own document is served. */
  path: string;
  gateway: string | null;
  /** Sorted by address; empty when nothing carries its traffic with an egress IP of its own (Invalid, no dedicated IPs). */
  egressIPs: string[];
  /** When the set of egress IPs last changed (RFC 3339), null when not known yet. */
  lastChange: string | null;
}

/** The document of every published entry. */
export interface EgressIPsList {
  /** Every entry's IPs, once each, sorted. */
  egressIPs: string[];
  /** The latest lastChange of any entry. */
  lastChange: string | null;
  items: EgressIPsEntry[];
}

export const FEED_PATH = "/egress-ips";

/** A bad opt-in on an object (named with its field): it is left out of the feed. */
export interface FeedProblem {
  resource: string;
  field: string;
  message: string;
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * `<name>` (a ClusterEgressPolicy), `<namespace>/<name>` (an EgressPolicy), `apps/<name>` (an App),
 * `namespaces/<namespace>/<name>` (an EgressPolicy, also in a namespace called `apps`); undefined
 * when it is none of these.
 */
export function parseFeedRef(ref: string): FeedRef | undefined {
  const parts = ref.split("/");
  if (!parts.every((p) => NAME.test(p))) return undefined;
  if (parts.length === 1) return { kind: "ClusterEgressPolicy", name: parts[0]! };
  if (parts.length === 2 && parts[0] === "apps") return { kind: "App", name: parts[1]! };
  if (parts.length === 2) return { kind: "EgressPolicy", namespace: parts[0]!, name: parts[1]! };
  if (parts.length === 3 && parts[0] === "namespaces")
    return { kind: "EgressPolicy", namespace: parts[1]!, name: parts[2]! };
  return undefined;
}

function pathOf(ref: FeedRef): string {
  switch (ref.kind) {
    case "ClusterEgressPolicy":
      return `${FEED_PATH}/${ref.name}`;
    case "App":
      return `${FEED_PATH}/apps/${ref.name}`;
    case "EgressPolicy":
      // `apps/<name>` is an App's: a namespace called apps takes the long form.
      return ref.namespace === "apps"
        ? `${FEED_PATH}/namespaces/${ref.namespace}/${ref.name}`
        : `${FEED_PATH}/${ref.namespace}/${ref.name}`;
  }
}

function byAddress(ips: Iterable<string>): string[] {
  const key = (ip: string) => {
    try {
      return parseIPv4(ip);
    } catch {
      return Number.MAX_SAFE_INTEGER; // not ours to judge here; status holds addresses the planner checked
    }
  };
  return [...new Set(ips)].sort((a, b) => key(a) - key(b) || (a < b ? -1 : a > b ? 1 : 0));
}

interface PolicyView {
  spec?: { gatewayName?: unknown; publishEgressIPs?: unknown };
  status?: { egressIPs?: unknown; egressIPsChangedAt?: unknown };
}

function statusIPs(o: PolicyView): string[] {
  const ips = o.status?.egressIPs;
  return Array.isArray(ips) ? byAddress(ips.filter((ip): ip is string => typeof ip === "string")) : [];
}

function stringOrNull(v: unknown): string | null {
  return typeof v === "string" && v !== "" ? v : null;
}

/**
 * Every published entry, sorted by path, and the opt-ins that could not be read. `policies` are
 * EgressPolicies and ClusterEgressPolicies (with `kind`), `apps` the Apps (any `kind`).
 */
export function feedEntries(input: { policies: readonly FeedObject[]; apps: readonly FeedObject[] }): {
  entries: EgressIPsEntry[];
  problems: FeedProblem[];
} {
  const entries: EgressIPsEntry[] = [];
  const problems: FeedProblem[] = [];
  for (const o of input.policies) {
    const p = o as FeedObject & PolicyView;
    const name = o.metadata?.name ?? "";
    if (o.kind !== "EgressPolicy" && o.kind !== "ClusterEgressPolicy") continue;
    if (p.spec?.publishEgressIPs !== true) continue; // the schema takes only booleans
    const ref: FeedRef =
      o.kind === "EgressPolicy"
        ? { kind: "EgressPolicy", namespace: o.metadata?.namespace ?? "default", name }
        : { kind: "ClusterEgressPolicy", name };
    entries.push({
      ...ref,
      path: pathOf(ref),
      gateway: stringOrNull(p.spec?.gatewayName),
      egressIPs: statusIPs(p),
      lastChange: stringOrNull(p.status?.egressIPsChangedAt),
    });
  }
  for (const app of input.apps) {
    const name = app.metadata?.name ?? "";
    const value = app.metadata?.annotations?.[PUBLISH_EGRESS_IPS_ANNOTATION];
    if (value === undefined || value === "false") continue;
    if (value !== "true") {
      problems.push({
        resource: `App/${name}`,
        field: `metadata.annotations[${PUBLISH_EGRESS_IPS_ANNOTATION}]`,
        message: `must be "true" or "false", not ${JSON.stringify(value)}: the App is not published`,
      });
      continue;
    }
    // The App's own policy (src/planner/app-egress.ts), made by the controller in the App's namespace.
    const policy = input.policies.find(
      (p) =>
        p.kind === "EgressPolicy" &&
        p.metadata?.namespace === namespaceOf(name) &&
        p.metadata?.name === APP_POLICY_NAME &&
        p.metadata?.labels?.[APP_LABEL] === name,
    ) as (FeedObject & PolicyView) | undefined;
    const conditions = (app.status as { conditions?: { type?: string; lastTransitionTime?: string }[] } | undefined)
      ?.conditions;
    const dedicated = conditions?.find((c) => c.type === "DedicatedEgress")?.lastTransitionTime;
    const ref: FeedRef = { kind: "App", name };
    entries.push({
      ...ref,
      path: pathOf(ref),
      gateway: policy ? stringOrNull(policy.spec?.gatewayName) : null,
      egressIPs: policy ? statusIPs(policy) : [],
      // Without its policy (no dedicated IPs, or no longer), the last change of its dedicated egress.
      lastChange: stringOrNull(policy?.status?.egressIPsChangedAt) ?? stringOrNull(dedicated),
    });
  }
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { entries, problems };
}

export interface FeedDocument {
  /** The JSON served (and printed by `egress-ips -o json`), byte for byte. */
  body: string;
  /** A strong ETag over the body: equal bodies, equal tags. */
  etag: string;
  value: EgressIPsList | EgressIPsEntry;
}

function document(value: EgressIPsList | EgressIPsEntry): FeedDocument {
  const body = JSON.stringify(value, null, 2) + "\n";
  return { body, etag: `"${createHash("sha256").update(body).digest("base64url")}"`, value };
}

/** The document of one entry (undefined: not there or not published), or of all of them without `ref`. */
export function feedDocument(entries: readonly EgressIPsEntry[], ref?: FeedRef): FeedDocument | undefined {
  if (ref === undefined) {
    const changes = entries.map((e) => e.lastChange).filter((t): t is string => t !== null);
    return document({
      egressIPs: byAddress(entries.flatMap((e) => e.egressIPs)),
      lastChange: changes.length > 0 ? changes.reduce((a, b) => (Date.parse(a) >= Date.parse(b) ? a : b)) : null,
      items: [...entries],
    });
  }
  const path = pathOf(ref);
  const entry = entries.find((e) => e.path === path);
  return entry ? document(entry) : undefined;
}

/** Whether an `If-None-Match` header names this ETag (or is `*`): then the answer is 304. */
export function notModified(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch
    .split(",")
    .map((t) => t.trim())
    .some((t) => t === "*" || t === etag || t === `W/${etag}`);
}
