import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocuments, type KubeObject } from "../api/objects.js";
import { validateStaticRoute } from "../api/digitalocean-v1/static-route.js";
import { importObjects } from "./index.js";

const examples = () =>
  parseDocuments(
    readFileSync(join(import.meta.dirname, "..", "..", "examples", "static-route-digitalocean.yaml"), "utf8"),
    "static-route-digitalocean.yaml",
  );
const run = (objects: KubeObject[]) => importObjects(objects, { defaultNamespace: "default" });
const route = (name: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}): KubeObject =>
  ({
    apiVersion: "networking.digitalocean.com/v1",
    kind: "StaticRoute",
    metadata: { name, uid: "u-1", resourceVersion: "7" },
    spec,
    ...extra,
  }) as KubeObject;

describe("import: DigitalOcean StaticRoute", () => {
  it("the operator's own examples come out as the same objects, valid by our rules", () => {
    const input = examples();
    const r = run(input);
    expect(r.findings).toEqual([]);
    expect(r.made.map((m) => m.object)).toEqual(
      input.map((o) => ({
        apiVersion: o.apiVersion,
        kind: "StaticRoute",
        metadata: { name: o.metadata?.name },
        spec: o.spec,
      })),
    );
    for (const m of r.made) expect(validateStaticRoute(m.object)).toEqual([]);
  });

  it("keeps labels, leaves server fields and status out (status reported as not imported)", () => {
    const r = run([route("a", { destinations: ["198.51.100.0/24"], gateway: "10.0.0.5" }, { status: { nodes: [] } })]);
    expect(r.made[0]!.object.metadata).toEqual({ name: "a" });
    expect(r.findings).toEqual([
      {
        verdict: "ignored",
        source: "StaticRoute/a",
        field: "status",
        reason: "written by each node agent (status.nodes), not imported",
      },
    ]);
  });

  it("refuses what could cut a node off, naming the field; the others are still made", () => {
    const r = run([
      route("metadata", { destinations: ["169.254.169.254"], gateway: "10.0.0.5" }),
      route("bad-cidr", { destinations: ["198.51.100.0/33"], gateway: "10.0.0.5" }),
      route("fine", { destinations: ["203.0.113.0/24"], gateway: "10.0.0.5" }),
    ]);
    expect(r.made.map((m) => m.object.metadata.name)).toEqual(["fine"]);
    const refused = r.findings.filter((f) => f.verdict === "refused");
    expect(refused.map((f) => [f.source, f.field])).toEqual([
      ["StaticRoute/metadata", "spec.destinations[0]"],
      ["StaticRoute/bad-cidr", "spec.destinations[0]"],
    ]);
  });
});
