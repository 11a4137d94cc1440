/** Worked examples of planning decisions; the properties in plan.property.test.ts generalize them. */
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { formatRange } from "../util/ipv4.js";
import type { ClusterSnapshot, HealthView, PolicyObject } from "./model.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import { Planner, selectPods } from "./plan.js";
import { clusterEgressPolicy, egressGateway, egressPolicy } from "./testing/arbitraries.js";

const validator = new SpecValidator();

const gateway = egressGateway("shared", {
  grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
  static: {
    instances: [
      { name: "a", address: "10.0.1.1", egressIPs: ["203.0.113.1", "203.0.113.11"] },
      { name: "b", address: "10.0.1.2", egressIPs: ["203.0.113.2", "203.0.113.12"] },
      { name: "c", address: "10.0.1.3", egressIPs: ["203.0.113.3", "203.0.113.13"], drain: true },
    ],
  },
});

const podCount = 40;
const snapshot = (policies: PolicyObject[]): ClusterSnapshot => ({
  policies,
  gateways: [gateway],
  pods: Array.from({ length: podCount }, (_, i) => ({
    namespace: "shop",
    name: `web-${i}`,
    labels: { app: "web" },
    nodeName: "node-a",
    ips: [`10.244.1.${i + 10}`],
    phase: "Running",
  })),
  namespaces: [{ name: "shop", labels: { team: "red" } }],
  nodes: [{ name: "node-a", labels: {}, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] }],
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
});

const web = egressPolicy(
  "shop",
  "web",
  {
    podSelector: { matchLabels: { app: "web" } },
    gatewayName: "shared",
    egressIPs: ["203.0.113.1", "203.0.113.2", "203.0.113.3"],
  },
  "2024-01-01T00:00:00Z",
);

const instancesUsed = (planner: Planner, health: HealthView) =>
  new Set(planner.planNode("node-a", health).entries.map((e) => e.instance));

describe("choosing an instance", () => {
  const planner = new Planner(snapshot([web]), { validator });

  it("spreads pods over healthy instances that are not draining", () => {
    expect(instancesUsed(planner, new Map())).toEqual(new Set(["shared/a", "shared/b"]));
  });

  it("plans an instance of unknown health like a healthy one (a restarting agent keeps its routes)", () => {
    const known = planner.planNode(
      "node-a",
      new Map([
        ["shared/a", "up"],
        ["shared/b", "up"],
      ]),
    );
    expect(planner.planNode("node-a", new Map()).entries).toEqual(known.entries);
  });

  it("uses a draining instance only when nothing else is usable", () => {
    expect(instancesUsed(planner, new Map([["shared/a", "down"]]))).toEqual(new Set(["shared/b"]));
    expect(
      instancesUsed(
        planner,
        new Map([
          ["shared/a", "down"],
          ["shared/b", "down"],
        ]),
      ),
    ).toEqual(new Set(["shared/c"]));
  });

  it("blackholes through the pod's own instance when all are down, under Drop", () => {
    const down: HealthView = new Map([
      ["shared/a", "down"],
      ["shared/b", "down"],
      ["shared/c", "down"],
    ]);
    const plan = planner.planNode("node-a", down);
    expect(plan.entries).toHaveLength(podCount);
    expect(plan.instances.map((i) => i.route)).toEqual(["blackhole", "blackhole", "blackhole"]);
    expect(plan.unavailable).toEqual([{ policy: "EgressPolicy/shop/web", failurePolicy: "Drop", pods: podCount }]);
  });

  it("derives marks and tables from stable ids, with a configurable table base", () => {
    const a = new Planner(snapshot([web]), { validator, tableBase: 20_000 }).planNode("node-a", new Map()).instances;
    const b = planner.planNode("node-a", new Map()).instances;
    expect(a.map((i) => i.mark)).toEqual(b.map((i) => i.mark));
    expect(a.map((i) => i.table - 20_000)).toEqual(b.map((i) => i.table - 7000));
    expect(new Set(a.map((i) => i.table)).size).toBe(3);
  });

  it("has no gateway plan for an unknown instance", () => {
    expect(planner.planGateway("shared/zz")).toBeUndefined();
  });
});

