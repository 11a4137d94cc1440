import { describe, expect, it } from "vitest";
import type { CloudProvider, GatewayHost } from "../../cloud/provider.js";
import type { ReconcileContext } from "../controller.js";
import { silentLogger } from "../../util/log.js";
import { UNJUDGED } from "../status.js";
import { GatewayFleetPlugin, instancesFromHosts, type InstanceStatus } from "./gateway-fleet.js";
import { KeyedJobs } from "./keyed-jobs.js";
import { DEFAULT_USER_DATA, renderUserData } from "./user-data.js";

const NOW = "2026-05-01T10:00:00.000Z";
const EARLIER = "2026-05-01T09:00:00.000Z";

function host(index: number, over: Partial<GatewayHost> = {}): GatewayHost {
  return {
    id: String(100 + index),
    name: `se-gw-abc-${index}`,
    index,
    privateIPv4: `10.110.0.${10 + index}`,
    publicIPv4: `198.51.100.${10 + index}`,
    reservedIPv4: `203.0.113.${10 + index}`,
    status: "active",
    ...over,
  };
}

const allocate = { userReservedIPs: [], allocate: true };

describe("status.instances from the fleet's hosts", () => {
  it("lists active hosts by slot with their reserved IP as egress IP; new ones wait for the core's judgement", () => {
    expect(instancesFromHosts([host(1), host(0)], undefined, NOW, allocate)).toEqual([
      {
        name: "se-gw-abc-0",
        id: "100",
        address: "10.110.0.10",
        egressIPs: ["203.0.113.10"],
        health: UNJUDGED,
        since: NOW,
      },
      {
        name: "se-gw-abc-1",
        id: "101",
        address: "10.110.0.11",
        egressIPs: ["203.0.113.11"],
        health: UNJUDGED,
        since: NOW,
      },
    ]);
  });

  it("keeps the health and since the core wrote for an unchanged host (no write ping-pong)", () => {
    const previous: InstanceStatus[] = [
      {
        name: "se-gw-abc-0",
        id: "100",
        address: "10.110.0.10",
        egressIPs: ["203.0.113.10"],
        health: "PartiallyDown",
        since: EARLIER,
      },
    ];
    expect(instancesFromHosts([host(0)], previous, NOW, allocate)[0]).toMatchObject({
      health: "PartiallyDown",
      since: EARLIER,
    });
  });

  it("a replaced droplet (same name, new id) starts over", () => {
    const previous: InstanceStatus[] = [
      {
        name: "se-gw-abc-0",
        id: "99",
        address: "10.110.0.9",
        egressIPs: ["203.0.113.10"],
        health: "Down",
        since: EARLIER,
      },
    ];
    expect(instancesFromHosts([host(0)], previous, NOW, allocate)[0]).toMatchObject({
      id: "100",
      health: UNJUDGED,
      since: NOW,
    });
  });

  it("a booting host is Provisioning, and keeps the slot's egress IP it is about to get", () => {
    const previous: InstanceStatus[] = [
      {
        name: "se-gw-abc-0",
        id: "99",
        address: "10.110.0.9",
        egressIPs: ["203.0.113.10"],
        health: "Up",
        since: EARLIER,
      },
    ];
    const booting = host(0, { status: "new", reservedIPv4: undefined });
    expect(instancesFromHosts([booting], previous, NOW, allocate)[0]).toEqual({
      name: "se-gw-abc-0",
      id: "100",
      address: "10.110.0.10",
      egressIPs: ["203.0.113.10"],
      health: "Provisioning",
      since: NOW,
    });
    // Without history: the user's IP for that slot, or none yet for an allocated one.
    expect(
      instancesFromHosts([booting], undefined, NOW, { userReservedIPs: ["203.0.113.77"], allocate: false })[0]
        ?.egressIPs,
    ).toEqual(["203.0.113.77"]);
    expect(instancesFromHosts([booting], undefined, NOW, allocate)[0]?.egressIPs).toEqual([]);
  });

  it("an active host still without its reserved IP is Provisioning too; without reserved IPs the public IPv4 is the egress IP", () => {
    expect(instancesFromHosts([host(0, { reservedIPv4: undefined })], undefined, NOW, allocate)[0]?.health).toBe(
      "Provisioning",
    );
    expect(
      instancesFromHosts([host(0, { reservedIPv4: undefined })], undefined, NOW, {
        userReservedIPs: [],
        allocate: false,
      })[0],
    ).toMatchObject({ egressIPs: ["198.51.100.10"], health: UNJUDGED });
  });
});

