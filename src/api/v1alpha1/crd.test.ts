import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { REFUSALS } from "../../../test/support/crd-refusals.js";
import { packageRoot } from "../../lab/paths.js";
import { ALL_KINDS, crdFor, toStructuralSchema } from "./crd.js";
import { addKubernetesKeywords, SpecValidator } from "./validate.js";

const root = packageRoot();
type Crd = {
  spec: {
    names: { kind: string };
    versions: { schema: { openAPIV3Schema: object }; additionalPrinterColumns: unknown[] }[];
  };
};

function committedCrd(plural: string): Crd {
  const text = readFileSync(join(root, "deploy", "crds", `${plural}.yaml`), "utf8");
  return parse(text) as Crd;
}

/**
 * Validates a whole object against a committed CRD's schema, as the API server does (its list
 * types and CEL rules too; test/integration/crds-real-server.test.ts asks the real one).
 */
function serverValidator(plural: string) {
  const schema = committedCrd(plural).spec.versions[0]!.schema.openAPIV3Schema;
  return addKubernetesKeywords(new Ajv({ allErrors: true, strict: false })).compile(schema);
}

const examples = parseAllDocuments(readFileSync(join(root, "examples", "policies.yaml"), "utf8")).map(
  (d) => d.toJS() as { kind: string; spec: Record<string, unknown> },
);
const labPolicies = (
  parse(readFileSync(join(root, "examples", "lab.yaml"), "utf8")) as { policies: { kind: string; spec: object }[] }
).policies;
const plural = (kind: string) => ALL_KINDS.find((k) => k.kind === kind)!.plural;

