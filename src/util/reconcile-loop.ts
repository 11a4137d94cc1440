import { backoffMs } from "./backoff.js";
import type { Logger } from "./log.js";

/** 200 ms after the first failure, doubling up to 10 s. */
const RETRY = { baseMs: 100, maxMs: 10_000 };

/**
 * One reconcile at a time; triggers that arrive while it runs collapse into one more run.
 * Failures retry with capped exponential backoff. This is the agents' only path to the kernel.
 */
export class ReconcileLoop {
  private running = false;
  private dirty = false;
  private verifyNext = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  /** Callers of `pass` waiting for the next reconcile to start and end (its outcome: true if it succeeded). */
  private passWaiters: ((ok: boolean) => void)[] = [];

  constructor(
    private readonly reconcile: (opts: { verify: boolean }) => Promise<void>,
    private readonly logger: Logger,
  ) {}

  trigger(opts: { verify?: boolean } = {}): void {
    if (this.stopped) return;
    this.dirty = true;
    if (opts.verify) this.verifyNext = true;
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.dirty && !this.stopped) {
      this.dirty = false;
      const verify = this.verifyNext;
      this.verifyNext = false;
      const waiters = this.passWaiters.splice(0);
      let ok = false;
      try {
        await this.reconcile({ verify });
        this.failures = 0;
        ok = true;
      } catch (e) {
        this.failures++;
        const delay = backoffMs(this.failures + 1, RETRY);
        this.logger.error({ err: (e as Error).message, retryInMs: delay }, "reconcile failed");
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.trigger({ verify: true }), delay);
      }
      for (const w of waiters) w(ok);
    }
    this.running = false;
    for (const w of this.passWaiters.splice(0)) w(false);
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Triggers a reconcile and resolves when one that started after this call has ended: true if
   * it succeeded. Unlike `idle`, it does not wait for passes triggered after it (a CNI ADD waits
   * for its own pass, not for every pod that arrived behind it). False when the loop is stopped.
   */
  pass(opts: { verify?: boolean } = {}): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    const done = new Promise<boolean>((r) => this.passWaiters.push(r));
    this.trigger(opts);
    return done;
  }

  /** Resolves when no reconcile is running or pending (tests and shutdown). */
  idle(): Promise<void> {
    if (!this.running && !this.dirty) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (!this.running) for (const w of this.passWaiters.splice(0)) w(false);
  }
}
