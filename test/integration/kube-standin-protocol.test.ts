// The Kubernetes API stand-in at the wire level: watch streams, bookmarks, 410 Gone, Tables,
// pagination, consistent reads, errors, auth, the fault endpoint and the standalone runner.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runKubeStandinMain, startKubeStandin, type KubeObject, type KubeStandin } from "../../src/lab/kube-standin/index.js";

/** Parsed JSON, read loosely in assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let standin: KubeStandin;

async function api(path: string, init: RequestInit = {}): Promise<{ status: number; body: Json; headers: Headers }> {
  const res = await fetch(`${standin.url}${path}`, { ...init, headers: { Authorization: `Bearer ${standin.token}`, "Content-Type": "application/json", ...(init.headers ?? {}) } });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

const post = (path: string, body: unknown) => api(path, { method: "POST", body: JSON.stringify(body) });
const configMap = (name: string, labels: Record<string, string> = {}) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, labels }, data: { k: "v" } });

interface WatchReader {
  events: Array<{ type: string; object: Json }>;
  headers: Headers;
  next(what: string): Promise<{ type: string; object: Json }>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  cancel(): Promise<void>;
}

async function openWatch(path: string): Promise<WatchReader> {
  const res = await fetch(`${standin.url}${path}`, { headers: { Authorization: `Bearer ${standin.token}` } });
  if (!res.body) throw new Error("watch without a body");
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const events: Array<{ type: string; object: Json }> = [];
  let consumed = 0;
  let buffer = "";
  let wake: (() => void) | undefined;
  const ended = (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop() ?? "";
      for (const l of lines) if (l.trim()) events.push(JSON.parse(l) as { type: string; object: Json });
      wake?.();
    }
    wake?.();
  })();
  let finished = false;
  void ended.then(() => (finished = true));
  return {
    events,
    headers: res.headers,
    ended,
    cancel: () => reader.cancel().catch(() => undefined),
    async next(what) {
      const deadline = Date.now() + 5000;
      while (consumed >= events.length) {
        if (finished) throw new Error(`stream ended before ${what}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return events[consumed++] as { type: string; object: Json };
    },
  };
}

beforeAll(async () => {
  standin = await startKubeStandin({ bookmarkIntervalMs: 100, historyWindow: 200 });
});

afterAll(async () => {
  await standin?.close();
});

describe("watch protocol", () => {
  it("streams newline-delimited events with bookmarks, and ends at timeoutSeconds", async () => {
    const rv = (await api("/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion as string;
    const w = await openWatch(`/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion=${rv}&timeoutSeconds=1`);
    expect(w.headers.get("content-type")).toBe("application/json");
    expect(w.headers.get("transfer-encoding")).toBe("chunked");
    const created = (await post("/api/v1/namespaces/default/configmaps", configMap("w1"))).body as KubeObject;
    const createdRv = Number(created.metadata.resourceVersion);
    // Bookmarks may come before the event (carrying older resourceVersions) and must come after it.
    let ev = await w.next("ADDED");
    while (ev.type === "BOOKMARK") {
      expect(Number(ev.object.metadata.resourceVersion)).toBeLessThan(createdRv);
      ev = await w.next("ADDED");
    }
    expect(ev).toMatchObject({ type: "ADDED", object: { kind: "ConfigMap", apiVersion: "v1", metadata: { name: "w1", resourceVersion: created.metadata.resourceVersion } } });
    const bookmark = await w.next("BOOKMARK");
    expect(bookmark.type).toBe("BOOKMARK");
    expect(bookmark.object).toMatchObject({ kind: "ConfigMap", apiVersion: "v1" });
    expect(Number(bookmark.object.metadata.resourceVersion)).toBeGreaterThanOrEqual(createdRv);
    await w.ended;
  });

  it("starts with synthetic ADDED events for rv 0 and applies selectors to changes", async () => {
    await post("/api/v1/namespaces/default/configmaps", configMap("sel-a", { team: "x" }));
    const w = await openWatch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0&labelSelector=team%3Dx");
    expect(await w.next("initial state")).toMatchObject({ type: "ADDED", object: { metadata: { name: "sel-a" } } });
    const moved = await api("/api/v1/namespaces/default/configmaps/sel-a", { method: "PATCH", headers: { "Content-Type": "application/merge-patch+json" }, body: JSON.stringify({ metadata: { labels: { team: "y" } } }) });
    // Leaving the selector: DELETED with the last state the watcher could see, at the change's resourceVersion.
    expect(await w.next("leaving the selector")).toMatchObject({ type: "DELETED", object: { metadata: { name: "sel-a", labels: { team: "x" }, resourceVersion: moved.body.metadata.resourceVersion } } });
    await w.cancel();
  });

  it("answers a resume from compacted history with one ERROR event carrying 410 Expired", async () => {
    const rv = (await api("/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion as string;
    const expire = await post("/_standin/faults", { action: "expireHistory", resource: "configmaps" });
    expect(expire.body.results[0]).toMatchObject({ action: "expireHistory", compactedAt: expect.any(Number) });
    const w = await openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${rv}`);
    await w.ended;
    expect(w.events).toEqual([
      {
        type: "ERROR",
        object: { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", reason: "Expired", code: 410, message: expect.stringMatching(/^too old resource version: \d+ \(\d+\)$/) },
      },
    ]);
    const exact = await api(`/api/v1/namespaces/default/configmaps?resourceVersion=${rv}&resourceVersionMatch=Exact`);
    expect(exact.status).toBe(410);
    // A fresh list's resourceVersion is past the compaction, so resuming from it works again.
    const fresh = (await api("/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion as string;
    const again = await openWatch(`/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${fresh}&timeoutSeconds=1`);
    await post("/api/v1/namespaces/default/configmaps", configMap("after-compaction"));
    expect((await again.next("ADDED")).type).toBe("ADDED");
    await again.cancel();
  });

  it("ends open watches cleanly when told to drop them, and can fail a watch in-stream", async () => {
    const w = await openWatch("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0");
    const dropped = await post("/_standin/faults", { action: "dropWatches" });
    expect(dropped.body.results[0].dropped).toBeGreaterThanOrEqual(1);
    await w.ended;

    await post("/_standin/faults", { action: "fail", status: 500, verb: "watch", resource: "configmaps", inWatch: true });
    const failed = await openWatch("/api/v1/namespaces/default/configmaps?watch=true");
    await failed.ended;
    expect(failed.events).toEqual([{ type: "ERROR", object: expect.objectContaining({ kind: "Status", code: 500, reason: "InternalError" }) }]);
  });
});

describe("lists", () => {
  it("pages with limit and continue, counting what remains", async () => {
    standin.seed(Array.from({ length: 25 }, (_, i) => ({ ...configMap(`page-${String(i).padStart(2, "0")}`), metadata: { name: `page-${String(i).padStart(2, "0")}`, namespace: "kube-public" } })));
    const first = await api("/api/v1/namespaces/kube-public/configmaps?limit=10");
    expect(first.body.items).toHaveLength(10);
    expect(first.body.metadata.remainingItemCount).toBe(15);
    const names: string[] = first.body.items.map((o: KubeObject) => o.metadata.name);
    let cont = first.body.metadata.continue as string | undefined;
    // Changes between pages do not show: the pages are one consistent snapshot.
    await api("/api/v1/namespaces/kube-public/configmaps/page-24", { method: "DELETE" });
    while (cont) {
      const page = await api(`/api/v1/namespaces/kube-public/configmaps?limit=10&continue=${encodeURIComponent(cont)}`);
      expect(page.body.metadata.resourceVersion).toBe(first.body.metadata.resourceVersion);
      names.push(...page.body.items.map((o: KubeObject) => o.metadata.name));
      cont = page.body.metadata.continue;
    }
    expect(names).toEqual(Array.from({ length: 25 }, (_, i) => `page-${String(i).padStart(2, "0")}`));
    expect((await api("/api/v1/namespaces/kube-public/configmaps")).body.items).toHaveLength(24);
  });

  it("deletes a collection by selector", async () => {
    for (const name of ["dc-1", "dc-2", "dc-keep"]) await post("/api/v1/namespaces/kube-system/configmaps", configMap(name, { sweep: name === "dc-keep" ? "no" : "yes" }));
    const swept = await api("/api/v1/namespaces/kube-system/configmaps?labelSelector=sweep%3Dyes", { method: "DELETE" });
    expect(swept.body.kind).toBe("ConfigMapList");
    expect(swept.body.items.map((o: KubeObject) => o.metadata.name)).toEqual(["dc-1", "dc-2"]);
    expect((await api("/api/v1/namespaces/kube-system/configmaps")).body.items.map((o: KubeObject) => o.metadata.name)).toEqual(["dc-keep"]);
  });

  it("serves exactly the state at an older resourceVersion", async () => {
    await post("/api/v1/namespaces/default/configmaps", configMap("exact", { v: "1" }));
    const rv = (await api("/api/v1/namespaces/default/configmaps")).body.metadata.resourceVersion as string;
    await api("/api/v1/namespaces/default/configmaps/exact", { method: "PATCH", headers: { "Content-Type": "application/merge-patch+json" }, body: JSON.stringify({ metadata: { labels: { v: "2" } } }) });
    const then = await api(`/api/v1/namespaces/default/configmaps?resourceVersion=${rv}&resourceVersionMatch=Exact&fieldSelector=metadata.name%3Dexact`);
    expect(then.body.metadata.resourceVersion).toBe(rv);
    expect(then.body.items.map((o: KubeObject) => o.metadata.labels)).toEqual([{ v: "1" }]);
  });

  it("indexes pods by node and streams large lists", async () => {
    const pods = Array.from({ length: 3000 }, (_, i) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: `bulk-${i}`, namespace: "default", labels: { n: String(i % 3) } },
      spec: { nodeName: `node-${i % 30}`, containers: [{ name: "c", image: "pause:3.9" }] },
    }));
    standin.seed(pods);
    expect(standin.store.count("pods")).toBe(3000);
    const onNode = await api("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7");
    expect(onNode.body.items).toHaveLength(100);
    expect(onNode.body.items.every((p: Json) => p.spec.nodeName === "node-7")).toBe(true);
    const all = await api("/api/v1/pods");
    expect(all.body.kind).toBe("PodList");
    expect(all.body.items).toHaveLength(3000);
    expect((await api("/api/v1/pods?labelSelector=n%3D1,n%20notin%20(2)")).body.items).toHaveLength(1000);
  });

  it("serves Tables and PartialObjectMetadata when asked", async () => {
    const tableAccept = { Accept: "application/json;as=Table;v=v1;g=meta.k8s.io,application/json" };
    const t = await api("/api/v1/namespaces/default/pods?limit=2", { headers: tableAccept });
    expect(t.body).toMatchObject({ kind: "Table", apiVersion: "meta.k8s.io/v1", metadata: { continue: expect.any(String) } });
    expect(t.body.columnDefinitions.map((c: { name: string }) => c.name)).toEqual(["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]);
    expect(t.body.rows[0].cells.slice(0, 3)).toEqual(["bulk-0", "0/1", "Pending"]);
    expect(t.body.rows[0].object).toMatchObject({ kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: { name: "bulk-0" } });
    const withObject = await api("/api/v1/namespaces/default/pods/bulk-0?includeObject=Object", { headers: tableAccept });
    expect(withObject.body.rows[0].object.kind).toBe("Pod");
    const partial = await api("/api/v1/namespaces/default/pods?limit=1", { headers: { Accept: "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io" } });
    expect(partial.body).toMatchObject({ kind: "PartialObjectMetadataList", items: [{ kind: "PartialObjectMetadata", metadata: { name: "bulk-0" } }] });
    expect((await api("/api/v1/pods", { headers: { Accept: "application/vnd.kubernetes.protobuf" } })).status).toBe(406);
  });
});

describe("errors, discovery and auth", () => {
  it("reports errors as Status objects", async () => {
    const badField = await api("/api/v1/pods?fieldSelector=spec.color%3Dred");
    expect(badField).toMatchObject({ status: 400, body: { kind: "Status", status: "Failure", reason: "BadRequest", message: "field label not supported: spec.color" } });
    expect((await api("/api/v1/widgets")).body).toMatchObject({ code: 404, reason: "NotFound" });
    const notJson = await api("/api/v1/namespaces/default/configmaps", { method: "POST", body: "{nope" });
    expect(notJson.body).toMatchObject({ code: 400, reason: "BadRequest" });
    const badWatch = await api("/api/v1/pods?watch=true&labelSelector=a%20in%20(");
    expect(badWatch).toMatchObject({ status: 400, body: { kind: "Status", reason: "BadRequest" } });
    const badPatch = await api("/api/v1/namespaces/default/configmaps/exact", { method: "PATCH", headers: { "Content-Type": "text/plain" }, body: "x" });
    expect(badPatch.body).toMatchObject({ code: 415, reason: "UnsupportedMediaType" });
  });

  it("serves legacy discovery and an OpenAPI v3 index", async () => {
    expect((await api("/api")).body).toMatchObject({ kind: "APIVersions", versions: ["v1"] });
    const groups = (await api("/apis")).body.groups.map((g: { name: string }) => g.name);
    expect(groups).toEqual(["coordination.k8s.io", "apiextensions.k8s.io"]);
    expect((await api("/apis/coordination.k8s.io")).body).toMatchObject({ kind: "APIGroup", preferredVersion: { groupVersion: "coordination.k8s.io/v1" } });
    const resources = (await api("/api/v1")).body.resources.map((r: { name: string }) => r.name);
    expect(resources).toEqual(expect.arrayContaining(["pods", "pods/status", "pods/binding", "nodes", "nodes/status", "namespaces", "events"]));
    const openapi = (await api("/openapi/v3")).body.paths;
    expect(Object.keys(openapi)).toEqual(expect.arrayContaining(["api/v1", "apis/coordination.k8s.io/v1"]));
  });

  it("accepts any bearer token, rejects other credentials, and can require a token", async () => {
    const other = await fetch(`${standin.url}/api/v1/namespaces`, { headers: { Authorization: "Basic dTpw" } });
    expect(other.status).toBe(401);
    const anyToken = await fetch(`${standin.url}/api/v1/namespaces`, { headers: { Authorization: "Bearer whatever" } });
    expect(anyToken.status).toBe(200);
    const strict = await startKubeStandin({ requireAuth: true });
    try {
      expect((await fetch(`${strict.url}/api/v1/namespaces`)).status).toBe(401);
      expect((await fetch(`${strict.url}/api/v1/namespaces`, { headers: { Authorization: `Bearer ${strict.token}` } })).status).toBe(200);
      expect(strict.kubeconfig()).toContain(`token: ${strict.token}`);
    } finally {
      await strict.close();
    }
  });
});

describe("fault endpoint", () => {
  it("adds, lists and clears rules, and refuses malformed specs", async () => {
    const added = await post("/_standin/faults", [
      { action: "fail", status: 503, verb: ["get", "list"], resource: "nodes", count: 2 },
      { action: "delay", ms: 10, resource: "leases.coordination.k8s.io" },
    ]);
    expect(added.body.results).toEqual([
      { action: "fail", id: expect.any(String) },
      { action: "delay", id: expect.any(String) },
    ]);
    expect((await api("/_standin/faults")).body.faults).toHaveLength(2);
    const unavailable = await api("/api/v1/nodes");
    expect(unavailable).toMatchObject({ status: 503, body: { reason: "ServiceUnavailable" } });
    expect(unavailable.headers.get("retry-after")).toBe("1");
    expect((await api("/api/v1/nodes")).status).toBe(503);
    expect((await api("/api/v1/nodes")).status).toBe(200);
    expect((await api("/_standin/faults", { method: "DELETE" })).body.faults).toEqual([]);
    expect((await post("/_standin/faults", { action: "fail", status: 42 })).status).toBe(400);
    expect((await api("/_standin/stats")).body).toMatchObject({ tables: { pods: { objects: 3000 } } });
  });
});

describe("standalone runner", () => {
  it("prints its URL, serves, and stops when aborted", async () => {
    const lines: string[] = [];
    const abort = new AbortController();
    const done = runKubeStandinMain(["--port", "0", "--log-level", "silent"], { stdout: (l) => lines.push(l), signal: abort.signal });
    const deadline = Date.now() + 5000;
    while (lines.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(lines[0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${lines[0]}/version`)).status).toBe(200);
    abort.abort();
    await done;
    await expect(fetch(`${lines[0]}/version`)).rejects.toThrow();
  });
});