describe("status.instances while a slot's host is gone", () => {
  const twoSlots = { ...allocate, count: 2 };
  it("keeps a vanished slot's entry as Provisioning, in its place, with its egress IPs", () => {
    const previous: InstanceStatus[] = [
      {
        name: "se-gw-abc-0",
        id: "100",
        address: "10.110.0.10",
        egressIPs: ["203.0.113.10"],
        health: "Up",
        since: EARLIER,
      },
      {
        name: "se-gw-abc-1",
        id: "101",
        address: "10.110.0.11",
        egressIPs: ["203.0.113.11"],
        health: "Up",
        since: EARLIER,
      },
    ];
    const onlySlot1 = [
      host(1, { id: "101", name: "se-gw-abc-1", privateIPv4: "10.110.0.11", reservedIPv4: "203.0.113.11" }),
    ];
    const out = instancesFromHosts(onlySlot1, previous, NOW, twoSlots);
    expect(out.map((i) => [i.name, i.health])).toEqual([
      ["se-gw-abc-0", "Provisioning"],
      ["se-gw-abc-1", "Up"],
    ]);
    expect(out[0]).toMatchObject({ id: "100", egressIPs: ["203.0.113.10"], since: NOW });
  });

  it("shows the host being replaced as Draining, keeping since; once it is not, it waits for the core's judgement again", () => {
    const draining = instancesFromHosts([host(0), host(1)], undefined, NOW, { ...allocate, draining: "se-gw-abc-1" });
    expect(draining.map((i) => i.health)).toEqual([UNJUDGED, "Draining"]);
    const previous: InstanceStatus[] = [
      {
        name: "se-gw-abc-1",
        id: "101",
        address: "10.110.0.11",
        egressIPs: ["203.0.113.11"],
        health: "Draining",
        since: EARLIER,
      },
    ];
    expect(instancesFromHosts([host(1)], previous, NOW, { ...allocate, draining: "se-gw-abc-1" })[0]).toMatchObject({
      health: "Draining",
      since: EARLIER,
    });
    expect(instancesFromHosts([host(1)], previous, NOW, allocate)[0]).toMatchObject({ health: UNJUDGED, since: NOW });
  });

  it("never lists more than count entries (a scale-down drops what no host backs)", () => {
    const previous: InstanceStatus[] = [0, 1, 2].map((i) => ({
      name: `se-gw-abc-${i}`,
      id: `10${i}`,
      address: "",
      egressIPs: [],
      health: "Up",
    }));
    expect(
      instancesFromHosts([host(0, { id: "100", name: "se-gw-abc-0" })], previous, NOW, { ...allocate, count: 1 }).map(
        (i) => i.name,
      ),
    ).toEqual(["se-gw-abc-0"]);
    expect(instancesFromHosts([], previous, NOW, { ...allocate, count: 0 })).toEqual([]);
  });
});

describe("user data", () => {
  it("fills ${GATEWAY}, turns ${INSTANCE} into the hostname, leaves other ${...} alone", () => {
    expect(renderUserData("gw=${GATEWAY} i=${INSTANCE} home=${HOME}", "egress-a")).toBe(
      "gw=egress-a i=$(hostname) home=${HOME}",
    );
    const rendered = renderUserData(DEFAULT_USER_DATA, "egress-a");
    expect(rendered.startsWith("#cloud-config\n")).toBe(true);
    expect(rendered).toContain("GATEWAY=egress-a");
    expect(rendered).not.toContain("${");
  });
});

describe("keyed background jobs", () => {
  it("runs one job per key at a time and once more when scheduled meanwhile", async () => {
    const runs: string[] = [];
    let release: () => void = () => undefined;
    const jobs = new KeyedJobs({
      logger: silentLogger,
      work: async (key) => {
        runs.push(key);
        if (runs.length === 1) await new Promise<void>((r) => (release = r));
      },
    });
    jobs.schedule("a");
    jobs.schedule("a");
    jobs.schedule("a");
    jobs.schedule("b");
    expect(jobs.isRunning("a")).toBe(true);
    release();
    await jobs.idle();
    expect(runs).toEqual(["a", "b", "a"]);
  });

  it("retries a failed job with backoff, and a new schedule runs it at once", async () => {
    let attempts = 0;
    const errors: string[] = [];
    const jobs = new KeyedJobs({
      logger: silentLogger,
      retryBaseMs: 10_000,
      onError: (_k, e) => errors.push(e.message),
      work: () => (++attempts < 3 ? Promise.reject(new Error(`boom ${attempts}`)) : Promise.resolve()),
    });
    jobs.schedule("x");
    await jobs.idle();
    expect(jobs.isBusy("x")).toBe(true); // waiting to retry
    expect(jobs.failuresOf("x")).toBe(1);
    expect(jobs.failing()).toBe(1); // what static_egress_cloud_failing_jobs exports
    jobs.schedule("x");
    await jobs.idle();
    jobs.schedule("x");
    await jobs.idle();
    expect(attempts).toBe(3);
    expect(jobs.failuresOf("x")).toBe(0);
    expect(jobs.failing()).toBe(0);
    expect(jobs.isBusy("x")).toBe(false);
    expect(errors).toEqual(["boom 1", "boom 2"]);
    await jobs.stop();
  });
});

