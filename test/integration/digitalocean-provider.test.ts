import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  DigitalOceanClient,
  DigitalOceanProvider,
  fleetNames,
  serviceFirewallName,
  type FetchLike,
} from "../../src/cloud/digitalocean/index.js";
import { ReservedIPConflictError, ReservedIPNotFoundError, type GatewayFleetSpec } from "../../src/cloud/provider.js";
import {
  createCrashingFetch,
  SimulatedCrashError,
  startDigitalOceanStandin,
  type DigitalOceanStandin,
} from "../../src/lab/do-standin/index.js";

const CLUSTER = "4d0e1c7a-0c2f-4a9a-9d5b-2f7a1b3c4d5e";
const NODE_TAG = `k8s:${CLUSTER}`;
const MUTATING = new Set([
  "droplets_create",
  "droplets_destroy",
  "droplets_destroy_byTag",
  "dropletActions_post",
  "reservedIPs_create",
  "reservedIPs_delete",
  "reservedIPsActions_post",
  "firewalls_create",
  "firewalls_update",
  "firewalls_delete",
  "tags_delete",
  "tags_assign_resources",
  "tags_unassign_resources",
]);

let standin: DigitalOceanStandin;
let nodeIds: number[];
let foreign: { dropletId: number; ip: string; firewallId: string };
let userIP: string;
let vpcUuid: string;

beforeAll(async () => {
  standin = await startDigitalOceanStandin({ dropletBootMs: 15, actionDurationMs: 5 });
});
afterAll(async () => {
  await standin.close();
});

beforeEach(() => {
  standin.reset();
  const s = standin.state;
  const droplet = (name: string, tags: string[]): number =>
    s.createDroplet({ name, region: "nyc3", size: "s-2vcpu-4gb", image: "ubuntu-24-04-x64", tags })["id"] as number;
  nodeIds = [droplet("pool-a-1", [NODE_TAG, "k8s:worker"]), droplet("pool-a-2", [NODE_TAG, "k8s:worker"])];
  const foreignDroplet = droplet("foreign-1", ["other"]);
  foreign = {
    dropletId: foreignDroplet,
    ip: s.createReservedIP({ region: "nyc3", dropletId: foreignDroplet }),
    firewallId: s.createFirewall({
      name: "foreign-fw",
      inbound_rules: [{ protocol: "tcp", ports: "22", sources: { addresses: ["0.0.0.0/0"] } }],
      tags: ["other"],
    })["id"] as string,
  };
  userIP = s.createReservedIP({ region: "nyc3" });
  vpcUuid = s.vpcs().find((v) => v["region"] === "nyc3")?.["id"] as string;
});

afterEach(async () => {
  await standin.settle();
  const v = standin.violations();
  const rejected = standin.rejectedRequests();
  expect(v).toEqual([]);
  // The provider only ever sends requests the OpenAPI document allows.
  expect(rejected).toEqual([]);
});

function provider(fetch?: FetchLike): DigitalOceanProvider {
  const client = new DigitalOceanClient({
    token: standin.token,
    baseUrl: standin.url,
    fetch,
    retry: { baseDelayMs: 1, maxDelayMs: 5 },
    actionPollIntervalMs: 2,
  });
  return new DigitalOceanProvider({ client, pollIntervalMs: 2, actionTimeoutMs: 5000, dropletActiveTimeoutMs: 5000 });
}

function spec(over: Partial<GatewayFleetSpec> = {}): GatewayFleetSpec {
  return {
    gatewayName: "egress-a",
    clusterId: CLUSTER,
    region: "nyc3",
    size: "s-1vcpu-1gb",
    image: "ubuntu-24-04-x64",
    vpcUuid,
    count: 2,
    allocateReservedIPs: true,
    userData: "#cloud-config\n",
    nodeTag: NODE_TAG,
    ports: [{ protocol: "udp", ports: "51820" }],
    ...over,
  };
}

const names = fleetNames(CLUSTER, "egress-a");
type Obj = Record<string, unknown>;
const fleetDroplets = (): Obj[] =>
  standin.state.droplets().filter((d) => (d["tags"] as string[]).includes(names.fleetTag));
const holder = (ip: Obj): number | undefined => (ip["droplet"] as Obj | null)?.["id"] as number | undefined;
const ipRecords = (): string[] => standin.state.tags().filter((t) => t.startsWith(names.ipRecordPrefix));

