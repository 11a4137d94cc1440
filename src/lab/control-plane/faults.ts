import { StaticEgressError } from "../../util/errors.js";

/**
 * Faults for the fault proxy in front of the real API server (fault-proxy.ts), programmatic and
 * over HTTP (`POST /_faults` on the proxy, admin token required; `GET` lists the active rules,
 * `DELETE` clears them). A spec is one JSON object, or an array of them:
 *
 *   {"action":"dropWatches", "resource"?: "pods", "namespace"?: "x", "mode"?: "close"|"reset"}
 *       End every open watch now (of one resource, or of watches on one namespace, if given).
 *       "close" ends the response cleanly, as an API server does at a watch timeout (clients
 *       resume from their last resourceVersion); "reset" destroys the connection mid-stream.
 *   {"action":"fail", "status": 500, "count"?: 1, "verb"?: "list"|["list","watch"],
 *    "resource"?: "pods"|"pods/status"|"leases.coordination.k8s.io", "namespace"?: "x", "name"?: "y",
 *    "message"?: "...", "reason"?: "...", "retryAfterSeconds"?: 1, "inWatch"?: false}
 *       Answer the next `count` matching requests (-1: until cleared) with a Status of that code
 *       instead of passing them on. 429 and 5xx carry Retry-After. With "inWatch": true a matching
 *       watch is answered 200 with one ERROR event carrying the Status, then closed.
 *   {"action":"delay", "ms": 200, "count"?: -1, "verb"?: ..., "resource"?: ..., "namespace"?: ..., "name"?: ...}
 *       Hold matching requests for `ms` before passing them on (count -1, the default: until cleared).
 *   {"action":"compactEtcd"}
 *       Compact etcd at its current revision (a real cause of 410 Gone for old resourceVersions).
 *   {"action":"restartApiServer"}
 *       Stop kube-apiserver and start it again on the same port (a real restart).
 *
 * A resource without a subresource part matches the resource and its subresources.
 */

/** A Kubernetes `Status` object, as the API server answers errors. */
export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, unknown>;
  status: "Failure";
  message: string;
  reason: string;
  code: number;
  details?: { retryAfterSeconds?: number };
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  409: "Conflict",
  410: "Expired",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

function reasonForCode(code: number): string {
  return REASONS[code] ?? (code >= 500 ? "InternalError" : "Unknown");
}

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

/** What faults need from the proxy and the control plane. */
export interface FaultHooks {
  dropWatches(resource: string | undefined, mode: "close" | "reset", namespace: string | undefined): number;
  compactEtcd(): Promise<number>;
  restartApiServer(): Promise<void>;
}

export class FaultSpecError extends StaticEgressError {
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

  fail(rule: FailRule): string {
    validateMatch(rule);
    if (!Number.isInteger(rule.status) || rule.status < 400 || rule.status > 599)
      throw new FaultSpecError(`fail.status must be an HTTP error code (400-599), got ${String(rule.status)}`);
    return this.add("fail", rule, rule.count ?? 1);
  }

  delay(rule: DelayRule): string {
    validateMatch(rule);
    if (typeof rule.ms !== "number" || !(rule.ms >= 0))
      throw new FaultSpecError(`delay.ms must be a non-negative number, got ${String(rule.ms)}`);
    return this.add("delay", rule, rule.count ?? -1);
  }

  private add(action: "fail" | "delay", rule: FailRule | DelayRule, count: number): string {
    if (!Number.isInteger(count) || (count < 1 && count !== -1))
      throw new FaultSpecError(`${action}.count must be a positive integer or -1, got ${String(count)}`);
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
  async apply(spec: unknown): Promise<unknown[]> {
    const specs = Array.isArray(spec) ? spec : [spec];
    const results: unknown[] = [];
    for (const s of specs) results.push(await this.applyOne(s));
    return results;
  }

  private async applyOne(s: unknown): Promise<unknown> {
    {
      if (typeof s !== "object" || s === null) throw new FaultSpecError("a fault spec must be an object");
      const f = s as Record<string, unknown>;
      const resource = optionalString(f, "resource");
      switch (f.action) {
        case "dropWatches": {
          const mode = f.mode ?? "close";
          if (mode !== "close" && mode !== "reset")
            throw new FaultSpecError(`dropWatches.mode must be "close" or "reset"`);
          const namespace = optionalString(f, "namespace");
          return {
            action: "dropWatches",
            dropped: this.dropWatches({ ...(resource ? { resource } : {}), ...(namespace ? { namespace } : {}), mode }),
          };
        }
        case "compactEtcd":
          return { action: "compactEtcd", revision: await this.hooks.compactEtcd() };
        case "restartApiServer":
          await this.hooks.restartApiServer();
          return { action: "restartApiServer" };
        case "fail":
          return { action: "fail", id: this.fail(f as unknown as FailRule) };
        case "delay":
          return { action: "delay", id: this.delay(f as unknown as DelayRule) };
        default:
          throw new FaultSpecError(
            `unknown fault action ${JSON.stringify(f.action)}: expected fail, delay, dropWatches, compactEtcd or restartApiServer`,
          );
      }
    }
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
        const message =
          rule.message ??
          `injected fault: ${rule.status} ${reason} for ${req.verb} ${req.resource}${req.subresource ? `/${req.subresource}` : ""}`;
        const retryAfter = rule.retryAfterSeconds ?? (rule.status === 429 || rule.status >= 500 ? 1 : undefined);
        const status: Status = {
          kind: "Status",
          apiVersion: "v1",
          metadata: {},
          status: "Failure",
          message,
          reason,
          code: rule.status,
          ...(retryAfter !== undefined ? { details: { retryAfterSeconds: retryAfter } } : {}),
        };
        failure = {
          status,
          inWatch: rule.inWatch === true && req.verb === "watch",
          ...(retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : {}),
        };
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
  for (const v of verbs)
    if (!(VERBS as readonly string[]).includes(v))
      throw new FaultSpecError(`unknown verb ${JSON.stringify(v)}: expected one of ${VERBS.join(", ")}`);
  for (const k of ["resource", "namespace", "name"] as const)
    if (m[k] !== undefined && typeof m[k] !== "string") throw new FaultSpecError(`${k} must be a string`);
}
