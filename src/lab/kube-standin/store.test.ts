import { describe, expect, it } from "vitest";
import type { ChangeEvent } from "./history.js";
import { Store, type WatchListener } from "./store.js";
import type { KubeObject } from "./types.js";

const pod = (ns: string, name: string, node = ""): KubeObject => ({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace: ns }, spec: { nodeName: node } });
const nodeName = (o: KubeObject): string => String((o.spec as { nodeName?: string }).nodeName ?? "");

function setup(window = 100): { store: Store; t: ReturnType<Store["table"]> } {
  const store = new Store(window);
  return { store, t: store.table("pods", true, { "spec.nodeName": nodeName }) };
}

const names = (items: KubeObject[]): string[] => items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`);

describe("ResourceTable", () => {
  it("assigns increasing resourceVersions from the global counter", () => {
    const { store, t } = setup();
    const other = store.table("nodes", false);
    const a = t.create(pod("ns", "a"));
    const n = other.create({ metadata: { name: "n1" } });
    const b = t.update({ ...a, spec: { nodeName: "x" } });
    expect([a, n, b].map((o) => Number(o.metadata.resourceVersion))).toEqual([2, 3, 4]);
    expect(store.current()).toBe(4);
  });

  it("lists in key order, by namespace, by index, and pages with a continue key", () => {
    const { t } = setup();
    for (const [ns, name, node] of [["b", "p2", "n1"], ["a", "p9", "n2"], ["b", "p1", "n1"], ["a", "p1", ""]] as const) t.create(pod(ns, name, node));
    expect(names(t.list({}).items)).toEqual(["a/p1", "a/p9", "b/p1", "b/p2"]);
    expect(names(t.list({ namespace: "b" }).items)).toEqual(["b/p1", "b/p2"]);
    expect(names(t.list({ index: { field: "spec.nodeName", value: "n1" } }).items)).toEqual(["b/p1", "b/p2"]);
    expect(names(t.list({ name: "p1", namespace: "a" }).items)).toEqual(["a/p1"]);
    const p1 = t.list({ limit: 3, countRemaining: true });
    expect(names(p1.items)).toEqual(["a/p1", "a/p9", "b/p1"]);
    expect(p1.continueAfter).toBe("b/p1");
    expect(p1.remaining).toBe(1);
    const p2 = t.list({ limit: 3, after: p1.continueAfter as string });
    expect(names(p2.items)).toEqual(["b/p2"]);
    expect(p2.continueAfter).toBeUndefined();
  });

  it("keeps the index right when an indexed field changes", () => {
    const { t } = setup();
    const a = t.create(pod("ns", "a", ""));
    t.update({ ...a, spec: { nodeName: "n1" } });
    expect(t.list({ index: { field: "spec.nodeName", value: "" } }).items).toHaveLength(0);
    expect(t.list({ index: { field: "spec.nodeName", value: "n1" } }).items).toHaveLength(1);
  });

  it("serves the state at an earlier resourceVersion from history", () => {
    const { t } = setup();
    const a = t.create(pod("ns", "a"));
    t.create(pod("ns", "b"));
    const rv = Number(t.create(pod("ns", "c")).metadata.resourceVersion);
    t.update({ ...a, metadata: { ...a.metadata, labels: { v: "2" } } });
    t.remove("ns/b");
    t.create(pod("ns", "d"));
    const then = t.list({ atRv: rv });
    expect(names(then.items)).toEqual(["ns/a", "ns/b", "ns/c"]);
    expect(then.items[0]?.metadata.labels).toBeUndefined();
    const paged = t.list({ atRv: rv, limit: 1, after: "ns/a", countRemaining: true });
    expect(names(paged.items)).toEqual(["ns/b"]);
    expect(paged.remaining).toBe(1);
  });

  it("notifies listeners found by namespace and by indexed field, before and after the change", () => {
    const { t } = setup();
    const seen: string[] = [];
    const listener = (label: string, namespace: string | undefined, indexedOn?: { field: string; value: string }): WatchListener => ({
      namespace,
      indexedOn,
      onEvent: (ev: ChangeEvent) => seen.push(`${label}:${ev.type}:${ev.object.metadata.name}`),
      close: () => undefined,
    });
    t.addListener(listener("all", undefined));
    t.addListener(listener("ns1", "ns1"));
    t.addListener(listener("n1", undefined, { field: "spec.nodeName", value: "n1" }));
    t.addListener(listener("n2", undefined, { field: "spec.nodeName", value: "n2" }));
    const a = t.create(pod("ns1", "a", "n1"));
    t.create(pod("ns2", "b", "n3"));
    t.update({ ...a, spec: { nodeName: "n2" } });
    expect(seen).toEqual(["all:ADDED:a", "ns1:ADDED:a", "n1:ADDED:a", "all:ADDED:b", "all:MODIFIED:a", "ns1:MODIFIED:a", "n2:MODIFIED:a", "n1:MODIFIED:a"]);
    expect(t.watcherCount).toBe(4);
  });

  it("gives a deleted object a new resourceVersion and keeps the previous state", () => {
    const { t } = setup();
    const events: ChangeEvent[] = [];
    t.addListener({ namespace: undefined, indexedOn: undefined, onEvent: (e) => events.push(e), close: () => undefined });
    const a = t.create(pod("ns", "a"));
    const gone = t.remove("ns/a");
    expect(Number(gone?.metadata.resourceVersion)).toBeGreaterThan(Number(a.metadata.resourceVersion));
    expect(events[1]).toMatchObject({ type: "DELETED", prev: a });
    expect(t.get("ns/a")).toBeUndefined();
  });

  it("drops a table's listeners when the table goes away", () => {
    const { store, t } = setup();
    let closed = 0;
    t.addListener({ namespace: undefined, indexedOn: undefined, onEvent: () => undefined, close: () => closed++ });
    const rv = Number(t.create(pod("ns", "a")).metadata.resourceVersion);
    store.dropTable("pods");
    expect(closed).toBe(1);
    expect(store.existingTable("pods")).toBeUndefined();
    // A re-created resource cannot replay what happened to its predecessor.
    expect(store.table("pods", true).history.covers(rv - 1)).toBe(false);
    expect(store.table("pods", true).history.covers(store.current())).toBe(true);
  });
});
