/** Nodes' own traffic through an EgressGateway (ClusterEgressPolicy spec.nodeSelector): worked examples and properties. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import { intersect, parseCidr } from "../util/ipv4.js";
import type { ClusterSnapshot, HealthView, PolicyObject } from "./model.js";
import { Planner } from "./plan.js";
import { clusterEgressPolicy, egressGateway } from "./testing/arbitraries.js";

const validator = new SpecValidator();

const gateway = egressGateway("shared", {
  static: {
    instances: [
      { name: "a", address: "10.0.1.1", egressIPs: ["203.0.113.1", "203.0.113.11"] },
      { name: "b", address: "10.0.1.2", egressIPs: ["203.0.113.2", "203.0.113.12"] },
    ],
  },
});

const nodes: ClusterSnapshot["nodes"] = [
  { name: "node-a", labels: { egress: "yes" }, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] },
  { name: "node-b", labels: {}, annotations: {}, internalIP: "10.0.0.12", podCIDRs: ["10.244.2.0/24"] },
];

const snapshot = (policies: PolicyObject[]): ClusterSnapshot => ({
  policies,
  gateways: [gateway],
  pods: [
    {
      namespace: "shop",
      name: "web",
      labels: { app: "web" },
      nodeName: "node-a",
      ips: ["10.244.1.10"],
      phase: "Running",
    },
  ],
  namespaces: [{ name: "shop", labels: {} }],
  nodes,
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
});

const nodePolicy = (name: string, spec: Partial<PolicyObject["spec"]> & { nodeSelector?: unknown } = {}) =>
  clusterEgressPolicy(name, {
    nodeSelector: { matchLabels: { egress: "yes" } },
    gatewayName: "shared",
    egressIPs: ["203.0.113.1", "203.0.113.2"],
    destinationCIDRs: ["198.51.100.0/24"],
    ...spec,
  } as never);

const down = (...keys: string[]): HealthView => new Map(keys.map((k) => [k, "down" as const]));

describe("a node-selecting ClusterEgressPolicy", () => {
  it("diverts the selected node's own traffic to its destinations, and selects no pod", () => {
    const planner = new Planner(snapshot([nodePolicy("hosts")]), { validator });
    expect(planner.resolution.verdicts.filter((v) => v.resource.startsWith("ClusterEgressPolicy/"))).toEqual([
      { resource: "ClusterEgressPolicy/hosts", valid: true, errors: [] },
    ]);
    const a = planner.planNode("node-a", new Map());
    expect(a.entries).toEqual([]);
    expect(a.nodeEntries?.map((e) => [e.dst, e.policy])).toEqual([
      [parseCidr("198.51.100.0/24"), "ClusterEgressPolicy/hosts"],
    ]);
    expect(planner.planNode("node-b", new Map()).nodeEntries).toBeUndefined();
  });

  it("has the instance SNAT the node's InternalIP, accepted from that node's tunnel only, with replies routed back through it", () => {
    const planner = new Planner(snapshot([nodePolicy("hosts")]), { validator });
    const instance = planner.planNode("node-a", new Map()).nodeEntries![0]!.instance;
    const gp = planner.planGateway(instance)!;
    const port = planner.tunnelEnds().get("node-a")!.port;
    expect(gp.snat.map((s) => [s.podIP, s.dst, s.egressIP])).toEqual([
      ["10.0.0.11", parseCidr("198.51.100.0/24"), instance === "shared/a" ? "203.0.113.1" : "203.0.113.2"],
    ]);
    expect(gp.podsByTunnel).toEqual([{ port, podIP: "10.0.0.11" }]);
    expect(gp.nodeReturns).toEqual([{ address: "10.0.0.11", port }]);
  });

  it("moves to the other instance when one is down, and keeps the mark of a blackholed instance when all are (Drop)", () => {
    const planner = new Planner(snapshot([nodePolicy("hosts")]), { validator });
    const first = planner.planNode("node-a", new Map()).nodeEntries![0]!.instance;
    const other = first === "shared/a" ? "shared/b" : "shared/a";
    expect(planner.planNode("node-a", down(first)).nodeEntries![0]!.instance).toBe(other);
    const none = planner.planNode("node-a", down("shared/a", "shared/b"));
    const marks = new Set(none.instances.filter((i) => i.route === "blackhole").map((i) => i.mark));
    expect(none.nodeEntries!.every((e) => marks.has(e.mark))).toBe(true);
    expect(none.unavailable.map((u) => u.policy)).toEqual(["ClusterEgressPolicy/hosts"]);
  });

  it("leaves the node's traffic alone when all instances are down under FallbackToNodeIP", () => {
    const planner = new Planner(snapshot([nodePolicy("hosts", { failurePolicy: "FallbackToNodeIP" })]), { validator });
    expect(planner.planNode("node-a", down("shared/a", "shared/b")).nodeEntries).toBeUndefined();
  });

  it("never takes the cluster's own ranges, even from 0.0.0.0/0", () => {
    const planner = new Planner(snapshot([nodePolicy("hosts", { destinationCIDRs: undefined })]), { validator });
    const entries = planner.planNode("node-a", new Map()).nodeEntries!;
    const cluster = ["10.244.0.0/16", "10.96.0.0/12", "10.0.0.0/24", "10.0.1.1/32", "10.0.1.2/32"].map(parseCidr);
    expect(
      intersect(
        entries.map((e) => e.dst),
        cluster,
      ),
    ).toEqual([]);
  });

  it("is refused with the field named when it selects both nodes and pods, or neither", () => {
    const both = nodePolicy("both", { podSelector: {} });
    const neither = clusterEgressPolicy("neither", { gatewayName: "shared", egressIPs: ["203.0.113.11"] });
    const planner = new Planner(snapshot([both, neither]), { validator });
    const invalid = planner.resolution.verdicts.filter((v) => !v.valid);
    expect(invalid.map((v) => [v.resource, v.errors.map((e) => e.field)])).toEqual([
      ["ClusterEgressPolicy/both", ["spec.podSelector"]],
      ["ClusterEgressPolicy/neither", ["spec.podSelector", "spec.namespaceSelector"]],
    ]);
    expect(invalid[0]!.errors[0]!.message).toBe(
      "must be absent when nodeSelector is set: a policy selects either pods or nodes",
    );
    expect(invalid[1]!.errors[0]!.message).toMatch(/required field is missing/);
  });

  it("when invalid (bad CIDR), drops its nodes' traffic to what it names instead of letting it out with the node IP", () => {
    const planner = new Planner(
      snapshot([nodePolicy("bad", { destinationCIDRs: ["198.51.100.0/24", "300.0.0.0/8"] })]),
      { validator },
    );
    expect(planner.resolution.verdicts[0]!.valid).toBe(false);
    const entries = planner.planNode("node-a", new Map()).nodeEntries!;
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.every((e) => e.mark === NO_INSTANCE_MARK)).toBe(true);
    // ...but never the cluster's own ranges.
    expect(
      intersect(
        entries.map((e) => e.dst),
        [parseCidr("10.0.0.0/24")],
      ),
    ).toEqual([]);
  });
});

describe("node traffic, on generated clusters", () => {
  const labelArb = fc.constantFrom("red", "blue");
  const destArb = fc.constantFrom("198.51.100.0/24", "198.51.100.0/25", "203.0.113.128/25", "0.0.0.0/0", "10.0.0.0/8");
  const scenarioArb = fc.record({
    nodeLabels: fc.array(labelArb, { minLength: 1, maxLength: 4 }),
    policies: fc.array(
      fc.record({
        label: labelArb,
        dests: fc.array(destArb, { minLength: 1, maxLength: 2 }),
        priority: fc.integer({ min: 0, max: 3 }),
      }),
      { maxLength: 3 },
    ),
    downA: fc.boolean(),
    downB: fc.boolean(),
  });
  const build = (s: {
    nodeLabels: string[];
    policies: { label: string; dests: string[]; priority: number }[];
  }): ClusterSnapshot => ({
    ...snapshot([]),
    nodes: s.nodeLabels.map((l, i) => ({
      name: `n${i}`,
      labels: { team: l },
      annotations: {},
      internalIP: `10.0.0.${20 + i}`,
      podCIDRs: [`10.244.${10 + i}.0/24`],
    })),
    // Egress IPs: one per instance, distinct across policies (the third has one on instance a only).
    policies: s.policies.map((p, i) =>
      clusterEgressPolicy(`p${i}`, {
        nodeSelector: { matchLabels: { team: p.label } },
        gatewayName: "shared",
        egressIPs:
          i === 0 ? ["203.0.113.1", "203.0.113.2"] : i === 1 ? ["203.0.113.11", "203.0.113.12"] : ["203.0.113.1"],
        destinationCIDRs: p.dests,
        priority: p.priority,
      }),
    ),
  });

  it("divert each destination of a node at most once, never the cluster's ranges; each diversion is SNATed for that node only, from its tunnel", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const snap = build(s);
        const planner = new Planner(snap, { validator });
        const health: HealthView = new Map([
          ...(s.downA ? [["shared/a", "down"] as const] : []),
          ...(s.downB ? [["shared/b", "down"] as const] : []),
        ]);
        const ends = planner.tunnelEnds();
        const blackholed = (np: ReturnType<Planner["planNode"]>) =>
          new Set([NO_INSTANCE_MARK, ...np.instances.filter((i) => i.route === "blackhole").map((i) => i.mark)]);
        for (const node of snap.nodes) {
          const np = planner.planNode(node.name, health);
          const entries = np.nodeEntries ?? [];
          const dsts = entries.map((e) => e.dst);
          for (let i = 0; i < dsts.length; i++)
            expect(
              intersect(
                [dsts[i]!],
                dsts.filter((_, j) => j !== i),
              ),
            ).toEqual([]);
          expect(intersect(dsts, np.neverDivert)).toEqual([]);
          for (const e of entries) {
            if (blackholed(np).has(e.mark)) continue;
            const gp = planner.planGateway(e.instance)!;
            const snat = gp.snat.filter(
              (x) => x.podIP === node.internalIP && x.dst.from <= e.dst.from && e.dst.to <= x.dst.to,
            );
            expect(snat.map((x) => x.policy)).toEqual([e.policy]);
            expect(gp.podsByTunnel.filter((b) => b.podIP === node.internalIP)).toEqual([
              { port: ends.get(node.name)!.port, podIP: node.internalIP },
            ]);
          }
        }
        // No gateway ever accepts a node's address from another node's tunnel.
        for (const key of planner.resolution.instances.keys()) {
          for (const b of planner.planGateway(key)!.podsByTunnel) {
            const owner = snap.nodes.find((n) => n.internalIP === b.podIP);
            if (owner) expect(b.port).toBe(ends.get(owner.name)!.port);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});
