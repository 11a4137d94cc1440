import { describe, expect, it } from "vitest";
import { resolve } from "../planner/resolve.js";
import type { ClusterSnapshot } from "../planner/model.js";
import type { EgressGateway } from "../api/v1alpha1/egress-gateway.js";
import {
  gatewayStatus,
  policyStatus,
  trafficTotals,
  UNJUDGED,
  withoutInstanceTraffic,
  type NodeReport,
} from "./status.js";

const NOW = "2026-11-22T00:00:00Z";
const gateway = {
  apiVersion: "staticegress.io/v1alpha1",
  kind: "EgressGateway",
  metadata: { name: "shared" },
  spec: {
    static: {
      instances: [
        { name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10"] },
        { name: "gw-b", address: "10.0.0.102", egressIPs: ["192.0.2.20"] },
      ],
    },
  },
} as unknown as EgressGateway;
const snapshot: ClusterSnapshot = {
  policies: [],
  gateways: [gateway],
  pods: [],
  nodes: [],
  namespaces: [],
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
};
const res = resolve(snapshot);
const verdict = res.verdicts.find((v) => v.resource === "EgressGateway/shared");
const report = (node: string, health: NodeReport["health"]): NodeReport => ({
  node,
  programmed: {},
  health,
  unavailable: {},
  at: NOW,
});
const statusWith = (reports: NodeReport[]) => gatewayStatus("shared", 1, verdict, res, reports, undefined, NOW);
const health = (reports: NodeReport[]) => statusWith(reports).instances?.map((i) => `${i.name}:${i.health}`);
const cond = (reports: NodeReport[], type: string) => statusWith(reports).conditions?.find((c) => c.type === type);

describe("gateway status: instance health from node reports", () => {
  it("is Unknown, and the gateway's Ready is Unknown, until some node has judged an instance", () => {
    expect(health([])).toEqual([`gw-a:${UNJUDGED}`, `gw-b:${UNJUDGED}`]);
    // A node that reports but has not judged these instances (e.g. an agent without probes) counts for nothing.
    expect(health([report("node1", {})])).toEqual([`gw-a:${UNJUDGED}`, `gw-b:${UNJUDGED}`]);
    expect(cond([], "Ready")).toMatchObject({ status: "Unknown", reason: "NotYetProbed" });
    expect(cond([], "Degraded")?.status).toBe("False");
    expect(statusWith([]).readyInstances).toBe(0);
  });

  it("counts only the nodes that judged an instance: Up, PartiallyDown, Down", () => {
    expect(health([report("node1", { "shared/gw-a": "up" })])).toEqual(["gw-a:Up", `gw-b:${UNJUDGED}`]);
    expect(cond([report("node1", { "shared/gw-a": "up" })], "Ready")).toMatchObject({
      status: "True",
      reason: "InstancesUp",
    });
    const split = [
      report("node1", { "shared/gw-a": "down", "shared/gw-b": "up" }),
      report("node2", { "shared/gw-a": "down" }),
    ];
    // gw-b: node1 sees it up and node2 has not judged it, so Up; gw-a: every judging node sees it down.
    expect(health(split)).toEqual(["gw-a:Down", "gw-b:Up"]);
    expect(health([report("node1", { "shared/gw-a": "down" }), report("node2", { "shared/gw-a": "up" })])).toEqual([
      "gw-a:PartiallyDown",
      `gw-b:${UNJUDGED}`,
    ]);
    expect(cond(split, "Degraded")).toMatchObject({ status: "True", message: "gw-a: Down" });
  });

  it("is not Ready when every judged instance is down, even if others are unjudged", () => {
    const reports = [report("node1", { "shared/gw-a": "down" })];
    expect(cond(reports, "Ready")).toMatchObject({ status: "False", reason: "NoHealthyInstance" });
  });
});

describe("gateway status of a provisioned gateway: the plugin's list, the nodes' health, one status", () => {
  const EARLIER = "2026-11-21T00:00:00Z";
  const previous = {
    instances: [
      { name: "gw-a", id: "1", address: "10.0.0.101", egressIPs: ["192.0.2.10"], health: "Up", since: EARLIER },
    ],
  };
  const listed = [
    { name: "gw-a", id: "1", address: "10.0.0.101", egressIPs: ["192.0.2.10"], health: "Up", since: EARLIER },
    { name: "gw-b", id: "2", address: "10.0.0.102", egressIPs: ["192.0.2.20"], health: "Provisioning", since: NOW },
  ];
  const provisioned = (reports: NodeReport[], list?: typeof listed) =>
    gatewayStatus("shared", 1, verdict, res, reports, previous, NOW, {
      provisioned: true,
      ...(list ? { listed: list } : {}),
    });

  it("writes the plugin's list with the health the nodes report; Provisioning stays as the plugin says", () => {
    const status = provisioned([report("node1", { "shared/gw-a": "down", "shared/gw-b": "up" })], listed);
    expect(status.instances?.map((i) => [i.name, i.health, i.since])).toEqual([
      ["gw-a", "Down", NOW],
      ["gw-b", "Provisioning", NOW],
    ]);
    expect(status.conditions?.find((c) => c.type === "Degraded")).toMatchObject({ status: "True" });
  });

  it("keeps the status's own list (never an empty one) while the plugin has no news, e.g. after a restart", () => {
    expect(provisioned([report("node1", { "shared/gw-a": "up" })]).instances).toEqual(previous.instances);
  });
});

describe("policy traffic for kubectl get", () => {
  it("sums the instances' fresh entries; an entry older than 6 minutes no longer counts; none reported: no traffic field", () => {
    const now = new Date(NOW);
    const ago = (min: number) => new Date(now.getTime() - min * 60_000).toISOString();
    const status = {
      traffic: {
        bytesPerSecond: 1,
        instances: [
          { instance: "shared/gw-a", bytesPerSecond: 1000, packetsPerSecond: 10, at: ago(1) },
          { instance: "shared/gw-b", bytesPerSecond: 500, packetsPerSecond: 5, at: ago(2) },
          { instance: "shared/gw-c", bytesPerSecond: 9999, packetsPerSecond: 99, at: ago(7) },
        ],
      },
    };
    expect(trafficTotals(status, now)).toEqual({ bytesPerSecond: 1500, packetsPerSecond: 15 });
    expect(trafficTotals({}, now)).toBeUndefined();
    // What the controller compares with what it would write: the agents' entries are not its own.
    expect(withoutInstanceTraffic(status)).toEqual({ traffic: { bytesPerSecond: 1 } });
  });
});

describe("policy status: egressIPsChangedAt (the egress-IP feed's lastChange)", () => {
  const facts = (egressIPs: string[], valid = true) => ({
    resource: "EgressPolicy/payments/checkout",
    generation: 1,
    verdict: {
      resource: "EgressPolicy/payments/checkout",
      valid,
      errors: valid ? [] : [{ field: "spec", message: "x" }],
    },
    egressIPs,
    selectedPods: 0,
    gatewayInstances: [],
    reports: [],
  });
  const LATER = "2026-11-23T00:00:00Z";

  it("is set when the set first appears, kept while it is the same (in any order), moved when it changes", () => {
    const first = policyStatus(facts(["192.0.2.10", "192.0.2.20"]), undefined, NOW);
    expect(first.egressIPsChangedAt).toBe(NOW);
    expect(policyStatus(facts(["192.0.2.20", "192.0.2.10"]), first, LATER).egressIPsChangedAt).toBe(NOW);
    expect(policyStatus(facts(["192.0.2.10"]), first, LATER).egressIPsChangedAt).toBe(LATER);
  });

  it("an Invalid policy carries no egress IPs: that is a change too", () => {
    const first = policyStatus(facts(["192.0.2.10"]), undefined, NOW);
    const invalid = policyStatus(facts([], false), first, LATER);
    expect(invalid.egressIPs).toEqual([]);
    expect(invalid.egressIPsChangedAt).toBe(LATER);
  });

  it("a status written before the field existed gets it now", () => {
    expect(policyStatus(facts(["192.0.2.10"]), { egressIPs: ["192.0.2.10"] }, LATER).egressIPsChangedAt).toBe(LATER);
  });
});
