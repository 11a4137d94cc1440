import { backoffMs } from "../../util/backoff.js";

/**
 * Retry rules of the DigitalOcean client (pure logic, no I/O).
 *
 * Which requests are retried:
 * - 429 Too Many Requests: every request, POST included. A rate-limited request was refused
 *   before it was processed, so repeating it cannot apply it twice. The wait is the
 *   `Retry-After` header (seconds or HTTP date) when present, else the time until
 *   `ratelimit-reset` (epoch seconds), else exponential backoff. A wait longer than
 *   `maxRateLimitWaitMs` is not waited out: the error goes to the caller, who requeues.
 * - 5xx and network errors (connection refused/reset, per-request timeout): only idempotent
 *   requests - GET, HEAD, PUT, DELETE, OPTIONS, plus POSTs with set semantics whose repetition
 *   changes nothing (add droplets/tags to a firewall, create a tag, tag resources). Such a failure
 *   is ambiguous: the server may have applied the request. A POST that creates something
 *   (droplet, reserved IP, firewall) or starts an action is therefore never repeated blindly; the
 *   caller makes it idempotent by looking the resource up (by tag/name) before creating it again
 *   (see DigitalOceanProvider).
 * - Backoff: full jitter, delay = random() * min(maxDelayMs, baseDelayMs * 2^(retry-1)); a
 *   Retry-After on a 5xx raises the delay to at least that value.
 * - At most `maxAttempts` attempts per request (first one included).
 */

export interface RetryPolicy {
  /** Attempts per request, the first one included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Longest rate-limit wait honoured; a longer Retry-After/reset fails the request instead. */
  maxRateLimitWaitMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  maxRateLimitWaitMs: 60_000,
};

const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);

/** POST endpoints whose repetition has no further effect (set semantics). */
const IDEMPOTENT_POSTS: RegExp[] = [
  /^\/v2\/firewalls\/[^/]+\/droplets\/?$/,
  /^\/v2\/firewalls\/[^/]+\/tags\/?$/,
  /^\/v2\/tags\/?$/,
  /^\/v2\/tags\/[^/]+\/resources\/?$/,
];

export function isIdempotentRequest(method: string, pathname: string): boolean {
  const m = method.toUpperCase();
  if (IDEMPOTENT_METHODS.has(m)) return true;
  return m === "POST" && IDEMPOTENT_POSTS.some((re) => re.test(pathname));
}

/** Full-jitter exponential backoff for the `retry`-th retry (1-based). */
export function backoffDelayMs(retry: number, policy: RetryPolicy, random: () => number): number {
  const ceiling = backoffMs(retry, { baseMs: policy.baseDelayMs, maxMs: policy.maxDelayMs });
  return Math.floor(random() * ceiling);
}

/** Wait requested by the server: Retry-After (seconds or HTTP date), else until ratelimit-reset. */
export function serverRequestedWaitMs(headers: Headers, nowMs: number, useReset: boolean): number | undefined {
  const retryAfter = headers.get("retry-after");
  if (retryAfter !== null && retryAfter.trim() !== "") {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) return Math.max(0, date - nowMs);
  }
  if (useReset) {
    const reset = Number(headers.get("ratelimit-reset"));
    if (headers.get("ratelimit-reset") !== null && Number.isFinite(reset) && reset > 0) {
      return Math.max(0, reset * 1000 - nowMs);
    }
  }
  return undefined;
}

/** When the quota is used up (ratelimit-remaining: 0), the time to hold further requests until. */
export function quotaExhaustedUntil(headers: Headers): number | undefined {
  const remaining = headers.get("ratelimit-remaining");
  const reset = Number(headers.get("ratelimit-reset"));
  if (remaining === null || Number(remaining) > 0 || !Number.isFinite(reset) || reset <= 0) return undefined;
  return reset * 1000;
}

export type RetryDecision = { retry: true; delayMs: number; reason: string } | { retry: false; reason: string };

export interface AttemptOutcome {
  method: string;
  pathname: string;
  /** 1-based number of the attempt that just failed. */
  attempt: number;
  status?: number;
  headers?: Headers;
  networkError?: boolean;
}

export function decideRetry(
  outcome: AttemptOutcome,
  policy: RetryPolicy,
  nowMs: number,
  random: () => number,
): RetryDecision {
  if (outcome.attempt >= policy.maxAttempts)
    return { retry: false, reason: `gave up after ${outcome.attempt} attempts` };
  const backoff = backoffDelayMs(outcome.attempt, policy, random);
  if (outcome.status === 429) {
    const wait = outcome.headers ? serverRequestedWaitMs(outcome.headers, nowMs, true) : undefined;
    if (wait !== undefined && wait > policy.maxRateLimitWaitMs) {
      return { retry: false, reason: `rate limited for ${wait} ms, more than ${policy.maxRateLimitWaitMs} ms` };
    }
    return { retry: true, delayMs: wait ?? backoff, reason: "rate limited (429)" };
  }
  const transient = outcome.networkError === true || (outcome.status !== undefined && outcome.status >= 500);
  if (!transient) return { retry: false, reason: "not a transient failure" };
  if (!isIdempotentRequest(outcome.method, outcome.pathname)) {
    return { retry: false, reason: "not idempotent: the server may have applied it" };
  }
  const serverWait = outcome.headers ? serverRequestedWaitMs(outcome.headers, nowMs, false) : undefined;
  const delayMs = Math.max(backoff, Math.min(serverWait ?? 0, policy.maxRateLimitWaitMs));
  return { retry: true, delayMs, reason: outcome.networkError ? "network error" : `server error ${outcome.status}` };
}
