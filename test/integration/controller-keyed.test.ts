import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setHeaderOptions } from "@kubernetes/client-node";
import { Controller, type PassOutcome } from "../../src/controller/controller.js";
import { REPORT_ANNOTATION } from "../../src/controller/status.js";
import type { KubeClient, PolicyKind } from "../../src/kube/client.js";
import { controllerSourceOptions, KubeSource } from "../../src/kube/source.js";
import { waitFor } from "../../src/lab/lab.js";
import { silentLogger } from "../../src/util/log.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// The controller's keyed passes against a real kube-apiserver: a Node whose only news is its
// report recomputes just the statuses that report touches (no plan, no other policy), and a
// Node change that matters to planning (added, removed, labels, Ready) still makes a full pass.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const GV = { group: "staticegress.io", version: "v1alpha1" };
const network = { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] };
const CHECKOUT = "EgressPolicy/payments/checkout";
const BILLING = "EgressPolicy/payments/billing";
const mergePatch = setHeaderOptions("Content-Type", "application/merge-patch+json");

let api: TestKube;
let admin: KubeClient;
let controller: Controller;
const passes: PassOutcome[] = [];
/** Every status the controller wrote: kind/name. */
const writes: string[] = [];

async function getPolicy(name: string): Promise<Json> {
  return (await admin.custom.getNamespacedCustomObject({
    ...GV,
    namespace: "payments",
    plural: "egresspolicies",
    name,
  })) as Json;
}

const condition = (obj: Json, type: string): Json | undefined =>
  (obj.status?.conditions as Json[] | undefined)?.find((c) => c.type === type);

async function report(node: string, body: Json): Promise<void> {
  await admin.patchNodeAnnotations(node, {
    [REPORT_ANNOTATION]: JSON.stringify({ programmed: {}, unavailable: {}, ...body, at: new Date().toISOString() }),
  });
}

const settle = (ms = 700) => new Promise((r) => setTimeout(r, ms));

/** The passes that ended after `from` (an index into `passes`), once the controller is idle again. */
async function passesSince(from: number): Promise<PassOutcome[]> {
  await settle();
  await controller.idle();
  return passes.slice(from);
}

function gateway(name: string, instances: [string, string, string[]][]): Json {
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "EgressGateway",
    metadata: { name },
    spec: {
      grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
      static: { instances: instances.map(([n, address, egressIPs]) => ({ name: n, address, egressIPs })) },
    },
  };
}

function policy(name: string, app: string, gatewayName: string, egressIPs: string[]): Json {
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name, namespace: "payments" },
    spec: { podSelector: { matchLabels: { app } }, gatewayName, egressIPs },
  };
}

beforeAll(async () => {
  api = await startTestKube();
  admin = api.admin;
  await api.ensureNamespace("payments");
  for (const i of [1, 2]) {
    await api.createNode({ name: `node${i}`, podCIDR: `10.244.${i}.0/24`, internalIP: `10.0.0.1${i}` });
    await api.createPod({
      namespace: "payments",
      name: `pay-${i}`,
      node: `node${i}`,
      labels: { app: "checkout" },
      ip: `10.244.${i}.5`,
    });
    await api.createPod({
      namespace: "payments",
      name: `bill-${i}`,
      node: `node${i}`,
      labels: { app: "billing" },
      ip: `10.244.${i}.6`,
    });
  }
  for (const g of [
    gateway("shared", [
      ["gw-a", "10.0.0.101", ["192.0.2.10"]],
      ["gw-b", "10.0.0.102", ["192.0.2.20"]],
    ]),
    gateway("other", [
      ["gw-c", "10.0.0.103", ["198.51.100.10"]],
      ["gw-d", "10.0.0.104", ["198.51.100.20"]],
    ]),
  ])
    await admin.custom.createClusterCustomObject({ ...GV, plural: "egressgateways", body: g });
  for (const p of [
    policy("checkout", "checkout", "shared", ["192.0.2.10", "192.0.2.20"]),
    policy("billing", "billing", "other", ["198.51.100.10", "198.51.100.20"]),
  ])
    await admin.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: p,
    });

  const client = await api.clientFor("controller");
  // The real client, its status writes recorded on the way through.
  const patchStatus = client.patchStatus.bind(client);
  client.patchStatus = (kind: PolicyKind, ns: string | undefined, name: string, status: unknown) => {
    writes.push(`${kind}/${name}`);
    return patchStatus(kind, ns, name, status);
  };
  const patchStatusAt = client.patchStatusAt.bind(client);
  client.patchStatusAt = (kind: PolicyKind, ns: string | undefined, name: string, status: unknown, rv: string) => {
    writes.push(`${kind}/${name}`);
    return patchStatusAt(kind, ns, name, status, rv);
  };
  controller = new Controller({
    client,
    source: new KubeSource(client, silentLogger, controllerSourceOptions(false)),
    network,
    logger: silentLogger,
    // No periodic pass during the test: every pass here is caused by an event.
    resyncMs: 600_000,
    onPass: (p) => passes.push(p),
  });
  await controller.startInformers();
  controller.activate();
  await waitFor(
    async () =>
      condition(await getPolicy("checkout"), "Ready")?.status === "True" &&
      condition(await getPolicy("billing"), "Ready")?.status === "True",
    15_000,
    "policies not Ready",
  );
  await passesSince(0);
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  await api?.stop();
});

