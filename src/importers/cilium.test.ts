import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocuments, type KubeObject } from "../api/objects.js";
import { SpecValidator } from "../api/v1alpha1/validate.js";
import { importObjects } from "./index.js";

const testdata = (f: string) => join(import.meta.dirname, "testdata", f);
const sample = () =>
  parseDocuments(readFileSync(testdata("cilium-egress-sample.yaml"), "utf8"), "cilium-egress-sample.yaml");
const run = (objects: KubeObject[], gateway?: string) =>
  importObjects(objects, { defaultNamespace: "default", ...(gateway ? { gateway } : {}) });
/** The Cilium docs' example with its spec changed by `edit`. */
function edited(edit: (spec: Record<string, unknown>) => void): KubeObject[] {
  const [o] = sample();
  const spec = structuredClone(o!.spec!);
  edit(spec);
  return [{ ...o!, spec }];
}
const kinds = (r: ReturnType<typeof run>) => r.made.map((m) => `${m.object.kind}/${m.object.metadata.name}`);
const refused = (r: ReturnType<typeof run>) => r.findings.filter((f) => f.verdict === "refused").map((f) => f.field);

describe("CiliumEgressGatewayPolicy: the Cilium docs' example", () => {
  it("becomes a ClusterEgressPolicy for the same pods and destinations, and a nodes gateway on the same node selector", () => {
    const r = run(sample());
    expect(kinds(r)).toEqual([
      expect.stringMatching(/^EgressGateway\/cilium-[0-9a-f]{10}$/),
      "ClusterEgressPolicy/egress-sample",
    ]);
    const [gw, policy] = r.made.map((m) => m.object);
    expect(gw!.spec).toEqual({
      nodes: { nodeSelector: { matchLabels: { "node.kubernetes.io/name": "a-specific-node" } }, count: 1 },
    });
    expect(policy!.spec).toEqual({
      // Cilium's pseudo-label io.kubernetes.pod.namespace is the namespace selector here.
      podSelector: { matchLabels: { org: "empire", class: "mediabot" } },
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "default" } },
      destinationCIDRs: ["0.0.0.0/0"],
      gatewayName: gw!.metadata!.name,
      egressIPs: ["10.168.60.100"],
    });
    expect(policy!.metadata).toMatchObject({
      labels: { "staticegress.io/imported-from": "cilium" },
      annotations: { "staticegress.io/imported-from": "CiliumEgressGatewayPolicy/egress-sample" },
    });
    expect(refused(r)).toEqual([]);
    // The egress IP is to be put on the node by hand: said, with the annotation to write.
    const todo = r.findings.filter((f) => f.verdict === "todo");
    expect(todo).toHaveLength(1);
    expect(todo[0]!.reason).toContain("staticegress.io/egress-ips=10.168.60.100");
    expect(todo[0]!.reason).toContain("node.kubernetes.io/name=a-specific-node");
  });

  it("passes our own validator, every object made", () => {
    const v = new SpecValidator();
    for (const m of run(sample()).made) expect(v.check(m.object.kind!, structuredClone(m.object.spec))).toEqual([]);
  });

  it("with --gateway, uses that gateway and makes none; the node selector is reported as not used", () => {
    const r = run(sample(), "shared");
    expect(kinds(r)).toEqual(["ClusterEgressPolicy/egress-sample"]);
    expect(r.made[0]!.object.spec!.gatewayName).toBe("shared");
    expect(r.findings).toContainEqual(
      expect.objectContaining({ verdict: "ignored", field: "spec.egressGateway.nodeSelector" }),
    );
  });

  it("policies on the same gateway node share one gateway; its annotation lists every egress IP", () => {
    const [a] = sample();
    const b = { ...structuredClone(a!), metadata: { name: "second" } };
    (b.spec!.egressGateway as { egressIP: string }).egressIP = "10.168.60.101";
    (
      b.spec!.selectors as { podSelector: { matchLabels: Record<string, string> } }[]
    )[0]!.podSelector.matchLabels.class = "other";
    const r = run([a!, b]);
    expect(kinds(r).filter((k) => k.startsWith("EgressGateway/"))).toHaveLength(1);
    expect(r.findings.find((f) => f.verdict === "todo")!.reason).toContain("=10.168.60.100,10.168.60.101");
  });
});

