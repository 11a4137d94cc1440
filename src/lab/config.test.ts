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

describe("lab file: the apps' gateway pool and app specs", () => {
  const examples = join(packageRoot(), "examples");
  const pool = [
    { name: "pool-a", egressIP: "192.0.2.111" },
    { name: "pool-b", egressIP: "192.0.2.112" },
  ];

  it("examples/lab-apps.yaml parses: the pool, and the spec files resolved against the lab file's folder", () => {
    const file = join(examples, "lab-apps.yaml");
    const cfg = parseLabConfig(readFileSync(file, "utf8"), file);
    expect(cfg.apps?.gatewayPool).toHaveLength(4);
    expect(cfg.apps?.specs).toEqual(["web", "payments", "worker-only"].map((a) => join(examples, "apps", `${a}.yaml`)));
  });

  it("refuses a pool host named like another host, an egress IP twice, and a pool beside digitalocean", () => {
    expect(() =>
      parseLabConfig(lab({ apps: { gatewayPool: [{ name: "node1", egressIP: "192.0.2.111" }, pool[1]] } }), "t.yaml"),
    ).toThrow(/host names .* must be unique/);
    expect(() =>
      parseLabConfig(lab({ apps: { gatewayPool: [pool[0], { ...pool[1], egressIP: "192.0.2.111" }] } }), "t.yaml"),
    ).toThrow(/listed twice/);
    expect(() =>
      parseLabConfig(lab({ apps: { gatewayPool: [pool[0], { ...pool[1], egressIP: "10.9.9.9" }] } }), "t.yaml"),
    ).toThrow(/10\.9\.9\.9 must be in/);
    expect(() =>
      parseLabConfig(
        lab({ apps: { gatewayPool: pool, digitalocean: { addresses: ["192.0.2.50", "192.0.2.60"] } } }),
        "t.yaml",
      ),
    ).toThrow(/lab\.apps: give gatewayPool or digitalocean/);
  });

  it("refuses a spec file that is missing or invalid, naming the entry", () => {
    const source = join(examples, "lab-x.yaml");
    expect(() => parseLabConfig(lab({ apps: { specs: ["apps/web.yaml", "apps/nope.yaml"] } }), source)).toThrow(
      /lab\.apps\.specs\[1\]: .*nope\.yaml/,
    );
    // A lab file is no app spec: the validator names the field.
    expect(() => parseLabConfig(lab({ apps: { specs: ["lab.yaml"] } }), source)).toThrow(
      /lab\.apps\.specs\[0\]: .*name/,
    );
    expect(() => parseLabConfig(lab({ apps: { specs: ["apps/web.yaml", "apps/web.yaml"] } }), source)).toThrow(
      /a second app named web/,
    );
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
