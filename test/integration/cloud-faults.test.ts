import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetNames } from "../../src/cloud/digitalocean/index.js";
import {
  CLUSTER_ID,
  NODE_TAG,
  REGION,
  HARNESS_TIMEOUT_MS,
  startCloudHarness,
  type CloudHarness,
} from "../support/cloud-harness.js";
import { waitFor } from "../../src/lab/lab.js";

// Both plugins (the controller with its own identity, on a real kube-apiserver) through DigitalOcean API faults: rate limits (429 with Retry-After), server
// errors (also after the server applied the request), slow and failing actions. They converge,
// create nothing twice, and every request and answer matches the OpenAPI document.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1" };
const LABEL = "staticegress.io/reserved-ip";

let h: CloudHarness;

async function instances(name: string): Promise<Json[]> {
  const gw = (await h.client.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name })) as Json;
  return (gw.status?.instances as Json[] | undefined) ?? [];
}

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 3, plugins: { fleet: { progressAfterMs: 150 } } });
}, HARNESS_TIMEOUT_MS);

afterAll(async () => {
  await h?.close();
}, HARNESS_TIMEOUT_MS);

describe("through DigitalOcean API faults", () => {
  it("the fleet converges; booting droplets are listed as Provisioning meanwhile; nothing is created twice", async () => {
    const f = h.cloud.faults;
    f.rateLimit({ count: 3, retryAfterSec: 0 });
    f.serverError({ status: 502, count: 2, operationId: "droplets_list" });
    // The create is applied but answered 500: the provider must find it instead of creating another.
    f.serverError({ status: 500, count: 1, operationId: "droplets_create", afterProcessing: true });
    f.slowActions({ type: "create", durationMs: 1_200, count: 2 });
    f.failActions({ type: "assign_ip", count: 1 });
    await h.client.custom.createClusterCustomObject({
      ...GV,
      plural: "egressgateways",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressGateway",
        metadata: { name: "faulty" },
        spec: { digitalocean: { region: REGION, size: "s-1vcpu-1gb", count: 2, nodeTag: NODE_TAG } },
      },
    });
    await waitFor(
      async () => (await instances("faulty")).some((i) => i.health === "Provisioning"),
      10_000,
      "no Provisioning instance while droplets boot",
    );
    const provisioning = (await instances("faulty")).filter((i) => i.health === "Provisioning");
    for (const i of provisioning) expect(i.id).toMatch(/^\d+$/);
    await waitFor(
      async () => {
        const list = await instances("faulty");
        // Active droplets that no node agent has judged yet (this harness runs none): Unknown, never Up.
        return list.length === 2 && list.every((i) => i.health === "Unknown" && i.egressIPs.length === 1);
      },
      20_000,
      "fleet did not converge through faults",
    );
    const names = fleetNames(CLUSTER_ID, "faulty");
    expect(h.cloud.state.droplets().filter((d) => (d["tags"] as string[]).includes(names.fleetTag))).toHaveLength(2);
    const records = h.cloud.state.tags().filter((t) => t.startsWith(names.ipRecordPrefix));
    expect(records).toHaveLength(2);
    // Every allocated IP is recorded and held by its droplet; none is left over unassigned.
    for (const i of await instances("faulty")) expect(h.holderOf(i.egressIPs[0])).toBe(Number(i.id));
    expect(h.cloud.state.reservedIPs().filter((ip) => !ip["droplet"])).toEqual([]);
    // Every injected fault was met.
    expect(f.pending()).toMatchObject({ http: 0, slowActions: 0, failActions: 0 });
  });

  it("a reserved IP still moves to the ready pod's node through 429s, ambiguous 503s, a failed and a slow action", async () => {
    const ip = await h.grantedReservedIP();
    await h.createPod({ name: "a", node: "node1", labels: { [LABEL]: "" }, annotations: { [LABEL]: ip } });
    await h.createPod({ name: "b", node: "node2", labels: { [LABEL]: "" }, annotations: { [LABEL]: ip } });
    await waitFor(() => h.holderOf(ip) === h.nodeDroplets.get("node1"), 10_000, "not assigned to node1");
    const f = h.cloud.faults;
    f.rateLimit({ count: 2, operationId: "reservedIPs_get", retryAfterSec: 0 });
    f.serverError({ status: 503, count: 1, operationId: "reservedIPsActions_post", afterProcessing: true });
    f.failActions({ type: "assign_ip", count: 1 });
    f.slowActions({ type: "assign_ip", durationMs: 600, count: 1 });
    await h.setPodReady("web", "a", false);
    await waitFor(() => h.holderOf(ip) === h.nodeDroplets.get("node2"), 15_000, "did not move to node2 through faults");
    expect(f.pending()).toMatchObject({ http: 0, slowActions: 0, failActions: 0 });
  });

  it("sent only valid requests and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});