describe("CiliumEgressGatewayPolicy: what maps with a note", () => {
  it("IPv6 destinations and exclusions are reported as ignored; the IPv4 part is made", () => {
    const r = run(
      edited(
        (s) => ((s.destinationCIDRs = ["0.0.0.0/0", "::/0"]), (s.excludedCIDRs = ["192.168.1.0/24", "fd00::/64"])),
      ),
    );
    expect(r.made.find((m) => m.object.kind === "ClusterEgressPolicy")!.object.spec).toMatchObject({
      destinationCIDRs: ["0.0.0.0/0"],
      excludedCIDRs: ["192.168.1.0/24"],
    });
    expect(r.findings.filter((f) => f.verdict === "ignored").map((f) => f.field)).toEqual([
      "spec.destinationCIDRs[1]",
      "spec.excludedCIDRs[1]",
    ]);
  });

  it("interface next to egressIP is reported as ignored", () => {
    const r = run(edited((s) => ((s.egressGateway as Record<string, unknown>).interface = "eth1")));
    expect(r.made).toHaveLength(2);
    expect(r.findings).toContainEqual(
      expect.objectContaining({ verdict: "ignored", field: "spec.egressGateway.interface" }),
    );
  });

  it("selectors that differ in one label become one selection with In; a namespaceSelector is kept", () => {
    const r = run(
      edited((s) => {
        s.selectors = [
          { podSelector: { matchLabels: { app: "a" } }, namespaceSelector: { matchLabels: { team: "x" } } },
          { podSelector: { matchLabels: { app: "b" } }, namespaceSelector: { matchLabels: { team: "x" } } },
        ];
      }),
    );
    expect(r.made.find((m) => m.object.kind === "ClusterEgressPolicy")!.object.spec).toMatchObject({
      podSelector: { matchExpressions: [{ key: "app", operator: "In", values: ["a", "b"] }] },
      namespaceSelector: { matchLabels: { team: "x" } },
    });
  });

  it("an unknown field is reported, never dropped silently", () => {
    const r = run(edited((s) => (s.bandwidth = "10M")));
    expect(r.findings).toContainEqual(expect.objectContaining({ verdict: "ignored", field: "spec.bandwidth" }));
  });
});

