import pino from "pino";
import { describe, expect, it } from "vitest";
import { StatusError, type Status } from "./errors.js";
import { ApiService, type Scope } from "./service.js";
import type { KubeObject } from "./types.js";
import type { WatchEventType, WatchTarget } from "./watch.js";

const NOW = Date.parse("2026-03-01T10:00:00Z");

function service(historyWindow = 1000): ApiService {
  let n = 0;
  return new ApiService({ historyWindow, logger: pino({ level: "silent" }), now: () => NOW, newUid: () => `uid-${++n}` });
}

const CRD: KubeObject = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "egresspolicies.staticegress.io" },
  spec: {
    group: "staticegress.io",
    scope: "Namespaced",
    names: { plural: "egresspolicies", kind: "EgressPolicy", shortNames: ["egp"] },
    versions: [
      {
        name: "v1alpha1",
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: "object",
            properties: {
              spec: { type: "object", required: ["gateway"], properties: { gateway: { type: "string" }, fallback: { type: "string", default: "drop" } } },
              status: { type: "object", properties: { phase: { type: "string" } } },
            },
          },
        },
      },
    ],
  },
};

function withCrd(): { svc: ApiService; egp: (ns?: string) => Scope } {
  const svc = service();
  svc.create(svc.mustResolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), CRD);
  return { svc, egp: (ns = "default") => svc.mustResolve("staticegress.io", "v1alpha1", "egresspolicies", ns) };
}

function statusOf(fn: () => unknown): Status {
  try {
    fn();
  } catch (e) {
    if (e instanceof StatusError) return e.toStatus();
    throw e;
  }
  throw new Error("expected a StatusError");
}

class Recorder implements WatchTarget {
  events: Array<{ type: WatchEventType; name: string | undefined; rv: string | undefined }> = [];
  errors: Status[] = [];
  ended = false;
  send(type: WatchEventType, obj: KubeObject): void {
    this.events.push({ type, name: obj.metadata.name, rv: obj.metadata.resourceVersion });
  }
  fail(status: Status): void {
    this.errors.push(status);
    this.ended = true;
  }
  end(): void {
    this.ended = true;
  }
  types(): string[] {
    return this.events.map((e) => `${e.type}:${e.name}`);
  }
}

const pod = (name: string, extra: Partial<KubeObject> = {}): KubeObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, ...(extra.metadata ?? {}) },
  spec: { containers: [{ name: "c", image: "img:1" }], ...((extra.spec as object) ?? {}) },
});

describe("ApiService: create and read", () => {
  it("fills in server-set metadata and defaults", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    const created = svc.create(pods, pod("a", { metadata: { uid: "client-set", resourceVersion: "99" } as KubeObject["metadata"] }));
    expect(created.code).toBe(201);
    const obj = created.body as KubeObject;
    expect(obj.metadata).toMatchObject({ name: "a", namespace: "default", uid: "uid-5", creationTimestamp: "2026-03-01T10:00:00Z" });
    expect(Number(obj.metadata.resourceVersion)).toBe(svc.currentRv());
    expect(obj.status).toEqual({ phase: "Pending", qosClass: "BestEffort" });
    expect((obj.spec as { restartPolicy: string }).restartPolicy).toBe("Always");
  });

  it("generates names and refuses duplicates and missing namespaces", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    const gen = svc.create(pods, { ...pod(""), metadata: { generateName: "web-" } }).body as KubeObject;
    expect(gen.metadata.name).toMatch(/^web-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    svc.create(pods, pod("a"));
    expect(statusOf(() => svc.create(pods, pod("a")))).toMatchObject({ code: 409, reason: "AlreadyExists", message: 'pods "a" already exists' });
    expect(statusOf(() => svc.create(svc.mustResolve("", "v1", "pods", "nope"), pod("b")))).toMatchObject({ code: 404, message: 'namespaces "nope" not found' });
    expect(statusOf(() => svc.create(pods, { ...pod("b"), metadata: { name: "b", namespace: "other" } }))).toMatchObject({ code: 400 });
  });

  it("validates names, labels and pods", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    const s = statusOf(() => svc.create(pods, { apiVersion: "v1", kind: "Pod", metadata: { name: "Bad_Name", labels: { ok: "no spaces allowed" } }, spec: {} }));
    expect(s).toMatchObject({ code: 422, reason: "Invalid" });
    expect(s.message).toMatch(/^Pod "Bad_Name" is invalid: \[metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain/);
    expect(s.details?.causes?.map((c) => c.field)).toEqual(["metadata.name", "metadata.labels", "spec.containers"]);
  });
});

