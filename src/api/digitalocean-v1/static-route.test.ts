import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { packageRoot } from "../../lab/paths.js";
import { crdFor } from "../v1alpha1/crd.js";
import { StaticRouteKind, validateStaticRoute } from "./static-route.js";

const root = packageRoot();
const reference = parse(
  readFileSync(join(root, "reference", "k8s-staticroute-operator-StaticRoute.yaml"), "utf8"),
) as Crd;
type Crd = {
  metadata: { name: string };
  spec: {
    group: string;
    scope: string;
    names: { kind: string; plural: string; singular: string; shortNames: string[] };
    versions: { name: string; schema: { openAPIV3Schema: Schema } }[];
  };
};
type Schema = { properties?: Record<string, Schema>; items?: Schema; pattern?: string; required?: string[] };

const sr = (spec: unknown) => ({
  apiVersion: "networking.digitalocean.com/v1",
  kind: "StaticRoute",
  metadata: { name: "r" },
  spec,
});
const fields = (spec: unknown, protect: Parameters<typeof validateStaticRoute>[1] = []) =>
  validateStaticRoute(sr(spec), protect).map((e) => e.field);

describe("StaticRoute CRD", () => {
  it("is committed exactly as generated, in deploy/crds and the chart", () => {
    for (const dir of ["deploy/crds", "deploy/helm/static-egress/crds"]) {
      expect(parse(readFileSync(join(root, dir, "staticroutes.yaml"), "utf8"))).toEqual(crdFor(StaticRouteKind));
    }
  });

  it("has the operator's group, version, names, scope, fields and patterns", () => {
    const ours = crdFor(StaticRouteKind) as unknown as Crd;
    expect(ours.metadata.name).toBe(reference.metadata.name);
    expect(ours.spec.group).toBe(reference.spec.group);
    expect(ours.spec.scope).toBe(reference.spec.scope);
    expect(ours.spec.names).toMatchObject(reference.spec.names);
    expect(ours.spec.versions.map((v) => v.name)).toEqual(reference.spec.versions.map((v) => v.name));
    const theirs = reference.spec.versions[0]!.schema.openAPIV3Schema.properties!.spec!.properties!;
    const mine = ours.spec.versions[0]!.schema.openAPIV3Schema.properties!.spec!.properties!;
    expect(mine.destinations!.items!.pattern).toBe(theirs.destinations!.items!.pattern);
    expect(mine.gateway!.pattern).toBe(theirs.gateway!.pattern);
  });
});

describe("validateStaticRoute", () => {
  it("accepts the operator's own examples as they are", () => {
    const docs = parseAllDocuments(readFileSync(join(root, "examples", "static-route-digitalocean.yaml"), "utf8")).map(
      (d) => d.toJS() as unknown,
    );
    expect(docs).toHaveLength(2);
    for (const d of docs) expect(validateStaticRoute(d)).toEqual([]);
    const failover = parse(readFileSync(join(root, "examples", "static-route-failover.yaml"), "utf8")) as unknown;
    expect(validateStaticRoute(failover)).toEqual([]);
  });

  it("names the field of a bad destination or gateway", () => {
    expect(fields({ destinations: ["300.1.1.1"], gateway: "10.0.0.1" })).toEqual(["spec.destinations[0]"]);
    expect(fields({ destinations: ["198.51.100.0/33"], gateway: "10.0.0.1" })).toEqual(["spec.destinations[0]"]);
    expect(fields({ destinations: ["198.51.100.0/24", "bogus"], gateway: "10.0.0.1" })).toEqual([
      "spec.destinations[1]",
    ]);
    expect(fields({ destinations: ["198.51.100.0/24"], gateway: "10.0.0.256" })).toEqual(["spec.gateway"]);
    expect(fields({ destinations: ["198.51.100.0/24"], gateway: "10.0.0.1", gateways: ["10.0.0.x"] })).toEqual([
      "spec.gateways[0]",
    ]);
    expect(fields({ destinations: ["198.51.100.0/24"] })).toEqual(["spec.gateway"]);
    expect(fields({ gateway: "10.0.0.1" })).toEqual(["spec.destinations"]);
    expect(fields({ destinations: [], gateway: "10.0.0.1" })).toEqual(["spec.destinations"]);
    expect(fields({ destinations: ["198.51.100.0/24", "198.51.100.7/24"], gateway: "10.0.0.1" })).toEqual([
      "spec.destinations[1]",
    ]);
    expect(
      fields({
        destinations: ["198.51.100.0/24"],
        gateway: "10.0.0.1",
        nodeSelector: { matchExpressions: [{ key: "a", operator: "In" }] },
      }),
    ).toEqual(["spec.nodeSelector.matchExpressions[0].values"]);
  });

  it("refuses the metadata address, whatever else is known", () => {
    const errors = validateStaticRoute(sr({ destinations: ["169.254.169.254"], gateway: "10.0.0.1" }));
    expect(errors).toEqual([{ field: "spec.destinations[0]", message: expect.stringContaining("metadata service") }]);
    expect(fields({ destinations: ["0.0.0.0/0"], gateway: "10.0.0.1" })).toContain("spec.destinations[0]");
  });

  it("refuses destinations over protected ranges, and a gateway inside its own destinations", () => {
    const protect = [{ cidr: "10.96.0.1/32", what: "the API server" }];
    expect(validateStaticRoute(sr({ destinations: ["10.0.0.0/8"], gateway: "192.168.1.1" }), protect)).toEqual([
      {
        field: "spec.destinations[0]",
        message: "10.0.0.0/8 overlaps the API server (10.96.0.1/32): refused, it would cut nodes off",
      },
    ]);
    expect(fields({ destinations: ["198.51.100.0/24"], gateway: "198.51.100.1" })).toEqual(["spec.destinations[0]"]);
  });

  it("checks the envelope", () => {
    expect(
      validateStaticRoute({
        apiVersion: "v1",
        kind: "StaticRoute",
        metadata: {},
        spec: { destinations: ["198.51.100.1"], gateway: "10.0.0.1" },
      }).map((e) => e.field),
    ).toEqual(["apiVersion", "metadata.name"]);
    expect(validateStaticRoute("x")).toEqual([{ field: "", message: "not an object" }]);
  });
});