describe("overlapping policies", () => {
  it("an excluded destination is left to lower policies, not forced direct", () => {
    // The namespaced policy wins (EgressPolicy before ClusterEgressPolicy at equal priority) but
    // excludes 198.51.100.0/24; the cluster-wide policy then decides that block for the pod.
    const team = egressPolicy(
      "shop",
      "web",
      { ...web.spec, egressIPs: ["203.0.113.1"], excludedCIDRs: ["198.51.100.0/24"] },
      "2024-01-01T00:00:00Z",
    );
    const audit = clusterEgressPolicy(
      "audit",
      { podSelector: {}, namespaceSelector: {}, gatewayName: "shared", egressIPs: ["203.0.113.12"] },
      "2024-01-01T00:00:00Z",
    );
    const s = snapshot([audit, team]);
    const planner = new Planner(s, { validator });
    const entries = planner.planNode("node-a", new Map()).entries.filter((e) => e.podIP === "10.244.1.10");
    expect(entries.map((e) => `${formatRange(e.dst)} ${e.policy} ${e.instance}`)).toEqual([
      "0.0.0.0-198.51.99.255 EgressPolicy/shop/web shared/a",
      "198.51.100.0-198.51.100.255 ClusterEgressPolicy/audit shared/b",
      "198.51.101.0-255.255.255.255 EgressPolicy/shop/web shared/a",
    ]);
    const conflicts = selectPods(s, planner.resolution).conflicts.filter((c) => c.pod === "shop/web-0");
    expect(conflicts).toHaveLength(1);
    expect(conflicts[0]).toMatchObject({ winner: "EgressPolicy/shop/web", loser: "ClusterEgressPolicy/audit" });
    expect(conflicts[0]?.destinations.map(formatRange)).toEqual([
      "0.0.0.0-198.51.99.255",
      "198.51.101.0-255.255.255.255",
    ]);
  });
});

describe("pods", () => {
  it("an IPv6-only pod is counted as selected but gets no (IPv4) entry", () => {
    const s = snapshot([web]);
    const v6 = {
      ...s,
      pods: [
        {
          namespace: "shop",
          name: "v6",
          labels: { app: "web" },
          nodeName: "node-a",
          ips: ["fd00::10"],
          phase: "Running",
        },
      ],
    };
    const plan = new Planner(v6, { validator }).planNode("node-a", new Map());
    expect(plan.entries).toEqual([]);
    expect(plan.podsByPolicy).toEqual({ "EgressPolicy/shop/web": 1 });
  });
});

describe("a digitalocean gateway whose droplets are not there yet", () => {
  const RESERVED = ["203.0.113.30", "203.0.113.40"];
  const cloud = (instances: { name: string; address: string; egressIPs: string[]; health: string }[]) =>
    ({
      ...egressGateway("cloud", {
        grants: [{ namespaceSelector: {} }],
        digitalocean: { region: "ams3", size: "s-1vcpu-1gb", count: 2, reservedIPs: RESERVED, nodeTag: "k8s:c1" },
      }),
      status: { instances },
    }) as ClusterSnapshot["gateways"][number];
  const pay = (failurePolicy: "Drop" | "FallbackToNodeIP" = "Drop") =>
    egressPolicy(
      "shop",
      "pay",
      { podSelector: { matchLabels: { app: "web" } }, gatewayName: "cloud", egressIPs: RESERVED, failurePolicy },
      "2024-01-01T00:00:00Z",
    );
  const snap = (gw: ClusterSnapshot["gateways"][number], policies: PolicyObject[]): ClusterSnapshot => ({
    ...snapshot(policies),
    gateways: [gw],
  });

  it("a policy naming the gateway's declared reserved IPs is valid, and its pods are dropped (never left with the node IP)", () => {
    const planner = new Planner(snap(cloud([]), [pay()]), { validator });
    expect(planner.resolution.verdicts.find((v) => v.resource === "EgressPolicy/shop/pay")).toEqual({
      resource: "EgressPolicy/shop/pay",
      valid: true,
      errors: [],
    });
    const plan = planner.planNode("node-a", new Map());
    expect(plan.entries).toHaveLength(podCount);
    expect(new Set(plan.entries.map((e) => e.mark))).toEqual(new Set([NO_INSTANCE_MARK]));
    expect(plan.unavailable).toEqual([{ policy: "EgressPolicy/shop/pay", failurePolicy: "Drop", pods: podCount }]);
  });

  it("with FallbackToNodeIP the pods leave with the node IP meanwhile, as that policy asks", () => {
    const plan = new Planner(snap(cloud([]), [pay("FallbackToNodeIP")]), { validator }).planNode("node-a", new Map());
    expect(plan.entries).toEqual([]);
    expect(plan.unavailable).toEqual([
      { policy: "EgressPolicy/shop/pay", failurePolicy: "FallbackToNodeIP", pods: podCount },
    ]);
  });

  it("once one droplet carries its IP, every pod goes there; the other IP waits for its droplet", () => {
    const planner = new Planner(
      snap(cloud([{ name: "d0", address: "10.0.1.50", egressIPs: [RESERVED[0]!], health: "Up" }]), [pay()]),
      { validator },
    );
    const plan = planner.planNode("node-a", new Map());
    expect(new Set(plan.entries.map((e) => e.instance))).toEqual(new Set(["cloud/d0"]));
    expect(plan.unavailable).toEqual([]);
  });

  it("a droplet being replaced (Draining) takes no new pods while the other can", () => {
    const both = cloud([
      { name: "d0", address: "10.0.1.50", egressIPs: [RESERVED[0]!], health: "Draining" },
      { name: "d1", address: "10.0.1.51", egressIPs: [RESERVED[1]!], health: "Up" },
    ]);
    const planner = new Planner(snap(both, [pay()]), { validator });
    expect(planner.resolution.instances.get("cloud/d0")?.drain).toBe(true);
    expect(planner.resolution.instances.get("cloud/d1")?.drain).toBe(false);
    const plan = planner.planNode("node-a", new Map());
    expect(new Set(plan.entries.map((e) => e.instance))).toEqual(new Set(["cloud/d1"]));
  });

  it("an IP the gateway neither carries nor declares is still refused, naming the field", () => {
    const other = egressPolicy(
      "shop",
      "other",
      { podSelector: { matchLabels: { app: "web" } }, gatewayName: "cloud", egressIPs: ["203.0.113.99"] },
      "2024-01-01T00:00:00Z",
    );
    const verdict = new Planner(snap(cloud([]), [other]), { validator }).resolution.verdicts.find(
      (v) => v.resource === "EgressPolicy/shop/other",
    );
    expect(verdict?.errors).toEqual([
      {
        field: "spec.egressIPs[0]",
        message: "203.0.113.99 is not an egress IP of any instance of EgressGateway cloud",
      },
    ]);
  });
});

