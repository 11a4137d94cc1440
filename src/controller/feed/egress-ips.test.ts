import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { serveMetrics } from "../../util/metrics-server.js";
import { feedDocument, feedEntries, notModified, parseFeedRef, type FeedObject } from "./egress-ips.js";
import { egressIPsRoute } from "./http.js";

const T1 = "2026-01-01T00:00:00.000Z";
const T2 = "2026-02-01T00:00:00.000Z";

function policy(
  kind: "EgressPolicy" | "ClusterEgressPolicy",
  name: string,
  opts: { namespace?: string; publish?: unknown; ips?: string[]; changed?: string; labels?: Record<string, string> },
): FeedObject {
  return {
    kind,
    metadata: {
      name,
      ...(opts.namespace ? { namespace: opts.namespace } : {}),
      ...(opts.labels ? { labels: opts.labels } : {}),
    },
    spec: {
      gatewayName: "shared",
      egressIPs: ["192.0.2.99"], // what the spec asks for is never published, only what was resolved
      ...(opts.publish !== undefined ? { publishEgressIPs: opts.publish } : {}),
    },
    status: { egressIPs: opts.ips ?? [], ...(opts.changed ? { egressIPsChangedAt: opts.changed } : {}) },
  };
}

function app(name: string, annotation?: string, dedicatedSince?: string): FeedObject {
  return {
    metadata: {
      name,
      ...(annotation !== undefined ? { annotations: { "staticegress.io/publish-egress-ips": annotation } } : {}),
    },
    status: dedicatedSince ? { conditions: [{ type: "DedicatedEgress", lastTransitionTime: dedicatedSince }] } : {},
  };
}

const checkout = policy("EgressPolicy", "checkout", {
  namespace: "payments",
  publish: true,
  ips: ["192.0.2.20", "192.0.2.10"],
  changed: T1,
});
const hidden = policy("EgressPolicy", "exporter", { namespace: "reporting", ips: ["192.0.2.11"], changed: T1 });
const audit = policy("ClusterEgressPolicy", "audit", { publish: true, ips: ["198.51.100.9"], changed: T2 });
const webPolicy = policy("EgressPolicy", "dedicated-egress", {
  namespace: "app-web",
  ips: ["203.0.113.20", "203.0.113.10"],
  changed: T2,
  labels: { "staticegress.io/app": "web" },
});

describe("egress-IP feed: what is published", () => {
  it("only opted-in policies and Apps, with the resolved IPs (sorted), the gateway and the last change", () => {
    const { entries, problems } = feedEntries({
      policies: [checkout, hidden, audit, webPolicy],
      apps: [app("web", "true"), app("quiet")],
    });
    expect(problems).toEqual([]);
    expect(entries).toEqual([
      {
        kind: "App",
        name: "web",
        path: "/egress-ips/apps/web",
        gateway: "shared",
        egressIPs: ["203.0.113.10", "203.0.113.20"],
        lastChange: T2,
      },
      {
        kind: "ClusterEgressPolicy",
        name: "audit",
        path: "/egress-ips/audit",
        gateway: "shared",
        egressIPs: ["198.51.100.9"],
        lastChange: T2,
      },
      {
        kind: "EgressPolicy",
        namespace: "payments",
        name: "checkout",
        path: "/egress-ips/payments/checkout",
        gateway: "shared",
        egressIPs: ["192.0.2.10", "192.0.2.20"],
        lastChange: T1,
      },
    ]);
  });

  it("an App's IPs come only from its own policy (labelled for it, in its namespace); without one it publishes none", () => {
    const impostor = { ...webPolicy, metadata: { ...webPolicy.metadata, labels: { "staticegress.io/app": "other" } } };
    const { entries } = feedEntries({ policies: [impostor], apps: [app("web", "true", T1)] });
    expect(entries).toEqual([
      { kind: "App", name: "web", path: "/egress-ips/apps/web", gateway: null, egressIPs: [], lastChange: T1 },
    ]);
  });

  it("an App's opt-in that is neither true nor false is refused, naming the annotation", () => {
    const { entries, problems } = feedEntries({ policies: [webPolicy], apps: [app("web", "yes"), app("b", "false")] });
    expect(entries).toEqual([]);
    expect(problems).toEqual([
      {
        resource: "App/web",
        field: "metadata.annotations[staticegress.io/publish-egress-ips]",
        message: 'must be "true" or "false", not "yes": the App is not published',
      },
    ]);
  });

  it("a policy in a namespace called apps is served under namespaces/, not taken for an App", () => {
    const p = policy("EgressPolicy", "x", { namespace: "apps", publish: true, ips: ["192.0.2.1"] });
    const { entries } = feedEntries({ policies: [p], apps: [] });
    expect(entries[0]!.path).toBe("/egress-ips/namespaces/apps/x");
    expect(feedDocument(entries, parseFeedRef("namespaces/apps/x"))?.value).toMatchObject({ name: "x" });
    expect(feedDocument(entries, parseFeedRef("apps/x"))).toBeUndefined();
  });
});

