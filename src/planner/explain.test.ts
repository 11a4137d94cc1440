import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { markFor, NO_INSTANCE_MARK, tableFor } from "./ids.js";
import type { ClusterSnapshot, NodeInfo, PodInfo, PolicyObject } from "./model.js";
import { Planner } from "./plan.js";
import { compareWithKernel, explainPod, ExplainError, precedenceReason, type NodeReportView } from "./explain.js";
import { clusterEgressPolicy, egressGateway, egressPolicy } from "./testing/arbitraries.js";

const validator = new SpecValidator();

const nodes: NodeInfo[] = [
  { name: "node-a", labels: { role: "edge" }, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] },
  { name: "node-b", labels: {}, annotations: {}, internalIP: "10.0.0.12", podCIDRs: ["10.244.2.0/24"] },
];

// `shared` lets every namespace outrank ClusterEgressPolicies by priority; `tenant` grants without it.
const shared = egressGateway("shared", {
  grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
  static: {
    instances: [
      { name: "i1", address: "10.0.1.1", egressIPs: ["203.0.113.10", "203.0.113.11", "203.0.113.12"] },
      { name: "i2", address: "10.0.1.2", egressIPs: ["203.0.113.20", "203.0.113.21", "203.0.113.22"] },
    ],
  },
});
const tenant = egressGateway("tenant", {
  grants: [{ namespaceSelector: {} }],
  static: { instances: [{ name: "t1", address: "10.0.1.3", egressIPs: ["198.51.100.30"] }] },
});

const web: PodInfo = {
  namespace: "shop",
  name: "web-1",
  labels: { app: "web" },
  nodeName: "node-a",
  ips: ["10.244.1.5"],
  phase: "Running",
};
const lonely: PodInfo = { ...web, name: "lonely", labels: { app: "lonely" }, ips: ["10.244.1.6"] };

function snapshot(policies: PolicyObject[], pods: PodInfo[] = [web, lonely]): ClusterSnapshot {
  return {
    policies,
    gateways: [shared, tenant],
    pods,
    namespaces: [{ name: "shop", labels: { team: "shop" } }],
    nodes,
    network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
  };
}

const explain = (policies: PolicyObject[], opts: Parameters<typeof explainPod>[2] = {}, pod = web) =>
  explainPod(new Planner(snapshot(policies), { validator }), pod, opts);

const webSelector = { podSelector: { matchLabels: { app: "web" } } };
const onShared = (extra: Record<string, unknown> = {}) => ({
  ...webSelector,
  gatewayName: "shared",
  egressIPs: ["203.0.113.10", "203.0.113.20"],
  ...extra,
});

const report = (health: Record<string, "up" | "down">, programmed: Record<string, number> = {}): NodeReportView => ({
  at: "2026-01-01T00:00:00Z",
  health,
  programmed,
});

