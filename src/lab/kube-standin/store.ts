/**
 * Storage: one global resourceVersion counter (like etcd's revision) and one table per
 * resource. A table keeps its objects by key, indexes by namespace and by selected fields,
 * a bounded history of changes, and the watch listeners it notifies synchronously on each
 * change. Stored objects are immutable; every write stores a new object.
 */

import { EventHistory, type ChangeEvent } from "./history.js";
import { objectKey, type KubeObject } from "./types.js";

/** Something that follows a table's changes (a watch). */
export interface WatchListener {
  /** Only changes in this namespace (undefined: all). */
  readonly namespace: string | undefined;
  /** An equality selector on an indexed field, so the table can find this listener quickly. */
  readonly indexedOn: { field: string; value: string } | undefined;
  onEvent(ev: ChangeEvent, memo: Map<string, unknown>): void;
  /** The resource went away (its CRD was deleted): end the watch. */
  close(): void;
}

class ListenerIndex {
  private readonly global = new Set<WatchListener>();
  private readonly byNamespace = new Map<string, Set<WatchListener>>();
  private readonly byField = new Map<string, Map<string, Set<WatchListener>>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  private bucket(l: WatchListener, create: boolean): Set<WatchListener> | undefined {
    if (l.indexedOn) {
      let values = this.byField.get(l.indexedOn.field);
      if (!values && create) this.byField.set(l.indexedOn.field, (values = new Map()));
      let set = values?.get(l.indexedOn.value);
      if (!set && create && values) values.set(l.indexedOn.value, (set = new Set()));
      return set;
    }
    if (l.namespace !== undefined) {
      let set = this.byNamespace.get(l.namespace);
      if (!set && create) this.byNamespace.set(l.namespace, (set = new Set()));
      return set;
    }
    return this.global;
  }

  add(l: WatchListener): void {
    const b = this.bucket(l, true) as Set<WatchListener>;
    if (!b.has(l)) this.count++;
    b.add(l);
  }

  remove(l: WatchListener): void {
    const b = this.bucket(l, false);
    if (b?.delete(l)) this.count--;
  }

  all(): WatchListener[] {
    const out = [...this.global];
    for (const s of this.byNamespace.values()) out.push(...s);
    for (const m of this.byField.values()) for (const s of m.values()) out.push(...s);
    return out;
  }

  dispatch(ev: ChangeEvent, fieldValue: (field: string, obj: KubeObject) => string): void {
    if (this.count === 0) return;
    const memo = new Map<string, unknown>();
    for (const l of this.global) l.onEvent(ev, memo);
    const ns = ev.object.metadata.namespace;
    if (ns !== undefined) {
      const set = this.byNamespace.get(ns);
      if (set) for (const l of set) l.onEvent(ev, memo);
    }
    for (const [field, values] of this.byField) {
      const now = fieldValue(field, ev.object);
      const before = ev.prev ? fieldValue(field, ev.prev) : now;
      const a = values.get(now);
      if (a) for (const l of a) l.onEvent(ev, memo);
      if (before !== now) {
        const b = values.get(before);
        if (b) for (const l of b) l.onEvent(ev, memo);
      }
    }
  }
}

/** Supplies resourceVersions; shared by all tables so that they are globally ordered. */
export interface RvClock {
  current(): number;
  next(): number;
}

export interface ListOptions {
  namespace?: string;
  /** Equality on metadata.name: a direct lookup instead of a scan. */
  name?: string;
  /** Equality on an indexed field: only keys from that index are considered. */
  index?: { field: string; value: string };
  /** Selectors; called on the state at the listed resourceVersion. */
  filter?: (obj: KubeObject) => boolean;
  limit?: number;
  /** Continue after this key (exclusive). */
  after?: string;
  /** Serve the state as of this resourceVersion (must be covered by the history window). */
  atRv?: number;
  /** Compute remainingItemCount (only meaningful without selectors). */
  countRemaining?: boolean;
}

export interface ListPage {
  items: KubeObject[];
  /** Set when more matching items follow: the key of the last item returned. */
  continueAfter?: string;
  remaining?: number;
}

function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as string) <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function mergeSorted(a: readonly string[], b: readonly string[]): string[] {
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    if (y === undefined || (x !== undefined && x < y)) {
      out.push(x as string);
      i++;
    } else if (x === undefined || y < x) {
      out.push(y);
      j++;
    } else {
      out.push(x);
      i++;
      j++;
    }
  }
  return out;
}

export class ResourceTable {
  private readonly objects = new Map<string, KubeObject>();
  private readonly byNamespace = new Map<string, Set<string>>();
  private readonly fieldIndexes = new Map<string, Map<string, Set<string>>>();
  private sortedAll: string[] | undefined;
  private readonly sortedByNamespace = new Map<string, string[]>();
  readonly history: EventHistory;
  private readonly listeners = new ListenerIndex();

