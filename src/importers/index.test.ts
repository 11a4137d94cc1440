import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocuments, type KubeObject } from "../api/objects.js";
import { dnsName } from "./common.js";
import { CONVERTERS, importObjects, type Converter } from "./index.js";
import { formatObjects, formatReport } from "./report.js";

const docs = (f: string) => parseDocuments(readFileSync(join(import.meta.dirname, "testdata", f), "utf8"), f);
const options = { defaultNamespace: "default" };

describe("importObjects: the registry and the whole-import checks", () => {
  it("each source's objects go to its converter; both peers in one input", () => {
    const r = importObjects([...docs("cilium-egress-sample.yaml"), ...docs("nirmata-readme.yaml")], options);
    expect(r.made.map((m) => m.object.kind)).toEqual([
      "EgressGateway",
      "EgressGateway",
      "ClusterEgressPolicy",
      "EgressPolicy",
    ]);
    expect(CONVERTERS.map((c) => c.source)).toEqual(["cilium", "nirmata", "spidernet", "staticroute"]);
  });

  it("kinds no converter reads are reported as ignored, ours too; a Service is context, not reported", () => {
    const r = importObjects(
      [
        { apiVersion: "example.com/v1", kind: "Route", metadata: { name: "r" }, spec: {} },
        { apiVersion: "staticegress.io/v1alpha1", kind: "EgressGateway", metadata: { name: "g" }, spec: {} },
        ...docs("nirmata-readme.yaml").filter((o) => o.kind === "Service"),
      ],
      options,
    );
    expect(r.made).toEqual([]);
    expect(r.findings.map((f) => [f.verdict, f.source, f.reason.split(";")[0]])).toEqual([
      ["ignored", "Route/r", "no importer for example.com/v1 Route"],
      ["ignored", "EgressGateway/g", "already a static-egress object: apply it as it is"],
    ]);
  });

  it("a new source is one converter: its objects are validated and checked like the others", () => {
    // A stand-in converter that makes one invalid and one valid policy, and a gateway only the invalid one uses.
    const fake: Converter = {
      source: "fake",
      reads: [{ group: "example.com", kind: "Thing" }],
      convert: (objects) => ({
        made: objects.flatMap((o) => [
          {
            object: {
              apiVersion: "staticegress.io/v1alpha1",
              kind: "EgressGateway",
              metadata: { name: "fake-gw" },
              spec: { nodes: { nodeSelector: {} } },
            },
            from: [`Thing/${o.metadata!.name}`],
          },
          {
            object: {
              apiVersion: "staticegress.io/v1alpha1",
              kind: "ClusterEgressPolicy",
              metadata: { name: "bad" },
              spec: { podSelector: {}, namespaceSelector: {}, gatewayName: "fake-gw", egressIPs: ["192.0.2.300"] },
            },
            from: [`Thing/${o.metadata!.name}`],
          },
          {
            object: {
              apiVersion: "staticegress.io/v1alpha1",
              kind: "ClusterEgressPolicy",
              metadata: { name: "good" },
              spec: { podSelector: {}, namespaceSelector: {}, gatewayName: "elsewhere", egressIPs: ["192.0.2.1"] },
            },
            from: [`Thing/${o.metadata!.name}`],
          },
        ]),
        findings: [],
      }),
    };
    const r = importObjects(
      [{ apiVersion: "example.com/v1", kind: "Thing", metadata: { name: "t" } } as KubeObject],
      options,
      [fake],
    );
    // The invalid policy is refused with our field; the gateway only it used is not made.
    expect(r.made.map((m) => m.object.metadata.name)).toEqual(["good"]);
    expect(r.findings).toEqual([
      expect.objectContaining({
        verdict: "refused",
        source: "Thing/t",
        field: "spec.egressIPs[0]",
        reason: expect.stringContaining("ClusterEgressPolicy/bad would be invalid"),
      }),
    ]);
  });

  it("the same object made twice is refused the second time", () => {
    const [a] = docs("cilium-egress-sample.yaml");
    const twin = structuredClone(a!);
    (twin.spec!.egressGateway as { egressIP: string }).egressIP = "10.168.60.101";
    const r = importObjects([a!, twin], options);
    expect(r.made.filter((m) => m.object.kind === "ClusterEgressPolicy")).toHaveLength(1);
    expect(r.findings).toContainEqual(expect.objectContaining({ verdict: "refused", field: "metadata.name" }));
  });
});

describe("names and output", () => {
  it("dnsName: a DNS label; a long one is cut and made unique by a hash", () => {
    expect(dnsName("egress-sample")).toBe("egress-sample");
    expect(dnsName("Egress.Sample_1")).toBe("egress-sample-1");
    const a = dnsName("x".repeat(80));
    const b = dnsName("x".repeat(81));
    for (const n of [a, b]) expect(n).toMatch(/^x{52}-[0-9a-f]{10}$/);
    expect(a).not.toBe(b);
  });

  it("prints the objects as kubectl reads them and a report line per object and finding", () => {
    const r = importObjects(docs("cilium-egress-sample.yaml"), options);
    const yaml = formatObjects(r, "yaml");
    expect(parseDocuments(yaml, "out").map((o) => o.kind)).toEqual(["EgressGateway", "ClusterEgressPolicy"]);
    expect((JSON.parse(formatObjects(r, "json")) as { kind: string; items: unknown[] }).items).toHaveLength(2);
    const report = formatReport(r).split("\n");
    expect(report[0]).toMatch(
      /^made {5}EgressGateway\/cilium-[0-9a-f]{10} {2}<- CiliumEgressGatewayPolicy\/egress-sample$/,
    );
    expect(report).toContain("2 made, 0 refused, 0 ignored, 1 to do");
  });
});