describe("node -> gateway tunnels", () => {
  it("a node without an InternalIP has no tunnel end: every instance is planned as a blackhole (fail-closed)", () => {
    const s = snapshot([web]);
    const noAddress = new Planner(
      { ...s, nodes: [{ ...s.nodes[0]!, internalIP: undefined }] as ClusterSnapshot["nodes"] },
      { validator },
    );
    const p = noAddress.planNode("node-a", new Map());
    expect(p.tunnel).toBeUndefined();
    expect(p.instances.map((i) => i.route)).toEqual(["blackhole", "blackhole", "blackhole"]);
    // The gateways admit none of its pods either.
    expect(noAddress.planGateway("shared/a")?.podsByTunnel).toEqual([]);
  });

  it("the gateway admits each pod through its own node's port, and the node uses that port", () => {
    const planner = new Planner(snapshot([web]), { validator });
    const node = planner.planNode("node-a", new Map());
    const gw = planner.planGateway("shared/a")!;
    expect(node.tunnel?.address).toBe("10.0.0.11");
    expect(gw.tunnels).toEqual([{ node: "node-a", address: "10.0.0.11", port: node.tunnel!.port }]);
    expect(gw.vni).toBe(node.instances.find((i) => i.key === "shared/a")!.vni);
    expect(gw.podsByTunnel).toHaveLength(podCount);
    expect(new Set(gw.podsByTunnel.map((e) => e.port))).toEqual(new Set([node.tunnel!.port]));
  });
});

describe("clusters of more than 4,095 nodes", () => {
  /** `count` nodes; node-a (the one with the pods) is the first, the others have addresses in 10.1.0.0/16. */
  const bigCluster = (count: number): ClusterSnapshot => {
    const s = snapshot([web]);
    const others = Array.from({ length: count - 1 }, (_, i) => ({
      name: `pool-x-${i}`,
      labels: {},
      annotations: {},
      internalIP: `10.1.${(i + 1) >> 8}.${(i + 1) & 255}`,
      podCIDRs: [],
    }));
    return { ...s, nodes: [...s.nodes, ...others], network: { ...s.network, nodeCIDRs: ["10.0.0.0/15"] } };
  };

  it("plans a node and a gateway at 5,000 nodes: every node its own port, some from the lower range", () => {
    const planner = new Planner(bigCluster(5000), { validator });
    const node = planner.planNode("node-a", new Map());
    const gw = planner.planGateway("shared/a")!;
    expect(node.instances.map((i) => i.route)).toEqual(["via", "via", "via"]);
    const ports = gw.tunnels.map((t) => t.port);
    expect(gw.tunnels).toHaveLength(5000);
    expect(new Set(ports).size).toBe(5000);
    expect(Math.min(...ports)).toBeGreaterThanOrEqual(15905);
    expect(Math.max(...ports)).toBeLessThanOrEqual(24095);
    expect(ports.filter((p) => p <= 20000).length).toBeGreaterThan(1000);
    // The node and the gateway agree on the node's port, and the pods are admitted through it.
    expect(gw.tunnels.find((t) => t.node === "node-a")?.port).toBe(node.tunnel!.port);
    expect(new Set(gw.podsByTunnel.map((e) => e.port))).toEqual(new Set([node.tunnel!.port]));
    // A node of the lower range plans too.
    const low = gw.tunnels.find((t) => t.port < 20000)!;
    expect(planner.planNode(low.node, new Map()).tunnel).toEqual({ address: low.address, port: low.port });
  });

  it("refuses 8,192 nodes, naming the limit", () => {
    const planner = new Planner(bigCluster(8192), { validator });
    expect(() => planner.planNode("node-a", new Map())).toThrow(
      /8192 nodes in the cluster, more than the limit of 8191/,
    );
    expect(() => planner.planGateway("shared/a")).toThrow(/more than the limit of 8191/);
  });
});