describe("explain: the deciding policy and its path", () => {
  it("a pod no policy selects leaves with the node's IP", () => {
    const e = explain([egressPolicy("shop", "checkout", onShared(), "2024-01-01T00:00:00Z")], {}, lonely);
    expect(e.verdict).toBe("not-selected");
    expect(e.summary).toEqual(["not selected by any policy: leaves with the node's IP"]);
    expect(e.decisions).toEqual([]);
    expect(e.node?.entries).toEqual([]);
  });

  it("names the policy, the instance in use and its health as the node reported it, the egress IP, mark and table", () => {
    const policies = [egressPolicy("shop", "checkout", onShared(), "2024-01-01T00:00:00Z")];
    const planner = new Planner(snapshot(policies), { validator });
    const e = explainPod(planner, web, { report: report({ "shared/i1": "up", "shared/i2": "up" }) });
    expect(e.verdict).toBe("diverted");
    expect(e.decisions).toHaveLength(1);
    const d = e.decisions[0]!;
    expect(d).toMatchObject({ policy: "EgressPolicy/shop/checkout", valid: true, destinations: ["0.0.0.0/0"] });
    // The instance the node plans for this pod, with that instance's egress IP of the policy.
    const entry = planner.planNode("node-a", new Map()).entries.find((x) => x.podIP === "10.244.1.5")!;
    const id = planner.resolution.instances.get(entry.instance)!.id;
    expect(d.path).toEqual({
      kind: "gateway",
      instance: entry.instance,
      address: entry.instance === "shared/i1" ? "10.0.1.1" : "10.0.1.2",
      egressIPs: [entry.instance === "shared/i1" ? "203.0.113.10" : "203.0.113.20"],
      healthOnNode: "up",
      gatewayStatus: null,
      drain: false,
      mark: markFor(id),
      table: tableFor(id),
    });
    expect(e.summary[0]).toMatch(/^to 0\.0\.0\.0\/0: leaves with 203\.0\.113\.[12]0 through shared\/i[12]/);
    expect(e.node?.entries).toEqual([
      {
        podIP: "10.244.1.5",
        dst: "0.0.0.0/0",
        mark: markFor(id),
        policy: "EgressPolicy/shop/checkout",
        instance: entry.instance,
        table: tableFor(id),
        route: "via",
      },
    ]);
  });

  it("without a report the health is unknown (planned as up); the gateway's status health is shown beside it", () => {
    const gw = { ...shared, status: { instances: [{ name: "i1", address: "10.0.1.1", egressIPs: [], health: "Up" }] } };
    const policies = [egressPolicy("shop", "checkout", onShared({ egressIPs: ["203.0.113.10"] }))];
    const e = explainPod(new Planner({ ...snapshot(policies), gateways: [gw, tenant] }, { validator }), web);
    expect(e.decisions[0]!.path).toMatchObject({ kind: "gateway", healthOnNode: "unknown", gatewayStatus: "Up" });
  });

  it("instances down as the node sees them: dropped under Drop, the node's IP under FallbackToNodeIP", () => {
    const down = report({ "shared/i1": "down", "shared/i2": "down" });
    const drop = explain([egressPolicy("shop", "checkout", onShared())], { report: down });
    expect(drop.verdict).toBe("fail-closed");
    expect(drop.decisions[0]!.path).toMatchObject({ kind: "dropped" });
    expect((drop.decisions[0]!.path as { reason: string }).reason).toMatch(/no instance is up as node-a sees it/);
    expect(drop.node?.entries[0]?.route).toBe("blackhole");
    const fallback = explain([egressPolicy("shop", "checkout", onShared({ failurePolicy: "FallbackToNodeIP" }))], {
      report: down,
    });
    expect(fallback.verdict).toBe("fallback-node-ip");
    expect(fallback.decisions[0]!.path).toEqual({
      kind: "node-ip",
      reason: "no instance is up as node-a sees it; failurePolicy FallbackToNodeIP",
    });
  });

  it("a policy for some destinations: the rest leaves with the node's IP; --to narrows to one destination", () => {
    const policies = [egressPolicy("shop", "partner", onShared({ destinationCIDRs: ["192.0.2.0/24"] }))];
    const all = explain(policies);
    expect(all.verdict).toBe("diverted");
    expect(all.summary[1]).toBe("every other destination: leaves with the node's IP");
    const inside = explain(policies, { destination: "192.0.2.7" });
    expect(inside.decisions[0]!.destinations).toEqual(["192.0.2.7/32"]);
    const outside = explain(policies, { destination: "8.8.8.8" });
    expect(outside.verdict).toBe("not-selected");
    expect(outside.decisions).toEqual([]);
    expect(outside.summary).toEqual(["leaves with the node's IP: no policy decides this destination"]);
    expect(outside.policies.map((p) => [p.policy, p.decides])).toEqual([["EgressPolicy/shop/partner", []]]);
  });

  it("the cluster's own ranges are never diverted, whatever a policy says", () => {
    const e = explain([egressPolicy("shop", "checkout", onShared())], { destination: "10.96.0.1" });
    expect(e.verdict).toBe("never-diverted");
    expect(e.decisions).toEqual([]);
  });

  it("a hostNetwork pod's traffic is its node's own: node-selecting policies decide it", () => {
    const host: PodInfo = { ...web, name: "host", ips: ["10.0.0.11"], hostNetwork: true };
    const nodePolicy = clusterEgressPolicy("edge-nodes", {
      nodeSelector: { matchLabels: { role: "edge" } },
      gatewayName: "shared",
      egressIPs: ["203.0.113.11"],
    });
    const e = explainPod(new Planner(snapshot([nodePolicy], [web, host]), { validator }), host);
    expect(e.verdict).toBe("host-network");
    expect(e.decisions).toMatchObject([{ policy: "ClusterEgressPolicy/edge-nodes", path: { kind: "gateway" } }]);
  });

  it("a pod without an address has nothing to divert", () => {
    const pending: PodInfo = { ...web, name: "pending", ips: [], phase: "Pending" };
    const e = explainPod(new Planner(snapshot([], [pending]), { validator }), pending);
    expect(e.verdict).toBe("no-address");
  });

  it("names what it cannot find", () => {
    const planner = new Planner(snapshot([]), { validator });
    expect(() => explainPod(planner, { namespace: "shop", name: "ghost" })).toThrow(
      new ExplainError("pod shop/ghost not found"),
    );
    expect(() => explainPod(planner, web, { destination: "nine" })).toThrow(/destination: not an IPv4 address/);
  });
});

