// The Kubernetes API stand-in driven by @kubernetes/client-node: typed APIs, informers,
// watch resumption, relists after 410, optimistic concurrency, status subresources, Leases.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKubeStandin, type KubeStandin } from "../../src/lab/kube-standin/index.js";

const k8s = await import("@kubernetes/client-node");
type KubernetesObject = import("@kubernetes/client-node").KubernetesObject;

/** Parsed JSON, read loosely in assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let standin: KubeStandin;
let kc: InstanceType<typeof k8s.KubeConfig>;
let core: InstanceType<typeof k8s.CoreV1Api>;
let custom: InstanceType<typeof k8s.CustomObjectsApi>;
const informers: Array<{ stop(): Promise<void> }> = [];

const MERGE = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch);
const GROUP = "staticegress.io";
const VERSION = "v1alpha1";
const PLURAL = "egresspolicies";

async function eventually(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The ApiException a client-node call failed with: its HTTP code and parsed Status body. */
async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, Json>; headers: Record<string, string> }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof k8s.ApiException) {
      const body = typeof e.body === "string" ? (JSON.parse(e.body) as Record<string, Json>) : (e.body as Record<string, Json>);
      return { code: e.code, status: body, headers: e.headers };
    }
    throw e;
  }
  throw new Error("the call succeeded unexpectedly");
}

const pod = (name: string, labels: Record<string, string> = {}) => ({ metadata: { name, labels }, spec: { containers: [{ name: "c", image: "busybox:1.36" }] } });

/** A pod informer that counts its lists and records what it is told. */
function podInformer(namespace: string) {
  const state = { lists: 0, events: [] as string[], errors: [] as unknown[] };
  const informer = new k8s.ListWatch<KubernetesObject>(
    `/api/v1/namespaces/${namespace}/pods`,
    new k8s.Watch(kc),
    () => {
      state.lists++;
      return core.listNamespacedPod({ namespace });
    },
    false,
  );
  informer.on("add", (o) => state.events.push(`add:${o.metadata?.name}`));
  informer.on("update", (o) => state.events.push(`update:${o.metadata?.name}`));
  informer.on("delete", (o) => state.events.push(`delete:${o.metadata?.name}`));
  informer.on("error", (e) => state.errors.push(e));
  informers.push(informer);
  return { informer, state, has: (ev: string) => state.events.includes(ev) };
}

beforeAll(async () => {
  standin = await startKubeStandin({ historyWindow: 1000 });
  kc = new k8s.KubeConfig();
  kc.loadFromString(standin.kubeconfig());
  core = kc.makeApiClient(k8s.CoreV1Api);
  custom = kc.makeApiClient(k8s.CustomObjectsApi);
  for (const name of ["apps", "inf-resume", "inf-relist", "inf-reset", "leases"]) await core.createNamespace({ body: { metadata: { name } } });
  await kc.makeApiClient(k8s.ApiextensionsV1Api).createCustomResourceDefinition({
    body: {
      metadata: { name: `${PLURAL}.${GROUP}` },
      spec: {
        group: GROUP,
        scope: "Namespaced",
        names: { plural: PLURAL, singular: "egresspolicy", kind: "EgressPolicy", shortNames: ["egp"] },
        versions: [
          {
            name: VERSION,
            served: true,
            storage: true,
            subresources: { status: {} },
            schema: {
              openAPIV3Schema: {
                type: "object",
                properties: {
                  spec: {
                    type: "object",
                    required: ["gateway"],
                    properties: { gateway: { type: "string" }, destinations: { type: "array", items: { type: "string", format: "cidr" } } },
                  },
                  status: { type: "object", properties: { egressIPs: { type: "array", items: { type: "string" } } } },
                },
              },
            },
          },
        ],
      },
    },
  });
});

afterAll(async () => {
  for (const i of informers) await i.stop().catch(() => undefined);
  await standin?.close();
});

