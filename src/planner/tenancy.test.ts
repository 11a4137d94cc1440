/**
 * Tenancy (issue #9 outcome 5) and fail-closed bad input (outcome 6), at the planner: what a
 * namespace may claim, who may outrank whom, the map cost bound, and what an invalid policy's
 * pods do. The attack tests here failed on the code before grants and fail-closed existed.
 */
import { describe, expect, it } from "vitest";
import type { GatewayGrant } from "../api/v1alpha1/egress-gateway.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { flowsToForget } from "../agents/node/node-agent.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import { formatRange, parseIPv4 } from "../util/ipv4.js";
import type { ClusterSnapshot, HealthView, NodePlan, PolicyObject } from "./model.js";
import { Planner } from "./plan.js";
import { clusterEgressPolicy, egressGateway, egressPolicy } from "./testing/arbitraries.js";

const validator = new SpecValidator();
const health: HealthView = new Map();

const byName = (ns: string) => ({ matchLabels: { "kubernetes.io/metadata.name": ns } });
const A_IPS = ["192.0.2.10", "192.0.2.20"];
const B_IPS = ["192.0.2.11", "192.0.2.21"];
const SPARE = "192.0.2.12"; // on the gateway, granted to nobody

function gateway(grants?: GatewayGrant[]) {
  return egressGateway(
    "shared",
    {
      static: {
        instances: [
          { name: "gw-a", address: "10.0.1.1", egressIPs: ["192.0.2.10", "192.0.2.11", SPARE] },
          { name: "gw-b", address: "10.0.1.2", egressIPs: ["192.0.2.20", "192.0.2.21"] },
        ],
      },
      ...(grants ? { grants } : {}),
    },
    "2023-01-01T00:00:00Z",
  );
}

const GRANTS: GatewayGrant[] = [
  { namespaceSelector: byName("tenant-a"), egressIPs: A_IPS },
  { namespaceSelector: byName("tenant-b"), egressIPs: ["192.0.2.11/32", "192.0.2.21"] },
];

/** `null`: the gateway has no grants field at all. */
function snapshot(policies: PolicyObject[], grants: GatewayGrant[] | null = GRANTS): ClusterSnapshot {
  return {
    policies,
    gateways: [gateway(grants ?? undefined)],
    pods: [
      {
        namespace: "tenant-a",
        name: "app-1",
        labels: { app: "app" },
        nodeName: "node-1",
        ips: ["10.244.1.10"],
        phase: "Running",
      },
      {
        namespace: "tenant-b",
        name: "app-1",
        labels: { app: "app" },
        nodeName: "node-1",
        ips: ["10.244.1.20"],
        phase: "Running",
      },
      {
        namespace: "tenant-b",
        name: "app-2",
        labels: { app: "app" },
        nodeName: "node-1",
        ips: ["10.244.1.21"],
        phase: "Running",
      },
    ],
    namespaces: ["tenant-a", "tenant-b"].map((name) => ({
      name,
      labels: { "kubernetes.io/metadata.name": name, tier: "tenant" },
    })),
    nodes: [{ name: "node-1", labels: {}, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] }],
    network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
  };
}

const policyA = (spec: Partial<PolicyObject["spec"]> = {}, created = "2024-06-01T00:00:00Z") =>
  egressPolicy(
    "tenant-a",
    "app",
    { podSelector: { matchLabels: { app: "app" } }, gatewayName: "shared", egressIPs: A_IPS, ...spec },
    created,
  );
const policyB = (spec: Partial<PolicyObject["spec"]> = {}, created = "2024-06-01T00:00:00Z") =>
  egressPolicy(
    "tenant-b",
    "app",
    { podSelector: { matchLabels: { app: "app" } }, gatewayName: "shared", egressIPs: B_IPS, ...spec },
    created,
  );

function verdict(s: ClusterSnapshot, resource: string) {
  const v = new Planner(s, { validator }).resolution.verdicts.find((x) => x.resource === resource);
  if (!v) throw new Error(`no verdict for ${resource}`);
  return v;
}

/** Which policy decides (pod address, destination) on node-1, and how: `policy@instance` or `policy drop`. */
function route(np: NodePlan, podIP: string, dst: string): string {
  const found = np.entries.filter(
    (e) => e.podIP === podIP && e.dst.from <= parseIPv4(dst) && parseIPv4(dst) <= e.dst.to,
  );
  if (found.length === 0) return "node IP";
  expect(found).toHaveLength(1);
  const e = found[0]!;
  return e.instance === "" ? `${e.policy} drop` : `${e.policy}@${e.instance}`;
}