describe("ApiService: updates", () => {
  it("rejects a stale resourceVersion with 409 and skips no-op writes", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    const a = svc.create(pods, pod("a")).body as KubeObject;
    const b = svc.update(pods, "a", { ...a, metadata: { ...a.metadata, labels: { x: "1" } } }, undefined).body as KubeObject;
    expect(Number(b.metadata.resourceVersion)).toBeGreaterThan(Number(a.metadata.resourceVersion));
    expect(statusOf(() => svc.update(pods, "a", a, undefined))).toMatchObject({ code: 409, reason: "Conflict" });
    const rv = svc.currentRv();
    expect((svc.update(pods, "a", b, undefined).body as KubeObject).metadata.resourceVersion).toBe(b.metadata.resourceVersion);
    expect(svc.currentRv()).toBe(rv);
  });

  it("allows only image changes in a pod spec", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    svc.create(pods, pod("a"));
    svc.patch(pods, "a", "strategic", { spec: { containers: [{ name: "c", image: "img:2" }] } }, undefined);
    expect(statusOf(() => svc.patch(pods, "a", "merge", { spec: { restartPolicy: "Never" } }, undefined))).toMatchObject({ code: 422 });
  });

  it("counts spec changes in generation and keeps status out of the main endpoint", () => {
    const { svc, egp } = withCrd();
    const created = svc.create(egp(), { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "p" }, spec: { gateway: "g1" }, status: { phase: "Dropped" } }).body as KubeObject;
    expect(created.metadata.generation).toBe(1);
    expect(created.status).toBeUndefined();
    expect(created.spec).toEqual({ gateway: "g1", fallback: "drop" });
    const withStatus = svc.patch(egp(), "p", "merge", { status: { phase: "Ready" } }, "status").body as KubeObject;
    expect(withStatus.status).toEqual({ phase: "Ready" });
    expect(withStatus.metadata.generation).toBe(1);
    const labelled = svc.patch(egp(), "p", "merge", { metadata: { labels: { a: "b" } }, status: { phase: "Ignored" } }, undefined).body as KubeObject;
    expect(labelled.status).toEqual({ phase: "Ready" });
    expect(labelled.metadata.generation).toBe(1);
    const changed = svc.patch(egp(), "p", "merge", { spec: { gateway: "g2" } }, undefined).body as KubeObject;
    expect(changed.metadata.generation).toBe(2);
    const statusOnly = svc.patch(egp(), "p", "merge", { spec: { gateway: "g3" }, status: { phase: "Again" } }, "status").body as KubeObject;
    expect(statusOnly.spec).toMatchObject({ gateway: "g2" });
    expect(statusOnly.status).toEqual({ phase: "Again" });
  });

  it("requires a resourceVersion on PUT of a custom resource, and refuses strategic merge patch there", () => {
    const { svc, egp } = withCrd();
    const p = svc.create(egp(), { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "p" }, spec: { gateway: "g" } }).body as KubeObject;
    const { resourceVersion: _rv, ...meta } = p.metadata;
    expect(statusOf(() => svc.update(egp(), "p", { ...p, metadata: meta }, undefined))).toMatchObject({ code: 422, message: expect.stringContaining("metadata.resourceVersion") });
    expect(statusOf(() => svc.patch(egp(), "p", "strategic", { spec: { gateway: "x" } }, undefined))).toMatchObject({ code: 415 });
    expect(statusOf(() => svc.patch(egp(), "p", "json", [{ op: "test", path: "/spec/gateway", value: "other" }], undefined))).toMatchObject({ code: 422 });
  });
});

