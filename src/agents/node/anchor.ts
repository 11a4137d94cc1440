import { ANCHOR_ANNOTATION } from "../../api/keys.js";
import type { KubeClient } from "../../kube/client.js";
import { silentLogger, type Logger } from "../../util/log.js";
import { backoffMs } from "../../util/backoff.js";
import { backgroundClock, type Clock } from "../../util/clock.js";

export { ANCHOR_ANNOTATION };

/** Where a node's anchor IP comes from (flag `--anchor-ip-from`). */
export const ANCHOR_SOURCES = ["digitalocean-metadata"] as const;

/**
 * The port to the cloud: reads this host's anchor IPv4 (undefined: the host has none). The
 * composition root (src/cli/agents.ts) plugs in a provider's reader, e.g. DigitalOcean's metadata
 * service; the agent does not know which cloud it runs on.
 */
export type AnchorReader = () => Promise<{ address: string } | undefined>;

export interface AnchorPublisherOptions {
  client: Pick<KubeClient, "patchNodeAnnotations">;
  node: string;
  /** Reads the anchor. */
  read: AnchorReader;
  /**
   * The annotation as the API server has it now (the informer cache), preferred over what this
   * process wrote: saves a write after a restart and repairs a hand-edited annotation.
   */
  current?: () => string | undefined;
  logger?: Logger;
  /** Re-read the anchor this often once published (default 10 min). */
  recheckMs?: number;
  /** Backoff after a failed read or write: base, doubling up to max (default 1 s to 60 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Timers (default: the process's, never keeping it alive). */
  clock?: Clock;
}

export type AnchorOutcome = "written" | "removed" | "unchanged";

/**
 * Publishes this node's anchor IPv4 as the Node annotation `staticegress.io/anchor-ipv4`: read
 * from the metadata service until it succeeds (with backoff), then re-checked every 10 minutes.
 * The annotation is written only when it changes; a droplet without anchor removes it.
 */
export class AnchorPublisher {
  private readonly log: Logger;
  private readonly clock: Clock;
  /** What this process last wrote (undefined before the first write). */
  private written: { value: string | undefined } | undefined;
  private timer: unknown;
  private failures = 0;
  private stopped = false;

  constructor(private readonly opts: AnchorPublisherOptions) {
    this.log = (opts.logger ?? silentLogger).child({ part: "anchor-ip" });
    this.clock = opts.clock ?? backgroundClock;
  }

  /** Reads the anchor once and writes the annotation if it differs. Throws on failure. */
  async publishOnce(): Promise<AnchorOutcome> {
    const anchor = await this.opts.read();
    const want = anchor?.address;
    // The informer cache is the truth when there is one (someone may have edited the Node).
    const known = this.opts.current !== undefined || this.written !== undefined;
    const have = this.opts.current ? this.opts.current() : this.written?.value;
    if (known && want === have) return "unchanged";
    await this.opts.client.patchNodeAnnotations(this.opts.node, { [ANCHOR_ANNOTATION]: want ?? null });
    this.written = { value: want };
    if (want === undefined) this.log.info("this droplet has no anchor IP; annotation removed");
    else this.log.info({ anchor: want }, "published the anchor IP");
    return want === undefined ? "removed" : "written";
  }

  /** Runs in the background until `stop`: retries with backoff, then re-checks every `recheckMs`. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** Delay before the next attempt after `failures` failures in a row. */
  backoffMs(failures: number): number {
    return backoffMs(failures, { baseMs: this.opts.retryBaseMs ?? 1_000, maxMs: this.opts.retryMaxMs ?? 60_000 });
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(() => void this.tick(), ms);
  }

  private async tick(): Promise<void> {
    this.timer = undefined;
    try {
      await this.publishOnce();
      this.failures = 0;
      this.schedule(this.opts.recheckMs ?? 600_000);
    } catch (err) {
      this.failures++;
      const next = this.backoffMs(this.failures);
      this.log.warn({ err: (err as Error).message, retryInMs: next }, "could not publish the anchor IP; retrying");
      this.schedule(next);
    }
  }
}
