import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "./config.js";
import { packageRoot } from "./paths.js";

const lab = (extra: object) => stringify({ nodes: [{ name: "node1" }], pods: [], ...extra });

describe("lab file: apps on the lab's DigitalOcean", () => {
  it("takes the addresses the stand-in may allocate, and the removal choice", () => {
    const cfg = parseLabConfig(
      lab({ apps: { digitalocean: { addresses: ["192.0.2.50", "192.0.2.60"], onRemoval: "keep" } } }),
      "t.yaml",
    );
    expect(cfg.apps?.digitalocean).toEqual({ addresses: ["192.0.2.50", "192.0.2.60"], onRemoval: "keep" });
  });

  it("refuses addresses outside the documentation ranges, or used by a gateway", () => {
    expect(() =>
      parseLabConfig(lab({ apps: { digitalocean: { addresses: ["10.1.1.1", "192.0.2.60"] } } }), "t.yaml"),
    ).toThrow(/10\.1\.1\.1 must be in 192\.0\.2\.0\/24/);
    expect(() =>
      parseLabConfig(
        lab({
          gateways: [{ name: "g", digitalocean: { reservedIPs: ["192.0.2.50", "192.0.2.51"] } }],
          apps: { digitalocean: { addresses: ["192.0.2.50", "192.0.2.60"] } },
        }),
        "t.yaml",
      ),
    ).toThrow(/listed twice/);
    expect(() => parseLabConfig(lab({ apps: { digitalocean: { addresses: ["192.0.2.50"] } } }), "t.yaml")).toThrow(
      /lab\.apps\.digitalocean\.addresses/,
    );
  });

  it("examples/lab.yaml parses", () => {
    const file = join(packageRoot(), "examples", "lab.yaml");
    expect(parseLabConfig(readFileSync(file, "utf8"), file).nodes).toHaveLength(3);
  });
});

describe("lab file: the NetworkPolicy enforcer", () => {
  it("takes kube-router, and refuses another enforcer by the field's name", () => {
    expect(parseLabConfig(lab({ networkPolicy: { enforcer: "kube-router" } }), "t.yaml").networkPolicy).toEqual({
      enforcer: "kube-router",
    });
    expect(() => parseLabConfig(lab({ networkPolicy: { enforcer: "calico" } }), "t.yaml")).toThrow(
      /lab\.networkPolicy\.enforcer/,
    );
    expect(() => parseLabConfig(lab({ networkPolicy: {} }), "t.yaml")).toThrow(/lab\.networkPolicy/);
  });
});
