import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setHeaderOptions } from "@kubernetes/client-node";
import { Controller, type PassOutcome } from "../../src/controller/controller.js";
import { LeaderElector } from "../../src/controller/runtime/leader.js";
import { REPORT_ANNOTATION, FINALIZER } from "../../src/controller/status.js";
import { KubeClient } from "../../src/kube/client.js";
import { KubeSource } from "../../src/kube/source.js";
import { waitFor } from "../../src/lab/lab.js";
import { silentLogger } from "../../src/util/log.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// The controller against a real kube-apiserver (through the fault proxy), with its own
// service-account token bound by deploy/'s RBAC: statuses with reasons naming fields, Events,
// finalizers that wait for every node, Lease handover, faults.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let api: TestKube;
let client: KubeClient;
const replicas: { controller: Controller; elector: LeaderElector; passes: PassOutcome[] }[] = [];
const network = { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] };
const GV = { group: "staticegress.io", version: "v1alpha1" };
const mergePatch = setHeaderOptions("Content-Type", "application/merge-patch+json");

function policy(name: string, spec: Json, namespace = "payments"): Json {
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name, namespace },
    spec: {
      podSelector: { matchLabels: { app: "checkout" } },
      gatewayName: "shared",
      egressIPs: ["192.0.2.10", "192.0.2.20"],
      ...spec,
    },
  };
}

async function getPolicy(name: string, namespace = "payments"): Promise<Json | undefined> {
  try {
    return (await client.custom.getNamespacedCustomObject({
      ...GV,
      namespace,
      plural: "egresspolicies",
      name,
    })) as Json;
  } catch {
    return undefined;
  }
}

function condition(obj: Json | undefined, type: string): Json | undefined {
  return (obj?.status?.conditions as Json[] | undefined)?.find((c) => c.type === type);
}

async function report(node: string, body: Json): Promise<void> {
  await client.patchNodeAnnotations(node, {
    [REPORT_ANNOTATION]: JSON.stringify({ ...body, at: new Date().toISOString() }),
  });
}

async function startReplica(
  identity: string,
  leaseSeconds = 2,
): Promise<{ controller: Controller; elector: LeaderElector; passes: PassOutcome[] }> {
  const c = await api.clientFor("controller");
  const passes: PassOutcome[] = [];
  const controller = new Controller({
    client: c,
    source: new KubeSource(c, silentLogger),
    network,
    logger: silentLogger,
    resyncMs: 1_000,
    stepTimeoutMs: 1_000,
    onPass: (p) => passes.push(p),
  });
  const elector = new LeaderElector(
    c,
    {
      namespace: "static-egress",
      name: "static-egress-controller",
      identity,
      leaseDurationSeconds: leaseSeconds,
      retryPeriodMs: 300,
    },
    silentLogger,
    {
      onStartedLeading: () => controller.activate(),
      onStoppedLeading: () => controller.deactivate(),
    },
  );
  const r = { controller, elector, passes };
  replicas.push(r);
  void controller.startInformers().then(() => elector.start());
  return r;
}