describe("egress-IP feed: documents and ETags", () => {
  const { entries } = feedEntries({ policies: [checkout, audit], apps: [] });

  it("the whole feed: every IP once, the latest change, the items", () => {
    expect(feedDocument(entries)!.value).toEqual({
      egressIPs: ["192.0.2.10", "192.0.2.20", "198.51.100.9"],
      lastChange: T2,
      items: entries,
    });
  });

  it("equal content gives an equal strong ETag; any change of IPs or time gives another", () => {
    const a = feedDocument(entries)!;
    const again = feedDocument(feedEntries({ policies: [audit, checkout], apps: [] }).entries)!;
    expect(again.body).toBe(a.body);
    expect(again.etag).toBe(a.etag);
    expect(a.etag).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
    const moved = policy("EgressPolicy", "checkout", {
      namespace: "payments",
      publish: true,
      ips: ["192.0.2.10"],
      changed: T2,
    });
    expect(feedDocument(feedEntries({ policies: [moved, audit], apps: [] }).entries)!.etag).not.toBe(a.etag);
  });

  it("If-None-Match: the same tag (or *, or the weak form) is not modified; another is", () => {
    expect(notModified('"a", "b"', '"b"')).toBe(true);
    expect(notModified("*", '"b"')).toBe(true);
    expect(notModified('W/"b"', '"b"')).toBe(true);
    expect(notModified('"a"', '"b"')).toBe(false);
    expect(notModified(undefined, '"b"')).toBe(false);
  });

  it("refs: a cluster policy by name, a namespaced one by namespace/name, an App under apps/", () => {
    expect(parseFeedRef("audit")).toEqual({ kind: "ClusterEgressPolicy", name: "audit" });
    expect(parseFeedRef("payments/checkout")).toEqual({
      kind: "EgressPolicy",
      namespace: "payments",
      name: "checkout",
    });
    expect(parseFeedRef("apps/web")).toEqual({ kind: "App", name: "web" });
    for (const bad of ["", "a/b/c", "Payments/x", "../etc", "a//b"]) expect(parseFeedRef(bad)).toBeUndefined();
  });
});

describe("GET /egress-ips on the controller's HTTP server", () => {
  const servers: { close(): void }[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  async function serve(state: { policies: FeedObject[]; apps: FeedObject[]; ready: boolean }) {
    const server = await serveMetrics(new Registry(), {
      port: 0,
      host: "127.0.0.1",
      routes: egressIPsRoute({ policies: () => state.policies, apps: () => state.apps, ready: () => state.ready }),
    });
    servers.push(server);
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return (path: string, init: RequestInit = {}) => fetch(url + path, init);
  }

  it("serves the document with its ETag, 304 for that ETag, a new ETag after a change", async () => {
    const state = { policies: [checkout, hidden], apps: [], ready: true };
    const get = await serve(state);
    const first = await get("/egress-ips/payments/checkout");
    expect(first.status).toBe(200);
    expect(first.headers.get("content-type")).toBe("application/json");
    expect(first.headers.get("cache-control")).toBe("no-cache");
    const etag = first.headers.get("etag")!;
    const body = await first.text();
    expect(JSON.parse(body)).toMatchObject({ egressIPs: ["192.0.2.10", "192.0.2.20"], lastChange: T1 });
    expect(body).toBe(
      feedDocument(feedEntries({ policies: [checkout], apps: [] }).entries, parseFeedRef("payments/checkout"))!.body,
    );
    const again = await get("/egress-ips/payments/checkout", { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    expect(again.headers.get("etag")).toBe(etag);
    expect(await again.text()).toBe("");
    state.policies = [
      policy("EgressPolicy", "checkout", { namespace: "payments", publish: true, ips: ["192.0.2.10"], changed: T2 }),
    ];
    const changed = await get("/egress-ips/payments/checkout", { headers: { "if-none-match": etag } });
    expect(changed.status).toBe(200);
    expect(changed.headers.get("etag")).not.toBe(etag);
    expect(await changed.json()).toMatchObject({ egressIPs: ["192.0.2.10"], lastChange: T2 });
  });

  it("answers 404 alike for what is missing and what is not published, 405 for writes, 503 before the informers listed", async () => {
    const state = { policies: [checkout, hidden], apps: [], ready: false };
    const get = await serve(state);
    expect((await get("/egress-ips")).status).toBe(503);
    state.ready = true;
    const all = await get("/egress-ips");
    expect(all.status).toBe(200);
    expect(((await all.json()) as { items: unknown[] }).items).toHaveLength(1);
    const unpublished = await get("/egress-ips/reporting/exporter");
    const missing = await get("/egress-ips/reporting/ghost");
    expect([unpublished.status, missing.status]).toEqual([404, 404]);
    expect(await unpublished.json()).toEqual({ error: "reporting/exporter: not found, or not published" });
    expect((await get("/egress-ips/a/b/c/d")).status).toBe(404);
    expect((await get("/egress-ips", { method: "POST" })).status).toBe(405);
    expect((await get("/metrics")).status).toBe(200);
  });
});
