import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocuments, type KubeObject } from "../api/objects.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { importObjects } from "./index.js";

const readme = () =>
  parseDocuments(
    readFileSync(join(import.meta.dirname, "testdata", "nirmata-readme.yaml"), "utf8"),
    "nirmata-readme.yaml",
  );
const run = (objects: KubeObject[], gateway?: string) =>
  importObjects(objects, { defaultNamespace: "default", ...(gateway ? { gateway } : {}) });
const service = (name: string, selector: Record<string, string> | undefined, namespace = "default"): KubeObject =>
  ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace },
    spec: { ...(selector ? { selector } : {}) },
  }) as KubeObject;
/** The README's StaticEgressIP with other rules (and namespace), plus Services. */
function withRules(rules: unknown[], extra: KubeObject[] = [], namespace?: string): KubeObject[] {
  const [o, svc] = readme();
  return [
    { ...o!, metadata: { ...o!.metadata, name: "eip", ...(namespace ? { namespace } : {}) }, spec: { rules } },
    svc!,
    ...extra,
  ];
}

describe("StaticEgressIP: the nirmata README's example", () => {
  it("becomes an EgressPolicy in the object's namespace selecting the Service's pods, and a gateway granting it the IP", () => {
    const r = run(readme());
    expect(
      r.made.map((m) => `${m.object.kind}/${m.object.metadata.namespace ?? ""}/${m.object.metadata.name}`),
    ).toEqual(["EgressGateway//nirmata-gateway", "EgressPolicy/default/eip"]);
    const [gw, policy] = r.made.map((m) => m.object);
    expect(policy!.spec).toEqual({
      podSelector: { matchLabels: { app: "guestbook", tier: "frontend" } },
      destinationCIDRs: ["4.2.2.2/32"],
      gatewayName: "nirmata-gateway",
      egressIPs: ["100.137.146.100"],
    });
    expect(gw!.spec).toEqual({
      nodes: { nodeSelector: { matchLabels: { "staticegress.io/gateway": "nirmata-gateway" } }, count: 1 },
      grants: [
        {
          namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "default" } },
          egressIPs: ["100.137.146.100"],
        },
      ],
    });
    expect(policy!.metadata!.annotations).toEqual({
      "staticegress.io/imported-from": "StaticEgressIP/default/eip#rules[0]",
    });
    expect(r.findings.filter((f) => f.verdict !== "todo")).toEqual([]);
    // The gateway node must be labelled and annotated by hand: said, with the commands.
    const todo = r.findings.filter((f) => f.verdict === "todo");
    expect(todo).toHaveLength(1);
    expect(todo[0]!.reason).toContain("kubectl label node <that node> staticegress.io/gateway=nirmata-gateway");
    expect(todo[0]!.reason).toContain("staticegress.io/egress-ips=100.137.146.100");
  });

  it("passes our own validator, every object made", () => {
    const v = new SpecValidator();
    for (const m of run(readme()).made) expect(v.check(m.object.kind!, structuredClone(m.object.spec))).toEqual([]);
  });

  it("with --gateway: the policy names it, no gateway is made, and the grant it needs is a todo", () => {
    const r = run(readme(), "shared");
    expect(r.made.map((m) => m.object.kind)).toEqual(["EgressPolicy"]);
    expect(r.made[0]!.object.spec!.gatewayName).toBe("shared");
    expect(r.findings).toContainEqual(
      expect.objectContaining({ verdict: "todo", reason: expect.stringContaining("grant them to namespace default") }),
    );
  });
});

