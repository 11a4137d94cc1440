import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetNames } from "../../src/cloud/digitalocean/index.js";
import { FINALIZER, REPORT_ANNOTATION } from "../../src/controller/status.js";
import {
  CLUSTER_ID,
  NODE_TAG,
  REGION,
  HARNESS_TIMEOUT_MS,
  startCloudHarness,
  type CloudHarness,
} from "../support/cloud-harness.js";
import { waitFor } from "../../src/lab/lab.js";

// The gateway fleet plugin in the controller (its own identity), against a real kube-apiserver
// and the DigitalOcean API stand-in: an EgressGateway with
// spec.digitalocean gets its droplets, firewall and reserved IPs, listed in status.instances;
// policies can use those IPs; a destroyed droplet is replaced; deletion removes exactly what the
// fleet created, and only then lets the object go.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GV = { group: "staticegress.io", version: "v1alpha1" };
const GATEWAY = "egress-a";
const names = fleetNames(CLUSTER_ID, GATEWAY);

let h: CloudHarness;
/** Every EgressGateway status patch the controller's client sent (core and plugins share it). */
const gatewayStatusPatches: Json[] = [];
let userIP: string;
let foreign: { droplet: number; ip: string; firewall: string };

async function gateway(name = GATEWAY): Promise<Json | undefined> {
  try {
    return (await h.client.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name })) as Json;
  } catch {
    return undefined;
  }
}

async function policy(name: string): Promise<Json | undefined> {
  try {
    return (await h.client.custom.getNamespacedCustomObject({
      ...GV,
      namespace: "web",
      plural: "egresspolicies",
      name,
    })) as Json;
  } catch {
    return undefined;
  }
}

const instances = async (): Promise<Json[]> => ((await gateway())?.status?.instances as Json[] | undefined) ?? [];
const fleetDroplets = () => h.cloud.state.droplets().filter((d) => (d["tags"] as string[]).includes(names.fleetTag));
const ready = (obj: Json | undefined) =>
  (obj?.status?.conditions as Json[] | undefined)?.find((c) => c.type === "Ready");

beforeAll(async () => {
  h = await startCloudHarness({ nodes: 2 });
  const custom = h.controllerClient.custom;
  const send = custom.patchClusterCustomObjectStatus;
  custom.patchClusterCustomObjectStatus = (...args: Parameters<typeof send>) => {
    if (args[0].plural === "egressgateways") gatewayStatusPatches.push(args[0].body as Json);
    return send(...args);
  };
  // node2's agent probes every active instance and finds it up; node1 has judged nothing yet.
  h.judgeInstancesUp("node2");
  // Things of the same account the fleet must never touch.
  const s = h.cloud.state;
  const droplet = s.createDroplet({
    name: "database-1",
    region: REGION,
    size: "s-1vcpu-1gb",
    image: "debian-12-x64",
    tags: ["db"],
  })["id"] as number;
  foreign = {
    droplet,
    ip: s.createReservedIP({ region: REGION, dropletId: droplet }),
    firewall: s.createFirewall({
      name: "db-fw",
      inbound_rules: [{ protocol: "tcp", ports: "5432", sources: { tags: ["db"] } }],
      tags: ["db"],
    })["id"] as string,
  };
  userIP = s.createReservedIP({ region: REGION });
}, HARNESS_TIMEOUT_MS);

afterAll(async () => {
  await h?.close();
}, HARNESS_TIMEOUT_MS);