describe("tenancy: a namespace uses only what it was granted", () => {
  it("attack: a namespace that claims another namespace's egress IP first is Invalid, naming the field; the owner keeps it", () => {
    // tenant-b's policy is older: first-come used to give it tenant-a's IP.
    const thief = policyB({ egressIPs: ["192.0.2.11", "192.0.2.20"] }, "2024-01-01T00:00:00Z");
    const s = snapshot([thief, policyA()]);
    expect(verdict(s, "EgressPolicy/tenant-b/app")).toEqual({
      resource: "EgressPolicy/tenant-b/app",
      valid: false,
      errors: [{ field: "spec.egressIPs[1]", message: '192.0.2.20 is not granted to namespace "tenant-b"' }],
    });
    expect(verdict(s, "EgressPolicy/tenant-a/app").valid).toBe(true);
    const planner = new Planner(s, { validator });
    // Nobody but tenant-a's pods is SNATed to tenant-a's IPs.
    for (const key of ["shared/gw-a", "shared/gw-b"]) {
      for (const e of planner.planGateway(key)!.snat)
        if (A_IPS.includes(e.egressIP)) expect(e.podIP).toBe("10.244.1.10");
    }
    expect(planner.planGateway("shared/gw-b")!.snat.map((e) => `${e.podIP} ${e.egressIP}`)).toEqual([
      "10.244.1.10 192.0.2.20",
    ]);
  });

  it("attack: a free egress IP of the gateway that no grant gives the namespace is refused", () => {
    const s = snapshot([policyB({ egressIPs: ["192.0.2.11", SPARE] })]);
    expect(verdict(s, "EgressPolicy/tenant-b/app").errors).toEqual([
      { field: "spec.egressIPs[1]", message: `${SPARE} is not granted to namespace "tenant-b"` },
    ]);
  });

  it("a namespace no grant matches may not use the gateway at all (absent grants: nobody)", () => {
    for (const grants of [null, [], [{ namespaceSelector: byName("tenant-b") }]]) {
      const errors = verdict(snapshot([policyA()], grants), "EgressPolicy/tenant-a/app").errors;
      expect(errors).toEqual([
        {
          field: "spec.gatewayName",
          message:
            'EgressGateway shared is not granted to namespace "tenant-a" (a cluster admin grants it in the gateway\'s spec.grants)',
        },
      ]);
    }
  });

  it("a grant without egressIPs gives every egress IP of the gateway; grants add up; {} matches every namespace", () => {
    expect(
      verdict(
        snapshot([policyB({ egressIPs: [SPARE] })], [{ namespaceSelector: { matchLabels: { tier: "tenant" } } }]),
        "EgressPolicy/tenant-b/app",
      ).valid,
    ).toBe(true);
    const union: GatewayGrant[] = [
      { namespaceSelector: byName("tenant-b"), egressIPs: ["192.0.2.11"] },
      { namespaceSelector: {}, egressIPs: ["192.0.2.16/29"] },
    ];
    expect(
      verdict(snapshot([policyB({ egressIPs: ["192.0.2.11", "192.0.2.21"] })], union), "EgressPolicy/tenant-b/app")
        .valid,
    ).toBe(true);
  });

  it("ClusterEgressPolicies need no grant", () => {
    const cluster = clusterEgressPolicy("all", {
      podSelector: {},
      namespaceSelector: {},
      gatewayName: "shared",
      egressIPs: [SPARE],
    });
    expect(verdict(snapshot([cluster], null), "ClusterEgressPolicy/all").valid).toBe(true);
  });

  it("a grant whose selector does not parse makes the gateway Invalid, naming the field", () => {
    const bad: GatewayGrant[] = [
      { namespaceSelector: { matchExpressions: [{ key: "team", operator: "In", values: [] }] } },
    ];
    expect(verdict(snapshot([], bad), "EgressGateway/shared").errors).toEqual([
      {
        field: "spec.grants[0].namespaceSelector.matchExpressions[0].values",
        message: "must be non-empty when operator is In",
      },
    ]);
  });
});