describe("the sweep for fleets no gateway wants", () => {
  /** A provider that lists one fleet and records deletions; a context whose cache shows no gateway. */
  function setup(apiServerHas: object | undefined) {
    const deleted: string[] = [];
    const provider = {
      listGatewayFleets: () => Promise.resolve(deleted.includes("gw") ? [] : ["gw"]),
      deleteGatewayFleet: (name: string) => {
        deleted.push(name);
        return Promise.resolve();
      },
    } as unknown as CloudProvider;
    const events: string[] = [];
    const ctx = {
      source: { raw: () => [] },
      client: {
        readGateway: () => Promise.resolve(apiServerHas),
        createObjectEvent: (e: { reason: string }) => {
          events.push(e.reason);
          return Promise.resolve();
        },
      },
    } as unknown as ReconcileContext;
    const plugin = new GatewayFleetPlugin({ provider, clusterId: "c1", logger: silentLogger });
    return { plugin, ctx, deleted, events };
  }
  const settle = async (plugin: GatewayFleetPlugin) => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
    await plugin.idle();
  };

  it("deletes a fleet only when the API server, not just the cache, has no gateway wanting it", async () => {
    const lagging = setup({ metadata: { name: "gw" }, spec: { digitalocean: { region: "ams3" } } });
    await lagging.plugin.reconcile(lagging.ctx);
    await settle(lagging.plugin);
    expect(lagging.deleted).toEqual([]);

    const gone = setup(undefined);
    await gone.plugin.reconcile(gone.ctx);
    await settle(gone.plugin);
    expect(gone.deleted).toEqual(["gw"]);
    expect(gone.events).toEqual(["CloudFleetDeleted"]);

    const switched = setup({ metadata: { name: "gw" }, spec: { static: { instances: [] } } });
    await switched.plugin.reconcile(switched.ctx);
    await settle(switched.plugin);
    expect(switched.deleted).toEqual(["gw"]);
  });
});

describe("rolling replacement: when it starts", () => {
  /** One convergence of a 2-droplet gateway whose slot 1 is outdated, with the given status in the cache. */
  async function converge(statusIds: [string, string]) {
    const hosts: GatewayHost[] = [host(0), host(1, { outdated: true })];
    const provider = {
      ensureGatewayFleet: () => Promise.resolve(hosts),
      listGatewayFleets: () => Promise.resolve([]),
      listGatewayHosts: () => Promise.resolve(hosts),
    } as unknown as CloudProvider;
    const passes: number[] = [];
    const events: string[] = [];
    const gateway = {
      metadata: { name: "gw", generation: 1, resourceVersion: "5", uid: "u1" },
      spec: { digitalocean: { region: "ams3", size: "s-1vcpu-1gb", count: 2, nodeTag: "k8s:c1" } },
      status: {
        instances: statusIds.map((id, i) => ({
          name: `se-gw-abc-${i}`,
          id,
          address: `10.110.0.${10 + i}`,
          egressIPs: [`203.0.113.${10 + i}`],
          health: "Up",
          since: EARLIER,
        })),
      },
    };
    const ctx = {
      source: { raw: (kind: string) => (kind === "EgressGateway" ? [gateway] : []) },
      snapshot: { network: { podCIDRs: ["10.244.0.0/16"] } },
      requestPass: (ms: number) => passes.push(ms),
      client: {
        createObjectEvent: (e: { reason: string }) => {
          events.push(e.reason);
          return Promise.resolve();
        },
      },
    } as unknown as ReconcileContext;
    const plugin = new GatewayFleetPlugin({ provider, clusterId: "c1", logger: silentLogger, rollDrainMs: 60_000 });
    await plugin.reconcile(ctx);
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
    await plugin.idle();
    await plugin.stop();
    // What the core writes next: the plugin writes no status, it hands the list over and asks for a pass.
    return { listed: plugin.gatewayInstances(gateway), passes, events };
  }

  it("drains the outdated droplet when the status shows every current droplet Up", async () => {
    const { listed, passes, events } = await converge(["100", "101"]);
    expect(events).toEqual(["RollingReplacement"]);
    expect(listed?.map((i) => i.health)).toEqual(["Up", "Draining"]);
    expect(passes).toContain(0);
  });

  it("waits while the status still shows a droplet that was replaced (its new one not judged yet)", async () => {
    const { listed, events } = await converge(["99", "101"]); // slot 0's status is the old droplet's
    expect(events).toEqual([]);
    expect(listed?.map((i) => i.health)).toEqual([UNJUDGED, "Up"]);
  });
});