describe("ApiService: deletion", () => {
  it("waits for finalizers: MODIFIED with deletionTimestamp, then DELETED", () => {
    const { svc, egp } = withCrd();
    svc.create(egp(), { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "p", finalizers: ["staticegress.io/cleanup"] }, spec: { gateway: "g" } });
    const rec = new Recorder();
    svc.watch(egp(), { resourceVersion: String(svc.currentRv()) }, rec);
    const del = svc.delete(egp(), "p");
    expect(del.code).toBe(202);
    expect((del.body as KubeObject).metadata.deletionTimestamp).toBe("2026-03-01T10:00:00Z");
    expect(statusOf(() => svc.patch(egp(), "p", "merge", { metadata: { finalizers: ["staticegress.io/cleanup", "new"] } }, undefined))).toMatchObject({ code: 422 });
    svc.patch(egp(), "p", "json", [{ op: "remove", path: "/metadata/finalizers/0" }], undefined);
    expect(rec.types()).toEqual(["MODIFIED:p", "DELETED:p"]);
    expect(statusOf(() => svc.get(egp(), "p"))).toMatchObject({ code: 404, message: 'egresspolicies.staticegress.io "p" not found' });
  });

  it("checks delete preconditions", () => {
    const svc = service();
    const pods = svc.mustResolve("", "v1", "pods", "default");
    svc.create(pods, pod("a"));
    expect(statusOf(() => svc.delete(pods, "a", { preconditions: { uid: "other" } }))).toMatchObject({ code: 409 });
    expect(svc.delete(pods, "a").code).toBe(200);
  });

  it("terminates a namespace: contents go, new content is refused, then the namespace goes", () => {
    const { svc, egp } = withCrd();
    const nsScope = svc.mustResolve("", "v1", "namespaces");
    svc.create(nsScope, { apiVersion: "v1", kind: "Namespace", metadata: { name: "team" } });
    const pods = svc.mustResolve("", "v1", "pods", "team");
    svc.create(pods, pod("a"));
    svc.create(egp("team"), { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "p", finalizers: ["x/y"] }, spec: { gateway: "g" } });
    const del = svc.delete(nsScope, "team");
    expect(del.code).toBe(202);
    expect(((del.body as KubeObject).status as { phase: string }).phase).toBe("Terminating");
    expect(statusOf(() => svc.get(pods, "a")).code).toBe(404);
    expect(statusOf(() => svc.create(pods, pod("b")))).toMatchObject({ code: 403, reason: "Forbidden" });
    svc.patch(egp("team"), "p", "merge", { metadata: { finalizers: null } }, undefined);
    expect(statusOf(() => svc.get(nsScope, "team")).code).toBe(404);
  });
});

describe("ApiService: CRDs", () => {
  it("serves a CRD's resource while it exists and removes its objects with it", () => {
    const { svc, egp } = withCrd();
    svc.create(egp(), { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "p" }, spec: { gateway: "g" } });
    const rec = new Recorder();
    svc.watch(egp(), {}, rec);
    expect(svc.registry.apiResourceList("staticegress.io", "v1alpha1")).toMatchObject({ resources: [{ name: "egresspolicies", shortNames: ["egp"] }, { name: "egresspolicies/status" }] });
    const crd = svc.get(svc.mustResolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), CRD.metadata.name as string);
    expect((crd.status as { conditions: Array<{ type: string }> }).conditions.map((c) => c.type)).toEqual(["NamesAccepted", "Established"]);
    svc.delete(svc.mustResolve("apiextensions.k8s.io", "v1", "customresourcedefinitions"), CRD.metadata.name as string);
    expect(svc.registry.resolve("staticegress.io", "v1alpha1", "egresspolicies")).toBeUndefined();
    expect(rec.types()).toEqual(["ADDED:p", "DELETED:p"]);
    expect(rec.ended).toBe(true);
  });

  it("rejects an invalid CRD with the field named", () => {
    const svc = service();
    const crds = svc.mustResolve("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    const s = statusOf(() => svc.create(crds, { ...CRD, metadata: { name: "wrong.staticegress.io" } }));
    expect(s.message).toContain('metadata.name: Invalid value: "wrong.staticegress.io": must be spec.names.plural+"."+spec.group');
  });
});

