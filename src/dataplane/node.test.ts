import { describe, expect, it } from "vitest";
import { markFor, tableFor } from "../planner/ids.js";
import type { NodePlan } from "../planner/model.js";
import { nodeRouting, nodeTunnels } from "./node.js";

const plan = (tunnel: NodePlan["tunnel"], route: "via" | "blackhole" = "via"): NodePlan => ({
  node: "node1",
  instances: [
    { key: "gw/a", address: "10.0.0.101", mark: markFor(7), table: tableFor(7), route, vni: 7 },
    { key: "gw/b", address: "10.0.0.102", mark: markFor(9), table: tableFor(9), route: "via", vni: 9 },
  ],
  entries: [],
  neverDivert: [],
  unavailable: [],
  podsByPolicy: {},
  ...(tunnel ? { tunnel } : {}),
});

describe("node side of the tunnels", () => {
  it("routes each instance's table into the tunnel to it, from the node's own address and port", () => {
    const p = plan({ address: "10.0.0.11", port: 20123 });
    expect(nodeTunnels(p).map((t) => [t.name, t.vni, t.local, t.remote, t.port])).toEqual([
      ["se-gw7", 7, "10.0.0.11", "10.0.0.101", 20123],
      ["se-gw9", 9, "10.0.0.11", "10.0.0.102", 20123],
    ]);
    const { routes, rules } = nodeRouting(p);
    expect(routes).toEqual([
      { table: 7007, dst: "default", kind: "via", via: "169.254.53.1", onlinkDev: "se-gw7" },
      { table: 7009, dst: "default", kind: "via", via: "169.254.53.1", onlinkDev: "se-gw9" },
    ]);
    // The tunnel's own packets (marked like the inner one) reach the instance through the main
    // table, before the instance rules; the catch-all blackhole stays last.
    expect(rules.slice(0, 2)).toEqual([
      { priority: 10005, to: "10.0.0.101/32", fwmark: 0x1000_0000, mask: 0x1000_0000, action: { table: "main" } },
      { priority: 10005, to: "10.0.0.102/32", fwmark: 0x1000_0000, mask: 0x1000_0000, action: { table: "main" } },
    ]);
    expect(rules.at(-1)).toEqual({ priority: 10099, fwmark: 0x1000_0000, mask: 0x1000_0000, action: "blackhole" });
  });

  it("a down instance keeps its tunnel, its table holds a blackhole", () => {
    const p = plan({ address: "10.0.0.11", port: 20123 }, "blackhole");
    expect(nodeTunnels(p)).toHaveLength(2);
    expect(nodeRouting(p).routes[0]).toEqual({ table: 7007, dst: "default", kind: "blackhole" });
  });

  it("without a tunnel end of its own the node has no tunnels and every table is a blackhole", () => {
    const p = plan(undefined);
    expect(nodeTunnels(p)).toEqual([]);
    expect(nodeRouting(p).routes.map((r) => r.kind)).toEqual(["blackhole", "blackhole"]);
  });
});