describe("controller: keyed passes for node reports", () => {
  it("a report that changes nothing a status shows is a keyed pass over the touched gateway only, and writes nothing", async () => {
    // node1's first judgement of gateway "other": its status goes Unknown -> Up (one write, then
    // that write's own event is a full pass).
    await report("node1", { health: { "other/gw-c": "up", "other/gw-d": "up" } });
    await waitFor(() => writes.includes("EgressGateway/other"), 10_000, "gateway other not written");
    await passesSince(0);
    const from = passes.length;
    const writesFrom = writes.length;
    // node2 judges the same: the gateway's status is recomputed (who judged counts) and stays.
    await report("node2", { health: { "other/gw-c": "up", "other/gw-d": "up" } });
    await waitFor(() => passes.length > from, 10_000, "no pass for node2's report");
    const after = await passesSince(from);
    expect(after.map((p) => [p.scope, p.objects])).toEqual([["keyed", 1]]);
    expect(writes.slice(writesFrom)).toEqual([]);
  });

  it("an instance seen down updates the policies of its gateway, never another gateway's policy", async () => {
    const billingBefore = (await getPolicy("billing")).metadata.resourceVersion as string;
    const from = passes.length;
    const writesFrom = writes.length;
    // node1 still judges gateway other as before: only gateway shared's judgements change.
    await report("node1", {
      health: { "other/gw-c": "up", "other/gw-d": "up", "shared/gw-a": "down", "shared/gw-b": "up" },
    });
    await waitFor(
      async () => condition(await getPolicy("checkout"), "Degraded")?.status === "True",
      10_000,
      "checkout not Degraded",
    );
    const after = await passesSince(from);
    // checkout and gateway shared: keyed. The writes' own events then make full passes, which
    // recompute everything and find nothing else to write.
    expect(after[0]).toMatchObject({ scope: "keyed", objects: 2 });
    expect(writes.slice(writesFrom).sort()).toEqual(["EgressGateway/shared", "EgressPolicy/checkout"]);
    expect((await getPolicy("billing")).metadata.resourceVersion).toBe(billingBefore);
    expect(condition(await getPolicy("checkout"), "Degraded")?.message).toContain("shared/gw-a down as seen by node1");
  });

  it("a report on one policy (no healthy instance) updates that policy only; the write's own event is keyed too", async () => {
    const from = passes.length;
    const writesFrom = writes.length;
    await report("node2", {
      health: { "other/gw-c": "up", "other/gw-d": "up" },
      unavailable: { [BILLING]: "Drop" },
    });
    await waitFor(
      async () => condition(await getPolicy("billing"), "Ready")?.reason === "NoHealthyInstance",
      10_000,
      "billing not failing closed",
    );
    const after = await passesSince(from);
    expect(after[0]).toMatchObject({ scope: "keyed", objects: 1 });
    // The status write comes back as an event on billing alone (status only): recomputed, not replanned.
    expect(after.map((p) => p.scope)).not.toContain("full");
    expect(writes.slice(writesFrom)).toEqual(["EgressPolicy/billing"]);
    expect(condition(await getPolicy("checkout"), "Ready")?.status).toBe("True");
    await report("node2", { health: { "other/gw-c": "up", "other/gw-d": "up" } });
    await waitFor(
      async () => condition(await getPolicy("billing"), "Ready")?.status === "True",
      10_000,
      "billing not Ready again",
    );
  });

  it("a node added or removed reaches the statuses (its programmed pods count, then no more)", async () => {
    await api.createNode({ name: "node3", podCIDR: "10.244.3.0/24", internalIP: "10.0.0.13" });
    await report("node3", { programmed: { [CHECKOUT]: 1 }, health: {} });
    await waitFor(
      async () => (await getPolicy("checkout")).status.programmedPods === 1,
      10_000,
      "node3's programmed pod not counted",
    );
    const from = passes.length;
    await admin.core.deleteNode({ name: "node3" });
    await waitFor(
      async () => (await getPolicy("checkout")).status.programmedPods === 0,
      10_000,
      "node3's pod still counted after it was removed",
    );
    expect((await passesSince(from))[0]?.scope).toBe("full");
  });

  it("a node's labels or Ready condition make a full pass", async () => {
    for (const change of [
      () => admin.core.patchNode({ name: "node1", body: { metadata: { labels: { zone: "b" } } } }, mergePatch),
      () => api.setNodeReady("node2", "False"),
    ]) {
      const from = passes.length;
      await change();
      await waitFor(() => passes.length > from, 10_000, "no pass");
      expect((await passesSince(from))[0]?.scope).toBe("full");
    }
  });
});
