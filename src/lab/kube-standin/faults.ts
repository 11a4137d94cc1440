/**
 * Fault injection, programmatic and over HTTP (`POST /_standin/faults`, `GET` lists the active
 * rules, `DELETE` clears them). A spec is one JSON object, or an array of them:
 *
 *   {"action":"dropWatches", "resource"?: "pods", "namespace"?: "x", "mode"?: "close"|"reset"}
 *       End every open watch now (of one resource, or of watches on one namespace, if given). "close" ends the response cleanly,
 *       as an apiserver does at a watch timeout (clients resume from their last
 *       resourceVersion); "reset" destroys the connection mid-stream.
 *   {"action":"fail", "status": 500, "count"?: 1, "verb"?: "list"|["list","watch"],
 *    "resource"?: "pods"|"pods/status"|"leases.coordination.k8s.io", "namespace"?: "x", "name"?: "y",
 *    "message"?: "...", "reason"?: "...", "retryAfterSeconds"?: 1, "inWatch"?: false}
 *       Answer the next `count` matching requests (-1: until cleared) with a Status of that code.
 *       429 and 5xx carry Retry-After. With "inWatch": true a matching watch is answered 200
 *       with one ERROR event carrying the Status, then closed (how a real server reports 410).
 *   {"action":"delay", "ms": 200, "count"?: -1, "verb"?: ..., "resource"?: ..., "namespace"?: ..., "name"?: ...}
 *       Hold matching requests for `ms` before handling them (count -1, the default: until cleared).
 *   {"action":"expireHistory", "resource"?: "pods"}
 *       Compact the event history (of one resource if given): a watch resuming from any
 *       resourceVersion issued before this gets 410 Gone, and so does a list with
 *       resourceVersionMatch=Exact or a continue token from before.
 *
 * A resource without a subresource part matches the resource and its subresources.
 */

import { reasonForCode, StatusError, type Status } from "./errors.js";

export const VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"] as const;
export type Verb = (typeof VERBS)[number];

/** What the router knows about a request, for matching. */
export interface RequestInfo {
  verb: Verb;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

interface Match {
  verb?: Verb | Verb[];
  resource?: string;
  namespace?: string;
  name?: string;
}

export interface FailRule extends Match {
  status: number;
  count?: number;
  message?: string;
  reason?: string;
  retryAfterSeconds?: number;
  inWatch?: boolean;
}

export interface DelayRule extends Match {
  ms: number;
  count?: number;
}

export type FaultSpec =
  | ({ action: "fail" } & FailRule)
  | ({ action: "delay" } & DelayRule)
  | { action: "dropWatches"; resource?: string; namespace?: string; mode?: "close" | "reset" }
  | { action: "expireHistory"; resource?: string };

export interface ActiveFault {
  id: string;
  action: "fail" | "delay";
  remaining: number;
  rule: FailRule | DelayRule;
}

export interface FaultDecision {
  delayMs: number;
  failure?: { status: Status; retryAfterSeconds?: number; inWatch: boolean };
}

/** What faults need from the server. */
export interface FaultHooks {
  dropWatches(resource: string | undefined, mode: "close" | "reset", namespace: string | undefined): number;
  expireHistory(resource: string | undefined): number;
}

export class FaultSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FaultSpecError";
  }
}

function matches(m: Match, req: RequestInfo): boolean {
  if (m.verb !== undefined && !(Array.isArray(m.verb) ? m.verb.includes(req.verb) : m.verb === req.verb)) return false;
  if (m.namespace !== undefined && m.namespace !== req.namespace) return false;
  if (m.name !== undefined && m.name !== req.name) return false;
  if (m.resource !== undefined) {
    const [base, sub] = m.resource.split("/");
    const qualified = req.group ? `${req.resource}.${req.group}` : req.resource;
    if (base !== req.resource && base !== qualified) return false;
    if (sub !== undefined && sub !== req.subresource) return false;
  }
  return true;
}

export class FaultInjector {
  private readonly rules: ActiveFault[] = [];
  private nextId = 1;

  constructor(private readonly hooks: FaultHooks) {}

  /** Ends open watches now; returns how many. */
  dropWatches(opts: { resource?: string; namespace?: string; mode?: "close" | "reset" } = {}): number {
    return this.hooks.dropWatches(opts.resource, opts.mode ?? "close", opts.namespace);
  }

  /** Compacts history; returns the resourceVersion compacted at. */
  expireHistory(opts: { resource?: string } = {}): number {
    return this.hooks.expireHistory(opts.resource);
  }