describe("explain: the policies it beat and why (each precedence rule)", () => {
  const lossOf = (policies: PolicyObject[], loser: string) => {
    const e = explain(policies);
    return { e, loser: e.policies.find((p) => p.policy === loser)! };
  };

  it("priority: the lower wins; the loser keeps what the winner does not take", () => {
    const { e, loser } = lossOf(
      [
        egressPolicy("shop", "wide", onShared(), "2024-01-01T00:00:00Z"),
        egressPolicy(
          "shop",
          "narrow",
          onShared({ egressIPs: ["203.0.113.11"], priority: 10, destinationCIDRs: ["192.0.2.0/24"] }),
          "2024-06-01T00:00:00Z",
        ),
      ],
      "EgressPolicy/shop/wide",
    );
    expect(e.decisions.map((d) => d.policy)).toEqual(["EgressPolicy/shop/narrow", "EgressPolicy/shop/wide"]);
    expect(loser.decides).toEqual(["0.0.0.0-192.0.1.255", "192.0.3.0-255.255.255.255"]);
    expect(loser.lost).toEqual([
      {
        to: "EgressPolicy/shop/narrow",
        destinations: ["192.0.2.0/24"],
        rule: "priority",
        message: "priority 10 before 100 (lower wins)",
      },
    ]);
  });

  it("scope: at equal priority a namespaced EgressPolicy comes before a ClusterEgressPolicy, even a newer one", () => {
    const { e, loser } = lossOf(
      [
        clusterEgressPolicy(
          "everyone",
          { ...onShared({ egressIPs: ["203.0.113.11"] }), namespaceSelector: {} },
          "2020-01-01T00:00:00Z",
        ),
        egressPolicy("shop", "checkout", onShared(), "2024-01-01T00:00:00Z"),
      ],
      "ClusterEgressPolicy/everyone",
    );
    expect(e.decisions.map((d) => d.policy)).toEqual(["EgressPolicy/shop/checkout"]);
    expect(loser.decides).toEqual([]);
    expect(loser.lost).toMatchObject([
      { to: "EgressPolicy/shop/checkout", destinations: ["0.0.0.0/0"], rule: "scope" },
    ]);
  });

  it("age: at equal priority and kind the older object wins", () => {
    const { loser } = lossOf(
      [
        egressPolicy("shop", "b-old", onShared(), "2024-01-01T00:00:00Z"),
        egressPolicy("shop", "a-new", onShared({ egressIPs: ["203.0.113.11"] }), "2024-02-01T00:00:00Z"),
      ],
      "EgressPolicy/shop/a-new",
    );
    expect(loser.lost).toEqual([
      {
        to: "EgressPolicy/shop/b-old",
        destinations: ["0.0.0.0/0"],
        rule: "age",
        message:
          "both priority 100 and namespaced: the older wins (created 2024-01-01T00:00:00Z, the other 2024-02-01T00:00:00Z)",
      },
    ]);
  });

  it("name: created in the same second, the resource name decides", () => {
    const at = "2024-01-01T00:00:00Z";
    const { loser } = lossOf(
      [
        egressPolicy("shop", "zeta", onShared(), at),
        egressPolicy("shop", "alpha", onShared({ egressIPs: ["203.0.113.11"] }), at),
      ],
      "EgressPolicy/shop/zeta",
    );
    expect(loser.lost).toMatchObject([{ to: "EgressPolicy/shop/alpha", rule: "name" }]);
  });

  it("tenancy: without outrankClusterPolicies a namespace's policy comes after every cluster policy, whatever its priority", () => {
    const { e, loser } = lossOf(
      [
        egressPolicy(
          "shop",
          "tenant-first",
          { ...webSelector, gatewayName: "tenant", egressIPs: ["198.51.100.30"], priority: 0 },
          "2020-01-01T00:00:00Z",
        ),
        clusterEgressPolicy(
          "admin",
          { ...onShared({ egressIPs: ["203.0.113.11"], priority: 900 }), namespaceSelector: {} },
          "2024-01-01T00:00:00Z",
        ),
      ],
      "EgressPolicy/shop/tenant-first",
    );
    expect(e.decisions.map((d) => d.policy)).toEqual(["ClusterEgressPolicy/admin"]);
    expect(loser.lost).toEqual([
      {
        to: "ClusterEgressPolicy/admin",
        destinations: ["0.0.0.0/0"],
        rule: "tenancy",
        message:
          "EgressPolicy/shop/tenant-first comes after every ClusterEgressPolicy: its namespace's grant on " +
          "EgressGateway tenant does not say outrankClusterPolicies",
      },
    ]);
  });

  it("invalid: an Invalid policy comes after every valid one, with its verdict; alone it drops (fail-closed)", () => {
    const broken = egressPolicy("shop", "broken", onShared({ egressIPs: ["192.0.2.99"], priority: 0 }));
    const { e, loser } = lossOf([broken, egressPolicy("shop", "checkout", onShared())], "EgressPolicy/shop/broken");
    expect(e.decisions.map((d) => d.policy)).toEqual(["EgressPolicy/shop/checkout"]);
    expect(loser).toMatchObject({
      valid: false,
      priority: 0,
      decides: [],
      lost: [{ to: "EgressPolicy/shop/checkout", destinations: ["0.0.0.0/0"], rule: "invalid" }],
    });
    expect(loser.errors).toEqual([
      { field: "spec.egressIPs[0]", message: "192.0.2.99 is not an egress IP of any instance of EgressGateway shared" },
    ]);

    const alone = explain([broken]);
    expect(alone.verdict).toBe("fail-closed");
    expect(alone.decisions).toMatchObject([
      { policy: "EgressPolicy/shop/broken", valid: false, path: { kind: "dropped", mark: NO_INSTANCE_MARK } },
    ]);
    expect(alone.node?.entries).toMatchObject([{ podIP: "10.244.1.5", mark: NO_INSTANCE_MARK, instance: "" }]);
  });

  it("an Invalid policy that asked for FallbackToNodeIP drops nothing, and says so", () => {
    const e = explain([
      egressPolicy("shop", "broken", onShared({ egressIPs: ["192.0.2.99"], failurePolicy: "FallbackToNodeIP" })),
    ]);
    expect(e.verdict).toBe("not-selected");
    expect(e.policies).toMatchObject([{ policy: "EgressPolicy/shop/broken", valid: false, decides: [] }]);
    expect(e.policies[0]!.note).toMatch(/drops nothing/);
    expect(e.summary).toEqual(["leaves with the node's IP: no policy decides its traffic"]);
  });

  it("precedenceReason agrees with the planner's order on every pair it is given", () => {
    const planner = new Planner(
      snapshot([
        egressPolicy("shop", "a", onShared({ priority: 5 }), "2024-01-01T00:00:00Z"),
        egressPolicy("shop", "b", onShared({ egressIPs: ["203.0.113.11"] }), "2024-01-01T00:00:00Z"),
      ]),
      { validator },
    );
    const [first, second] = planner.resolution.policies;
    expect(precedenceReason(first!, second!).rule).toBe("priority");
  });
});

describe("compareWithKernel", () => {
  const planned = [
    {
      podIP: "10.244.1.5",
      dst: "192.0.2.0/24",
      mark: markFor(1),
      policy: "p",
      instance: "gw/a",
      table: tableFor(1),
      route: "via" as const,
    },
  ];
  it("matches by destination range and mark, however the kernel writes the range", () => {
    expect(compareWithKernel(planned, [{ dst: "192.0.2.0-192.0.2.255", mark: markFor(1) }]).matches).toBe(true);
  });
  it("names what is missing and what is there unplanned", () => {
    expect(compareWithKernel(planned, [{ dst: "192.0.2.0/24", mark: markFor(2) }])).toEqual({
      matches: false,
      missing: [{ dst: "192.0.2.0/24", mark: markFor(1) }],
      unexpected: [{ dst: "192.0.2.0/24", mark: markFor(2) }],
    });
  });
});