describe("client-node CoreV1Api", () => {
  it("creates, reads, lists with selectors and patches pods", async () => {
    const created = await core.createNamespacedPod({ namespace: "apps", body: pod("a", { app: "web" }) });
    expect(created.metadata?.uid).toBeTruthy();
    expect(created.status?.phase).toBe("Pending");
    await core.createNamespacedPod({ namespace: "apps", body: { ...pod("b", { app: "db" }), spec: { nodeName: "node-2", containers: [{ name: "c", image: "x" }] } } });
    const read = await core.readNamespacedPod({ namespace: "apps", name: "a" });
    expect(read.metadata?.resourceVersion).toBe(created.metadata?.resourceVersion);
    const web = await core.listPodForAllNamespaces({ labelSelector: "app in (web,cache)" });
    expect(web.items.map((p) => p.metadata?.name)).toEqual(["a"]);
    const onNode = await core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=node-2" });
    expect(onNode.items.map((p) => p.metadata?.name)).toEqual(["b"]);
    const patched = await core.patchNamespacedPod({ namespace: "apps", name: "a", body: { metadata: { labels: { tier: "front" } } } }, MERGE);
    expect(patched.metadata?.labels).toEqual({ app: "web", tier: "front" });
    const jsonPatched = await core.patchNamespacedPod({ namespace: "apps", name: "a", body: [{ op: "remove", path: "/metadata/labels/tier" }] });
    expect(jsonPatched.metadata?.labels).toEqual({ app: "web" });
  });

  it("answers a stale update with 409 Conflict and a duplicate create with 409 AlreadyExists", async () => {
    const first = await core.readNamespacedPod({ namespace: "apps", name: "a" });
    await core.replaceNamespacedPod({ namespace: "apps", name: "a", body: { ...first, metadata: { ...first.metadata, annotations: { n: "1" } } } });
    const stale = await failure(core.replaceNamespacedPod({ namespace: "apps", name: "a", body: { ...first, metadata: { ...first.metadata, annotations: { n: "2" } } } }));
    expect(stale.code).toBe(409);
    expect(stale.status).toMatchObject({ kind: "Status", apiVersion: "v1", status: "Failure", reason: "Conflict", details: { name: "a", kind: "pods" } });
    const dup = await failure(core.createNamespacedPod({ namespace: "apps", body: pod("a") }));
    expect(dup.status).toMatchObject({ code: 409, reason: "AlreadyExists", message: 'pods "a" already exists' });
    const missing = await failure(core.readNamespacedPod({ namespace: "apps", name: "zzz" }));
    expect(missing.status).toMatchObject({ code: 404, reason: "NotFound", message: 'pods "zzz" not found' });
  });
});

