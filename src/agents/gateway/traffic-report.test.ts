import { describe, expect, it } from "vitest";
import { silentLogger } from "../../util/log.js";
import { countersOf, policyRef, ratesBetween, totalsByPolicy, TrafficReporter } from "./traffic-report.js";
import type { MeterReading } from "../../dataplane/meter.js";

const r = (
  policy: string,
  egressIP: string,
  direction: "out" | "in",
  packets: number,
  bytes: number,
): MeterReading => ({ policy, egressIP, direction, packets, bytes });

describe("traffic report", () => {
  it("sums a policy's egress IPs and directions, and gives rates only for counts that grew", () => {
    const before = totalsByPolicy([
      r("EgressPolicy/a/p", "192.0.2.10", "out", 10, 1000),
      r("EgressPolicy/a/p", "192.0.2.12", "in", 5, 500),
      r("ClusterEgressPolicy/c", "192.0.2.11", "out", 100, 10_000),
    ]);
    expect(before.get("EgressPolicy/a/p")).toEqual({ packets: 15, bytes: 1500 });
    const after = totalsByPolicy([
      r("EgressPolicy/a/p", "192.0.2.10", "out", 70, 7000),
      r("EgressPolicy/a/p", "192.0.2.12", "in", 5, 500),
      r("ClusterEgressPolicy/c", "192.0.2.11", "out", 1, 100),
    ]);
    // The cluster policy's counter restarted (fewer than before): no rate this round.
    expect([...ratesBetween(before, after, 60)]).toEqual([
      ["EgressPolicy/a/p", { bytesPerSecond: 100, packetsPerSecond: 1 }],
    ]);
  });

  it("maps resources to API coordinates", () => {
    expect(policyRef("EgressPolicy/payments/checkout")).toEqual({
      kind: "EgressPolicy",
      namespace: "payments",
      name: "checkout",
    });
    expect(policyRef("ClusterEgressPolicy/audit")).toEqual({
      kind: "ClusterEgressPolicy",
      namespace: undefined,
      name: "audit",
    });
    expect(policyRef("EgressGateway/x")).toBeUndefined();
  });

  it("writes its own entry once per interval, and only when the rate changed or is due for a refresh", async () => {
    let now = 0;
    let packets = 0;
    const writes: unknown[] = [];
    const reporter = new TrafficReporter({
      client: {
        applyInstanceTraffic: async (kind, namespace, name, entry) =>
          void writes.push({ kind, namespace, name, ...entry }),
      },
      instance: "shared/gw-a",
      read: async () => [r("EgressPolicy/payments/checkout", "192.0.2.10", "out", packets, packets * 100)],
      logger: silentLogger,
      intervalMs: 10_000,
      refreshIntervals: 3,
      now: () => now,
    });
    await reporter.tick(); // the first reading: no rate yet
    expect(writes).toEqual([]);
    for (const step of [50, 50, 50, 50, 80]) {
      now += 10_000;
      packets += step;
      await reporter.tick();
    }
    expect(writes).toEqual([
      {
        kind: "EgressPolicy",
        namespace: "payments",
        name: "checkout",
        instance: "shared/gw-a",
        bytesPerSecond: 500,
        packetsPerSecond: 5,
        at: new Date(10_000).toISOString(),
        counters: [{ egressIP: "192.0.2.10", bytes: 5_000, packets: 50 }],
      },
      // unchanged for two rounds, then refreshed on the third
      {
        kind: "EgressPolicy",
        namespace: "payments",
        name: "checkout",
        instance: "shared/gw-a",
        bytesPerSecond: 500,
        packetsPerSecond: 5,
        at: new Date(40_000).toISOString(),
        counters: [{ egressIP: "192.0.2.10", bytes: 20_000, packets: 200 }],
      },
      {
        kind: "EgressPolicy",
        namespace: "payments",
        name: "checkout",
        instance: "shared/gw-a",
        bytesPerSecond: 800,
        packetsPerSecond: 8,
        at: new Date(50_000).toISOString(),
        counters: [{ egressIP: "192.0.2.10", bytes: 28_000, packets: 280 }],
      },
    ]);
  });

  it("each egress IP's counter as it is (out only), with when it was created", () => {
    const readings: MeterReading[] = [
      { ...r("EgressPolicy/a/p", "192.0.2.12", "out", 5, 500), since: "2026-12-04T21:00:00.000Z" },
      r("EgressPolicy/a/p", "192.0.2.10", "out", 10, 1000),
      r("EgressPolicy/a/p", "192.0.2.10", "in", 3, 300),
      r("EgressPolicy/b/q", "192.0.2.11", "out", 1, 100),
    ];
    expect(countersOf(readings, "EgressPolicy/a/p")).toEqual([
      { egressIP: "192.0.2.10", bytes: 1000, packets: 10 },
      { egressIP: "192.0.2.12", bytes: 500, packets: 5, since: "2026-12-04T21:00:00.000Z" },
    ]);
  });

  it("an App's policy is written whenever its counts changed, even at the same rate (its usage stays within one interval)", async () => {
    let now = 0;
    let packets = 0;
    const writes: { counters?: unknown }[] = [];
    const reporter = new TrafficReporter({
      client: { applyInstanceTraffic: async (_k, _ns, _n, entry) => void writes.push(entry) },
      instance: "app-web/d-0",
      read: async () => [
        { ...r("EgressPolicy/app-web/dedicated-egress", "203.0.113.5", "out", packets, packets * 100), app: "web" },
      ],
      logger: silentLogger,
      intervalMs: 10_000,
      refreshIntervals: 5,
      now: () => now,
    });
    await reporter.tick();
    for (const step of [50, 50, 50, 0, 0]) {
      now += 10_000;
      packets += step;
      await reporter.tick();
    }
    // Three rounds of the same rate with growing counts: three writes; then the rate changes to 0
    // (one write) and stays with unchanged counts (none).
    expect(writes.map((w) => w.counters)).toEqual([
      [{ egressIP: "203.0.113.5", bytes: 5_000, packets: 50 }],
      [{ egressIP: "203.0.113.5", bytes: 10_000, packets: 100 }],
      [{ egressIP: "203.0.113.5", bytes: 15_000, packets: 150 }],
      [{ egressIP: "203.0.113.5", bytes: 15_000, packets: 150 }],
    ]);
  });
});