describe("tenancy: precedence", () => {
  const admin = clusterEgressPolicy(
    "audit",
    {
      podSelector: {},
      namespaceSelector: { matchLabels: { tier: "tenant" } },
      gatewayName: "shared",
      egressIPs: [SPARE],
      priority: 500,
    },
    "2024-12-01T00:00:00Z",
  );

  it("attack: a namespaced policy with a better priority does not outrank a ClusterEgressPolicy", () => {
    const s = snapshot([policyB({ priority: 0 }), admin]);
    const planner = new Planner(s, { validator });
    const np = planner.planNode("node-1", health);
    expect(route(np, "10.244.1.20", "198.51.100.1")).toBe("ClusterEgressPolicy/audit@shared/gw-a");
    expect(route(np, "10.244.1.21", "198.51.100.1")).toBe("ClusterEgressPolicy/audit@shared/gw-a");
    // The gateway SNATs tenant-b's pods to the admin's IP only.
    expect(planner.planGateway("shared/gw-b")!.snat.filter((e) => e.podIP.startsWith("10.244.1.2"))).toEqual([]);
  });

  it("unless its grant allows it: then priority decides, as between ClusterEgressPolicies", () => {
    const grants = GRANTS.map((g) => ({ ...g, outrankClusterPolicies: true }));
    const np = new Planner(snapshot([policyB({ priority: 0 }), admin], grants), { validator }).planNode(
      "node-1",
      health,
    );
    expect(route(np, "10.244.1.20", "198.51.100.1")).toMatch(/^EgressPolicy\/tenant-b\/app@/);
    // ...and it still comes after a ClusterEgressPolicy with a better priority.
    const strong = { ...admin, spec: { ...admin.spec, priority: 0 } };
    const np2 = new Planner(snapshot([policyB({ priority: 10 }), strong], grants), { validator }).planNode(
      "node-1",
      health,
    );
    expect(route(np2, "10.244.1.20", "198.51.100.1")).toBe("ClusterEgressPolicy/audit@shared/gw-a");
  });

  it("a namespaced policy still decides what the ClusterEgressPolicy does not cover", () => {
    const narrow = { ...admin, spec: { ...admin.spec, destinationCIDRs: ["203.0.113.0/24"] } };
    const np = new Planner(snapshot([policyB({ priority: 0 }), narrow]), { validator }).planNode("node-1", health);
    expect(route(np, "10.244.1.20", "203.0.113.9")).toBe("ClusterEgressPolicy/audit@shared/gw-a");
    expect(route(np, "10.244.1.20", "198.51.100.1")).toMatch(/^EgressPolicy\/tenant-b\/app@/);
  });
});

describe("map cost bound", () => {
  // Two blocks with a hole each: 2 pods × 4 ranges = 8 map elements.
  const wide = {
    destinationCIDRs: ["198.51.100.0/24", "203.0.113.0/24"],
    excludedCIDRs: ["198.51.100.128/30", "203.0.113.64/30"],
    priority: 100,
  };

  it("attack: a policy over the limit is Invalid with its cost and the limit, and every other policy keeps working", () => {
    const planner = new Planner(snapshot([policyA(), policyB(wide)]), { validator, maxMapElementsPerPolicy: 7 });
    expect(planner.resolution.verdicts.find((v) => v.resource === "EgressPolicy/tenant-b/app")?.errors).toEqual([
      {
        field: "spec",
        message:
          "datapath cost 8 map elements (2 pod addresses × 4 destination ranges after exclusions) is over " +
          "the limit of 7 per policy: select fewer pods, or list fewer, wider destinations",
      },
    ]);
    expect(planner.resolution.verdicts.find((v) => v.resource === "EgressPolicy/tenant-a/app")?.valid).toBe(true);
    const np = planner.planNode("node-1", health);
    expect(route(np, "10.244.1.10", "198.51.100.1")).toMatch(/^EgressPolicy\/tenant-a\/app@/);
    // Its own pods are dropped with one element per address (the covering range), not four.
    const mine = np.entries.filter((e) => e.policy === "EgressPolicy/tenant-b/app");
    expect(mine.map((e) => `${e.podIP} ${formatRange(e.dst)} ${e.mark === NO_INSTANCE_MARK}`)).toEqual([
      "10.244.1.20 198.51.100.0-203.0.113.255 true",
      "10.244.1.21 198.51.100.0-203.0.113.255 true",
    ]);
  });

  it("at the limit it is valid", () => {
    expect(
      new Planner(snapshot([policyB(wide)]), { validator, maxMapElementsPerPolicy: 8 }).resolution.verdicts.every(
        (v) => v.valid,
      ),
    ).toBe(true);
  });
});