describe("ApiService: list and watch", () => {
  function withPods(): { svc: ApiService; all: Scope } {
    const svc = service(5);
    for (const ns of ["a", "b"]) svc.create(svc.mustResolve("", "v1", "namespaces"), { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    for (const [ns, name, node] of [["a", "p1", "n1"], ["a", "p2", "n2"], ["b", "p1", "n1"]] as const) {
      svc.create(svc.mustResolve("", "v1", "pods", ns), pod(name, { metadata: { labels: { node } } as KubeObject["metadata"], spec: { nodeName: node } }));
    }
    return { svc, all: svc.mustResolve("", "v1", "pods") };
  }

  it("filters by label and field selectors, cluster-wide and per namespace", () => {
    const { svc, all } = withPods();
    const key = (r: { items: KubeObject[] }) => r.items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
    expect(key(svc.list(all, { fieldSelector: "spec.nodeName=n1" }))).toEqual(["a/p1", "b/p1"]);
    expect(key(svc.list(all, { labelSelector: "node!=n1" }))).toEqual(["a/p2"]);
    expect(key(svc.list(all, { fieldSelector: "metadata.namespace=b" }))).toEqual(["b/p1"]);
    expect(key(svc.list(svc.mustResolve("", "v1", "pods", "a"), { fieldSelector: "metadata.name=p2,status.phase=Pending" }))).toEqual(["a/p2"]);
    expect(statusOf(() => svc.list(all, { fieldSelector: "spec.bogus=1" }))).toMatchObject({ code: 400, message: "field label not supported: spec.bogus" });
    expect(statusOf(() => svc.list(all, { labelSelector: "a in (" }))).toMatchObject({ code: 400 });
  });

  it("pages with continue tokens and expires tokens older than the history window", () => {
    const { svc, all } = withPods();
    const first = svc.list(all, { limit: 2 });
    expect(first.items).toHaveLength(2);
    expect(first.remainingItemCount).toBe(1);
    const second = svc.list(all, { limit: 2, continue: first.continue as string });
    expect(second.items.map((o) => o.metadata.namespace)).toEqual(["b"]);
    expect(second.continue).toBeUndefined();
    for (let i = 0; i < 6; i++) svc.patch(svc.mustResolve("", "v1", "pods", "a"), "p1", "merge", { metadata: { labels: { i: String(i) } } }, undefined);
    expect(statusOf(() => svc.list(all, { limit: 2, continue: first.continue as string }))).toMatchObject({ code: 410, reason: "Expired" });
    expect(statusOf(() => svc.list(all, { resourceVersion: "2", resourceVersionMatch: "Exact" }))).toMatchObject({ code: 410 });
  });

  it("replays from a resourceVersion, or answers 410 when it is too old", () => {
    const { svc, all } = withPods();
    const rv = String(svc.currentRv());
    const a = svc.mustResolve("", "v1", "pods", "a");
    svc.patch(a, "p1", "merge", { metadata: { labels: { x: "1" } } }, undefined);
    svc.delete(a, "p2");
    const resumed = new Recorder();
    svc.watch(all, { resourceVersion: rv }, resumed);
    expect(resumed.types()).toEqual(["MODIFIED:p1", "DELETED:p2"]);
    const fresh = new Recorder();
    svc.watch(all, { resourceVersion: "0" }, fresh);
    expect(fresh.types()).toEqual(["ADDED:p1", "ADDED:p1"]);
    for (let i = 0; i < 6; i++) svc.patch(a, "p1", "merge", { metadata: { labels: { i: String(i) } } }, undefined);
    const stale = new Recorder();
    svc.watch(all, { resourceVersion: rv }, stale);
    expect(stale.errors[0]).toMatchObject({ code: 410, reason: "Expired", message: expect.stringMatching(/^too old resource version: \d+ \(\d+\)$/) });
  });

  it("sends DELETED when an object stops matching a watch's selector", () => {
    const { svc, all } = withPods();
    const rec = new Recorder();
    svc.watch(all, { labelSelector: "node=n2", resourceVersion: String(svc.currentRv()) }, rec);
    const a = svc.mustResolve("", "v1", "pods", "a");
    svc.patch(a, "p2", "merge", { metadata: { labels: { node: "n9" } } }, undefined);
    svc.patch(a, "p1", "merge", { metadata: { labels: { node: "n2" } } }, undefined);
    expect(rec.types()).toEqual(["DELETED:p2", "ADDED:p1"]);
  });

  it("ends the initial events with a bookmark when asked to (watch-list)", () => {
    const { svc, all } = withPods();
    const rec = new Recorder();
    svc.watch(all, { sendInitialEvents: true, allowWatchBookmarks: true, resourceVersionMatch: "NotOlderThan" }, rec);
    expect(rec.types()).toEqual(["ADDED:p1", "ADDED:p2", "ADDED:p1", "BOOKMARK:undefined"]);
    expect(rec.events[3]?.rv).toBe(String(svc.currentRv()));
  });

  it("binds a pod to a node", () => {
    const { svc } = withPods();
    const b = svc.mustResolve("", "v1", "pods", "b");
    svc.create(b, pod("unscheduled"));
    svc.bind(b, "unscheduled", { target: { kind: "Node", name: "n7" } });
    expect((svc.get(b, "unscheduled").spec as { nodeName: string }).nodeName).toBe("n7");
    expect(statusOf(() => svc.bind(b, "unscheduled", { target: { name: "n8" } })).code).toBe(409);
  });
});
