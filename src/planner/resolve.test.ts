import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import type { EgressGateway } from "../api/v1alpha1/egress-gateway.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import { parseCidr, parseIPv4, subtract } from "../util/ipv4.js";
import type { ClusterSnapshot, HealthView, NodeInfo, PolicyObject } from "./model.js";
import { Planner } from "./plan.js";
import { NODE_EGRESS_IPS_ANNOTATION, comparePrecedence, resolve } from "./resolve.js";
import {
  clusterArb,
  clusterEgressPolicy,
  egressGateway,
  egressPolicy,
  shuffled,
  type ClusterScenario,
} from "./testing/arbitraries.js";

// One validator for the whole file: compiling the schemas is the slow part.
const validator = new SpecValidator();

const nodes: NodeInfo[] = [
  { name: "node-a", labels: {}, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] },
  { name: "node-b", labels: {}, annotations: {}, internalIP: "10.0.0.12", podCIDRs: ["10.244.2.0/24"] },
];

// Every namespace may use these gateways, with precedence as before tenancy (single-tenant
// fixtures); tenancy itself is tested in resolve.tenancy.test.ts.
const ANY_NAMESPACE = [{ namespaceSelector: {}, outrankClusterPolicies: true }];

const shared = egressGateway("shared", {
  grants: ANY_NAMESPACE,
  static: {
    instances: [
      { name: "i1", address: "10.0.1.1", egressIPs: ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"] },
      { name: "i2", address: "10.0.1.2", egressIPs: ["203.0.113.20", "203.0.113.21", "203.0.113.22", "203.0.113.23"] },
    ],
  },
});
const other = egressGateway("other", {
  grants: ANY_NAMESPACE,
  static: { instances: [{ name: "o1", address: "10.0.1.3", egressIPs: ["198.51.100.10", "198.51.100.11"] }] },
});

const webPolicy = egressPolicy(
  "shop",
  "web",
  { podSelector: { matchLabels: { app: "web" } }, gatewayName: "shared", egressIPs: ["203.0.113.10", "203.0.113.20"] },
  "2024-01-01T00:00:00Z",
);
const payPolicy = egressPolicy(
  "billing",
  "pay",
  {
    podSelector: { matchLabels: { app: "pay" } },
    gatewayName: "shared",
    egressIPs: ["203.0.113.11"],
    destinationCIDRs: ["198.51.100.0/24"],
    failurePolicy: "FallbackToNodeIP",
  },
  "2024-02-01T00:00:00Z",
);
const auditPolicy = clusterEgressPolicy(
  "audit",
  {
    podSelector: {},
    namespaceSelector: { matchLabels: { audited: "yes" } },
    gatewayName: "other",
    egressIPs: ["198.51.100.10"],
    priority: 10,
  },
  "2024-03-01T00:00:00Z",
);

const base: ClusterSnapshot = {
  policies: [webPolicy, payPolicy, auditPolicy],
  gateways: [shared, other],
  pods: [
    {
      namespace: "shop",
      name: "web-1",
      labels: { app: "web" },
      nodeName: "node-a",
      ips: ["10.244.1.10"],
      phase: "Running",
    },
    {
      namespace: "shop",
      name: "web-2",
      labels: { app: "web" },
      nodeName: "node-b",
      ips: ["10.244.2.10"],
      phase: "Running",
    },
    {
      namespace: "billing",
      name: "pay-1",
      labels: { app: "pay" },
      nodeName: "node-a",
      ips: ["10.244.1.20"],
      phase: "Running",
    },
    {
      namespace: "tools",
      name: "cron-1",
      labels: { app: "cron" },
      nodeName: "node-b",
      ips: ["10.244.2.30"],
      phase: "Running",
    },
  ],
  namespaces: [
    { name: "shop", labels: {} },
    { name: "billing", labels: {} },
    { name: "tools", labels: { audited: "yes" } },
  ],
  nodes,
  network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
};

const health: HealthView = new Map([["shared/i2", "down" as const]]);

const with_ = (s: ClusterSnapshot, change: Partial<ClusterSnapshot>): ClusterSnapshot => ({ ...s, ...change });
const addPolicy = (s: ClusterSnapshot, p: unknown) => with_(s, { policies: [...s.policies, p as PolicyObject] });
const addGateway = (s: ClusterSnapshot, g: unknown) => with_(s, { gateways: [...s.gateways, g as EgressGateway] });

/** Everything a node or gateway would be given, for "planned as if X were absent" comparisons. */
function allPlans(s: ClusterSnapshot, views?: ReadonlyMap<string, HealthView>) {
  const planner = new Planner(s, { validator });
  return {
    nodes: s.nodes.map((n) => planner.planNode(n.name, views ? (views.get(n.name) ?? new Map()) : health)),
    gateways: [...planner.resolution.instances.keys()].sort().map((k) => planner.planGateway(k)),
  };
}

/**
 * The plans without an invalid policy's entries, after checking that each of them drops
 * (fail-closed: the mark the node always drops, no instance, nothing on any gateway).
 */
function withoutDrops(plans: ReturnType<typeof allPlans>, resource: string): ReturnType<typeof allPlans> {
  for (const n of plans.nodes)
    for (const e of n.entries.filter((x) => x.policy === resource))
      expect([e.instance, e.mark]).toEqual(["", NO_INSTANCE_MARK]);
  for (const g of plans.gateways) expect(g?.snat.filter((x) => x.policy === resource)).toEqual([]);
  return {
    ...plans,
    nodes: plans.nodes.map((n) => ({ ...n, entries: n.entries.filter((e) => e.policy !== resource) })),
  };
}

function verdictOf(s: ClusterSnapshot, resource: string) {
  const v = resolve(s, validator).verdicts.find((x) => x.resource === resource);
  if (!v) throw new Error(`no verdict for ${resource}`);
  return v;
}

/** Every verdict names its resource; every error names a field under `spec`. */
function expectWellFormedVerdicts(s: ClusterSnapshot) {
  for (const v of resolve(s, validator).verdicts) {
    expect(v.resource).toMatch(/^(EgressPolicy\/[^/]+\/[^/]+|ClusterEgressPolicy\/[^/]+|EgressGateway\/[^/]+)$/);
    expect(v.valid).toBe(v.errors.length === 0);
    for (const e of v.errors) {
      expect(e.field).toMatch(/^spec(\.|\[|$)/);
      expect(e.message.length).toBeGreaterThan(0);
    }
  }
}

describe("resolve: a valid cluster", () => {
  it("accepts every object and normalizes policies for planning", () => {
    const res = resolve(base, validator);
    expect(res.verdicts.every((v) => v.valid)).toBe(true);
    expect(res.verdicts.map((v) => v.resource)).toEqual([
      "ClusterEgressPolicy/audit",
      "EgressGateway/other",
      "EgressGateway/shared",
      "EgressPolicy/billing/pay",
      "EgressPolicy/shop/web",
    ]);
    const web = res.policies.find((p) => p.resource === "EgressPolicy/shop/web");
    expect(web).toMatchObject({
      gateway: "shared",
      failurePolicy: "Drop",
      priority: 100,
      destinations: [parseCidr("0.0.0.0/0")],
    });
    expect([...(web?.egressIPsByInstance ?? [])]).toEqual([
      ["shared/i1", ["203.0.113.10"]],
      ["shared/i2", ["203.0.113.20"]],
    ]);
    const pay = res.policies.find((p) => p.resource === "EgressPolicy/billing/pay");
    expect(pay).toMatchObject({ failurePolicy: "FallbackToNodeIP", destinations: [parseCidr("198.51.100.0/24")] });
    // Precedence order: audit (priority 10) first, then the two at the default 100, older first.
    expect(res.policies.map((p) => p.resource)).toEqual([
      "ClusterEgressPolicy/audit",
      "EgressPolicy/shop/web",
      "EgressPolicy/billing/pay",
    ]);
    expect([...res.gatewayInstances]).toEqual([
      ["other", ["other/o1"]],
      ["shared", ["shared/i1", "shared/i2"]],
    ]);
  });

  it("computes included minus excluded, with host bits masked", () => {
    const p = egressPolicy("shop", "web", {
      ...webPolicy.spec,
      destinationCIDRs: ["198.51.100.77/24", "192.0.2.0/24"],
      excludedCIDRs: ["198.51.100.128/25", "192.0.2.5/32"],
    });
    const res = resolve(with_(base, { policies: [p] }), validator);
    const ip = parseIPv4;
    expect(res.policies[0]?.destinations).toEqual([
      { from: ip("192.0.2.0"), to: ip("192.0.2.4") },
      { from: ip("192.0.2.6"), to: ip("192.0.2.255") },
      { from: ip("198.51.100.0"), to: ip("198.51.100.127") },
    ]);
  });

  it("never diverts the cluster's own ranges nor the gateways' addresses", () => {
    const res = resolve(base, validator);
    const expected = subtract(
      [
        parseCidr("10.244.0.0/16"),
        parseCidr("10.96.0.0/12"),
        parseCidr("10.0.0.0/24"),
        parseCidr("10.0.1.1/32"),
        parseCidr("10.0.1.2/32"),
        parseCidr("10.0.1.3/32"),
      ],
      [],
    );
    expect(res.neverDivert).toEqual(expected);
  });

  it("ignores IPv6 ranges of a dual-stack cluster instead of failing", () => {
    const dual = with_(base, {
      network: {
        podCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"],
        serviceCIDRs: ["10.96.0.0/12", "fd00:10:96::/112"],
        nodeCIDRs: ["10.0.0.0/24"],
      },
    });
    const res = resolve(dual, validator);
    expect(res.neverDivert).toEqual(resolve(base, validator).neverDivert);
    expect(allPlans(dual)).toEqual(allPlans(base));
  });

  it("orders policies by priority, then EgressPolicy before ClusterEgressPolicy, then age, then name", () => {
    const spec = { podSelector: {}, gatewayName: "shared", egressIPs: ["203.0.113.12"] };
    const cspec = { ...spec, namespaceSelector: {} };
    const ordered: PolicyObject[] = [
      clusterEgressPolicy("z-urgent", { ...cspec, priority: 0 }, "2024-09-01T00:00:00Z"),
      egressPolicy("shop", "b-old", { ...spec, priority: 50 }, "2024-01-01T00:00:00Z"),
      egressPolicy("shop", "c-old", { ...spec, priority: 50 }, "2024-01-01T00:00:00Z"),
      egressPolicy("shop", "a-new", { ...spec, priority: 50 }, "2024-05-01T00:00:00Z"),
      clusterEgressPolicy("a-oldest", { ...cspec, priority: 50 }, "2023-01-01T00:00:00Z"),
      egressPolicy("shop", "default-priority", spec, "2023-01-01T00:00:00Z"),
      egressPolicy("shop", "explicit-100", { ...spec, priority: 100 }, "2023-06-01T00:00:00Z"),
      clusterEgressPolicy("late", { ...cspec, priority: 1000 }, "2020-01-01T00:00:00Z"),
    ];
    for (let seed = 0; seed < 20; seed++) {
      const sorted = shuffled(ordered, seed).sort(comparePrecedence);
      expect(sorted.map((p) => p.metadata.name)).toEqual(ordered.map((p) => p.metadata.name));
    }
  });
});

interface BadPolicyCase {
  name: string;
  policy: unknown;
  resource: string;
  field: string;
  message: RegExp;
}

const goodSpec = { podSelector: {}, gatewayName: "shared", egressIPs: ["203.0.113.12", "203.0.113.22"] };
const late = "2025-01-01T00:00:00Z";
const bad = (spec: Record<string, unknown>) => egressPolicy("shop", "bad", { ...goodSpec, ...spec } as never, late);
const badCluster = (spec: Record<string, unknown>) =>
  clusterEgressPolicy("bad", { ...goodSpec, namespaceSelector: {}, ...spec } as never, late);
const withoutField = (field: string) => {
  const spec: Record<string, unknown> = { ...goodSpec };
  delete spec[field];
  return egressPolicy("shop", "bad", spec as never, late);
};

const badPolicies: BadPolicyCase[] = [
  {
    name: "invalid destination CIDR",
    policy: bad({ destinationCIDRs: ["198.51.100.0/24", "198.51.100.0/33"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.destinationCIDRs[1]",
    message: /198\.51\.100\.0\/33/,
  },
  {
    name: "host part with a leading zero",
    policy: bad({ destinationCIDRs: ["198.51.100.010/32"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.destinationCIDRs[0]",
    message: /invalid value/,
  },
  {
    name: "invalid excluded CIDR",
    policy: bad({ excludedCIDRs: ["10.0.0.0"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.excludedCIDRs[0]",
    message: /10\.0\.0\.0/,
  },
  {
    name: "unknown gateway",
    policy: bad({ gatewayName: "nope" }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.gatewayName",
    message: /EgressGateway nope not found/,
  },
  {
    name: "In without values",
    policy: bad({ podSelector: { matchExpressions: [{ key: "app", operator: "In" }] } }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.podSelector.matchExpressions[0].values",
    message: /non-empty/,
  },
  {
    name: "unknown operator",
    policy: bad({ podSelector: { matchExpressions: [{ key: "app", operator: "Equals", values: ["x"] }] } }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.podSelector.matchExpressions[0].operator",
    message: /Equals/,
  },
  {
    name: "invalid label value",
    policy: bad({ podSelector: { matchLabels: { app: "not valid!" } } }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.podSelector.matchLabels.app",
    message: /not valid!/,
  },
  {
    name: "bad namespace selector",
    policy: badCluster({
      namespaceSelector: { matchExpressions: [{ key: "team", operator: "Exists", values: ["x"] }] },
    }),
    resource: "ClusterEgressPolicy/bad",
    field: "spec.namespaceSelector.matchExpressions[0].values",
    message: /empty/,
  },
  {
    name: "egress IP of another gateway",
    policy: bad({ egressIPs: ["203.0.113.12", "198.51.100.11"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.egressIPs[1]",
    message: /198\.51\.100\.11 is not an egress IP of any instance of EgressGateway shared/,
  },
  {
    name: "egress IP on no gateway",
    policy: bad({ egressIPs: ["192.0.2.99"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.egressIPs[0]",
    message: /192\.0\.2\.99 is not an egress IP/,
  },
  {
    name: "egress IP used by an older policy",
    policy: bad({ egressIPs: ["203.0.113.12", "203.0.113.20"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.egressIPs[1]",
    message: /203\.0\.113\.20 is already used by EgressPolicy\/shop\/web/,
  },
  {
    name: "egress IP used by an older cluster policy",
    policy: bad({ gatewayName: "other", egressIPs: ["198.51.100.10"] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.egressIPs[0]",
    message: /already used by ClusterEgressPolicy\/audit/,
  },
  {
    name: "unknown field",
    policy: bad({ egressIP: "203.0.113.12" }),
    resource: "EgressPolicy/shop/bad",
    field: "spec",
    message: /unknown field "egressIP"/,
  },
  {
    name: "namespaceSelector on a namespaced policy",
    policy: bad({ namespaceSelector: {} }),
    resource: "EgressPolicy/shop/bad",
    field: "spec",
    message: /unknown field "namespaceSelector"/,
  },
  {
    name: "missing gatewayName",
    policy: withoutField("gatewayName"),
    resource: "EgressPolicy/shop/bad",
    field: "spec.gatewayName",
    message: /required/,
  },
  {
    name: "missing podSelector",
    policy: withoutField("podSelector"),
    resource: "EgressPolicy/shop/bad",
    field: "spec.podSelector",
    message: /required/,
  },
  {
    name: "missing namespaceSelector",
    policy: clusterEgressPolicy("bad", goodSpec as never, late),
    resource: "ClusterEgressPolicy/bad",
    field: "spec.namespaceSelector",
    message: /required/,
  },
  {
    name: "no egress IPs",
    policy: bad({ egressIPs: [] }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.egressIPs",
    message: /fewer than 1/,
  },
  {
    name: "unknown failure policy",
    policy: bad({ failurePolicy: "Retry" }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.failurePolicy",
    message: /Retry/,
  },
  {
    name: "priority out of range",
    policy: bad({ priority: 1001 }),
    resource: "EgressPolicy/shop/bad",
    field: "spec.priority",
    message: /1000/,
  },
];

describe("resolve: a bad policy is Invalid and disturbs no other object", () => {
  it.each(badPolicies)("$name: $field", ({ policy, resource, field, message }) => {
    const withBad = addPolicy(base, policy);
    const verdict = verdictOf(withBad, resource);
    expect(verdict.valid).toBe(false);
    expect(verdict.errors.map((e) => e.field)).toContain(field);
    expect(verdict.errors.find((e) => e.field === field)?.message).toMatch(message);
    expectWellFormedVerdicts(withBad);
    // Everyone else: still valid, and planned exactly as if the bad policy did not exist.
    const others = resolve(withBad, validator).verdicts.filter((v) => v.resource !== resource);
    expect(others).toEqual(resolve(base, validator).verdicts);
    expect(allPlans(withBad)).toEqual(allPlans(base));
  });

  it("refers to an invalid gateway by saying so", () => {
    const brokenGateway = egressGateway("broken", {
      static: { instances: [{ name: "b1", address: "10.0.1.9", egressIPs: ["192.0.2.1"] }] },
      nodes: { nodeSelector: {} },
    });
    const s = addPolicy(addGateway(base, brokenGateway), bad({ gatewayName: "broken", egressIPs: ["192.0.2.1"] }));
    const verdict = verdictOf(s, "EgressPolicy/shop/bad");
    expect(verdict.errors).toEqual([{ field: "spec.gatewayName", message: "EgressGateway broken is invalid" }]);
  });
});

describe("resolve: several egress IPs on one instance (an SNAT pool)", () => {
  const pooled = egressPolicy(
    "tools",
    "pooled",
    {
      podSelector: { matchLabels: { app: "cron" } },
      gatewayName: "shared",
      egressIPs: ["203.0.113.12", "203.0.113.22", "203.0.113.13"],
      priority: 5,
    },
    "2024-05-01T00:00:00Z",
  );

  it("groups them by instance in spec order; the gateway SNATs the policy's pods over the pool and knows who owns each IP", () => {
    const s = addPolicy(base, pooled);
    const policy = resolve(s, validator).policies.find((p) => p.resource === "EgressPolicy/tools/pooled");
    expect([...(policy?.egressIPsByInstance ?? [])]).toEqual([
      ["shared/i1", ["203.0.113.12", "203.0.113.13"]],
      ["shared/i2", ["203.0.113.22"]],
    ]);
    const planner = new Planner(s, { validator });
    const i1 = planner.planGateway("shared/i1")!;
    expect(
      i1.snat.filter((e) => e.policy === "EgressPolicy/tools/pooled").map((e) => [e.podIP, e.egressIP, e.pool]),
    ).toEqual([["10.244.2.30", "203.0.113.12", ["203.0.113.12", "203.0.113.13"]]]);
    // A single IP on an instance is no pool.
    expect(
      planner.planGateway("shared/i2")!.snat.find((e) => e.policy === "EgressPolicy/tools/pooled"),
    ).not.toHaveProperty("pool");
    expect(i1.egressIPOwners).toEqual([
      { egressIP: "203.0.113.10", policy: "EgressPolicy/shop/web" },
      { egressIP: "203.0.113.11", policy: "EgressPolicy/billing/pay" },
      { egressIP: "203.0.113.12", policy: "EgressPolicy/tools/pooled" },
      { egressIP: "203.0.113.13", policy: "EgressPolicy/tools/pooled" },
    ]);
  });

  it("refuses more than 8 on one instance, naming the field", () => {
    const ips = Array.from({ length: 10 }, (_, i) => `192.0.2.${i + 1}`);
    const big = egressGateway("big", {
      grants: ANY_NAMESPACE,
      static: { instances: [{ name: "b1", address: "10.0.1.9", egressIPs: ips }] },
    });
    const s = addPolicy(
      addGateway(base, big),
      egressPolicy(
        "shop",
        "greedy",
        { podSelector: {}, gatewayName: "big", egressIPs: ips.slice(0, 9) },
        "2024-05-01T00:00:00Z",
      ),
    );
    const verdict = verdictOf(s, "EgressPolicy/shop/greedy");
    expect(verdict.errors).toEqual([
      {
        field: "spec.egressIPs[8]",
        message: "instance big/b1 already carries 8 of this policy's egress IPs (at most 8 per instance)",
      },
    ]);
  });
});

describe("resolve: contested egress IPs", () => {
  const first = egressPolicy(
    "shop",
    "first",
    { podSelector: {}, gatewayName: "shared", egressIPs: ["203.0.113.12"] },
    "2024-01-01T00:00:00Z",
  );
  const second = egressPolicy(
    "billing",
    "second",
    { podSelector: {}, gatewayName: "shared", egressIPs: ["203.0.113.22", "203.0.113.12"] },
    "2024-02-01T00:00:00Z",
  );

  it("the older policy keeps the IP; the newer is Invalid, naming the field and the other policy", () => {
    for (const policies of [
      [first, second],
      [second, first],
    ]) {
      const s = with_(base, { policies });
      expect(verdictOf(s, "EgressPolicy/shop/first").valid).toBe(true);
      expect(verdictOf(s, "EgressPolicy/billing/second")).toEqual({
        resource: "EgressPolicy/billing/second",
        valid: false,
        errors: [{ field: "spec.egressIPs[1]", message: "203.0.113.12 is already used by EgressPolicy/shop/first" }],
      });
      // The loser's pods are dropped where the winner does not decide for them (fail-closed).
      expect(allPlans(s).nodes.some((n) => n.entries.some((e) => e.policy === "EgressPolicy/billing/second"))).toBe(
        true,
      );
      expect(withoutDrops(allPlans(s), "EgressPolicy/billing/second")).toEqual(
        allPlans(with_(base, { policies: [first] })),
      );
    }
  });

  it("with equal ages, the first by name keeps it", () => {
    const a = egressPolicy("shop", "b", first.spec, "2024-01-01T00:00:00Z");
    const b = egressPolicy("shop", "a", first.spec, "2024-01-01T00:00:00Z");
    expect(verdictOf(with_(base, { policies: [a, b] }), "EgressPolicy/shop/a").valid).toBe(true);
    expect(verdictOf(with_(base, { policies: [a, b] }), "EgressPolicy/shop/b").errors[0]?.message).toMatch(
      /already used by EgressPolicy\/shop\/a/,
    );
  });

  it("an Invalid older policy claims nothing", () => {
    const olderButBroken = egressPolicy(
      "shop",
      "broken",
      { ...first.spec, gatewayName: "nope" },
      "2020-01-01T00:00:00Z",
    );
    expect(verdictOf(with_(base, { policies: [olderButBroken, first] }), "EgressPolicy/shop/first").valid).toBe(true);
  });
});

describe("resolve: bad gateways", () => {
  const instance = { name: "x1", address: "10.0.1.9", egressIPs: ["192.0.2.1"] };
  const cases: { name: string; gateway: unknown; field: string; message: RegExp }[] = [
    {
      name: "both static and nodes",
      gateway: egressGateway("x", { static: { instances: [instance] }, nodes: { nodeSelector: {} } }),
      field: "spec",
      message: /exactly one instance source/,
    },
    {
      name: "neither static nor nodes",
      gateway: egressGateway("x", {}),
      field: "spec",
      message: /exactly one instance source/,
    },
    {
      name: "no static instances",
      gateway: egressGateway("x", { static: { instances: [] } }),
      field: "spec.static.instances",
      message: /fewer than 1/,
    },
    {
      name: "bad instance address",
      gateway: egressGateway("x", { static: { instances: [{ ...instance, address: "10.0.1.300" }] } }),
      field: "spec.static.instances[0].address",
      message: /10\.0\.1\.300/,
    },
    {
      name: "bad egress IP",
      gateway: egressGateway("x", { static: { instances: [{ ...instance, egressIPs: ["192.0.2.1", "192.0.2"] }] } }),
      field: "spec.static.instances[0].egressIPs[1]",
      message: /192\.0\.2/,
    },
    {
      name: "instance without egress IPs",
      gateway: egressGateway("x", { static: { instances: [{ ...instance, egressIPs: [] }] } }),
      field: "spec.static.instances[0].egressIPs",
      message: /fewer than 1/,
    },
    {
      name: "duplicate instance name",
      gateway: egressGateway("x", {
        static: { instances: [instance, { ...instance, address: "10.0.1.10", egressIPs: ["192.0.2.2"] }] },
      }),
      field: "spec.static.instances[1]",
      message: /duplicate name "x1"/,
    },
    {
      name: "unknown field",
      gateway: egressGateway("x", { static: { instances: [{ ...instance, zone: "a" }] } } as never),
      field: "spec.static.instances[0]",
      message: /unknown field "zone"/,
    },
    {
      name: "count out of range",
      gateway: egressGateway("x", { nodes: { nodeSelector: {}, count: 0 } }),
      field: "spec.nodes.count",
      message: /1/,
    },
    {
      name: "bad node selector",
      gateway: egressGateway("x", {
        nodes: { nodeSelector: { matchExpressions: [{ key: "role", operator: "NotIn" }] } },
      }),
      field: "spec.nodes.nodeSelector.matchExpressions[0].values",
      message: /non-empty/,
    },
    {
      name: "egress IP of an older gateway",
      gateway: egressGateway(
        "x",
        { static: { instances: [{ ...instance, egressIPs: ["203.0.113.10"] }] } },
        "2025-01-01T00:00:00Z",
      ),
      field: "spec",
      message: /203\.0\.113\.10 .*already owned by instance shared\/i1/,
    },
    {
      name: "one egress IP on two of its instances",
      gateway: egressGateway("x", {
        static: { instances: [instance, { name: "x2", address: "10.0.1.10", egressIPs: ["192.0.2.7", "192.0.2.1"] }] },
      }),
      field: "spec",
      message: /192\.0\.2\.1 is listed on two instances \(x\/x1, x\/x2\)/,
    },
  ];

  it.each(cases)("$name: $field", ({ gateway, field, message }) => {
    const withBad = addGateway(base, gateway);
    const verdict = verdictOf(withBad, "EgressGateway/x");
    expect(verdict.valid).toBe(false);
    expect(verdict.errors.map((e) => e.field)).toContain(field);
    expect(verdict.errors.find((e) => e.field === field)?.message).toMatch(message);
    expectWellFormedVerdicts(withBad);
    expect(resolve(withBad, validator).verdicts.filter((v) => v.resource !== "EgressGateway/x")).toEqual(
      resolve(base, validator).verdicts,
    );
    expect(allPlans(withBad)).toEqual(allPlans(base));
  });

  it("a newer gateway cannot take an egress IP from an older one, whatever their names", () => {
    // "aaa" sorts before "shared": age, not name, must decide who owns 203.0.113.10.
    const newcomer = egressGateway(
      "aaa",
      { static: { instances: [{ name: "n1", address: "10.0.1.9", egressIPs: ["203.0.113.10"] }] } },
      "2025-01-01T00:00:00Z",
    );
    const older = with_(base, { gateways: [egressGateway("shared", shared.spec, "2024-01-01T00:00:00Z"), other] });
    const s = addGateway(older, newcomer);
    expect(verdictOf(s, "EgressGateway/shared").valid).toBe(true);
    expect(verdictOf(s, "EgressGateway/aaa").errors[0]?.message).toMatch(/already owned by instance shared\/i1/);
    expect(allPlans(s)).toEqual(allPlans(older));
  });
});

describe("resolve: gateways made of cluster nodes", () => {
  const gatewayNodes: NodeInfo[] = [
    {
      name: "gw-c",
      labels: { role: "egress" },
      annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.30, 203.0.113.31" },
      internalIP: "10.0.0.23",
      podCIDRs: ["10.244.3.0/24"],
    },
    {
      name: "gw-a",
      labels: { role: "egress" },
      annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.40" },
      internalIP: "10.0.0.21",
      podCIDRs: ["10.244.4.0/24"],
    },
    {
      name: "gw-b",
      labels: { role: "egress" },
      annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.50" },
      podCIDRs: [],
    },
    { name: "gw-d", labels: { role: "egress" }, annotations: {}, internalIP: "10.0.0.24", podCIDRs: ["10.244.5.0/24"] },
    {
      name: "gw-e",
      labels: { role: "other" },
      annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.60" },
      internalIP: "10.0.0.25",
      podCIDRs: ["10.244.6.0/24"],
    },
  ];
  const edge = (nodesSpec: NonNullable<EgressGateway["spec"]["nodes"]>) =>
    egressGateway("edge", { grants: ANY_NAMESPACE, nodes: nodesSpec });
  const cluster = (g: EgressGateway, policies: PolicyObject[] = []) =>
    with_(base, { nodes: [...nodes, ...gatewayNodes], gateways: [g], policies });

  it("picks matching nodes with an address, by name, up to count (default 2), egress IPs from the annotation", () => {
    const res = resolve(cluster(edge({ nodeSelector: { matchLabels: { role: "egress" } } })), validator);
    expect(res.verdicts).toEqual([{ resource: "EgressGateway/edge", valid: true, errors: [] }]);
    expect(
      [...res.instances.values()].map(({ key, gateway, name, address, egressIPs, drain }) => ({
        key,
        gateway,
        name,
        address,
        egressIPs,
        drain,
      })),
    ).toEqual([
      {
        key: "edge/gw-a",
        gateway: "edge",
        name: "gw-a",
        address: "10.0.0.21",
        egressIPs: ["203.0.113.40"],
        drain: false,
      },
      {
        key: "edge/gw-c",
        gateway: "edge",
        name: "gw-c",
        address: "10.0.0.23",
        egressIPs: ["203.0.113.30", "203.0.113.31"],
        drain: false,
      },
    ]);
  });

  it("takes more nodes when count says so, even ones without egress IPs", () => {
    const res = resolve(
      cluster(
        edge({
          nodeSelector: { matchExpressions: [{ key: "role", operator: "In", values: ["egress", "other"] }] },
          count: 4,
        }),
      ),
      validator,
    );
    expect(res.gatewayInstances.get("edge")).toEqual(["edge/gw-a", "edge/gw-c", "edge/gw-d", "edge/gw-e"]);
    expect(res.instances.get("edge/gw-d")?.egressIPs).toEqual([]);
  });

  it("plans a policy on node instances: SNAT on the node that owns the IP", () => {
    const policy = egressPolicy("shop", "web", {
      podSelector: { matchLabels: { app: "web" } },
      gatewayName: "edge",
      egressIPs: ["203.0.113.31", "203.0.113.40"],
    });
    const planner = new Planner(cluster(edge({ nodeSelector: { matchLabels: { role: "egress" } } }), [policy]), {
      validator,
    });
    expect(planner.resolution.verdicts.every((v) => v.valid)).toBe(true);
    const snatC = planner.planGateway("edge/gw-c")?.snat ?? [];
    expect(snatC.map((e) => [e.podIP, e.egressIP])).toEqual([
      ["10.244.1.10", "203.0.113.31"],
      ["10.244.2.10", "203.0.113.31"],
    ]);
    expect(planner.planGateway("edge/gw-a")?.snat.map((e) => e.egressIP)).toEqual(["203.0.113.40", "203.0.113.40"]);
    const nodeA = planner.planNode("node-a", new Map());
    expect(nodeA.entries.map((e) => e.podIP)).toEqual(["10.244.1.10"]);
  });

  it("an egress IP the annotation does not list is not the gateway's", () => {
    const policy = egressPolicy("shop", "web", { podSelector: {}, gatewayName: "edge", egressIPs: ["203.0.113.50"] });
    const s = cluster(edge({ nodeSelector: { matchLabels: { role: "egress" } } }), [policy]);
    expect(verdictOf(s, "EgressPolicy/shop/web").errors).toEqual([
      { field: "spec.egressIPs[0]", message: "203.0.113.50 is not an egress IP of any instance of EgressGateway edge" },
    ]);
  });

  it("an annotation entry that is not an IPv4 address makes the gateway Invalid, naming node and annotation", () => {
    const broken = gatewayNodes.map((n) =>
      n.name === "gw-c" ? { ...n, annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.30,203.0.113.031" } } : n,
    );
    const s = with_(cluster(edge({ nodeSelector: { matchLabels: { role: "egress" } } })), {
      nodes: [...nodes, ...broken],
    });
    const verdict = verdictOf(s, "EgressGateway/edge");
    expect(verdict.valid).toBe(false);
    expect(verdict.errors).toHaveLength(1);
    expect(verdict.errors[0]?.field).toBe("spec.nodes");
    expect(verdict.errors[0]?.message).toMatch(/gw-c/);
    expect(verdict.errors[0]?.message).toMatch(/staticegress\.io\/egress-ips/);
    expect(verdict.errors[0]?.message).toMatch(/203\.0\.113\.031/);
  });

  it("two nodes annotated with the same egress IP make the gateway Invalid", () => {
    const twice = gatewayNodes.map((n) =>
      n.name === "gw-a" ? { ...n, annotations: { [NODE_EGRESS_IPS_ANNOTATION]: "203.0.113.31" } } : n,
    );
    const s = with_(cluster(edge({ nodeSelector: { matchLabels: { role: "egress" } } })), {
      nodes: [...nodes, ...twice],
    });
    expect(verdictOf(s, "EgressGateway/edge").errors[0]?.message).toMatch(/203\.0\.113\.31 is listed on two instances/);
  });
});

/** Corruptions that make a policy Invalid; each is applied to a new policy that would otherwise select every pod. */
const corruptions: {
  name: string;
  apply: (spec: Record<string, unknown>, scenario: ClusterScenario) => Record<string, unknown> | undefined;
}[] = [
  { name: "unknown gateway", apply: (s) => ({ ...s, gatewayName: "missing" }) },
  {
    name: "bad selector",
    apply: (s) => ({ ...s, podSelector: { matchExpressions: [{ key: "app", operator: "In", values: [] }] } }),
  },
  { name: "bad CIDR", apply: (s) => ({ ...s, destinationCIDRs: ["0.0.0.0/0", "198.51.100.0/40"] }) },
  { name: "foreign egress IP", apply: (s) => ({ ...s, egressIPs: ["192.0.2.250"] }) },
  { name: "unknown field", apply: (s) => ({ ...s, egressIP: "192.0.2.250" }) },
  { name: "missing gatewayName", apply: ({ gatewayName: _g, ...s }) => s },
  {
    name: "egress IP of an older policy",
    apply: (s, scenario) => {
      const taken = scenario.snapshot.policies.find((p) => p.spec.gatewayName === "gw-0")?.spec.egressIPs[0];
      return taken ? { ...s, egressIPs: [taken] } : undefined;
    },
  },
];

describe("resolve: a bad policy never disturbs generated clusters", () => {
  it("plans every other object exactly as if the bad policy were absent", () => {
    fc.assert(
      fc.property(clusterArb(), fc.nat(corruptions.length - 1), fc.boolean(), (scenario, which, cluster) => {
        const corruption = corruptions[which] as (typeof corruptions)[number];
        const gw0 = scenario.snapshot.gateways[0]?.spec.static?.instances[0];
        const sound = { podSelector: {}, gatewayName: "gw-0", egressIPs: [gw0?.egressIPs[0] as string] };
        const spec = corruption.apply(cluster ? { ...sound, namespaceSelector: {} } : sound, scenario);
        fc.pre(spec !== undefined);
        const newest = "2030-01-01T00:00:00Z";
        const policy = cluster
          ? clusterEgressPolicy("intruder", spec as never, newest)
          : egressPolicy("shop", "intruder", spec as never, newest);
        const withBad = addPolicy(scenario.snapshot, policy);
        const resource = cluster ? "ClusterEgressPolicy/intruder" : "EgressPolicy/shop/intruder";
        const verdicts = resolve(withBad, validator).verdicts;
        expect(verdicts.find((v) => v.resource === resource)?.valid, corruption.name).toBe(false);
        expect(verdicts.filter((v) => v.resource !== resource)).toEqual(resolve(scenario.snapshot, validator).verdicts);
        // Its own pods are dropped where no valid policy decides for them; everything else is as before.
        expect(withoutDrops(allPlans(withBad, scenario.health), resource)).toEqual(
          allPlans(scenario.snapshot, scenario.health),
        );
      }),
      { numRuns: 60 },
    );
  });
});