describe("fail closed: an invalid policy's pods never leave with the node IP", () => {
  const breakages: [string, Partial<PolicyObject["spec"]>, string][] = [
    ["an unknown gateway", { gatewayName: "gone" }, "spec.gatewayName"],
    ["a non-granted egress IP", { egressIPs: ["192.0.2.11", SPARE] }, "spec.egressIPs[1]"],
    ["a bad destination (schema)", { destinationCIDRs: ["198.51.100.0/33"] }, "spec.destinationCIDRs[0]"],
    ["a bad excluded CIDR (schema)", { excludedCIDRs: ["nope"] }, "spec.excludedCIDRs[0]"],
  ];

  it.each(breakages)("attack: a valid policy made invalid by %s drops its pods' traffic", (_why, change, field) => {
    const before = new Planner(snapshot([policyA(), policyB({ destinationCIDRs: ["198.51.100.0/24"] })]), {
      validator,
    }).planNode("node-1", health);
    expect(route(before, "10.244.1.20", "198.51.100.7")).toMatch(/^EgressPolicy\/tenant-b\/app@shared\//);
    const after = new Planner(snapshot([policyA(), policyB({ destinationCIDRs: ["198.51.100.0/24"], ...change })]), {
      validator,
    });
    expect(
      after.resolution.verdicts.find((v) => v.resource === "EgressPolicy/tenant-b/app")?.errors.map((e) => e.field),
    ).toContain(field);
    const np = after.planNode("node-1", health);
    for (const pod of ["10.244.1.20", "10.244.1.21"])
      expect(route(np, pod, "198.51.100.7")).toBe("EgressPolicy/tenant-b/app drop");
    // Nothing of it on a gateway, and tenant-a is untouched.
    for (const key of ["shared/gw-a", "shared/gw-b"])
      expect(after.planGateway(key)!.snat.some((e) => e.policy === "EgressPolicy/tenant-b/app")).toBe(false);
    expect(route(np, "10.244.1.10", "198.51.100.7")).toBe(route(before, "10.244.1.10", "198.51.100.7"));
    // The node agent forgets the pods' open flows, which would otherwise restore their old mark.
    expect(flowsToForget(before, np).podIPs).toEqual(["10.244.1.20", "10.244.1.21"]);
  });

  it("keeps to the destinations the policy named, when they parse (an excluded one stays direct)", () => {
    const np = new Planner(
      snapshot([
        policyB({ gatewayName: "gone", destinationCIDRs: ["198.51.100.0/24"], excludedCIDRs: ["198.51.100.200/32"] }),
      ]),
      { validator },
    ).planNode("node-1", health);
    expect(route(np, "10.244.1.20", "198.51.100.7")).toBe("EgressPolicy/tenant-b/app drop");
    expect(route(np, "10.244.1.20", "198.51.100.200")).toBe("node IP");
    expect(route(np, "10.244.1.20", "203.0.113.1")).toBe("node IP");
  });

  it("drops everything when its destinations do not parse", () => {
    const np = new Planner(snapshot([policyB({ destinationCIDRs: ["198.51.100.0/24", "x"] })]), { validator }).planNode(
      "node-1",
      health,
    );
    expect(route(np, "10.244.1.20", "203.0.113.1")).toBe("EgressPolicy/tenant-b/app drop");
  });

  it("comes last: a valid policy that selects the pods decides first, even with a worse priority", () => {
    const fallback = egressPolicy(
      "tenant-b",
      "other",
      {
        podSelector: {},
        gatewayName: "shared",
        egressIPs: ["192.0.2.21"],
        priority: 1000,
        destinationCIDRs: ["198.51.100.0/25"],
      },
      "2024-01-01T00:00:00Z",
    );
    const np = new Planner(
      snapshot([policyB({ gatewayName: "gone", egressIPs: ["192.0.2.11"], priority: 0 }), fallback]),
      { validator },
    ).planNode("node-1", health);
    expect(route(np, "10.244.1.20", "198.51.100.7")).toBe("EgressPolicy/tenant-b/other@shared/gw-b");
    expect(route(np, "10.244.1.20", "198.51.100.201")).toBe("EgressPolicy/tenant-b/app drop");
  });

  it("with FallbackToNodeIP, the user's choice, its pods leave with the node IP", () => {
    const np = new Planner(snapshot([policyB({ gatewayName: "gone", failurePolicy: "FallbackToNodeIP" })]), {
      validator,
    }).planNode("node-1", health);
    expect(np.entries).toEqual([]);
  });

  it("a selector that does not parse selects nothing (there is nothing to select by)", () => {
    const np = new Planner(
      snapshot([policyB({ podSelector: { matchExpressions: [{ key: "app", operator: "In", values: [] }] } })]),
      { validator },
    ).planNode("node-1", health);
    expect(np.entries).toEqual([]);
  });

  it("an invalid gateway takes its policies' pods off the node IP too", () => {
    const s = snapshot([policyB()]);
    const broken = {
      ...s,
      gateways: [{ ...s.gateways[0]!, spec: { ...s.gateways[0]!.spec, health: { intervalMs: 1 } } }],
    };
    const planner = new Planner(broken, { validator });
    expect(planner.resolution.verdicts.find((v) => v.resource === "EgressGateway/shared")?.valid).toBe(false);
    expect(route(planner.planNode("node-1", health), "10.244.1.20", "198.51.100.7")).toBe(
      "EgressPolicy/tenant-b/app drop",
    );
  });

  it("is not reported as a conflict, nor as selected pods of the policy", () => {
    const planner = new Planner(snapshot([policyB({ gatewayName: "gone" })]), { validator });
    const np = planner.planNode("node-1", health);
    expect(np.podsByPolicy).toEqual({});
    expect(np.unavailable).toEqual([]);
  });
});