describe("generated CRDs", () => {
  it("are committed under deploy/crds exactly as the generator makes them", () => {
    for (const k of ALL_KINDS) {
      const text = readFileSync(join(root, "deploy", "crds", `${k.plural}.yaml`), "utf8");
      expect(text.replace(/^#.*\n/, "")).toBe(stringify(crdFor(k)));
    }
  });

  it("are structural: no additionalProperties:false, no const, every property typed", () => {
    const walk = (node: unknown, path: string): string[] => {
      if (typeof node !== "object" || node === null) return [];
      const n = node as Record<string, unknown>;
      const problems: string[] = [];
      if (n.additionalProperties === false) problems.push(`${path}: additionalProperties false`);
      if ("const" in n) problems.push(`${path}: const`);
      if ("patternProperties" in n) problems.push(`${path}: patternProperties`);
      for (const [key, child] of Object.entries((n.properties as Record<string, unknown>) ?? {})) {
        if (typeof child === "object" && child && !("type" in child)) problems.push(`${path}.${key}: no type`);
        problems.push(...walk(child, `${path}.${key}`));
      }
      if (n.items) problems.push(...walk(n.items, `${path}[]`));
      if (typeof n.additionalProperties === "object") problems.push(...walk(n.additionalProperties, `${path}{}`));
      return problems;
    };
    for (const k of ALL_KINDS)
      expect(walk(committedCrd(k.plural).spec.versions[0]!.schema.openAPIV3Schema, k.kind)).toEqual([]);
  });

  it("have printer columns for egress IPs, gateway, readiness and age", () => {
    const cols = (committedCrd("egresspolicies").spec.versions[0]!.additionalPrinterColumns as { name: string }[]).map(
      (c) => c.name,
    );
    expect(cols).toEqual(expect.arrayContaining(["Gateway", "Egress-IPs", "Ready", "Age"]));
  });

  it("accept every example", () => {
    for (const doc of [...examples, ...labPolicies]) {
      const validate = serverValidator(plural(doc.kind));
      expect(
        validate({ apiVersion: "staticegress.io/v1alpha1", metadata: {}, ...doc }),
        JSON.stringify(validate.errors),
      ).toBe(true);
    }
  });

  const policy = examples.find((d) => d.kind === "EgressPolicy")!;
  const gateway = examples.find((d) => d.kind === "EgressGateway")!;
  const bad: [string, string, Record<string, unknown>][] = [
    ["EgressPolicy", "CIDR with a /33 prefix", { ...policy.spec, destinationCIDRs: ["198.51.100.0/33"] }],
    ["EgressPolicy", "CIDR that is not an address", { ...policy.spec, excludedCIDRs: ["example.com/24"] }],
    ["EgressPolicy", "egress IP out of range", { ...policy.spec, egressIPs: ["192.0.2.300"] }],
    ["EgressPolicy", "no egress IPs", { ...policy.spec, egressIPs: [] }],
    ["EgressPolicy", "missing gatewayName", { podSelector: {}, egressIPs: ["192.0.2.10"] }],
    ["EgressPolicy", "unknown failure policy", { ...policy.spec, failurePolicy: "Leak" }],
    [
      "EgressPolicy",
      "unknown selector operator",
      { ...policy.spec, podSelector: { matchExpressions: [{ key: "a", operator: "Near" }] } },
    ],
    ["EgressPolicy", "priority out of range", { ...policy.spec, priority: 5000 }],
    ["EgressGateway", "both instance sources", { ...gateway.spec, nodes: { nodeSelector: {} } }],
    ["EgressGateway", "no instance source", { health: { intervalMs: 100 } }],
    [
      "EgressGateway",
      "instance without egress IPs",
      { static: { instances: [{ name: "a", address: "10.0.0.1", egressIPs: [] }] } },
    ],
    ["EgressGateway", "probe interval too small", { ...gateway.spec, health: { intervalMs: 1 } }],
  ];

  it.each(bad)("reject a %s with %s (CRD schema and our validator agree)", (kind, _why, spec) => {
    const validate = serverValidator(plural(kind));
    expect(validate({ apiVersion: "staticegress.io/v1alpha1", kind, metadata: {}, spec })).toBe(false);
    expect(new SpecValidator().check(kind, structuredClone(spec)).length).toBeGreaterThan(0);
  });
});

describe("refusals (test/support/crd-refusals.ts)", () => {
  it.each(REFUSALS.map((r) => [r.kind, r.name, r] as const))(
    "%s with %s: the committed CRD refuses it, and our validator names exactly its fields",
    (kind, _name, r) => {
      const validate = serverValidator(plural(kind));
      expect(
        validate({
          apiVersion: "staticegress.io/v1alpha1",
          kind,
          metadata: { name: "x" },
          spec: structuredClone(r.spec),
        }),
      ).toBe(false);
      expect([...new Set(new SpecValidator().check(kind, structuredClone(r.spec)).map((e) => e.field))].sort()).toEqual(
        [...r.fields].sort(),
      );
    },
  );

  it("CEL rules give their own messages, list types say which item repeats", () => {
    const v = new SpecValidator();
    const [dup, inWithout, existsWith, noSource, dupName] = [
      REFUSALS[0]!,
      REFUSALS[13]!,
      REFUSALS[14]!,
      REFUSALS[19]!,
      REFUSALS[21]!,
    ];
    expect(v.check(dup.kind, structuredClone(dup.spec))).toEqual([
      { field: "spec.egressIPs[2]", message: 'duplicate value "192.0.2.10"' },
    ]);
    expect(v.check(inWithout.kind, structuredClone(inWithout.spec))).toEqual([
      { field: "spec.podSelector.matchExpressions[1].values", message: "must be non-empty when operator is In" },
    ]);
    expect(v.check(existsWith.kind, structuredClone(existsWith.spec))).toEqual([
      { field: "spec.podSelector.matchExpressions[0].values", message: "must be empty when operator is Exists" },
    ]);
    expect(v.check(noSource.kind, structuredClone(noSource.spec))).toEqual([
      { field: "spec", message: "exactly one instance source must be set (static, nodes or digitalocean)" },
    ]);
    expect(v.check(dupName.kind, structuredClone(dupName.spec))).toEqual([
      { field: "spec.static.instances[1]", message: 'duplicate name "gw-a"' },
    ]);
  });

  it("every CEL rule of the CRDs is one our validator evaluates (same text, from the same schema)", () => {
    const rulesIn = (node: unknown): string[] => {
      if (typeof node !== "object" || node === null) return [];
      const own =
        ((node as Record<string, unknown>)["x-kubernetes-validations"] as { rule: string }[] | undefined)?.map(
          (r) => r.rule,
        ) ?? [];
      return [...own, ...Object.values(node).flatMap(rulesIn)];
    };
    for (const k of ALL_KINDS) {
      // Rules on the whole object (App: metadata.name == spec.name) are checked by validateApp.
      const fromSchema = [
        ...rulesIn(JSON.parse(JSON.stringify(k.spec))),
        ...(k.rootValidations ?? []).map((r) => r.rule),
      ];
      expect(fromSchema.length).toBeGreaterThan(0);
      expect(rulesIn(committedCrd(k.plural).spec.versions[0]!.schema.openAPIV3Schema).sort()).toEqual(
        fromSchema.sort(),
      );
    }
  });
});

describe("SpecValidator", () => {
  const v = new SpecValidator();

  it("names the field and says what is wrong", () => {
    expect(
      v.check("EgressPolicy", {
        podSelector: {},
        gatewayName: "gw",
        egressIPs: ["192.0.2.1"],
        destinationCIDRs: ["10.0.0.0/8", "nope"],
      }),
    ).toEqual([
      {
        field: "spec.destinationCIDRs[1]",
        message: 'invalid value "nope": must be an IPv4 CIDR, e.g. 198.51.100.0/24',
      },
    ]);
    expect(
      v.check("EgressPolicy", { podSelector: {}, gatewayName: "gw", egressIPs: ["192.0.2.1"], destinationCIDR: [] }),
    ).toEqual([{ field: "spec", message: 'unknown field "destinationCIDR"' }]);
    expect(v.check("EgressPolicy", { podSelector: {}, egressIPs: ["192.0.2.1"] })).toEqual([
      { field: "spec.gatewayName", message: "required field is missing" },
    ]);
    expect(v.check("EgressGateway", {})).toEqual([
      { field: "spec", message: "exactly one instance source must be set (static, nodes or digitalocean)" },
    ]);
  });

  it("fills defaults", () => {
    const spec: Record<string, unknown> = { podSelector: {}, gatewayName: "gw", egressIPs: ["192.0.2.1"] };
    expect(v.check("EgressPolicy", spec)).toEqual([]);
    expect(spec).toMatchObject({ failurePolicy: "Drop", priority: 100 });
  });
});

describe("CRD bounds", () => {
  const policy = { podSelector: {}, gatewayName: "gw", egressIPs: ["192.0.2.1"] };
  const many = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
  const cidr = (i: number) => `198.51.${Math.floor(i / 256) % 256}.${i % 256}/32`;
  const over: [string, string, string, Record<string, unknown>][] = [
    ["EgressPolicy", "65 destinationCIDRs", "spec.destinationCIDRs", { ...policy, destinationCIDRs: many(65, cidr) }],
    ["EgressPolicy", "65 excludedCIDRs", "spec.excludedCIDRs", { ...policy, excludedCIDRs: many(65, cidr) }],
    ["EgressPolicy", "33 egressIPs", "spec.egressIPs", { ...policy, egressIPs: many(33, (i) => `192.0.2.${i + 1}`) }],
    [
      "EgressPolicy",
      "33 matchExpressions",
      "spec.podSelector.matchExpressions",
      {
        ...policy,
        podSelector: { matchExpressions: many(33, (i) => `k${i}`).map((key) => ({ key, operator: "Exists" })) },
      },
    ],
    [
      "EgressPolicy",
      "65 selector values",
      "spec.podSelector.matchExpressions[0].values",
      {
        ...policy,
        podSelector: { matchExpressions: [{ key: "app", operator: "In", values: many(65, (i) => `v${i}`) }] },
      },
    ],
    [
      "EgressPolicy",
      "a 64-character label value",
      "spec.podSelector.matchLabels.app",
      { ...policy, podSelector: { matchLabels: { app: "x".repeat(64) } } },
    ],
    [
      "ClusterEgressPolicy",
      "65 namespace labels",
      "spec.namespaceSelector.matchLabels",
      {
        ...policy,
        namespaceSelector: { matchLabels: Object.fromEntries(many(65, (i) => `k${i}`).map((k) => [k, "v"])) },
      },
    ],
    [
      "EgressGateway",
      "65 grants",
      "spec.grants",
      {
        static: { instances: [{ name: "a", address: "10.0.0.1", egressIPs: ["192.0.2.1"] }] },
        grants: many(65, () => "").map(() => ({ namespaceSelector: {} })),
      },
    ],
    [
      "EgressGateway",
      "257 granted egress IPs",
      "spec.grants[0].egressIPs",
      {
        static: { instances: [{ name: "a", address: "10.0.0.1", egressIPs: ["192.0.2.1"] }] },
        grants: [{ namespaceSelector: {}, egressIPs: many(257, cidr) }],
      },
    ],
    [
      "EgressGateway",
      "65 static instances",
      "spec.static.instances",
      {
        static: {
          instances: many(65, (i) => `i${i}`).map((name, i) => ({
            name,
            address: `10.0.0.${i + 1}`,
            egressIPs: [`192.0.2.${i + 1}`],
          })),
        },
      },
    ],
  ];

  it.each(over)("the API server refuses a %s with %s, and our validator names %s", (kind, _why, field, spec) => {
    const validate = serverValidator(plural(kind));
    expect(validate({ apiVersion: "staticegress.io/v1alpha1", kind, metadata: {}, spec })).toBe(false);
    expect(new SpecValidator().check(kind, structuredClone(spec)).map((e) => e.field)).toContain(field);
  });

  it("a list at its bound is accepted", () => {
    const validate = serverValidator("egresspolicies");
    expect(
      validate({
        apiVersion: "staticegress.io/v1alpha1",
        kind: "EgressPolicy",
        metadata: {},
        spec: { ...policy, destinationCIDRs: many(64, cidr), excludedCIDRs: many(64, cidr) },
      }),
    ).toBe(true);
  });

  it("keeps any other keyword of a field, such as a CEL rule added later", () => {
    const out = toStructuralSchema({
      type: "array",
      maxItems: 3,
      "x-kubernetes-validations": [{ rule: "self.size() > 0", message: "m" }],
      items: { type: "string", maxLength: 18 },
    });
    expect(out).toEqual({
      type: "array",
      maxItems: 3,
      "x-kubernetes-validations": [{ rule: "self.size() > 0", message: "m" }],
      items: { type: "string", maxLength: 18 },
    });
  });
});
