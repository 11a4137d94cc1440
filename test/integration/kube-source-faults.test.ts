import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeSource } from "../../src/kube/source.js";
import { waitFor } from "../../src/lab/lab.js";
import { silentLogger } from "../../src/util/log.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// The node agent's view of the API (KubeSource, with its own token) through real causes of
// trouble: the API server restarts, and etcd is compacted under a watch that then resumes from
// a resourceVersion that no longer exists (410 Gone from the server itself, watch cache off so
// the watch is served by etcd). The cache is never flushed, and it converges on what changed.
let kube: TestKube;
let source: KubeSource;

const podNames = () =>
  source
    .objects()
    .filter((o) => o.kind === "Pod")
    .map((o) => o.metadata?.name)
    .sort();

beforeAll(async () => {
  kube = await startTestKube({ watchCache: false });
  await kube.ensureNamespace("payments");
  await kube.createNode({ name: "node1", podCIDR: "10.244.1.0/24", internalIP: "10.0.0.11" });
  await kube.createPod({
    namespace: "payments",
    name: "pay-1",
    node: "node1",
    labels: { app: "checkout" },
    ip: "10.244.1.5",
  });
  source = new KubeSource(await kube.clientFor("node-agent", "node1"), silentLogger, { podsOnNode: "node1" });
  await source.start(() => undefined);
}, 120_000);

afterAll(async () => {
  await source?.stop();
  await kube?.stop();
});

describe("node agent source against a real API server", () => {
  it("keeps its cache across an API server restart, and sees what changed after it", async () => {
    expect(podNames()).toEqual(["pay-1"]);
    // One pod looked up (the node agent's fast path) is the pod objects() lists.
    expect(source.pod("payments", "pay-1")).toEqual(source.objects().find((o) => o.metadata?.name === "pay-1"));
    expect(source.pod("payments", "pay-9")).toBeUndefined();
    await kube.cluster.cp.restartApiServer();
    // Nothing was flushed while the server was away.
    expect(podNames()).toEqual(["pay-1"]);
    await kube.createPod({
      namespace: "payments",
      name: "pay-2",
      node: "node1",
      labels: { app: "checkout" },
      ip: "10.244.1.6",
    });
    await waitFor(() => podNames().includes("pay-2"), 30_000, "pay-2 not seen after the restart");
  }, 120_000);

  it("relists after etcd compaction made its resourceVersion expire (410 Gone from the server)", async () => {
    // Watches end; while they are away, pods change and etcd is compacted past their last
    // resourceVersion, so resuming gets 410 and the informer must list again.
    const podLists = () =>
      kube.cluster.proxy.requests.filter((r) => r.info.verb === "list" && r.info.resource === "pods").length;
    const listsBefore = podLists();
    kube.faults.delay({ ms: 1_500, verb: "watch", resource: "pods", count: 1 });
    kube.faults.dropWatches({ resource: "pods" });
    await kube.deletePod("payments", "pay-1");
    await kube.createPod({
      namespace: "payments",
      name: "pay-3",
      node: "node1",
      labels: { app: "checkout" },
      ip: "10.244.1.7",
    });
    const revision = await kube.cluster.cp.compactEtcd();
    expect(revision).toBeGreaterThan(0);
    await waitFor(
      () => podNames().join() === "pay-2,pay-3",
      30_000,
      `did not converge after compaction: ${podNames().join()}`,
    );
    // It got there by listing again: the resumed watch was told 410 Gone.
    expect(podLists()).toBeGreaterThan(listsBefore);
    // The server really answers 410 for a resourceVersion before the compaction.
    const res = await kube.admin.core
      .listNamespacedPod({ namespace: "payments", resourceVersion: "1", resourceVersionMatch: "Exact" })
      .then(
        () => 200,
        (e: { code?: number }) => e.code,
      );
    expect(res).toBe(410);
  });
});