beforeAll(async () => {
  api = await startTestKube();
  client = api.admin;
  await api.ensureNamespace("payments");
  for (const i of [1, 2])
    await api.createNode({ name: `node${i}`, podCIDR: `10.244.${i}.0/24`, internalIP: `10.0.0.1${i}` });
  for (const i of [1, 2])
    await api.createPod({
      namespace: "payments",
      name: `pay-${i}`,
      node: `node${i}`,
      labels: { app: "checkout" },
      ip: `10.244.${i}.5`,
    });
  await client.custom.createClusterCustomObject({
    ...GV,
    plural: "egressgateways",
    body: {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressGateway",
      metadata: { name: "shared" },
      spec: {
        grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
        static: {
          instances: [
            { name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10", "192.0.2.11"] },
            { name: "gw-b", address: "10.0.0.102", egressIPs: ["192.0.2.20", "192.0.2.21"] },
          ],
        },
      },
    },
  });
  await startReplica("replica-a");
  await startReplica("replica-b");
}, 120_000);

afterAll(async () => {
  for (const r of replicas) {
    await r.elector.stop();
    await r.controller.stop();
  }
  await api?.stop();
});

describe("node agent source", () => {
  it("lists and watches only its own node's pods (field selector), and everything else it plans with", async () => {
    const source = new KubeSource(await api.clientFor("node-agent", "node1"), silentLogger, { podsOnNode: "node1" });
    let changes = 0;
    await source.start(() => changes++);
    try {
      const pods = source.objects().filter((o) => o.kind === "Pod");
      expect(pods.map((p) => p.metadata?.name)).toEqual(["pay-1"]);
      expect(source.objects().filter((o) => o.kind === "Node")).toHaveLength(2);
      // A pod created on another node never reaches this agent; one on its node does.
      for (const [name, node] of [
        ["other", "node2"],
        ["mine", "node1"],
      ] as const) {
        await api.createPod({ namespace: "payments", name, node });
      }
      await waitFor(() => source.objects().some((o) => o.metadata?.name === "mine"), 5_000, "own pod not seen");
      expect(source.objects().some((o) => o.metadata?.name === "other")).toBe(false);
      expect(changes).toBeGreaterThan(0);
    } finally {
      await source.stop();
    }
  });
});

describe("controller source: node health", () => {
  it("wakes on a node's Ready condition and on a changed gateway-health report, not on a report refresh", async () => {
    const source = new KubeSource(await api.clientFor("controller"), silentLogger, { nodeHealth: true });
    let wakes = 0;
    await source.start(() => wakes++);
    const settle = () => new Promise((r) => setTimeout(r, 300));
    try {
      await report("node2", { programmed: {}, health: { "shared/gw-a": "up" }, unavailable: {} });
      await waitFor(() => wakes > 0, 5_000, "no wake on the first report");
      await settle();
      wakes = 0;
      // The same view again (only `at` differs): nobody wakes.
      await report("node2", { programmed: {}, health: { "shared/gw-a": "up" }, unavailable: {} });
      await settle();
      expect(wakes).toBe(0);
      // A gateway instance seen down: the controller wakes (the gateway's status shows it).
      await report("node2", { programmed: {}, health: { "shared/gw-a": "down" }, unavailable: {} });
      await waitFor(() => wakes > 0, 5_000, "no wake on a health change");
      await settle();
      wakes = 0;
      await client.core.patchNodeStatus(
        {
          name: "node2",
          body: {
            status: {
              conditions: [
                {
                  type: "Ready",
                  status: "False",
                  reason: "KubeletStopped",
                  lastHeartbeatTime: new Date().toISOString(),
                },
              ],
            },
          },
        },
        mergePatch,
      );
      await waitFor(() => wakes > 0, 5_000, "no wake on NotReady");
    } finally {
      await client.core.patchNodeStatus(
        {
          name: "node2",
          body: { status: { conditions: [{ type: "Ready", status: "True", reason: "KubeletReady" }] } },
        },
        mergePatch,
      );
      await source.stop();
    }
  });
});

describe("node agent source: no planning from a partial view", () => {
  it("does not report changes before every kind is listed, and retries a failed initial list", async () => {
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("listed-late", { podSelector: { matchLabels: { app: "none" } }, egressIPs: ["192.0.2.11"] }),
    });
    api.faults.fail({ status: 500, count: 1, verb: "list", resource: "egresspolicies" });
    const source = new KubeSource(await api.clientFor("node-agent", "node1"), silentLogger, { podsOnNode: "node1" });
    let changesDuringStart = 0;
    let started = false;
    await source.start(() => {
      if (!started) changesDuringStart++;
    });
    started = true;
    try {
      expect(changesDuringStart).toBe(0);
      expect(source.objects().some((o) => o.kind === "EgressPolicy" && o.metadata?.name === "listed-late")).toBe(true);
    } finally {
      await source.stop();
      await client.custom.deleteNamespacedCustomObject({
        ...GV,
        namespace: "payments",
        plural: "egresspolicies",
        name: "listed-late",
      });
    }
  });
});

