import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DigitalOceanClient,
  DigitalOceanProvider,
  fleetNames,
  serviceFirewallName,
} from "../../src/cloud/digitalocean/index.js";
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

// Cloud resources no object wants any more. Fleets: the controller's sweep over the provider's
// fleet marks finds a fleet whose gateway vanished without its finalizer (removed by hand while
// the controller was down) and one whose gateway switched to another source, and deletes exactly
// those, leaving the fleets of live gateways, the user's reserved IPs and everything foreign
// alone. Service firewalls of reserved IPs: a restarted controller finds those of its previous
// run, removes the one whose pods left meanwhile and brings the other up to date.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1" };

let h: CloudHarness;
let userIP: string;
let foreign: { droplet: number; ip: string };

const providerFor = (harness: CloudHarness) =>
  new DigitalOceanProvider({
    client: new DigitalOceanClient({ token: harness.cloud.token, baseUrl: harness.cloud.url, actionPollIntervalMs: 5 }),
    pollIntervalMs: 5,
  });

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
  const list = await h.client.core.listNamespacedEvent({ namespace: CLUSTER_EVENT_NAMESPACE });
  return list.items.filter((e) => e.reason === reason) as Json[];
}

describe("fleets whose gateway does not want them", () => {
  beforeAll(async () => {
    // The controller is not running yet: the cloud is as it was while it was down.
    h = await startCloudHarness({ nodes: 2, activate: false });
    h.judgeInstancesUp("node2");
    const s = h.cloud.state;
    const droplet = s.createDroplet({
      name: "database-1",
      region: REGION,
      size: "s-1vcpu-1gb",
      image: "debian-12-x64",
      tags: ["db"],
    })["id"] as number;
    foreign = { droplet, ip: s.createReservedIP({ region: REGION, dropletId: droplet }) };
    userIP = s.createReservedIP({ region: REGION });
    // Meanwhile someone deleted gateway ghost.prod and removed its finalizer by hand: its fleet
    // is in the cloud, no object is in the cluster.
    await providerFor(h).ensureGatewayFleet({
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
    expect(fleetOf("ghost.prod").droplets()).toHaveLength(2); // the setup worked: there is something to find
    // A gateway that stays: its fleet must survive every sweep.
    await createGateway("keeper", { region: REGION, size: "s-1vcpu-1gb", count: 2, nodeTag: NODE_TAG });
    h.controller.activate();
    await waitFor(
      async () => (await instances("keeper")).filter((i) => i.health === "Up").length === 2,
      15_000,
      "keeper not Up",
    );
  }, HARNESS_TIMEOUT_MS);

  afterAll(async () => {
    await h?.close();
  }, HARNESS_TIMEOUT_MS);

  it("a fleet left behind by a gateway that vanished without its finalizer is deleted, and nothing else", async () => {
    const ghost = fleetOf("ghost.prod");
    await waitFor(() => !ghost.marked(), 10_000, "the orphaned fleet was not deleted");
    const keeperIds = fleetOf("keeper")
      .droplets()
      .map((d) => d["id"]);
    await new Promise((r) => setTimeout(r, 1_200)); // two more sweeps (500 ms in tests)
    expect(ghost.droplets()).toEqual([]);
    expect(ghost.firewalls()).toEqual([]);
    expect(ghost.ipRecords()).toEqual([]);
    // The user's IP is unassigned, not deleted; the keeper, the nodes and the foreign droplet stay.
    expect(h.cloud.state.reservedIPs().map((ip) => ip["ip"])).toContain(userIP);
    expect(h.holderOf(userIP)).toBeUndefined();
    expect(h.holderOf(foreign.ip)).toBe(foreign.droplet);
    expect(
      fleetOf("keeper")
        .droplets()
        .map((d) => d["id"]),
    ).toEqual(keeperIds);
    expect(fleetOf("keeper").firewalls()).toHaveLength(1);
    expect(h.cloud.state.droplets().map((d) => d["id"])).toEqual(
      expect.arrayContaining([...h.nodeDroplets.values(), foreign.droplet]),
    );
    await waitFor(
      async () => (await events("CloudFleetDeleted")).some((e) => e.involvedObject?.name === "ghost.prod"),
      5_000,
      "no Event",
    );
    const [event] = (await events("CloudFleetDeleted")).filter((e) => e.involvedObject?.name === "ghost.prod");
    expect(event!.message).toContain("the gateway is gone");
  });

  it("a gateway switched from digitalocean to static instances loses its fleet and lives on with its new source", async () => {
    await createGateway("switcher", {
      region: REGION,
      size: "s-1vcpu-1gb",
      count: 2,
      allocateReservedIPs: true,
      nodeTag: NODE_TAG,
    });
    await waitFor(
      async () => (await instances("switcher")).filter((i) => i.health === "Up").length === 2,
      15_000,
      "switcher not Up",
    );
    const fleet = fleetOf("switcher");
    expect(fleet.droplets()).toHaveLength(2);
    const allocated = (await instances("switcher")).flatMap((i) => i.egressIPs as string[]);
    expect(allocated).toHaveLength(2);

    await h.client.custom.patchClusterCustomObject(
      {
        ...GV,
        plural: "egressgateways",
        name: "switcher",
        body: {
          spec: {
            digitalocean: null,
            static: { instances: [{ name: "gw-1", address: "10.110.0.50", egressIPs: ["203.0.113.50"] }] },
          },
        },
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
    await waitFor(
      async () => (await instances("switcher")).map((i) => i.name).join() === "gw-1",
      10_000,
      "static instance not listed",
    );
    await waitFor(
      async () => (await events("CloudFleetDeleted")).some((e) => e.involvedObject?.name === "switcher"),
      5_000,
      "no Event",
    );
    expect(fleetOf("keeper").droplets()).toHaveLength(2);
  });

  it("sent only requests the OpenAPI document allows, and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});

describe("service firewalls of reserved IPs after a controller restart", () => {
  let r: CloudHarness;
  let stale: string;
  let kept: string;
  const firewallOf = (ip: string) =>
    r.cloud.state.firewalls().find((f) => f["name"] === serviceFirewallName(CLUSTER_ID, `reserved-ip/${ip}`));

  beforeAll(async () => {
    // The controller is not running yet: the cloud is as the previous run left it.
    r = await startCloudHarness({ nodes: 2, activate: false });
    stale = await r.grantedReservedIP();
    kept = await r.grantedReservedIP();
    const provider = providerFor(r);
    const node1 = String(r.nodeDroplets.get("node1"));
    // The previous run opened ports for both IPs; the pods of `stale` left while it was down.
    await provider.ensureServiceFirewall({
      clusterId: CLUSTER_ID,
      name: `reserved-ip/${stale}`,
      hostIds: [node1],
      ports: [{ protocol: "tcp", ports: "8080" }],
    });
    await provider.ensureServiceFirewall({
      clusterId: CLUSTER_ID,
      name: `reserved-ip/${kept}`,
      hostIds: [node1],
      ports: [{ protocol: "tcp", ports: "8080" }],
    });
    r.cloud.state.createFirewall({
      name: "db-fw",
      inbound_rules: [{ protocol: "tcp", ports: "5432", sources: { addresses: ["10.0.0.0/8"] } }],
      tags: [],
    });
    await r.createPod({
      name: "svc-1",
      node: "node2",
      labels: { "staticegress.io/reserved-ip": "" },
      annotations: { "staticegress.io/reserved-ip": kept, "staticegress.io/reserved-ip-ports": "tcp/443" },
    });
    expect(firewallOf(stale)).toBeDefined();
    r.controller.activate();
  }, HARNESS_TIMEOUT_MS);

  afterAll(async () => {
    await r?.close();
  }, HARNESS_TIMEOUT_MS);

  it("removes the firewall whose pods left meanwhile, updates the one still wanted, and leaves others alone", async () => {
    await waitFor(() => firewallOf(stale) === undefined, 10_000, "the leftover service firewall was not removed");
    await waitFor(
      () => firewallOf(kept)?.["droplet_ids"]?.toString() === String(r.nodeDroplets.get("node2")),
      10_000,
      "the wanted firewall was not brought up to date",
    );
    expect(firewallOf(kept)?.["inbound_rules"]).toEqual([
      { protocol: "tcp", ports: "443", sources: { addresses: ["0.0.0.0/0", "::/0"] } },
    ]);
    expect(
      r.cloud.state
        .firewalls()
        .map((f) => f["name"])
        .sort(),
    ).toEqual(["db-fw", serviceFirewallName(CLUSTER_ID, `reserved-ip/${kept}`)].sort());
    await r.plugins.idle();
    await r.cloud.settle();
    expect(r.cloud.rejectedRequests()).toEqual([]);
    expect(r.cloud.violations()).toEqual([]);
  });
});