  constructor(
    readonly name: string,
    readonly namespaced: boolean,
    private readonly clock: RvClock,
    historyWindow: number,
    private readonly indexers: Readonly<Record<string, (obj: KubeObject) => string>>,
  ) {
    this.history = new EventHistory(historyWindow);
    for (const field of Object.keys(indexers)) this.fieldIndexes.set(field, new Map());
  }

  get size(): number {
    return this.objects.size;
  }

  get watcherCount(): number {
    return this.listeners.size;
  }

  get(key: string): KubeObject | undefined {
    return this.objects.get(key);
  }

  /** Number of objects in a namespace. */
  countInNamespace(namespace: string): number {
    return this.byNamespace.get(namespace)?.size ?? 0;
  }

  keysInNamespace(namespace: string): string[] {
    return [...(this.byNamespace.get(namespace) ?? [])];
  }

  values(): IterableIterator<KubeObject> {
    return this.objects.values();
  }

  fieldValue(field: string, obj: KubeObject): string {
    const f = this.indexers[field];
    return f ? f(obj) : "";
  }

  private stamp(obj: KubeObject, rv: number): KubeObject {
    return { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
  }

  private indexAdd(key: string, obj: KubeObject): void {
    const ns = obj.metadata.namespace;
    if (ns) {
      let set = this.byNamespace.get(ns);
      if (!set) this.byNamespace.set(ns, (set = new Set()));
      set.add(key);
    }
    for (const [field, values] of this.fieldIndexes) {
      const v = this.fieldValue(field, obj);
      let set = values.get(v);
      if (!set) values.set(v, (set = new Set()));
      set.add(key);
    }
  }

  private indexRemove(key: string, obj: KubeObject): void {
    const ns = obj.metadata.namespace;
    if (ns) {
      const set = this.byNamespace.get(ns);
      set?.delete(key);
      if (set && set.size === 0) this.byNamespace.delete(ns);
    }
    for (const [field, values] of this.fieldIndexes) {
      const v = this.fieldValue(field, obj);
      const set = values.get(v);
      set?.delete(key);
      if (set && set.size === 0) values.delete(v);
    }
  }

  private keysChanged(ns: string | undefined): void {
    this.sortedAll = undefined;
    if (ns) this.sortedByNamespace.delete(ns);
  }

  private emit(ev: ChangeEvent): void {
    this.history.push(ev);
    this.listeners.dispatch(ev, (field, obj) => this.fieldValue(field, obj));
  }

  keyOf(obj: KubeObject): string {
    return objectKey(obj.metadata.namespace, obj.metadata.name ?? "");
  }

  /** Stores a new object (the caller checked it does not exist) and returns it with its rv. */
  create(obj: KubeObject): KubeObject {
    const key = this.keyOf(obj);
    const stored = this.stamp(obj, this.clock.next());
    this.objects.set(key, stored);
    this.indexAdd(key, stored);
    this.keysChanged(stored.metadata.namespace);
    this.emit({ rv: Number(stored.metadata.resourceVersion), type: "ADDED", key, object: stored });
    return stored;
  }

  /** Replaces an existing object and returns the stored version. */
  update(obj: KubeObject): KubeObject {
    const key = this.keyOf(obj);
    const prev = this.objects.get(key);
    if (!prev) throw new Error(`update of missing object ${this.name} ${key}`);
    const stored = this.stamp(obj, this.clock.next());
    this.indexRemove(key, prev);
    this.objects.set(key, stored);
    this.indexAdd(key, stored);
    this.emit({ rv: Number(stored.metadata.resourceVersion), type: "MODIFIED", key, object: stored, prev });
    return stored;
  }

  /** Removes an object; `last` (default: the stored one) is what watchers see, with the deletion's rv. */
  remove(key: string, last?: KubeObject): KubeObject | undefined {
    const prev = this.objects.get(key);
    if (!prev) return undefined;
    const final = this.stamp(last ?? prev, this.clock.next());
    this.objects.delete(key);
    this.indexRemove(key, prev);
    this.keysChanged(prev.metadata.namespace);
    this.emit({ rv: Number(final.metadata.resourceVersion), type: "DELETED", key, object: final, prev });
    return final;
  }

  addListener(l: WatchListener): void {
    this.listeners.add(l);
  }

  removeListener(l: WatchListener): void {
    this.listeners.remove(l);
  }

  allListeners(): WatchListener[] {
    return this.listeners.all();
  }

  private sortedKeys(namespace: string | undefined): string[] {
    if (namespace !== undefined) {
      let keys = this.sortedByNamespace.get(namespace);
      if (!keys) {
        keys = [...(this.byNamespace.get(namespace) ?? [])].sort();
        this.sortedByNamespace.set(namespace, keys);
      }
      return keys;
    }
    if (!this.sortedAll) this.sortedAll = [...this.objects.keys()].sort();
    return this.sortedAll;
  }

  /** The state at `rv` of every key changed since: null where the object did not exist. */
  private overlayAt(rv: number): Map<string, KubeObject | null> | undefined {
    const events = this.history.since(rv);
    if (!events) throw new Error(`history of ${this.name} does not cover resourceVersion ${rv}`);
    if (events.length === 0) return undefined;
    const overlay = new Map<string, KubeObject | null>();
    for (let i = events.length - 1; i >= 0; i--) {
      const ev = events[i] as ChangeEvent;
      overlay.set(ev.key, ev.type === "ADDED" ? null : (ev.prev as KubeObject));
    }
    return overlay;
  }

  /** One page of objects in key order, optionally as of an earlier resourceVersion. */
  list(opts: ListOptions): ListPage {
    const overlay = opts.atRv !== undefined ? this.overlayAt(opts.atRv) : undefined;
    const inScope = (key: string): boolean => {
      if (opts.namespace !== undefined && !key.startsWith(`${opts.namespace}/`)) return false;
      if (opts.name !== undefined && key.slice(key.lastIndexOf("/") + 1) !== opts.name) return false;
      return true;
    };
    let keys: readonly string[];
    if (opts.name !== undefined && (opts.namespace !== undefined || !this.namespaced)) {
      const k = objectKey(opts.namespace, opts.name);
      keys = this.objects.has(k) ? [k] : [];
    } else if (opts.index && this.fieldIndexes.has(opts.index.field)) {
      keys = [...(this.fieldIndexes.get(opts.index.field)?.get(opts.index.value) ?? [])].sort();
    } else {
      keys = this.sortedKeys(opts.namespace);
    }
    const overlayKeys = overlay ? [...overlay.keys()].filter(inScope).sort() : [];
    const deletedSince = overlay ? overlayKeys.filter((k) => overlay.get(k) === null) : [];
    if (overlayKeys.length) keys = mergeSorted(keys, overlayKeys);

    const stateOf = (key: string): KubeObject | undefined => {
      if (overlay?.has(key)) return overlay.get(key) ?? undefined;
      return this.objects.get(key);
    };
    const items: KubeObject[] = [];
    const limit = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
    let i = opts.after !== undefined ? lowerBound(keys, opts.after) : 0;
    let lastKey: string | undefined;
    for (; i < keys.length && items.length < limit; i++) {
      const key = keys[i] as string;
      const obj = stateOf(key);
      if (!obj || !inScope(key)) continue;
      if (opts.filter && !opts.filter(obj)) continue;
      items.push(obj);
      lastKey = key;
    }
    const page: ListPage = { items };
    if (items.length < limit || lastKey === undefined) return page;
    let more = false;
    for (let j = i; j < keys.length; j++) {
      const key = keys[j] as string;
      const obj = stateOf(key);
      if (obj && inScope(key) && (!opts.filter || opts.filter(obj))) {
        more = true;
        break;
      }
    }
    if (!more) return page;
    page.continueAfter = lastKey;
    if (opts.countRemaining) {
      const absentAfter = deletedSince.filter((k) => k > (lastKey as string)).length;
      page.remaining = keys.length - i - absentAfter;
    }
    return page;
  }
}

export class Store implements RvClock {
  private rv: number;
  private readonly tables = new Map<string, ResourceTable>();
  /** Resources whose table was dropped: a new table for them starts with its history compacted. */
  private readonly dropped = new Set<string>();

  constructor(
    private readonly historyWindow: number,
    initialRv = 1,
  ) {
    this.rv = initialRv;
  }

  current(): number {
    return this.rv;
  }

  next(): number {
    return ++this.rv;
  }

  /** The table for a resource (`pods`, `leases.coordination.k8s.io`), created on first use. */
  table(name: string, namespaced: boolean, indexers: Readonly<Record<string, (obj: KubeObject) => string>> = {}): ResourceTable {
    let t = this.tables.get(name);
    if (!t) {
      t = new ResourceTable(name, namespaced, this, this.historyWindow, indexers);
      // Events of an earlier incarnation (a deleted and re-created CRD) are gone: resuming from before now is 410.
      if (this.dropped.has(name)) t.history.compact(this.rv);
      this.tables.set(name, t);
    }
    return t;
  }

  existingTable(name: string): ResourceTable | undefined {
    return this.tables.get(name);
  }

  /** Forgets a resource's table and ends its watches. */
  dropTable(name: string): ResourceTable | undefined {
    const t = this.tables.get(name);
    this.tables.delete(name);
    this.dropped.add(name);
    if (t) for (const l of t.allListeners()) l.close();
    return t;
  }

  allTables(): ResourceTable[] {
    return [...this.tables.values()];
  }
}
