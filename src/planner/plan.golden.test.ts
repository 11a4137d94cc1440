/**
 * Golden plans for readable scenarios: `testdata/<name>.yaml` in, `testdata/<name>.expected.json`
 * out. Ranges are written as `first-last` addresses and marks in hex, so a diff reads like the
 * datapath. After an intended change, regenerate with `UPDATE_GOLDEN=1` and review the diff.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { formatRange } from "../util/ipv4.js";
import type { ClusterSnapshot, HealthView, InstanceHealth, NamespaceInfo, NodeInfo, PodInfo } from "./model.js";
import { Planner, selectPods } from "./plan.js";

interface Scenario {
  snapshot: ClusterSnapshot;
  health: Record<string, HealthView>;
}

function loadScenario(name: string): Scenario {
  const doc = parse(readFileSync(new URL(`./testdata/${name}.yaml`, import.meta.url), "utf8")) as {
    network: ClusterSnapshot["network"];
    health: Record<string, Record<string, InstanceHealth>>;
    nodes: (Partial<NodeInfo> & { name: string })[];
    namespaces: (Partial<NamespaceInfo> & { name: string })[];
    pods: (Partial<PodInfo> & { namespace: string; name: string })[];
    gateways: ClusterSnapshot["gateways"];
    policies: ClusterSnapshot["policies"];
  };
  return {
    snapshot: {
      network: doc.network,
      nodes: doc.nodes.map((n) => ({ labels: {}, annotations: {}, podCIDRs: [], ...n })),
      namespaces: doc.namespaces.map((n) => ({ labels: {}, ...n })),
      pods: doc.pods.map((p) => ({ labels: {}, ips: [], ...p })),
      gateways: doc.gateways,
      policies: doc.policies,
    },
    health: Object.fromEntries(Object.entries(doc.health).map(([node, view]) => [node, new Map(Object.entries(view))])),
  };
}

/** Everything the scenario plans, with ranges and marks written for people. */
function render({ snapshot, health }: Scenario): string {
  const planner = new Planner(snapshot);
  const out = {
    verdicts: planner.resolution.verdicts,
    conflicts: selectPods(snapshot, planner.resolution).conflicts,
    nodes: Object.fromEntries(
      snapshot.nodes.map((n) => [n.name, planner.planNode(n.name, health[n.name] ?? new Map())]),
    ),
    gateways: Object.fromEntries(
      [...planner.resolution.instances.keys()].sort().map((k) => [k, planner.planGateway(k)]),
    ),
  };
  const readable = (key: string, value: unknown): unknown => {
    if (key === "mark" && typeof value === "number") return `0x${value.toString(16)}`;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value);
      const r = value as { from: unknown; to: unknown };
      if (keys.length === 2 && typeof r.from === "number" && typeof r.to === "number")
        return formatRange({ from: r.from, to: r.to });
    }
    return value;
  };
  return `${JSON.stringify(out, readable, 2)}\n`;
}

describe("golden plans", () => {
  it("two applications on a shared gateway, plus pods no policy selects", () => {
    const scenario = loadScenario("two-apps");
    const actual = render(scenario);
    const expectedFile = new URL("./testdata/two-apps.expected.json", import.meta.url);
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(expectedFile, actual);
    expect(actual).toBe(readFileSync(expectedFile, "utf8"));

    // The story the golden file tells, spelled out so a bad regeneration cannot hide it.
    const plan = JSON.parse(actual) as {
      verdicts: { valid: boolean }[];
      conflicts: unknown[];
      nodes: Record<string, { entries: { podIP: string; dst: string; policy: string; instance: string }[] }>;
      gateways: Record<string, { snat: { podIP: string; dst: string; egressIP: string; policy: string }[] }>;
    };
    expect(plan.verdicts.every((v) => v.valid)).toBe(true);
    expect(plan.conflicts).toEqual([]);
    const routes = (node: string) => plan.nodes[node]?.entries.map((e) => `${e.podIP} ${e.dst} ${e.instance}`);
    expect(routes("node-a")).toEqual(["10.244.1.10 0.0.0.0-255.255.255.255 shared/gw-1"]);
    // gw-1 is down as node-b sees it: both of its pods go through gw-2.
    expect(routes("node-b")).toEqual([
      "10.244.2.10 0.0.0.0-255.255.255.255 shared/gw-2",
      "10.244.2.20 192.0.2.0-192.0.2.127 shared/gw-2",
      "10.244.2.20 198.51.100.0-198.51.100.255 shared/gw-2",
    ]);
    const snat = (instance: string) => plan.gateways[instance]?.snat.map((s) => `${s.podIP} ${s.dst} ${s.egressIP}`);
    expect(snat("shared/gw-1")).toEqual([
      "10.244.1.10 0.0.0.0-255.255.255.255 203.0.113.10",
      "10.244.2.10 0.0.0.0-255.255.255.255 203.0.113.10",
      "10.244.2.20 192.0.2.0-192.0.2.127 203.0.113.11",
      "10.244.2.20 198.51.100.0-198.51.100.255 203.0.113.11",
    ]);
    // Every instance SNATs every pod its policies may send: each node chooses on its own.
    expect(snat("shared/gw-2")).toEqual([
      "10.244.1.10 0.0.0.0-255.255.255.255 203.0.113.20",
      "10.244.2.10 0.0.0.0-255.255.255.255 203.0.113.20",
      "10.244.2.20 192.0.2.0-192.0.2.127 203.0.113.21",
      "10.244.2.20 198.51.100.0-198.51.100.255 203.0.113.21",
    ]);
  });
});
