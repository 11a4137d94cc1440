/**
 * Faults the DigitalOcean stand-in injects on demand. Each fault applies to the next `count`
 * matching requests (or actions) and is then used up; `operationId` / `type` narrow the match.
 * The same definitions are accepted as JSON by `POST /_standin/faults` ({"kind": ..., ...}).
 */

export interface RateLimitFault {
  /** Requests to answer with 429 (default 1). */
  count?: number;
  operationId?: string;
  /** Value of the Retry-After header in seconds; omitted when undefined. */
  retryAfterSec?: number;
  /** ratelimit-reset = now + resetInSec (default 60). */
  resetInSec?: number;
}

export interface ServerErrorFault {
  count?: number;
  operationId?: string;
  status?: 500 | 502 | 503 | 504;
  /**
   * Apply the request first, then answer the error: the ambiguous failure where the client
   * cannot tell whether its write happened.
   */
  afterProcessing?: boolean;
  retryAfterSec?: number;
}

export interface DropConnectionFault {
  count?: number;
  operationId?: string;
  /** Apply the request, then close the socket without answering. */
  afterProcessing?: boolean;
}

export interface LatencyFault {
  ms: number;
  /** Requests to delay; unlimited when omitted. */
  count?: number;
  operationId?: string;
}

export interface SlowActionFault {
  /** How long new actions stay in progress; "forever" never finishes them. */
  durationMs: number | "forever";
  count?: number;
  /** Action type such as "assign_ip", "create", "power_off". */
  type?: string;
}

export interface FailActionFault {
  count?: number;
  type?: string;
}

export interface CorruptResponseFault {
  operationId: string;
  count?: number;
  /** Returns the (malformed) body to send instead. Programmatic only. */
  mutate: (body: unknown) => unknown;
}

export type FaultRequest =
  | ({ kind: "rateLimit" } & RateLimitFault)
  | ({ kind: "serverError" } & ServerErrorFault)
  | ({ kind: "dropConnection" } & DropConnectionFault)
  | ({ kind: "latency" } & LatencyFault)
  | ({ kind: "slowActions" } & SlowActionFault)
  | ({ kind: "failActions" } & FailActionFault);

interface Counted {
  remaining: number;
}

export type HttpFaultDecision =
  | { kind: "rateLimit"; retryAfterSec: number | undefined; resetInSec: number }
  | { kind: "serverError"; status: number; afterProcessing: boolean; retryAfterSec: number | undefined }
  | { kind: "dropConnection"; afterProcessing: boolean };

export class StandinFaults {
  private http: Array<
    (
      | (RateLimitFault & { kind: "rateLimit" })
      | (ServerErrorFault & { kind: "serverError" })
      | (DropConnectionFault & { kind: "dropConnection" })
    ) &
      Counted
  > = [];
  private latencies: Array<LatencyFault & Counted> = [];
  private slow: Array<SlowActionFault & Counted> = [];
  private failing: Array<FailActionFault & Counted> = [];
  private corrupt: Array<CorruptResponseFault & Counted> = [];

  rateLimit(f: RateLimitFault = {}): void {
    this.http.push({ kind: "rateLimit", ...f, remaining: f.count ?? 1 });
  }

  serverError(f: ServerErrorFault = {}): void {
    this.http.push({ kind: "serverError", ...f, remaining: f.count ?? 1 });
  }

  dropConnection(f: DropConnectionFault = {}): void {
    this.http.push({ kind: "dropConnection", ...f, remaining: f.count ?? 1 });
  }

  latency(f: LatencyFault): void {
    this.latencies.push({ ...f, remaining: f.count ?? Infinity });
  }

  slowActions(f: SlowActionFault): void {
    this.slow.push({ ...f, remaining: f.count ?? Infinity });
  }

  failActions(f: FailActionFault = {}): void {
    this.failing.push({ ...f, remaining: f.count ?? 1 });
  }

  corruptResponse(f: CorruptResponseFault): void {
    this.corrupt.push({ ...f, remaining: f.count ?? 1 });
  }

  /** Adds a fault described as JSON (the HTTP control endpoint). */
  add(req: FaultRequest): void {
    switch (req.kind) {
      case "rateLimit":
        return this.rateLimit(req);
      case "serverError":
        return this.serverError(req);
      case "dropConnection":
        return this.dropConnection(req);
      case "latency":
        return this.latency(req);
      case "slowActions":
        return this.slowActions(req);
      case "failActions":
        return this.failActions(req);
      default:
        throw new Error(`unknown fault kind ${JSON.stringify((req as { kind?: unknown }).kind)}`);
    }
  }

  clear(): void {
    this.http = [];
    this.latencies = [];
    this.slow = [];
    this.failing = [];
    this.corrupt = [];
  }

  /** Faults still armed (for assertions and the state endpoint). */
  pending(): { http: number; latency: number; slowActions: number; failActions: number; corrupt: number } {
    const live = <T extends Counted>(xs: T[]): number => xs.filter((x) => x.remaining > 0).length;
    return {
      http: live(this.http),
      latency: live(this.latencies),
      slowActions: live(this.slow),
      failActions: live(this.failing),
      corrupt: live(this.corrupt),
    };
  }

  takeLatency(operationId: string): number {
    let total = 0;
    for (const f of this.latencies) {
      if (f.remaining > 0 && (!f.operationId || f.operationId === operationId)) {
        f.remaining--;
        total += f.ms;
      }
    }
    return total;
  }

  takeHttp(operationId: string): HttpFaultDecision | undefined {
    const f = this.http.find((x) => x.remaining > 0 && (!x.operationId || x.operationId === operationId));
    if (!f) return undefined;
    f.remaining--;
    switch (f.kind) {
      case "rateLimit":
        return { kind: "rateLimit", retryAfterSec: f.retryAfterSec, resetInSec: f.resetInSec ?? 60 };
      case "serverError":
        return {
          kind: "serverError",
          status: f.status ?? 500,
          afterProcessing: f.afterProcessing === true,
          retryAfterSec: f.retryAfterSec,
        };
      case "dropConnection":
        return { kind: "dropConnection", afterProcessing: f.afterProcessing === true };
    }
  }

  takeCorruption(operationId: string): ((body: unknown) => unknown) | undefined {
    const f = this.corrupt.find((x) => x.remaining > 0 && x.operationId === operationId);
    if (!f) return undefined;
    f.remaining--;
    return f.mutate;
  }

  /** Duration and outcome of a new action of `type`. */
  actionTiming(type: string, defaultMs: number): { durationMs: number; errored: boolean } {
    let durationMs = defaultMs;
    const slow = this.slow.find((x) => x.remaining > 0 && (!x.type || x.type === type));
    if (slow) {
      slow.remaining--;
      durationMs = slow.durationMs === "forever" ? Infinity : slow.durationMs;
    }
    const fail = this.failing.find((x) => x.remaining > 0 && (!x.type || x.type === type));
    if (fail) fail.remaining--;
    return { durationMs, errored: fail !== undefined };
  }
}
