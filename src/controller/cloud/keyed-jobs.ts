import type { Logger } from "../../util/log.js";
import { backoffMs } from "../../util/backoff.js";

export interface KeyedJobsOptions {
  /** The work for one key. It reads the latest wanted state itself (level-triggered). */
  work: (key: string) => Promise<void>;
  logger: Logger;
  /** First retry delay after a failure, doubled per consecutive failure up to `retryMaxMs`. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** The log message of a failure (default "cloud work failed; retrying"). */
  failureMessage?: string;
  /** Called for every failure (after logging); e.g. to record an Event. */
  onError?: (key: string, err: Error) => void;
}

/**
 * Background work per key (a gateway, a reserved IP), so that slow cloud calls (a droplet boot,
 * an IP action) never hold up the controller's reconcile pass or each other. Per key at most one
 * run at a time; a schedule while it runs makes one more run afterwards (with the state of then).
 * A failed run is retried with capped exponential backoff.
 */
export class KeyedJobs {
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  private stopped = false;

  constructor(private readonly opts: KeyedJobsOptions) {}

  /** Runs the key's work now, or once more after the current run. Cancels a pending retry. */
  schedule(key: string): void {
    if (this.stopped) return;
    const retry = this.retries.get(key);
    if (retry) {
      clearTimeout(retry);
      this.retries.delete(key);
    }
    if (this.running.has(key)) {
      this.again.add(key);
      return;
    }
    const run = this.run(key).finally(() => {
      this.running.delete(key);
      if (this.again.delete(key)) this.schedule(key);
    });
    this.running.set(key, run);
  }

  isRunning(key: string): boolean {
    return this.running.has(key);
  }

  /** Running, about to run again, or waiting to retry after a failure. */
  isBusy(key: string): boolean {
    return this.running.has(key) || this.retries.has(key) || this.again.has(key);
  }

  /** Consecutive failures of the key's work (0 after a success). */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Keys whose last run failed (being retried). */
  failing(): number {
    return this.failures.size;
  }

  /** Resolves when nothing runs (pending retries do not count). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** No new runs or retries; waits for the current runs to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
    this.again.clear();
    await this.idle();
  }

  private async run(key: string): Promise<void> {
    try {
      await this.opts.work(key);
      this.failures.delete(key);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = backoffMs(n, { baseMs: this.opts.retryBaseMs ?? 1_000, maxMs: this.opts.retryMaxMs ?? 60_000 });
      this.opts.logger.warn(
        { key, err: err.message, failures: n, retryInMs: delay },
        this.opts.failureMessage ?? "cloud work failed; retrying",
      );
      this.opts.onError?.(key, err);
      if (this.stopped) return;
      // A schedule that came in meanwhile runs at once anyway; otherwise wait out the backoff.
      if (this.again.has(key)) return;
      const t = setTimeout(() => {
        this.retries.delete(key);
        this.schedule(key);
      }, delay);
      t.unref();
      this.retries.set(key, t);
    }
  }
}