describe("digitalocean gateway fleet", () => {
  it("creates N droplets, the firewall and reserved IPs, and lists them in status.instances", async () => {
    await h.client.custom.createClusterCustomObject({
      ...GV,
      plural: "egressgateways",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressGateway",
        metadata: { name: GATEWAY },
        spec: {
          grants: [{ namespaceSelector: {} }],
          digitalocean: { region: REGION, size: "s-1vcpu-1gb", count: 3, reservedIPs: [userIP], nodeTag: NODE_TAG },
        },
      },
    });
    await waitFor(
      async () => (await instances()).filter((i) => i.health === "Up").length === 3,
      15_000,
      "instances not listed and Up",
    );
    const listed = await instances();
    const droplets = fleetDroplets();
    expect(droplets).toHaveLength(3);
    expect(listed.map((i) => i.name)).toEqual([names.dropletName(0), names.dropletName(1), names.dropletName(2)]);
    for (const inst of listed) {
      const d = droplets.find((x) => String(x["id"]) === inst.id);
      expect(d, inst.name).toBeDefined();
      const priv = (d!["networks"] as Json).v4.find((n: Json) => n.type === "private").ip_address;
      expect(inst.address).toBe(priv);
      expect(inst.egressIPs).toHaveLength(1);
      expect(h.holderOf(inst.egressIPs[0])).toBe(Number(inst.id));
      // User data: the default template with the gateway filled in, nothing secret.
      const userData = h.cloud.state.raw.droplets.get(Number(inst.id))?.userData ?? "";
      expect(userData).toContain("GATEWAY=egress-a");
      expect(userData).not.toMatch(/token|dop_v1/i);
    }
    // Slot 0 has the user's reserved IP; the others got allocated ones.
    expect(listed[0]!.egressIPs).toEqual([userIP]);
    expect(new Set(listed.flatMap((i) => i.egressIPs)).size).toBe(3);
    const fws = h.cloud.state.firewalls().filter((f) => f["name"] === names.firewallName);
    expect(fws).toHaveLength(1);
    expect(fws[0]!["tags"]).toEqual([names.fleetTag]);
    const inbound = fws[0]!["inbound_rules"] as Json[];
    // BFD from the nodes only; forwarded traffic also from the pods' addresses (routed design).
    expect(inbound.filter((r) => r.protocol === "udp" && r.ports === "3784").map((r) => r.sources)).toEqual([
      { tags: [NODE_TAG] },
    ]);
    // The nodes' VXLAN tunnels to the gateways: from the nodes only.
    expect(inbound.filter((r) => r.protocol === "udp" && r.ports === "15905-24095").map((r) => r.sources)).toEqual([
      { tags: [NODE_TAG] },
    ]);
    const forwarding = inbound.filter((r) => r.ports !== "3784" && r.ports !== "15905-24095");
    expect(forwarding.map((r) => r.protocol).sort()).toEqual(["icmp", "tcp", "udp"]);
    for (const r of forwarding) expect(r.sources).toEqual({ tags: [NODE_TAG], addresses: ["10.244.0.0/16"] });
    const gw = await gateway();
    expect(gw?.metadata.finalizers).toContain(FINALIZER);
    expect(ready(gw)?.status).toBe("True");
  });

  it("lets a policy use the gateway's reserved IPs (the planner sees the instances)", async () => {
    const ips = (await instances()).map((i) => i.egressIPs[0] as string);
    await h.client.custom.createNamespacedCustomObject({
      ...GV,
      namespace: "web",
      plural: "egresspolicies",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressPolicy",
        metadata: { name: "checkout", namespace: "web" },
        spec: { podSelector: { matchLabels: { app: "checkout" } }, gatewayName: GATEWAY, egressIPs: ips.slice(0, 2) },
      },
    });
    await waitFor(async () => ready(await policy("checkout"))?.status === "True", 10_000, "policy not Ready");
    expect((await policy("checkout"))?.status.egressIPs).toEqual([...ips.slice(0, 2)].sort());
  });

  it("keeps the core's health and the plugin's list apart: no write ping-pong", async () => {
    const [first] = await instances();
    // node1's agent (its own token) sees the first instance down, node2 still sees it up.
    const node1Agent = await h.kube.clientFor("node-agent", "node1");
    await node1Agent.patchNodeAnnotations("node1", {
      [REPORT_ANNOTATION]: JSON.stringify({
        programmed: {},
        health: { [`${GATEWAY}/${first!.name}`]: "down" },
        unavailable: {},
        at: new Date().toISOString(),
      }),
    });
    await waitFor(
      async () => (await instances())[0]?.health === "PartiallyDown",
      10_000,
      "core did not mark the instance partially down",
    );
    const before = (await gateway())!.metadata.resourceVersion as string;
    // Three fleet intervals (500 ms each) and several controller resyncs: nothing to write.
    await new Promise((r) => setTimeout(r, 1_800));
    const after = (await gateway())!;
    expect(after.status.instances[0].health).toBe("PartiallyDown");
    expect(after.status.instances).toHaveLength(3);
    expect(after.metadata.resourceVersion).toBe(before);
    await node1Agent.patchNodeAnnotations("node1", { [REPORT_ANNOTATION]: null });
    await waitFor(async () => (await instances()).every((i) => i.health === "Up"), 10_000, "not Up again");
  });

  it("replaces a destroyed droplet: same instance name and egress IP, new droplet", async () => {
    const before = await instances();
    const victim = before[1]!;
    h.cloud.state.destroyDroplet(Number(victim.id));
    // The slot never leaves the list: Provisioning until the replacement is up.
    let shrank = false;
    await waitFor(
      async () => {
        const list = await instances();
        if (list.length < 3) shrank = true;
        const now = list[1];
        return now !== undefined && now.name === victim.name && now.id !== victim.id && now.health === "Up";
      },
      15_000,
      "droplet not replaced",
    );
    expect(shrank).toBe(false);
    const after = await instances();
    expect(after[1]!.name).toBe(victim.name);
    expect(after[1]!.egressIPs).toEqual(victim.egressIPs);
    expect(h.holderOf(victim.egressIPs[0])).toBe(Number(after[1]!.id));
    expect(fleetDroplets()).toHaveLength(3);
    // The policy never lost its IPs: still Ready.
    expect(ready(await policy("checkout"))?.status).toBe("True");
  });

  it("has one status writer: every gateway status patch is the core's whole status, guarded; both sources' fields are there", async () => {
    expect(gatewayStatusPatches.length).toBeGreaterThan(0);
    for (const body of gatewayStatusPatches) {
      // The plugin's list and the core's health and conditions, in one patch, never a partial one.
      expect(Object.keys(body.status).sort()).toEqual(["conditions", "instances", "readyInstances"]);
      expect(body.metadata?.resourceVersion).toBeTruthy();
    }
    const gw = (await gateway())!;
    // The API server's record of who wrote the status: one manager owns both parts.
    const statusManagers = (gw.metadata.managedFields as Json[]).filter((m) => m.subresource === "status");
    expect(statusManagers).toHaveLength(1);
    expect(Object.keys(statusManagers[0]!.fieldsV1["f:status"])).toEqual(
      expect.arrayContaining(["f:instances", "f:conditions", "f:readyInstances"]),
    );
    expect(gw.status.instances.map((i: Json) => [Boolean(i.id), i.health])).toEqual([
      [true, "Up"],
      [true, "Up"],
      [true, "Up"],
    ]);
  });

  it("deleting the gateway removes every cloud resource it created and nothing else, before the object goes", async () => {
    const allocated = (await instances()).flatMap((i) => i.egressIPs as string[]).filter((ip) => ip !== userIP);
    const nodeDroplets = [...h.nodeDroplets.values()];
    // Slow unassign actions: the deletion takes a while, and the object must wait for it.
    h.cloud.faults.slowActions({ durationMs: 400, type: "unassign_ip", count: 3 });
    await h.client.custom.deleteClusterCustomObject({ ...GV, plural: "egressgateways", name: GATEWAY });
    let sawHeld = false;
    for (;;) {
      const gw = await gateway();
      const cloudClean =
        fleetDroplets().length === 0 &&
        !h.cloud.state.firewalls().some((f) => f["name"] === names.firewallName) &&
        !h.cloud.state.reservedIPs().some((ip) => allocated.includes(ip["ip"] as string));
      if (!gw) {
        expect(cloudClean, "the object went away before its cloud resources").toBe(true);
        break;
      }
      if (!cloudClean) {
        expect(gw.metadata.deletionTimestamp).toBeTruthy();
        sawHeld = true;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(sawHeld).toBe(true);
    expect(h.cloud.state.tags()).not.toContain(names.fleetTag);
    expect(h.cloud.state.tags().some((t) => t.startsWith(names.ipRecordPrefix))).toBe(false);
    // Left alone: the user's reserved IP (now unassigned), the nodes, the other droplet, its IP and firewall.
    const ips = h.cloud.state.reservedIPs();
    expect(ips.map((ip) => ip["ip"]).sort()).toEqual([foreign.ip, userIP].sort());
    expect(h.holderOf(foreign.ip)).toBe(foreign.droplet);
    expect(
      h.cloud.state
        .droplets()
        .map((d) => d["id"])
        .sort(),
    ).toEqual([...nodeDroplets, foreign.droplet].sort());
    expect(h.cloud.state.firewalls().map((f) => f["id"])).toEqual([foreign.firewall]);
  });

  it("sent only requests the OpenAPI document allows, and got only valid answers", async () => {
    await h.plugins.idle();
    await h.cloud.settle();
    expect(h.cloud.rejectedRequests()).toEqual([]);
    expect(h.cloud.violations()).toEqual([]);
  });
});