describe("informer restarts", () => {
  /** Counts watch requests for a resource from now on (a zero delay that counts what it matches). */
  function countWatches(resource: string): () => number {
    const total = 1_000_000;
    const id = api.faults.delay({ ms: 0, verb: "watch", resource, count: total });
    return () => total - (api.faults.active().find((f) => f.id === id)?.remaining ?? 0);
  }
  const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("after a failed initial list and a failed watch, one watch per kind again; none after stop", async () => {
    // A failed list is retried twice over (the informer's error handler and the initial-list
    // loop); a dropped watch is restarted. Neither may leave a loop in which each start aborts
    // the previous start's watch (which ListWatch reports as an error, and so on, every second).
    api.faults.fail({ status: 500, count: 1, verb: "list", resource: "egressgateways" });
    const source = new KubeSource(await api.clientFor("node-agent", "node1"), silentLogger, { podsOnNode: "node1" });
    await source.start(() => undefined);
    let stopped = false;
    try {
      await settle(2_500); // the retries are done by now
      api.faults.dropWatches({ resource: "egressgateways", mode: "reset" });
      await settle(2_500);
      // Quiet from here: a watch lasts until the server ends it (30 minutes and more).
      const watches = countWatches("egressgateways");
      await settle(3_000);
      expect(watches(), "watches started while nothing failed").toBe(0);
      await source.stop();
      stopped = true;
      const afterStop = countWatches("pods");
      await settle(2_000);
      expect(afterStop(), "a stopped source watched again").toBe(0);
    } finally {
      if (!stopped) await source.stop();
      api.faults.clear();
    }
  }, 30_000);
});