describe("client-node CustomObjectsApi", () => {
  it("creates custom resources, rejects invalid ones with the field named, and patches status", async () => {
    const body = { apiVersion: `${GROUP}/${VERSION}`, kind: "EgressPolicy", metadata: { name: "bank" }, spec: { gateway: "gw", destinations: ["203.0.113.0/24"] } };
    const created = (await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: "apps", plural: PLURAL, body })) as KubernetesObject & { metadata: { generation: number } };
    expect(created.metadata.generation).toBe(1);

    const bad = await failure(
      custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: "apps", plural: PLURAL, body: { ...body, metadata: { name: "bad" }, spec: { destinations: ["x"] } } }),
    );
    expect(bad.code).toBe(422);
    expect(bad.status.message).toBe(
      'EgressPolicy.staticegress.io "bad" is invalid: [spec.gateway: Required value, spec.destinations[0]: Invalid value: "x": spec.destinations[0] in body must be of type cidr: "x"]',
    );
    expect(bad.status.details.causes).toEqual([
      { reason: "FieldValueRequired", message: "Required value", field: "spec.gateway" },
      { reason: "FieldValueInvalid", message: 'Invalid value: "x": spec.destinations[0] in body must be of type cidr: "x"', field: "spec.destinations[0]" },
    ]);

    const status = (await custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: "apps", plural: PLURAL, name: "bank", body: { spec: { gateway: "ignored" }, status: { egressIPs: ["198.51.100.9"] } } },
      MERGE,
    )) as Record<string, Json>;
    expect(status.status).toEqual({ egressIPs: ["198.51.100.9"] });
    expect(status.spec.gateway).toBe("gw");
    expect(status.metadata.generation).toBe(1);

    const mainIgnoresStatus = (await custom.patchNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace: "apps", plural: PLURAL, name: "bank", body: { spec: { gateway: "gw-2" }, status: { egressIPs: [] } } },
      MERGE,
    )) as Record<string, Json>;
    expect(mainIgnoresStatus.status).toEqual({ egressIPs: ["198.51.100.9"] });
    expect(mainIgnoresStatus.metadata.generation).toBe(2);

    const all = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as { items: KubernetesObject[] };
    expect(all.items.map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`)).toEqual(["apps/bank"]);
  });
});

describe("client-node Leases", () => {
  it("creates and renews a Lease, refusing a renewal from a stale copy", async () => {
    const leases = kc.makeApiClient(k8s.CoordinationV1Api);
    const created = await leases.createNamespacedLease({
      namespace: "leases",
      body: { metadata: { name: "controller" }, spec: { holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: new Date("2026-01-01T00:00:00Z") } },
    });
    const renewed = await leases.replaceNamespacedLease({
      namespace: "leases",
      name: "controller",
      body: { ...created, spec: { ...created.spec, renewTime: new Date("2026-01-01T00:00:05Z") } },
    });
    expect(renewed.spec?.holderIdentity).toBe("a");
    expect(Number(renewed.metadata?.resourceVersion)).toBeGreaterThan(Number(created.metadata?.resourceVersion));
    const takeover = await failure(leases.replaceNamespacedLease({ namespace: "leases", name: "controller", body: { ...created, spec: { ...created.spec, holderIdentity: "b" } } }));
    expect(takeover.code).toBe(409);
    expect((await leases.readNamespacedLease({ namespace: "leases", name: "controller" })).spec?.holderIdentity).toBe("a");
  });
});

describe("client-node informers", () => {
  it("makeInformer receives add, update and delete", async () => {
    const seen: string[] = [];
    const informer = k8s.makeInformer(kc, "/api/v1/namespaces/apps/pods", () => core.listNamespacedPod({ namespace: "apps", labelSelector: "app=web" }), "app=web");
    informers.push(informer);
    informer.on("add", (o) => seen.push(`add:${o.metadata?.name}`));
    informer.on("update", (o) => seen.push(`update:${o.metadata?.name}:${o.metadata?.labels?.app}`));
    informer.on("delete", (o) => seen.push(`delete:${o.metadata?.name}`));
    await informer.start();
    await eventually("the initial list", () => seen.includes("add:a"));
    await core.createNamespacedPod({ namespace: "apps", body: pod("c", { app: "web" }) });
    await core.patchNamespacedPod({ namespace: "apps", name: "c", body: { metadata: { annotations: { touched: "yes" } } } }, MERGE);
    await core.deleteNamespacedPod({ namespace: "apps", name: "c" });
    // A pod leaving the selector is a deletion for this informer.
    await core.patchNamespacedPod({ namespace: "apps", name: "a", body: { metadata: { labels: { app: "retired" } } } }, MERGE);
    await eventually("all events", () => seen.length >= 5);
    expect(seen).toEqual(["add:a", "add:c", "update:c:web", "delete:c", "delete:a"]);
    expect(informer.list("apps").map((o) => o.metadata?.name)).toEqual([]);
  });

  it("resumes from its resourceVersion after dropped watches, without relisting", async () => {
    const ns = "inf-resume";
    const { informer, state, has } = podInformer(ns);
    await informer.start();
    expect(state.lists).toBe(1);
    await core.createNamespacedPod({ namespace: ns, body: pod("p1") });
    await eventually("p1", () => has("add:p1"));

    // Hold the reconnect so that a change happens while no watch is open.
    standin.faults.delay({ ms: 300, verb: "watch", resource: "pods", namespace: ns, count: 1 });
    expect(standin.faults.dropWatches({ resource: "pods", namespace: ns })).toBe(1);
    await core.createNamespacedPod({ namespace: ns, body: pod("during-gap") });
    await eventually("the change made during the gap", () => has("add:during-gap"));
    expect(state.lists).toBe(1);
    expect(state.errors).toEqual([]);
    await informer.stop();
  });

  it("relists after a 410 from compacted history, and after an injected 410", async () => {
    const ns = "inf-relist";
    await core.createNamespacedPod({ namespace: ns, body: pod("p1") });
    const { informer, state, has } = podInformer(ns);
    await informer.start();
    await eventually("the initial list", () => has("add:p1"));
    expect(state.lists).toBe(1);

    standin.faults.delay({ ms: 300, verb: "watch", resource: "pods", namespace: ns, count: 1 });
    standin.faults.dropWatches({ resource: "pods", namespace: ns });
    await core.createNamespacedPod({ namespace: ns, body: pod("missed") });
    standin.faults.expireHistory({ resource: "pods" });
    await eventually("the relist after 410 Gone", () => state.lists === 2 && has("add:missed"));

    // The next watch request (whether it is already open or still coming) gets an HTTP 410.
    standin.faults.fail({ status: 410, verb: "watch", resource: "pods", namespace: ns, count: 1 });
    standin.faults.dropWatches({ resource: "pods", namespace: ns });
    await eventually("the relist after the injected 410", () => state.lists === 3);
    await core.deleteNamespacedPod({ namespace: ns, name: "missed" });
    await eventually("events after the relist", () => has("delete:missed"));
    expect(state.errors).toEqual([]);
    await informer.stop();
  });

  it("reports a reset connection to the informer's error handlers (client-node does not retry those)", async () => {
    const { informer, state } = podInformer("inf-reset");
    await informer.start();
    expect(standin.faults.dropWatches({ resource: "pods", namespace: "inf-reset", mode: "reset" })).toBe(1);
    await eventually("the error callback", () => state.errors.length > 0);
    await informer.stop();
  });

  it("surfaces injected failures and delays on ordinary calls", async () => {
    standin.faults.fail({ status: 500, verb: "list", resource: "pods", count: 1, message: "etcd is on fire" });
    const err = await failure(core.listNamespacedPod({ namespace: "apps" }));
    expect(err.status).toMatchObject({ code: 500, reason: "InternalError", message: "etcd is on fire" });
    expect((await core.listNamespacedPod({ namespace: "apps" })).items.length).toBeGreaterThan(0);

    standin.faults.fail({ status: 429, verb: "create", count: 1 });
    const throttled = await failure(core.createNamespacedPod({ namespace: "apps", body: pod("throttled") }));
    expect(throttled.code).toBe(429);
    expect(throttled.headers["retry-after"]).toBe("1");

    const id = standin.faults.delay({ ms: 200, verb: "get", resource: "pods" });
    const started = Date.now();
    await core.readNamespacedPod({ namespace: "apps", name: "b" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    standin.faults.clear();
    expect(standin.faults.active()).toEqual([]);
    expect(id).toMatch(/^f\d+$/);
  });
});
