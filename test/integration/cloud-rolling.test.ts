import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
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
import { CLUSTER_EVENT_NAMESPACE } from "../../src/kube/client.js";
import { waitFor } from "../../src/lab/lab.js";

// A size change rolls through a gateway fleet one droplet at a time (the controller with its own
// identity, on a real kube-apiserver): the outdated droplet is
// drained first (status Draining, which nodes plan as "no new connections"), then deleted and
// built again from the spec under the same name with its reserved IP, and only when every slot
// is Up again does the next one start. At every moment another instance is Up.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1", plural: "egressgateways" };
const NAME = "egress-r";
const names = fleetNames(CLUSTER_ID, NAME);
let h: CloudHarness;

const instances = async (): Promise<Json[]> =>
  (((await h.client.custom.getClusterCustomObject({ ...GV, name: NAME })) as Json).status?.instances as
    Json[] | undefined) ?? [];
const fleet = () => h.cloud.state.droplets().filter((d) => (d["tags"] as string[]).includes(names.fleetTag));

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 1, plugins: { fleet: { rollDrainMs: 400 } } });
  h.judgeInstancesUp("node1");
  await h.client.custom.createClusterCustomObject({
    ...GV,
    body: {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressGateway",
      metadata: { name: NAME },
      spec: { digitalocean: { region: REGION, size: "s-1vcpu-1gb", count: 2, nodeTag: NODE_TAG } },
    },
  });
  await waitFor(async () => (await instances()).filter((i) => i.health === "Up").length === 2, 15_000, "fleet not Up");
}, HARNESS_TIMEOUT_MS);

afterAll(async () => {
  await h?.close();
}, HARNESS_TIMEOUT_MS);

describe("rolling replacement of a gateway fleet", () => {
  it("replaces droplets of an old size one at a time, draining each first, never leaving no instance Up", async () => {
    const before = await instances();
    expect(fleet().map((d) => d["size_slug"])).toEqual(["s-1vcpu-1gb", "s-1vcpu-1gb"]);
    await h.client.custom.patchClusterCustomObject(
      { ...GV, name: NAME, body: { spec: { digitalocean: { size: "s-2vcpu-2gb" } } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );

    const samples: Json[][] = [];
    const drainedBeforeGone = new Set<string>();
    await waitFor(
      async () => {
        const now = await instances();
        samples.push(now);
        for (const i of now)
          if (i.health === "Draining" && before.some((b) => b.id === i.id)) drainedBeforeGone.add(i.name as string);
        const droplets = fleet();
        const current = (i: Json) => droplets.some((d) => String(d["id"]) === i.id && d["size_slug"] === "s-2vcpu-2gb");
        return droplets.length === 2 && now.length === 2 && now.every((i) => current(i) && i.health === "Up");
      },
      30_000,
      "the fleet did not roll to the new size",
      20,
    );
    // Both were drained while still the old droplet, one at a time, and one instance was Up throughout.
    expect([...drainedBeforeGone].sort()).toEqual(before.map((i) => i.name).sort());
    for (const s of samples) {
      expect(s.filter((i) => i.health === "Draining").length).toBeLessThanOrEqual(1);
      expect(
        s.filter((i) => i.health === "Up").length,
        JSON.stringify(s.map((i) => `${i.name}:${i.health}`)),
      ).toBeGreaterThanOrEqual(1);
    }
    // Same names and reserved IPs per slot, new droplets.
    const after = await instances();
    expect(after.map((i) => i.name)).toEqual(before.map((i) => i.name));
    expect(after.map((i) => i.egressIPs)).toEqual(before.map((i) => i.egressIPs));
    for (const [i, inst] of after.entries()) expect(inst.id).not.toBe(before[i]!.id);
    const events = (await h.client.core.listNamespacedEvent({ namespace: CLUSTER_EVENT_NAMESPACE })).items.filter(
      (e) => e.involvedObject.name === NAME && e.reason === "RollingReplacement",
    );
    expect(events.length).toBeGreaterThanOrEqual(4); // drain + replace, for each droplet
  });

  it("sent only requests the OpenAPI document allows, and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});