describe("CiliumEgressGatewayPolicy: refusals name the source field", () => {
  it.each([
    [
      "interface without egressIP",
      (s: Record<string, unknown>) => (s.egressGateway = { nodeSelector: {}, interface: "ethX" }),
      "spec.egressGateway.egressIP",
      /interface "ethX"/,
    ],
    [
      "neither interface nor egressIP",
      (s: Record<string, unknown>) => (s.egressGateway = { nodeSelector: {} }),
      "spec.egressGateway.egressIP",
      /default-route/,
    ],
    [
      "IPv6 destinations only",
      (s: Record<string, unknown>) => (s.destinationCIDRs = ["::/0"]),
      "spec.destinationCIDRs",
      /IPv4 traffic only/,
    ],
    [
      "pods selected by their node",
      (s: Record<string, unknown>) =>
        ((s.selectors as Record<string, unknown>[])[0]!.nodeSelector = { matchLabels: { zone: "a" } }),
      "spec.selectors[0].nodeSelector",
      /not by the node/,
    ],
    [
      "selectors that are not one selection",
      (s: Record<string, unknown>) =>
        (s.selectors = [
          { podSelector: { matchLabels: { app: "a", tier: "x" } } },
          { podSelector: { matchLabels: { app: "b", tier: "y" } } },
        ]),
      "spec.selectors",
      /split the Cilium policy/,
    ],
    [
      "several gateway nodes without --gateway",
      (s: Record<string, unknown>) =>
        (s.egressGateways = [
          { nodeSelector: { matchLabels: { n: "1" } }, egressIP: "10.0.0.1" },
          { nodeSelector: { matchLabels: { n: "2" } }, egressIP: "10.0.0.2" },
        ]),
      "spec.egressGateways",
      /--gateway/,
    ],
    [
      "a label Cilium derives",
      (s: Record<string, unknown>) =>
        (s.selectors = [{ podSelector: { matchLabels: { "io.cilium.k8s.policy.serviceaccount": "x" } } }]),
      "spec.selectors[0].podSelector",
      /derived by Cilium/,
    ],
    [
      "a bad CIDR",
      (s: Record<string, unknown>) => (s.destinationCIDRs = ["10.0.0.0/33"]),
      "spec.destinationCIDRs[0]",
      /must be a CIDR/,
    ],
  ])("%s", (_name, edit, field, reason) => {
    const r = run(edited(edit));
    // Refused as a whole: no policy, and no gateway made for it.
    expect(r.made).toEqual([]);
    const f = r.findings.find((x) => x.verdict === "refused" && x.field === field);
    expect(f, JSON.stringify(r.findings)).toBeDefined();
    expect(f!.source).toBe("CiliumEgressGatewayPolicy/egress-sample");
    expect(f!.reason).toMatch(reason);
  });

  it("several gateway nodes with --gateway: one policy with every egress IP (one per instance)", () => {
    const r = run(
      edited(
        (s) =>
          (s.egressGateways = [
            { nodeSelector: { matchLabels: { n: "1" } }, egressIP: "10.0.0.1" },
            { nodeSelector: { matchLabels: { n: "2" } }, egressIP: "10.0.0.2" },
          ]),
      ),
      "shared",
    );
    expect(r.made.map((m) => m.object.spec!.egressIPs)).toEqual([["10.0.0.1", "10.0.0.2"]]);
    expect(r.findings).toContainEqual(expect.objectContaining({ verdict: "ignored", field: "spec.egressGateway" }));
  });

  it("a label value our schema refuses is refused with our field, from our own validator", () => {
    const r = run(edited((s) => (s.selectors = [{ podSelector: { matchLabels: { app: "-bad-" } } }])));
    expect(r.made).toEqual([]);
    expect(r.findings).toContainEqual(
      expect.objectContaining({
        verdict: "refused",
        field: "spec.podSelector.matchLabels.app",
        source: "CiliumEgressGatewayPolicy/egress-sample",
      }),
    );
    // Its gateway is not made, and nothing is left to do for it.
    expect(r.findings.filter((f) => f.verdict === "todo")).toEqual([]);
  });
});

describe("CiliumEgressGatewayPolicy: as `kubectl get -o yaml` prints it", () => {
  it("a List with server fields (defaults, managedFields, last-applied) converts without noise", () => {
    const [o] = sample();
    const fromServer = {
      apiVersion: "v1",
      kind: "List",
      items: [
        {
          ...o,
          metadata: {
            name: "egress-sample",
            uid: "0b0c",
            resourceVersion: "42",
            generation: 1,
            creationTimestamp: "2026-12-01T00:00:00Z",
            annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            managedFields: [{ manager: "kubectl-client-side-apply", operation: "Update" }],
          },
          spec: { ...o!.spec, egressGateways: [] }, // the CRD's default
        },
      ],
    };
    const r = run(parseDocuments(JSON.stringify(fromServer), "list.json"));
    expect(r.made.map((m) => m.object.kind)).toEqual(["EgressGateway", "ClusterEgressPolicy"]);
    expect(r.findings.filter((f) => f.verdict !== "todo")).toEqual([]);
  });
});
