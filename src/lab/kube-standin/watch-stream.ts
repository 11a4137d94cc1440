/**
 * One watch response: newline-delimited JSON events over a chunked HTTP response, written
 * with backpressure. Events wait in a queue of object references (encoded only when written),
 * so a client that reads slowly costs memory for references, not for encoded copies; a client
 * that falls too far behind is disconnected, as the apiserver does with unresponsive watchers.
 */

import type { ServerResponse } from "node:http";
import type { Status } from "./errors.js";
import type { WatchEventType, WatchTarget } from "./watch.js";
import type { KubeObject } from "./types.js";

export interface WatchStreamOptions {
  /** Encodes one event as a line (without the newline). */
  encode(type: WatchEventType, obj: KubeObject | Status, memo?: Map<string, unknown>): string;
  /** Called once when the stream ends for any reason. */
  onClose(): void;
  /** Pending events beyond which the watcher counts as unresponsive and is dropped. */
  maxPending?: number;
  /** Resource this watch follows (`pods`, `leases.coordination.k8s.io`), for fault matching. */
  resource: string;
  plural: string;
  /** The watched namespace (undefined: all namespaces or a cluster-scoped resource). */
  namespace: string | undefined;
  allowBookmarks: boolean;
}

interface Pending {
  type: WatchEventType;
  obj: KubeObject | Status;
  memo: Map<string, unknown> | undefined;
}

const CHUNK_BYTES = 64 * 1024;

export class WatchStream implements WatchTarget {
  private readonly queue: Pending[] = [];
  private head = 0;
  private waitingForDrain = false;
  private started = false;
  private ending = false;
  private closed = false;
  private readonly maxPending: number;

  constructor(
    private readonly res: ServerResponse,
    private readonly opts: WatchStreamOptions,
  ) {
    this.maxPending = opts.maxPending ?? 500_000;
    res.on("close", () => this.finish());
  }

  get resource(): string {
    return this.opts.resource;
  }

  get plural(): string {
    return this.opts.plural;
  }

  get namespace(): string | undefined {
    return this.opts.namespace;
  }

  get allowBookmarks(): boolean {
    return this.opts.allowBookmarks;
  }

  get isClosed(): boolean {
    return this.closed || this.ending;
  }

  /** Nothing waiting to be written (a good moment for a bookmark). */
  get idle(): boolean {
    return this.head === this.queue.length && !this.waitingForDrain;
  }

  /**
   * Sends the response headers and everything queued so far. Until then events only queue,
   * so that a watch that cannot start can still be answered with a plain error status.
   */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache, private" });
    this.res.flushHeaders();
    this.pump();
  }

  /** Forgets the stream without writing anything (the caller answers the request itself). */
  abandon(): void {
    this.finish();
  }

  send(type: WatchEventType, obj: KubeObject | Status, memo?: Map<string, unknown>): void {
    if (this.closed || this.ending) return;
    this.queue.push({ type, obj, memo });
    if (this.queue.length - this.head > this.maxPending) {
      // Like the apiserver's "forcing watcher close due to unresponsiveness".
      this.reset();
      return;
    }
    this.pump();
  }

  fail(status: Status): void {
    this.send("ERROR", status);
    this.end();
  }

  /** Ends cleanly once everything queued is written. */
  end(): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    this.pump();
  }

  /** Drops the connection without a proper end of the chunked body. */
  reset(): void {
    if (this.closed) return;
    if (!this.started) this.start();
    this.res.destroy();
    this.finish();
  }

  private pump(): void {
    if (this.closed || this.waitingForDrain || !this.started) return;
    for (;;) {
      let chunk = "";
      while (chunk.length < CHUNK_BYTES && this.head < this.queue.length) {
        const p = this.queue[this.head] as Pending;
        this.queue[this.head++] = undefined as unknown as Pending;
        chunk += `${this.opts.encode(p.type, p.obj, p.memo)}\n`;
      }
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      if (chunk === "") break;
      if (!this.res.write(chunk)) {
        this.waitingForDrain = true;
        this.res.once("drain", () => {
          this.waitingForDrain = false;
          this.pump();
        });
        return;
      }
    }
    if (this.ending && !this.closed) {
      this.res.end();
      this.finish();
    }
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.head = 0;
    this.opts.onClose();
  }
}
