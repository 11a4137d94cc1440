import { describe, expect, it } from "vitest";
import { evaluateJsonPath, JsonPathError, parseJsonPath } from "./jsonpath.js";

const obj = {
  metadata: { name: "p", labels: { "app.kubernetes.io/name": "web" } },
  spec: { ports: [{ port: 80 }, { port: 443 }] },
  status: {
    egressIPs: ["198.51.100.1", "198.51.100.2"],
    conditions: [
      { type: "Ready", status: "True" },
      { type: "Degraded", status: "False" },
    ],
  },
};
const ev = (p: string): unknown[] => evaluateJsonPath(parseJsonPath(p), obj);

describe("printer-column JSONPath", () => {
  it("follows fields, indexes and wildcards", () => {
    expect(ev(".metadata.name")).toEqual(["p"]);
    expect(ev(".spec.ports[1].port")).toEqual([443]);
    expect(ev(".spec.ports[-1].port")).toEqual([443]);
    expect(ev(".spec.ports[*].port")).toEqual([80, 443]);
    expect(ev(".status.egressIPs")).toEqual([["198.51.100.1", "198.51.100.2"]]);
    expect(ev("{.metadata.name}")).toEqual(["p"]);
  });

  it("filters lists like kubectl's columns for conditions", () => {
    expect(ev('.status.conditions[?(@.type=="Ready")].status')).toEqual(["True"]);
    expect(ev(".status.conditions[?(@.type!='Ready')].type")).toEqual(["Degraded"]);
  });

  it("reads keys with dots", () => {
    expect(ev(".metadata.labels['app.kubernetes.io/name']")).toEqual(["web"]);
    expect(ev(".metadata.labels.app\\.kubernetes\\.io/name")).toEqual(["web"]);
  });

  it("returns nothing for missing paths", () => {
    expect(ev(".status.missing.deeper")).toEqual([]);
    expect(ev(".spec.ports[7]")).toEqual([]);
  });

  it("rejects what it does not understand", () => {
    expect(() => parseJsonPath(".a[?(bad)]")).toThrow(JsonPathError);
    expect(() => parseJsonPath(".a[1:2")).toThrow(JsonPathError);
  });
});
