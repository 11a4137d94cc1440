import type { Logger } from "pino";
import { DigitalOceanNetworkError } from "./errors.js";
import { decideRetry, DEFAULT_RETRY_POLICY, quotaExhaustedUntil, type RetryPolicy } from "./retry.js";
import type { Clock } from "../../util/clock.js";

export type FetchLike = (input: Request) => Promise<Response>;
export type Sleep = (ms: number) => Promise<void>;

export interface TransportOptions {
  /** Underlying fetch (default globalThis.fetch); tests wrap it to inject crashes. */
  fetch?: FetchLike;
  retry?: Partial<RetryPolicy>;
  sleep?: Sleep;
  now?: Clock["now"];
  random?: () => number;
  logger: Logger;
  /** Per-attempt timeout in ms (default 30 s); a timeout counts as a network error. */
  requestTimeoutMs?: number;
}

export const realSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Headers safe to log: the Authorization value never leaves this function. */
function redactHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => {
    out[key] = key.toLowerCase() === "authorization" ? "[Redacted]" : value;
  });
  return out;
}

/** Pino redaction paths used as a second line of defence for any logged header bag. */
export const LOG_REDACT_PATHS = [
  "headers.authorization",
  'headers["Authorization"]',
  "request.headers.authorization",
  "req.headers.authorization",
  "authorization",
  "token",
];

/**
 * A fetch that retries per the rules in retry.ts, honours rate-limit headers (also before
 * sending, when an earlier answer said the quota is used up), and logs every attempt without
 * credentials.
 */
export function createRetryingFetch(opts: TransportOptions): FetchLike {
  const baseFetch: FetchLike = opts.fetch ?? ((input) => globalThis.fetch(input));
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...opts.retry };
  const sleep = opts.sleep ?? realSleep;
  const now = opts.now ?? Date.now;
  const random = opts.random ?? Math.random;
  const timeoutMs = opts.requestTimeoutMs ?? 30_000;
  const log = opts.logger;
  let holdUntil = 0;

  return async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const method = request.method.toUpperCase();
    const target = `${url.pathname}${url.search}`;
    for (let attempt = 1; ; attempt++) {
      const hold = holdUntil - now();
      if (hold > 0) {
        const wait = Math.min(hold, policy.maxRateLimitWaitMs);
        log.warn({ method, path: target, waitMs: wait }, "DigitalOcean rate-limit quota used up; waiting for reset");
        await sleep(wait);
      }
      const started = now();
      let response: Response;
      try {
        response = await sendOnce(baseFetch, request.clone(), timeoutMs, request.signal);
      } catch (err) {
        if (!isNetworkError(err, request.signal)) throw err;
        const decision = decideRetry(
          { method, pathname: url.pathname, attempt, networkError: true },
          policy,
          now(),
          random,
        );
        log.warn(
          {
            method,
            path: target,
            attempt,
            error: errorText(err),
            retry: decision.retry,
            delayMs: decision.retry ? decision.delayMs : undefined,
            reason: decision.reason,
          },
          "DigitalOcean request failed without an answer",
        );
        if (!decision.retry) throw new DigitalOceanNetworkError(method, url.pathname, attempt, err);
        await sleep(decision.delayMs);
        continue;
      }
      const requestId = response.headers.get("x-request-id") ?? undefined;
      log.debug(
        {
          method,
          path: target,
          status: response.status,
          attempt,
          durationMs: now() - started,
          requestId,
          headers: redactHeaders(request.headers),
        },
        "DigitalOcean request",
      );
      const exhausted = quotaExhaustedUntil(response.headers);
      if (exhausted !== undefined && response.status !== 429) holdUntil = exhausted;
      if (response.ok || (response.status !== 429 && response.status < 500)) return response;

      const decision = decideRetry(
        { method, pathname: url.pathname, attempt, status: response.status, headers: response.headers },
        policy,
        now(),
        random,
      );
      log.warn(
        {
          method,
          path: target,
          attempt,
          status: response.status,
          requestId,
          retry: decision.retry,
          delayMs: decision.retry ? decision.delayMs : undefined,
          reason: decision.reason,
        },
        "DigitalOcean request answered with a retryable status",
      );
      if (!decision.retry) return response;
      await response.body?.cancel();
      await sleep(decision.delayMs);
    }
  };
}

async function sendOnce(
  fetchImpl: FetchLike,
  request: Request,
  timeoutMs: number,
  outer: AbortSignal,
): Promise<Response> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = AbortSignal.any([outer, timeout]);
  return fetchImpl(new Request(request, { signal }));
}

/** fetch failures (TypeError) and our own per-attempt timeout; a caller's abort is not retried. */
function isNetworkError(err: unknown, callerSignal: AbortSignal): boolean {
  if (callerSignal.aborted) return false;
  if (err instanceof TypeError) return true;
  return err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return `${err.name}: ${err.message}${detail}`;
}