describe("StaticEgressIP: rules", () => {
  it("rules of one Service and one egress IP are one policy; another IP is another policy; names say which", () => {
    const r = run(
      withRules(
        [
          { egressip: "192.0.2.10", "service-name": "frontend", cidr: "198.51.100.0/24" },
          { egressip: "192.0.2.10", "service-name": "frontend", cidr: "203.0.113.7" },
          { egressip: "192.0.2.11", "service-name": "backend", cidr: "198.51.100.0/24" },
        ],
        [service("backend", { app: "backend" }, "shop")],
        "shop",
      ).map((o) => (o.kind === "Service" ? { ...o, metadata: { ...o.metadata, namespace: "shop" } } : o)),
    );
    const policies = r.made.filter((m) => m.object.kind === "EgressPolicy").map((m) => m.object);
    expect(
      policies.map((p) => [p.metadata!.namespace, p.metadata!.name, p.spec!.egressIPs, p.spec!.destinationCIDRs]),
    ).toEqual([
      ["shop", "eip-backend", ["192.0.2.11"], ["198.51.100.0/24"]],
      // A bare address is a /32, as iptables -d reads it.
      ["shop", "eip-frontend", ["192.0.2.10"], ["198.51.100.0/24", "203.0.113.7/32"]],
    ]);
    expect(r.made[0]!.object.spec!.grants).toEqual([
      {
        namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "shop" } },
        egressIPs: ["192.0.2.10", "192.0.2.11"],
      },
    ]);
  });

  it.each([
    [
      "a Service not in the input",
      { egressip: "192.0.2.10", "service-name": "ghost", cidr: "4.2.2.2/32" },
      "spec.rules[0].service-name",
      /Service default\/ghost is not in the input/,
    ],
    [
      "a Service without selector",
      { egressip: "192.0.2.10", "service-name": "manual", cidr: "4.2.2.2/32" },
      "spec.rules[0].service-name",
      /has no selector/,
    ],
    [
      "an IPv6 egress IP",
      { egressip: "2001:db8::1", "service-name": "frontend", cidr: "4.2.2.2/32" },
      "spec.rules[0].egressip",
      /IPv4 only/,
    ],
    [
      "an IPv6 destination",
      { egressip: "192.0.2.10", "service-name": "frontend", cidr: "2001:db8::/64" },
      "spec.rules[0].cidr",
      /IPv4 only/,
    ],
    ["no destination", { egressip: "192.0.2.10", "service-name": "frontend" }, "spec.rules[0].cidr", /missing/],
    ["no egress IP", { "service-name": "frontend", cidr: "4.2.2.2/32" }, "spec.rules[0].egressip", /missing/],
  ])("%s is refused with the rule's field; the other rules are imported", (_name, bad, field, reason) => {
    const good = { egressip: "192.0.2.20", "service-name": "frontend", cidr: "198.51.100.0/24" };
    const r = run(withRules([bad, good], [service("manual", undefined)]));
    const f = r.findings.find((x) => x.verdict === "refused");
    expect(f).toMatchObject({ source: "StaticEgressIP/default/eip", field });
    expect(f!.reason).toMatch(reason);
    expect(r.made.filter((m) => m.object.kind === "EgressPolicy").map((m) => m.object.spec!.egressIPs)).toEqual([
      ["192.0.2.20"],
    ]);
  });

  it("an egress IP used for two Services is refused for the second: it would belong to two policies", () => {
    const r = run(
      withRules(
        [
          { egressip: "192.0.2.10", "service-name": "frontend", cidr: "4.2.2.2/32" },
          { egressip: "192.0.2.10", "service-name": "backend", cidr: "4.2.2.2/32" },
        ],
        [service("backend", { app: "backend" })],
      ),
    );
    expect(r.made.filter((m) => m.object.kind === "EgressPolicy").map((m) => m.object.metadata.name)).toEqual([
      "eip-backend",
    ]);
    expect(r.findings).toContainEqual(
      expect.objectContaining({
        verdict: "refused",
        field: "egressIPs",
        source: "StaticEgressIP/default/eip#rules[0]",
        reason: expect.stringContaining("192.0.2.10 already belongs to EgressPolicy/default/eip-backend"),
      }),
    );
  });

  it("an unknown rule field is reported, not dropped silently", () => {
    const r = run(withRules([{ egressip: "192.0.2.10", "service-name": "frontend", cidr: "4.2.2.2/32", port: 443 }]));
    expect(r.findings).toContainEqual(expect.objectContaining({ verdict: "ignored", field: "spec.rules[0].port" }));
    expect(r.made).toHaveLength(2);
  });

  it("an object without rules is refused", () => {
    const r = run(withRules([]));
    expect(r.made).toEqual([]);
    expect(r.findings).toEqual([expect.objectContaining({ verdict: "refused", field: "spec.rules" })]);
  });
});
