/**
 * A bounded window of one resource's change events, like the apiserver's watch cache on top of
 * etcd's compaction: watches resume from any resourceVersion still inside the window; older
 * ones get 410 Gone.
 */

import type { KubeObject } from "./types.js";

export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

export interface ChangeEvent {
  rv: number;
  type: ChangeType;
  key: string;
  /** The new state; for DELETED the last state, carrying the deletion's resourceVersion. */
  object: KubeObject;
  /** The state before the change (absent for ADDED). */
  prev?: KubeObject;
}

export class EventHistory {
  private readonly buf: (ChangeEvent | undefined)[];
  private start = 0;
  private size = 0;
  /** Events with rv <= compactedRv are gone: a resume from an rv below it cannot be served. */
  private compacted = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`history capacity must be a positive integer, got ${capacity}`);
    this.buf = new Array<ChangeEvent | undefined>(capacity);
  }

  get compactedRv(): number {
    return this.compacted;
  }

  get length(): number {
    return this.size;
  }

  push(ev: ChangeEvent): void {
    if (this.size === this.capacity) {
      const evicted = this.buf[this.start] as ChangeEvent;
      this.compacted = Math.max(this.compacted, evicted.rv);
      this.buf[this.start] = ev;
      this.start = (this.start + 1) % this.capacity;
    } else {
      this.buf[(this.start + this.size) % this.capacity] = ev;
      this.size++;
    }
  }

  private at(i: number): ChangeEvent {
    return this.buf[(this.start + i) % this.capacity] as ChangeEvent;
  }

  /** Whether every change after `rv` is still known. */
  covers(rv: number): boolean {
    return rv >= this.compacted;
  }

  /** Events with rv greater than `rv`, oldest first; undefined when the window no longer covers rv. */
  since(rv: number): ChangeEvent[] | undefined {
    if (!this.covers(rv)) return undefined;
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid).rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    const out: ChangeEvent[] = [];
    for (let i = lo; i < this.size; i++) out.push(this.at(i));
    return out;
  }

  /** Forgets everything up to and including `rv` (etcd compaction). */
  compact(rv: number): void {
    while (this.size > 0 && this.at(0).rv <= rv) {
      this.buf[this.start] = undefined;
      this.start = (this.start + 1) % this.capacity;
      this.size--;
    }
    this.compacted = Math.max(this.compacted, rv);
  }
}
