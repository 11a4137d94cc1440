import { describe, expect, it } from "vitest";
import type { KubeObject } from "../../api/objects.js";
import { TRAFFIC_FRESH_MS } from "../status.js";
import { ViewHistory } from "./history.js";
import { clusterObjects, NOW, type ClusterOptions } from "./testing/cluster.js";

function observe(h: ViewHistory, opts: ClusterOptions, at: number): void {
  const objects: KubeObject[] = clusterObjects(opts);
  h.observe(
    {
      gateways: objects.filter((o) => o.kind === "EgressGateway"),
      policies: objects.filter((o) => o.kind === "EgressPolicy"),
    },
    at,
  );
}

const iso = (ms: number) => new Date(ms).toISOString();

describe("live view history: instance health changes", () => {
  it("records each change with the status's since, newest first; at start only what is not Up", () => {
    const h = new ViewHistory();
    observe(h, { instanceHealth: { "gw-b": "Down" } }, NOW);
    // gw-a Up at start is no news; gw-b Down is, with the time the status gives.
    expect(h.failovers()).toEqual([
      { at: "2026-11-22T11:00:00.000Z", instance: "shared/gw-b", from: null, to: "Down" },
    ]);
    observe(h, { instanceHealth: { "gw-b": "Down" } }, NOW + 2_000);
    expect(h.failovers()).toHaveLength(1); // unchanged: nothing new
    const h2 = new ViewHistory();
    observe(h2, {}, NOW);
    observe(h2, { instanceHealth: { "gw-a": "Down" } }, NOW + 2_000);
    observe(h2, { instanceHealth: { "gw-a": "Up" } }, NOW + 4_000);
    expect(h2.failovers().map((c) => [c.instance, c.from, c.to])).toEqual([
      ["shared/gw-a", "Down", "Up"],
      ["shared/gw-a", "Up", "Down"],
    ]);
    // A first judgement (Unknown: no node had reported yet) is no failover.
    const h3 = new ViewHistory();
    observe(h3, { instanceHealth: { "gw-a": "Unknown" } }, NOW);
    observe(h3, {}, NOW + 2_000);
    expect(h3.failovers()).toEqual([]);
  });

  it("takes the sampling time when the status has no usable since", () => {
    const h = new ViewHistory();
    observe(h, {}, NOW);
    const gw = clusterObjects({ instanceHealth: { "gw-a": "Down" } }).find((o) => o.kind === "EgressGateway")!;
    const instances = (gw.status as { instances: { since?: string }[] }).instances;
    for (const i of instances) delete i.since;
    h.observe({ gateways: [gw], policies: [] }, NOW + 5_000);
    expect(h.failovers()[0]).toMatchObject({ instance: "shared/gw-a", at: iso(NOW + 5_000), to: "Down" });
  });

  it("keeps at most maxChanges", () => {
    const h = new ViewHistory({ maxChanges: 3 });
    for (let i = 0; i < 10; i++) observe(h, { instanceHealth: { "gw-a": i % 2 ? "Down" : "Up" } }, NOW + i * 1000);
    expect(h.failovers()).toHaveLength(3);
  });
});

describe("live view history: traffic per egress IP", () => {
  const entry = (instance: string, bytesPerSecond: number, at = NOW) => ({ instance, bytesPerSecond, at: iso(at) });

  it("samples each instance's fresh rate under the policy's egress IPs on that instance", () => {
    const h = new ViewHistory();
    observe(h, { traffic: [entry("shared/gw-a", 5_000), entry("shared/gw-b", 700)] }, NOW);
    observe(h, { traffic: [entry("shared/gw-a", 6_000, NOW + 2_000), entry("shared/gw-b", 700)] }, NOW + 2_000);
    const { series, windowSeconds } = h.series();
    expect(windowSeconds).toBe(900);
    expect(series).toEqual([
      {
        egressIPs: ["192.0.2.10"],
        policy: "EgressPolicy/payments/checkout",
        instance: "shared/gw-a",
        points: [
          [NOW, 5_000],
          [NOW + 2_000, 6_000],
        ],
      },
      {
        egressIPs: ["192.0.2.20"],
        policy: "EgressPolicy/payments/checkout",
        instance: "shared/gw-b",
        points: [
          [NOW, 700],
          [NOW + 2_000, 700],
        ],
      },
    ]);
  });

  it("counts 0 for a stale entry and for an instance every node sees Down", () => {
    const h = new ViewHistory();
    const stale = NOW - TRAFFIC_FRESH_MS - 1;
    observe(
      h,
      { traffic: [entry("shared/gw-a", 5_000, stale), entry("shared/gw-b", 700)], instanceHealth: { "gw-b": "Down" } },
      NOW,
    );
    expect(h.series().series.map((s) => s.points[0]![1])).toEqual([0, 0]);
  });

  it("forgets points older than the window, and keeps at most maxSeries (the busiest)", () => {
    const h = new ViewHistory({ windowMs: 10_000, maxSeries: 1 });
    observe(h, { traffic: [entry("shared/gw-a", 10)] }, NOW);
    observe(h, { traffic: [entry("shared/gw-a", 20, NOW + 8_000)] }, NOW + 8_000);
    observe(h, { traffic: [entry("shared/gw-a", 30, NOW + 12_000)] }, NOW + 12_000);
    expect(h.series().series[0]!.points.map((p) => p[1])).toEqual([20, 30]);
    // A busier series takes the place of the quietest; a quieter one does not.
    observe(h, { traffic: [entry("shared/gw-b", 1_000, NOW + 13_000)] }, NOW + 13_000);
    expect(h.series().series.map((s) => s.instance)).toEqual(["shared/gw-b"]);
    observe(
      h,
      { traffic: [entry("shared/gw-b", 1_000, NOW + 14_000), entry("shared/gw-a", 5, NOW + 14_000)] },
      NOW + 14_000,
    );
    expect(h.series().series.map((s) => s.instance)).toEqual(["shared/gw-b"]);
  });
});
