import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DigitalOceanClient, DigitalOceanProvider, fleetNames } from "../../src/cloud/digitalocean/index.js";
import { CLUSTER_ID, NODE_TAG, REGION, startCloudHarness, type CloudHarness } from "../../src/controller/cloud/testing.js";
import { waitFor } from "../../src/lab/lab.js";

// Fleets no gateway wants: the controller's sweep over the provider's fleet marks finds a fleet
// whose gateway vanished without its finalizer (removed by hand while the controller was down)
// and one whose gateway switched to another source, and deletes exactly those, leaving the
// fleets of live gateways, the user's reserved IPs and everything foreign alone.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1" };

let h: CloudHarness;
let userIP: string;
let foreign: { droplet: number; ip: string };

const fleetOf = (gateway: string) => {
  const n = fleetNames(CLUSTER_ID, gateway);
  return {
    droplets: () => h.cloud.state.droplets().filter((d) => (d["tags"] as string[]).includes(n.fleetTag)),
    firewalls: () => h.cloud.state.firewalls().filter((f) => f["name"] === n.firewallName),
    ipRecords: () => h.cloud.state.tags().filter((t) => t.startsWith(n.ipRecordPrefix)),
    marked: () => h.cloud.state.tags().includes(n.fleetTag),
  };
};

async function createGateway(name: string, digitalocean: Json): Promise<void> {
  await h.client.custom.createClusterCustomObject({
    ...GV,
    plural: "egressgateways",
    body: { apiVersion: "staticegress.io/v1alpha1", kind: "EgressGateway", metadata: { name }, spec: { digitalocean } },
  });
}

async function instances(name: string): Promise<Json[]> {
  const gw = (await h.client.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name })) as Json;
  return (gw.status?.instances as Json[] | undefined) ?? [];
}

async function events(reason: string): Promise<Json[]> {
  const list = await h.client.core.listNamespacedEvent({ namespace: "static-egress" });
  return list.items.filter((e) => e.reason === reason) as Json[];
}

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 2 });
  h.judgeInstancesUp("node2");
  const s = h.cloud.state;
  const droplet = s.createDroplet({ name: "database-1", region: REGION, size: "s-1vcpu-1gb", image: "debian-12-x64", tags: ["db"] })["id"] as number;
  foreign = { droplet, ip: s.createReservedIP({ region: REGION, dropletId: droplet }) };
  userIP = s.createReservedIP({ region: REGION });
  // A gateway that stays: its fleet must survive every sweep.
  await createGateway("keeper", { region: REGION, size: "s-1vcpu-1gb", count: 2, nodeTag: NODE_TAG });
  await waitFor(async () => (await instances("keeper")).filter((i) => i.health === "Up").length === 2, 15_000, "keeper not Up");
});

afterAll(async () => {
  await h?.close();
});

describe("fleets whose gateway does not want them", () => {
  it("a fleet left behind by a gateway that vanished without its finalizer is deleted, and nothing else", async () => {
    // What a controller that was down finds after someone deleted the gateway and removed its
    // finalizer by hand: the fleet in the cloud, no object in the cluster.
    const client = new DigitalOceanClient({ token: h.cloud.token, baseUrl: h.cloud.url, actionPollIntervalMs: 5 });
    const provider = new DigitalOceanProvider({ client, pollIntervalMs: 5 });
    await provider.ensureGatewayFleet({
      gatewayName: "ghost.prod",
      clusterId: CLUSTER_ID,
      region: REGION,
      size: "s-1vcpu-1gb",
      image: "debian-12-x64",
      count: 2,
      reservedIPs: [userIP],
      allocateReservedIPs: true,
      userData: "#cloud-config\n",
      nodeTag: NODE_TAG,
      ports: [{ protocol: "udp", ports: "all" }],
    });
    const ghost = fleetOf("ghost.prod");
    expect(ghost.droplets()).toHaveLength(2); // the setup worked: there is something to find
    const keeperIds = fleetOf("keeper").droplets().map((d) => d["id"]);

    await waitFor(() => !ghost.marked(), 10_000, "the orphaned fleet was not deleted");
    expect(ghost.droplets()).toEqual([]);
    expect(ghost.firewalls()).toEqual([]);
    expect(ghost.ipRecords()).toEqual([]);
    // The user's IP is unassigned, not deleted; the keeper, the nodes and the foreign droplet stay.
    expect(h.cloud.state.reservedIPs().map((ip) => ip["ip"])).toContain(userIP);
    expect(h.holderOf(userIP)).toBeUndefined();
    expect(h.holderOf(foreign.ip)).toBe(foreign.droplet);
    expect(fleetOf("keeper").droplets().map((d) => d["id"])).toEqual(keeperIds);
    expect(fleetOf("keeper").firewalls()).toHaveLength(1);
    expect(h.cloud.state.droplets().map((d) => d["id"])).toEqual(expect.arrayContaining([...h.nodeDroplets.values(), foreign.droplet]));
    await waitFor(async () => (await events("CloudFleetDeleted")).some((e) => e.involvedObject?.name === "ghost.prod"), 5_000, "no Event");
    const [event] = (await events("CloudFleetDeleted")).filter((e) => e.involvedObject?.name === "ghost.prod");
    expect(event!.message).toContain("the gateway is gone");
  });

  it("a gateway switched from digitalocean to static instances loses its fleet and lives on with its new source", async () => {
    await createGateway("switcher", { region: REGION, size: "s-1vcpu-1gb", count: 2, allocateReservedIPs: true, nodeTag: NODE_TAG });
    await waitFor(async () => (await instances("switcher")).filter((i) => i.health === "Up").length === 2, 15_000, "switcher not Up");
    const fleet = fleetOf("switcher");
    expect(fleet.droplets()).toHaveLength(2);
    const allocated = (await instances("switcher")).flatMap((i) => i.egressIPs as string[]);
    expect(allocated).toHaveLength(2);

    await h.client.custom.patchClusterCustomObject(
      {
        ...GV,
        plural: "egressgateways",
        name: "switcher",
        body: { spec: { digitalocean: null, static: { instances: [{ name: "gw-1", address: "10.110.0.50", egressIPs: ["203.0.113.50"] }] } } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    await waitFor(() => !fleet.marked(), 10_000, "the switched gateway's fleet was not deleted");
    expect(fleet.droplets()).toEqual([]);
    expect(fleet.firewalls()).toEqual([]);
    expect(fleet.ipRecords()).toEqual([]);
    const left = h.cloud.state.reservedIPs().map((ip) => ip["ip"] as string);
    for (const ip of allocated) expect(left).not.toContain(ip);
    // The gateway itself lives on with its new source.
    await waitFor(async () => (await instances("switcher")).map((i) => i.name).join() === "gw-1", 10_000, "static instance not listed");
    await waitFor(async () => (await events("CloudFleetDeleted")).some((e) => e.involvedObject?.name === "switcher"), 5_000, "no Event");
    expect(fleetOf("keeper").droplets()).toHaveLength(2);
  });

  it("sent only requests the OpenAPI document allows, and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});
