/**
 * What one watcher sees of a change. Selectors are applied to the state before and after:
 * an object that starts matching arrives as ADDED, one that stops matching as DELETED with
 * its previous content (as the apiserver's watch cache does).
 */

import type { Status } from "./errors.js";
import type { ChangeEvent } from "./history.js";
import type { WatchListener } from "./store.js";
import type { KubeObject } from "./types.js";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";

export function translateEvent(ev: ChangeEvent, matches: (obj: KubeObject) => boolean): { type: "ADDED" | "MODIFIED" | "DELETED"; object: KubeObject } | undefined {
  switch (ev.type) {
    case "ADDED":
      return matches(ev.object) ? { type: "ADDED", object: ev.object } : undefined;
    case "DELETED":
      return matches(ev.prev ?? ev.object) ? { type: "DELETED", object: ev.object } : undefined;
    case "MODIFIED": {
      const now = matches(ev.object);
      const before = ev.prev ? matches(ev.prev) : false;
      if (now && before) return { type: "MODIFIED", object: ev.object };
      if (now) return { type: "ADDED", object: ev.object };
      // As the apiserver's watch cache does: the last state this watcher could see, at the event's rv.
      if (before && ev.prev) return { type: "DELETED", object: { ...ev.prev, metadata: { ...ev.prev.metadata, resourceVersion: ev.object.metadata.resourceVersion } } };
      return undefined;
    }
  }
}

/** Where a watch's events go (the HTTP stream). Objects are in storage form. */
export interface WatchTarget {
  send(type: WatchEventType, obj: KubeObject, memo?: Map<string, unknown>): void;
  /** Sends an ERROR event carrying `status`, then ends the stream. */
  fail(status: Status): void;
  /** Ends the stream cleanly (the client resumes from its last resourceVersion). */
  end(): void;
}

export class Watcher implements WatchListener {
  constructor(
    readonly namespace: string | undefined,
    readonly indexedOn: { field: string; value: string } | undefined,
    private readonly matches: (obj: KubeObject) => boolean,
    private readonly target: WatchTarget,
  ) {}

  onEvent(ev: ChangeEvent, memo?: Map<string, unknown>): void {
    const out = translateEvent(ev, this.matches);
    if (out) this.target.send(out.type, out.object, memo);
  }

  close(): void {
    this.target.end();
  }
}