function snapshot(): string {
  return JSON.stringify({
    droplets: standin.state.droplets().map((d) => [d["id"], d["name"], d["status"], d["tags"]]),
    ips: standin.state.reservedIPs().map((ip) => [ip["ip"], holder(ip)]),
    firewalls: standin.state.firewalls(),
    tags: standin.state.tags(),
  });
}

function foreignUntouched(): void {
  const d = standin.state.droplets().find((x) => x["id"] === foreign.dropletId);
  expect(d?.["name"]).toBe("foreign-1");
  const ip = standin.state.reservedIPs().find((x) => x["ip"] === foreign.ip);
  expect(ip && holder(ip)).toBe(foreign.dropletId);
  const fw = standin.state.firewalls().find((x) => x["id"] === foreign.firewallId);
  expect(fw?.["name"]).toBe("foreign-fw");
  expect(standin.state.droplets().filter((x) => nodeIds.includes(x["id"] as number))).toHaveLength(2);
}

describe("DigitalOceanProvider gateway fleets", () => {
  it("creates the droplets, the firewall and one reserved IP per host; a second call changes nothing", async () => {
    const hosts = await provider().ensureGatewayFleet(spec());
    expect(hosts.map((h) => [h.index, h.status])).toEqual([
      [0, "active"],
      [1, "active"],
    ]);
    const droplets = fleetDroplets();
    expect(droplets.map((d) => d["name"]).sort()).toEqual([names.dropletName(0), names.dropletName(1)]);
    for (const d of droplets) {
      expect(d["tags"]).toEqual(expect.arrayContaining(["static-egress", names.clusterTag, names.fleetTag]));
      expect(d["vpc_uuid"]).toBe(vpcUuid);
    }
    for (const h of hosts) {
      expect(h.privateIPv4).toMatch(/^10\./);
      expect(h.reservedIPv4).toMatch(/^203\.0\.113\./);
      const ip = standin.state.reservedIPs().find((x) => x["ip"] === h.reservedIPv4);
      expect(ip && holder(ip)).toBe(Number(h.id));
    }
    expect(new Set(hosts.map((h) => h.reservedIPv4)).size).toBe(2);
    expect(ipRecords()).toHaveLength(2);

    const fws = standin.state.firewalls().filter((f) => f["name"] === names.firewallName);
    expect(fws).toHaveLength(1);
    expect(fws[0]).toMatchObject({
      tags: [names.fleetTag],
      inbound_rules: [
        { protocol: "udp", ports: "3784", sources: { tags: [NODE_TAG] } },
        { protocol: "udp", ports: "15905-24095", sources: { tags: [NODE_TAG] } },
        { protocol: "udp", ports: "51820", sources: { tags: [NODE_TAG] } },
      ],
    });
    expect((fws[0]?.["outbound_rules"] as Obj[]).map((r) => r["protocol"])).toEqual(["tcp", "udp", "icmp"]);

    const before = snapshot();
    const seen = standin.requests().length;
    const again = await provider().ensureGatewayFleet(spec());
    expect(again).toEqual(hosts);
    expect(snapshot()).toBe(before);
    const writes = standin
      .requests()
      .slice(seen)
      .filter((r) => r.operationId && MUTATING.has(r.operationId));
    expect(writes).toEqual([]);
    foreignUntouched();
  });

  it("widens the tunnel ports of a firewall written before clusters of 8,191 nodes (20001-24095) on the next pass", async () => {
    await provider().ensureGatewayFleet(spec());
    const fw = standin.state.firewalls().find((f) => f["name"] === names.firewallName)!;
    const client = new DigitalOceanClient({
      token: standin.token,
      baseUrl: standin.url,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
    });
    const rules = (fw["inbound_rules"] as Obj[]).map((r) =>
      r["ports"] === "15905-24095" ? { ...r, ports: "20001-24095" } : r,
    );
    await client.updateFirewall(fw["id"] as string, {
      name: fw["name"] as string,
      inbound_rules: rules as never,
      outbound_rules: fw["outbound_rules"] as never,
      tags: fw["tags"] as string[],
    });
    const seen = standin.requests().length;
    await provider().ensureGatewayFleet(spec());
    const updated = standin.state.firewalls().find((f) => f["id"] === fw["id"])!;
    expect((updated["inbound_rules"] as Obj[]).map((r) => r["ports"])).toEqual(["3784", "15905-24095", "51820"]);
    const writes = standin
      .requests()
      .slice(seen)
      .filter((r) => r.operationId && MUTATING.has(r.operationId));
    expect(writes.map((r) => r.operationId)).toEqual(["firewalls_update"]);
  });

  it("gives the user's reserved IPs to the first slots and allocates the rest", async () => {
    const hosts = await provider().ensureGatewayFleet(spec({ count: 3, reservedIPs: [userIP] }));
    expect(hosts[0]?.reservedIPv4).toBe(userIP);
    expect(hosts[1]?.reservedIPv4).not.toBe(userIP);
    expect(hosts[2]?.reservedIPv4).toBeDefined();
    expect(
      ipRecords()
        .map((t) => names.parseIpRecordTag(t)?.slot)
        .sort(),
    ).toEqual([1, 2]);
    // Deleting the fleet releases the allocated IPs and keeps the user's.
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    const left = standin.state.reservedIPs().map((ip) => ip["ip"]);
    expect(left.sort()).toEqual([foreign.ip, userIP].sort());
  });

  it("replaces a destroyed or powered-off droplet and moves its reserved IP to the replacement", async () => {
    const first = await provider().ensureGatewayFleet(spec());
    const [h0, h1] = first;
    standin.state.destroyDroplet(Number(h1?.id));
    standin.state.powerOff(Number(h0?.id));
    const second = await provider().ensureGatewayFleet(spec());
    expect(second.map((h) => h.name)).toEqual(first.map((h) => h.name));
    expect(second[0]?.id).not.toBe(h0?.id);
    expect(second[1]?.id).not.toBe(h1?.id);
    // Same addresses, no new allocation.
    expect(second.map((h) => h.reservedIPv4)).toEqual(first.map((h) => h.reservedIPv4));
    expect(standin.requests().filter((r) => r.operationId === "reservedIPs_create")).toHaveLength(2);
    expect(fleetDroplets()).toHaveLength(2);
    expect(standin.state.droplets().some((d) => d["id"] === Number(h0?.id))).toBe(false);
  });

  it("scales down, deleting surplus hosts and releasing their allocated IPs", async () => {
    const hosts = await provider().ensureGatewayFleet(spec({ count: 3 }));
    const after = await provider().ensureGatewayFleet(spec({ count: 1 }));
    expect(after.map((h) => h.id)).toEqual([hosts[0]?.id]);
    expect(fleetDroplets()).toHaveLength(1);
    const ips = standin.state.reservedIPs().map((ip) => ip["ip"]);
    expect(ips).not.toContain(hosts[1]?.reservedIPv4);
    expect(ips).not.toContain(hosts[2]?.reservedIPv4);
    expect(ipRecords()).toHaveLength(1);
  });

  it("removes only what it created on delete, and a second delete is a no-op", async () => {
    await provider().ensureGatewayFleet(spec({ count: 2, reservedIPs: [userIP] }));
    const other = await provider().ensureGatewayFleet(spec({ gatewayName: "egress-b", count: 1 }));
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    expect(fleetDroplets()).toEqual([]);
    expect(standin.state.firewalls().filter((f) => f["name"] === names.firewallName)).toEqual([]);
    expect(ipRecords()).toEqual([]);
    expect(standin.state.tags()).not.toContain(names.fleetTag);
    // The user's IP survives (now unassigned), the other fleet and foreign resources too.
    const user = standin.state.reservedIPs().find((ip) => ip["ip"] === userIP);
    expect(user && holder(user)).toBeUndefined();
    // (A listing knows no spec, so it cannot say whether a host is outdated.)
    expect(await provider().listGatewayHosts("egress-b", CLUSTER)).toEqual(
      other.map(({ outdated: _, ...host }) => host),
    );
    foreignUntouched();

    const seen = standin.requests().length;
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    expect(
      standin
        .requests()
        .slice(seen)
        .filter((r) => r.operationId && MUTATING.has(r.operationId) && r.status !== 404),
    ).toEqual([]);
  });

  it("keeps the allocated IPs when asked: left unassigned and recorded, taken again by the next fleet of the name, deleted by a plain delete", async () => {
    const first = await provider().ensureGatewayFleet(spec({ count: 2 }));
    const ips = first.map((h) => h.reservedIPv4);
    expect(ips.every((ip) => ip !== undefined)).toBe(true);
    await provider().deleteGatewayFleet("egress-a", CLUSTER, { keepAllocatedReservedIPs: true });
    expect(fleetDroplets()).toEqual([]);
    expect(standin.state.firewalls().filter((f) => f["name"] === names.firewallName)).toEqual([]);
    // Gone as a fleet (the sweep finds no fleet tag), yet the IPs stay the name's: unassigned, recorded.
    expect(await provider().listGatewayFleets(CLUSTER)).not.toContain("egress-a");
    for (const ip of ips) {
      const rec = standin.state.reservedIPs().find((r) => r["ip"] === ip);
      expect(rec, ip).toBeDefined();
      expect(holder(rec!), ip).toBeUndefined();
    }
    expect((await provider().allocatedReservedIPs("egress-a", CLUSTER)).sort()).toEqual([...ips].sort());
    expect(await provider().allocatedReservedIPs("egress-b", CLUSTER)).toEqual([]);
    // The next fleet of the name takes them again, slot by slot, allocating nothing.
    const creates = standin.requests().filter((r) => r.operationId === "reservedIPs_create").length;
    const again = await provider().ensureGatewayFleet(spec({ count: 2 }));
    expect(again.map((h) => h.reservedIPv4)).toEqual(ips);
    expect(standin.requests().filter((r) => r.operationId === "reservedIPs_create")).toHaveLength(creates);
    // Another name never gets them.
    const other = await provider().ensureGatewayFleet(spec({ gatewayName: "egress-b", count: 1 }));
    expect(ips).not.toContain(other[0]?.reservedIPv4);
    await provider().deleteGatewayFleet("egress-b", CLUSTER);
    // A plain delete releases them.
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    expect(
      standin.state
        .reservedIPs()
        .map((ip) => ip["ip"])
        .sort(),
    ).toEqual([foreign.ip, userIP].sort());
    expect(ipRecords()).toEqual([]);
    // Kept IPs of a name with no fleet left are released by a plain delete too.
    await provider().ensureGatewayFleet(spec({ count: 1 }));
    await provider().deleteGatewayFleet("egress-a", CLUSTER, { keepAllocatedReservedIPs: true });
    expect(await provider().allocatedReservedIPs("egress-a", CLUSTER)).toHaveLength(1);
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    expect(await provider().allocatedReservedIPs("egress-a", CLUSTER)).toEqual([]);
    expect(standin.state.reservedIPs()).toHaveLength(2);
    foreignUntouched();
  });

  it("recovers a reserved IP whose create answer was lost in a crash, without allocating twice", async () => {
    const crash = createCrashingFetch((r) => fetch(r), {
      at: (r) => r.method === "POST" && new URL(r.url).pathname === "/v2/reserved_ips",
      when: "after-send",
    });
    await expect(provider(crash.fetch).ensureGatewayFleet(spec({ count: 1 }))).rejects.toBeInstanceOf(
      SimulatedCrashError,
    );
    expect(standin.state.reservedIPs()).toHaveLength(3); // foreign, user, and the unrecorded new one
    const hosts = await provider().ensureGatewayFleet(spec({ count: 1 }));
    expect(standin.state.reservedIPs()).toHaveLength(3);
    expect(ipRecords()).toEqual([names.ipRecordTag(0, hosts[0]?.reservedIPv4 ?? "?")]);
    expect(standin.state.tags().filter((t) => t.startsWith(names.pendingPrefix))).toEqual([]);
    await provider().deleteGatewayFleet("egress-a", CLUSTER);
    expect(standin.state.reservedIPs()).toHaveLength(2);
  });

  it("never takes an unassigned IP it cannot attribute, and leaves the documented gap alone", async () => {
    // Fleet B leaves an allocation intent behind (crash before the create was sent).
    await provider().ensureGatewayFleet(spec({ gatewayName: "egress-b", count: 1, allocateReservedIPs: false }));
    const crashBefore = createCrashingFetch((r) => fetch(r), {
      at: (r) => r.method === "POST" && new URL(r.url).pathname === "/v2/reserved_ips",
      when: "before-send",
    });
    await expect(
      provider(crashBefore.fetch).ensureGatewayFleet(spec({ gatewayName: "egress-b", count: 1 })),
    ).rejects.toBeInstanceOf(SimulatedCrashError);
    // Fleet A's assignment of the user's IP fails: the IP looks exactly like a lost allocation.
    standin.faults.failActions({ type: "assign_ip" });
    await expect(provider().ensureGatewayFleet(spec({ count: 1, reservedIPs: [userIP] }))).rejects.toThrow(/errored/);
    await provider().deleteGatewayFleet("egress-b", CLUSTER);
    expect(standin.state.reservedIPs().map((ip) => ip["ip"])).toContain(userIP);

    // The gap itself: the create's answer is lost and its assignment fails.
    const crashAfter = createCrashingFetch((r) => fetch(r), {
      at: (r) => r.method === "POST" && new URL(r.url).pathname === "/v2/reserved_ips",
      when: "after-send",
    });
    standin.faults.failActions({ type: "assign_ip" });
    await expect(provider(crashAfter.fetch).ensureGatewayFleet(spec({ count: 1 }))).rejects.toBeInstanceOf(
      SimulatedCrashError,
    );
    await standin.settle();
    const lost = standin.state.reservedIPs().find((ip) => ![foreign.ip, userIP].includes(ip["ip"] as string));
    const hosts = await provider().ensureGatewayFleet(spec({ count: 1 }));
    expect(hosts[0]?.reservedIPv4).not.toBe(lost?.["ip"]);
    const left = standin.state.reservedIPs().find((ip) => ip["ip"] === lost?.["ip"]);
    expect(left && holder(left)).toBeUndefined();
    expect(standin.state.tags().filter((t) => t.startsWith(names.pendingPrefix))).toEqual([]);
  });

  it("does not create a second droplet after an ambiguous create failure", async () => {
    standin.faults.serverError({ count: 1, operationId: "droplets_create", afterProcessing: true });
    const hosts = await provider().ensureGatewayFleet(spec({ count: 2 }));
    expect(hosts).toHaveLength(2);
    expect(fleetDroplets()).toHaveLength(2);
    expect(standin.requests().filter((r) => r.operationId === "droplets_create")).toHaveLength(2);
  });

  it("assigns and moves reserved IPs and reports their holder", async () => {
    const p = provider();
    const hosts = await p.ensureGatewayFleet(spec({ count: 2, allocateReservedIPs: false }));
    expect(hosts.every((h) => h.reservedIPv4 === undefined)).toBe(true);
    await p.assignReservedIP(userIP, hosts[0]?.id ?? "");
    expect(await p.reservedIPHolder(userIP)).toBe(hosts[0]?.id);
    await p.assignReservedIP(userIP, hosts[0]?.id ?? ""); // already there: nothing to do
    await p.assignReservedIP(userIP, hosts[1]?.id ?? ""); // move
    expect(await p.reservedIPHolder(userIP)).toBe(hosts[1]?.id);
    await expect(p.assignReservedIP(foreign.ip, hosts[1]?.id ?? "")).rejects.toBeInstanceOf(ReservedIPConflictError);
    await expect(p.assignReservedIP("203.0.113.254", hosts[0]?.id ?? "")).rejects.toBeInstanceOf(
      ReservedIPNotFoundError,
    );
    await expect(p.reservedIPHolder("203.0.113.254")).rejects.toBeInstanceOf(ReservedIPNotFoundError);
    expect(standin.requests().filter((r) => r.operationId === "reservedIPsActions_post")).toHaveLength(2);
  });

  it("keeps a service firewall beside the cluster's own, opening the ports on the IP holder", async () => {
    const p = provider();
    const id = await p.ensureServiceFirewall({
      clusterId: CLUSTER,
      name: "default/web",
      hostIds: [String(nodeIds[0])],
      ports: [{ protocol: "tcp", ports: "443" }],
    });
    const fw = standin.state.firewalls().find((f) => f["id"] === id);
    expect(fw).toMatchObject({
      name: serviceFirewallName(CLUSTER, "default/web"),
      droplet_ids: [nodeIds[0]],
      inbound_rules: [{ protocol: "tcp", ports: "443", sources: { addresses: ["0.0.0.0/0", "::/0"] } }],
      outbound_rules: [],
    });
    const seen = standin.requests().length;
    expect(
      await p.ensureServiceFirewall({
        clusterId: CLUSTER,
        name: "default/web",
        hostIds: [String(nodeIds[0])],
        ports: [{ protocol: "tcp", ports: "443" }],
      }),
    ).toBe(id);
    expect(
      standin
        .requests()
        .slice(seen)
        .filter((r) => r.operationId && MUTATING.has(r.operationId)),
    ).toEqual([]);
    // The IP moved to the other node.
    await p.ensureServiceFirewall({
      clusterId: CLUSTER,
      name: "default/web",
      hostIds: [String(nodeIds[1])],
      ports: [{ protocol: "tcp", ports: "443" }],
    });
    expect(standin.state.firewalls().find((f) => f["id"] === id)?.["droplet_ids"]).toEqual([nodeIds[1]]);
    await p.deleteServiceFirewall(CLUSTER, "default/web");
    await p.deleteServiceFirewall(CLUSTER, "default/web");
    expect(standin.state.firewalls().map((f) => f["id"])).toEqual([foreign.firewallId]);
  });
});