describe("controller", () => {
  it("marks a valid policy Ready with its egress IPs and selected pods, and adds its finalizer", async () => {
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("checkout", {}),
    });
    await waitFor(async () => condition(await getPolicy("checkout"), "Ready")?.status === "True", 10_000, "not Ready");
    const p = (await getPolicy("checkout"))!;
    expect(p.status.egressIPs).toEqual(["192.0.2.10", "192.0.2.20"]);
    expect(p.status.selectedPods).toBe(2);
    expect(p.metadata.finalizers).toContain(FINALIZER);
    expect(condition(p, "Invalid")?.status).toBe("False");
  });

  it.each([
    ["unknown-gw", { gatewayName: "nowhere" }, "InvalidSpecGatewayName", "spec.gatewayName"],
    ["dup-ip", { egressIPs: ["192.0.2.10"] }, "InvalidSpecEgressIPs", "spec.egressIPs[0]"],
    ["not-on-gw", { egressIPs: ["192.0.2.99"] }, "InvalidSpecEgressIPs", "spec.egressIPs[0]"],
    // A selector `In` without values never gets here: the CRD's CEL rule refuses it at once
    // (test/integration/crds-real-server.test.ts); only what needs other objects does.
  ])(
    "marks %s Invalid with a reason naming the field; the valid policy stays Ready",
    async (name, spec, reason, field) => {
      await client.custom.createNamespacedCustomObject({
        ...GV,
        namespace: "payments",
        plural: "egresspolicies",
        body: policy(name, spec),
      });
      await waitFor(
        async () => condition(await getPolicy(name), "Invalid")?.status === "True",
        10_000,
        `${name} not Invalid`,
      );
      const p = (await getPolicy(name))!;
      expect(condition(p, "Invalid")?.reason).toBe(reason);
      expect(condition(p, "Ready")?.message).toContain(field);
      expect(condition(await getPolicy("checkout"), "Ready")?.status).toBe("True");
      const events = (await client.core.listNamespacedEvent({ namespace: "payments" })).items;
      expect(events.some((e) => e.involvedObject.name === name && e.type === "Warning" && e.reason === reason)).toBe(
        true,
      );
    },
  );

  it("reports Degraded when a node sees an instance down, and fail-closed when a node has none", async () => {
    await report("node1", {
      programmed: { "EgressPolicy/payments/checkout": 1 },
      health: { "shared/gw-a": "down", "shared/gw-b": "up" },
      unavailable: {},
    });
    // node2 may still report gw-a down from the node-health test above, so Degraded can already be
    // True: wait for node1's report to be in it, not just for the condition.
    await waitFor(
      async () =>
        String(condition(await getPolicy("checkout"), "Degraded")?.message ?? "").includes(
          "shared/gw-a down as seen by node1",
        ),
      10_000,
      "not Degraded as seen by node1",
    );
    expect(condition(await getPolicy("checkout"), "Degraded")?.status).toBe("True");
    await report("node2", {
      programmed: { "EgressPolicy/payments/checkout": 1 },
      health: { "shared/gw-a": "down", "shared/gw-b": "down" },
      unavailable: { "EgressPolicy/payments/checkout": "Drop" },
    });
    await waitFor(
      async () => condition(await getPolicy("checkout"), "Ready")?.reason === "NoHealthyInstance",
      10_000,
      "not failing closed",
    );
    expect(condition(await getPolicy("checkout"), "Ready")?.message).toContain("dropped (fail-closed)");
    // The pass writes the policy's status, then the gateway's: the second may land a moment later.
    const instances = async () =>
      (
        (await client.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name: "shared" })) as Json
      ).status.instances.map((i: Json) => `${i.name}:${i.health}`) as string[];
    await waitFor(
      async () => (await instances()).join() === "gw-a:Down,gw-b:PartiallyDown",
      10_000,
      "gateway status not written",
    );
    expect(await instances()).toEqual(["gw-a:Down", "gw-b:PartiallyDown"]);
    // What the pass wrote is what it tells the metrics (only the leader passes).
    const leader = replicas.find((r) => r.elector.isLeader)!;
    await waitFor(
      () => leader.passes.at(-1)?.instanceHealth.get("shared")?.join() === "Down,PartiallyDown",
      5_000,
      "pass outcome not reported",
    );
    await report("node1", {
      programmed: { "EgressPolicy/payments/checkout": 1 },
      health: { "shared/gw-a": "up", "shared/gw-b": "up" },
      unavailable: {},
    });
    await report("node2", {
      programmed: { "EgressPolicy/payments/checkout": 1 },
      health: { "shared/gw-a": "up", "shared/gw-b": "up" },
      unavailable: {},
    });
    await waitFor(
      async () => condition(await getPolicy("checkout"), "Ready")?.status === "True",
      10_000,
      "not Ready again",
    );
    expect((await getPolicy("checkout"))!.status.programmedPods).toBe(2);
  });

  it("holds a deleted policy until no node programs it any more", async () => {
    await client.custom.deleteNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      name: "checkout",
    });
    await new Promise((r) => setTimeout(r, 1_500));
    const held = await getPolicy("checkout");
    expect(held?.metadata.deletionTimestamp).toBeTruthy();
    await report("node1", { programmed: {}, health: {}, unavailable: {} });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await getPolicy("checkout")).toBeDefined(); // node2 still has it
    await report("node2", { programmed: {}, health: {}, unavailable: {} });
    await waitFor(async () => (await getPolicy("checkout")) === undefined, 10_000, "not released");
  });

  it("has exactly one leader, and a standby takes over when it dies", async () => {
    await waitFor(() => replicas.filter((r) => r.elector.isLeader).length === 1, 10_000, "no single leader");
    const leader = replicas.find((r) => r.elector.isLeader)!;
    // A crash: the leader stops renewing without giving the lease up.
    (leader.elector as unknown as { stopped: boolean }).stopped = true;
    leader.controller.deactivate();
    const standby = replicas.find((r) => r !== leader)!;
    await waitFor(() => standby.elector.isLeader, 10_000, "standby did not take over");
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("after-handover", { egressIPs: ["192.0.2.11", "192.0.2.21"] }),
    });
    await waitFor(
      async () => condition(await getPolicy("after-handover"), "Ready")?.status === "True",
      10_000,
      "new leader does not reconcile",
    );
  });

  it("an API request that never answers does not stop the other objects' reconcile", async () => {
    // The first status patch of one policy hangs for a long time; the next policy still gets its status.
    api.faults.delay({ ms: 20_000, count: 1, verb: "patch", resource: "egresspolicies", name: "hangs" });
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("hangs", { podSelector: { matchLabels: { app: "none" } }, egressIPs: ["192.0.2.98"] }),
    });
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("zz-after-hang", { podSelector: { matchLabels: { app: "none" } }, egressIPs: ["192.0.2.97"] }),
    });
    await waitFor(
      async () => condition(await getPolicy("zz-after-hang"), "Invalid")?.status === "True",
      10_000,
      "the hung request stopped the reconcile",
    );
    await waitFor(
      async () => condition(await getPolicy("hangs"), "Invalid")?.status === "True",
      10_000,
      "the hung object was not retried",
    );
  });

  it("converges through injected faults (500s, 409s, dropped watches)", async () => {
    api.faults.fail({ status: 500, count: 3, verb: "patch" });
    api.faults.fail({ status: 409, count: 2, verb: "patch" });
    await client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "payments",
      plural: "egresspolicies",
      body: policy("through-faults", { podSelector: { matchLabels: { app: "none" } }, egressIPs: ["192.0.2.99"] }),
    });
    api.faults.dropWatches({});
    await waitFor(
      async () => condition(await getPolicy("through-faults"), "Invalid")?.status === "True",
      15_000,
      "did not converge",
    );
  });
});
