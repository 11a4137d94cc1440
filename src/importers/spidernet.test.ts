import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocuments, type KubeObject } from "../api/objects.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { importObjects } from "./index.js";

const reference = () =>
  parseDocuments(
    readFileSync(join(import.meta.dirname, "testdata", "spidernet-reference.yaml"), "utf8"),
    "spidernet-reference.yaml",
  );
const run = (objects: KubeObject[], gateway?: string) =>
  importObjects(objects, { defaultNamespace: "default", ...(gateway ? { gateway } : {}) });
const POLICY = "EgressPolicy.egressgateway.spidernet.io/default/policy-test";
/** The reference docs' objects with the policy's spec (or status) changed by `edit`. */
function edited(edit: (policy: KubeObject) => void): KubeObject[] {
  const [gw, policy] = reference().map((o) => structuredClone(o));
  edit(policy!);
  return [gw!, policy!];
}
const egressIP = (p: KubeObject) => p.spec!.egressIP as Record<string, unknown>;

describe("spidernet egressgateway: the reference docs' objects", () => {
  it("become an EgressPolicy in the same namespace and a nodes gateway granting it the IP", () => {
    const r = run(reference());
    expect(r.made.map((m) => m.object.kind)).toEqual(["EgressGateway", "EgressPolicy"]);
    const [gw, policy] = r.made.map((m) => m.object);
    expect(gw!.metadata!.name).toBe("spidernet-eg1");
    expect(gw!.spec).toEqual({
      nodes: { nodeSelector: { matchLabels: { egress: "true" } } },
      grants: [
        { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "default" } }, egressIPs: ["10.6.1.55"] },
      ],
    });
    expect(policy!.metadata).toMatchObject({ name: "policy-test", namespace: "default" });
    expect(policy!.spec).toEqual({
      podSelector: { matchLabels: { app: "shopping" } },
      destinationCIDRs: ["10.6.1.92/32"],
      gatewayName: "spidernet-eg1",
      egressIPs: ["10.6.1.55"],
    });
    expect(r.findings.filter((f) => f.verdict === "refused")).toEqual([]);
    expect(r.findings.filter((f) => f.verdict === "ignored").map((f) => f.field)).toEqual([
      "spec.destSubnet[1]",
      "spec.priority",
      "spec.nodeSelector.policy",
    ]);
    expect(r.findings.find((f) => f.verdict === "todo")!.reason).toContain("staticegress.io/egress-ips=");
    const v = new SpecValidator();
    for (const m of r.made) expect(v.check(m.object.kind!, structuredClone(m.object.spec))).toEqual([]);
  });

  it("an address spidernet allocated (status.eip.ipv4) is kept, and said so", () => {
    const r = run(edited((p) => ((egressIP(p).ipv4 = ""), (p.status = { eip: { ipv4: "10.6.1.61" } }))));
    expect(r.made.find((m) => m.object.kind === "EgressPolicy")!.object.spec!.egressIPs).toEqual(["10.6.1.61"]);
    expect(r.findings).toContainEqual(
      expect.objectContaining({
        verdict: "ignored",
        field: "spec.egressIP.allocatorPolicy",
        reason: expect.stringContaining("status.eip.ipv4 10.6.1.61"),
      }),
    );
  });

  it("with --gateway: the policy names it; the spidernet gateway is reported as not used", () => {
    const r = run(reference(), "shared");
    expect(r.made.map((m) => [m.object.kind, m.object.spec!.gatewayName])).toEqual([["EgressPolicy", "shared"]]);
    expect(r.findings).toContainEqual(
      expect.objectContaining({
        verdict: "ignored",
        source: "EgressGateway.egressgateway.spidernet.io/eg1",
        field: "spec",
      }),
    );
  });
});

describe("spidernet egressgateway: refusals name the source field", () => {
  it.each([
    [
      "useNodeIP",
      (p: KubeObject) => ((egressIP(p).ipv4 = ""), (egressIP(p).useNodeIP = true)),
      "spec.egressIP.useNodeIP",
      /gateway node's own IP/,
    ],
    [
      "an IP still to be allocated",
      (p: KubeObject) => ((egressIP(p).ipv4 = ""), (egressIP(p).allocatorPolicy = "rr")),
      "spec.egressIP.ipv4",
      /allocatorPolicy rr/,
    ],
    [
      "pods by subnet",
      (p: KubeObject) => ((p.spec!.appliedTo as Record<string, unknown>).podSubnet = ["172.29.16.0/24"]),
      "spec.appliedTo.podSubnet",
      /by labels/,
    ],
    [
      "a gateway not in the input",
      (p: KubeObject) => (p.spec!.egressGatewayName = "eg2"),
      "spec.egressGatewayName",
      /EgressGateway eg2 .* is not in the input/,
    ],
    [
      "IPv6 destinations only",
      (p: KubeObject) => (p.spec!.destSubnet = ["fd00::92/128"]),
      "spec.destSubnet",
      /IPv4 traffic only/,
    ],
  ])("%s", (_name, edit, field, reason) => {
    const r = run(edited(edit));
    expect(r.made.filter((m) => m.object.kind === "EgressPolicy")).toEqual([]);
    // A gateway no imported policy uses is not made.
    expect(r.made).toEqual([]);
    const f = r.findings.find((x) => x.verdict === "refused" && x.field === field);
    expect(f, JSON.stringify(r.findings)).toMatchObject({ source: POLICY });
    expect(f!.reason).toMatch(reason);
  });
});