  fail(rule: FailRule): string {
    validateMatch(rule);
    if (!Number.isInteger(rule.status) || rule.status < 400 || rule.status > 599) throw new FaultSpecError(`fail.status must be an HTTP error code (400-599), got ${String(rule.status)}`);
    return this.add("fail", rule, rule.count ?? 1);
  }

  delay(rule: DelayRule): string {
    validateMatch(rule);
    if (typeof rule.ms !== "number" || !(rule.ms >= 0)) throw new FaultSpecError(`delay.ms must be a non-negative number, got ${String(rule.ms)}`);
    return this.add("delay", rule, rule.count ?? -1);
  }

  private add(action: "fail" | "delay", rule: FailRule | DelayRule, count: number): string {
    if (!Number.isInteger(count) || (count < 1 && count !== -1)) throw new FaultSpecError(`${action}.count must be a positive integer or -1, got ${String(count)}`);
    const id = `f${this.nextId++}`;
    this.rules.push({ id, action, remaining: count, rule: { ...rule } });
    return id;
  }

  remove(id: string): boolean {
    const i = this.rules.findIndex((r) => r.id === id);
    if (i >= 0) this.rules.splice(i, 1);
    return i >= 0;
  }

  clear(): void {
    this.rules.length = 0;
  }

  active(): ActiveFault[] {
    return this.rules.map((r) => ({ ...r, rule: { ...r.rule } }));
  }

  /** Applies a spec (parsed JSON from the HTTP endpoint or a test); returns what each part did. */
  apply(spec: unknown): unknown[] {
    const specs = Array.isArray(spec) ? spec : [spec];
    return specs.map((s) => {
      if (typeof s !== "object" || s === null) throw new FaultSpecError("a fault spec must be an object");
      const f = s as Record<string, unknown>;
      const resource = optionalString(f, "resource");
      switch (f.action) {
        case "dropWatches": {
          const mode = f.mode ?? "close";
          if (mode !== "close" && mode !== "reset") throw new FaultSpecError(`dropWatches.mode must be "close" or "reset"`);
          const namespace = optionalString(f, "namespace");
          return { action: "dropWatches", dropped: this.dropWatches({ ...(resource ? { resource } : {}), ...(namespace ? { namespace } : {}), mode }) };
        }
        case "expireHistory":
          return { action: "expireHistory", compactedAt: this.expireHistory(resource ? { resource } : {}) };
        case "fail":
          return { action: "fail", id: this.fail(f as unknown as FailRule) };
        case "delay":
          return { action: "delay", id: this.delay(f as unknown as DelayRule) };
        default:
          throw new FaultSpecError(`unknown fault action ${JSON.stringify(f.action)}: expected fail, delay, dropWatches or expireHistory`);
      }
    });
  }

  /** What to do with a request; consumes the counts of the rules that apply. */
  decide(req: RequestInfo): FaultDecision {
    let delayMs = 0;
    let failure: FaultDecision["failure"];
    for (const r of [...this.rules]) {
      if (!matches(r.rule, req)) continue;
      if (r.action === "delay") delayMs = Math.max(delayMs, (r.rule as DelayRule).ms);
      else if (failure) continue;
      else {
        const rule = r.rule as FailRule;
        const reason = rule.reason ?? reasonForCode(rule.status);
        const message = rule.message ?? `injected fault: ${rule.status} ${reason} for ${req.verb} ${req.resource}${req.subresource ? `/${req.subresource}` : ""}`;
        const retryAfter = rule.retryAfterSeconds ?? (rule.status === 429 || rule.status >= 500 ? 1 : undefined);
        const err = new StatusError(rule.status, reason, message, retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : undefined);
        failure = { status: err.toStatus(), inWatch: rule.inWatch === true && req.verb === "watch", ...(retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : {}) };
      }
      if (r.remaining > 0 && --r.remaining === 0) this.remove(r.id);
    }
    return failure ? { delayMs, failure } : { delayMs };
  }
}

function optionalString(f: Record<string, unknown>, key: string): string | undefined {
  const v = f[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new FaultSpecError(`${key} must be a string`);
  return v;
}

function validateMatch(m: Match): void {
  const verbs = m.verb === undefined ? [] : Array.isArray(m.verb) ? m.verb : [m.verb];
  for (const v of verbs) if (!(VERBS as readonly string[]).includes(v)) throw new FaultSpecError(`unknown verb ${JSON.stringify(v)}: expected one of ${VERBS.join(", ")}`);
  for (const k of ["resource", "namespace", "name"] as const) if (m[k] !== undefined && typeof m[k] !== "string") throw new FaultSpecError(`${k} must be a string`);
}
