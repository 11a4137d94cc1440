/** How a retry waits: `baseMs` after the first failure, doubling, never more than `maxMs`. */
export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/**
 * The one retry delay of the project: capped exponential, for the `failures`-th failure in a row
 * (1-based). Callers that retry against a shared server add jitter on top (e.g. full jitter in
 * src/cloud/digitalocean/retry.ts).
 */
export function backoffMs(failures: number, b: Backoff): number {
  return Math.min(b.maxMs, b.baseMs * 2 ** Math.max(0, failures - 1));
}
