import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { packageRoot } from "../../lab/paths.js";
import { parseAppsDigitalOcean } from "./apps-digitalocean.js";

describe("--apps-digitalocean file", () => {
  it("takes region, size, nodeTag and the optional fields", () => {
    const doc = { region: "ams3", size: "s-1vcpu-1gb", nodeTag: "k8s:c1", vpcUUID: "v", image: "i", onRemoval: "keep" };
    expect(parseAppsDigitalOcean(doc)).toEqual({ config: doc, errors: [] });
  });

  it("examples/apps/apps-digitalocean.yaml is accepted", () => {
    const file = join(packageRoot(), "examples", "apps", "apps-digitalocean.yaml");
    expect(parseAppsDigitalOcean(parse(readFileSync(file, "utf8"))).errors).toEqual([]);
  });

  it("names each bad field", () => {
    const { config, errors } = parseAppsDigitalOcean({ region: "ams3", size: "", onRemoval: "delete", count: 3 });
    expect(config).toBeUndefined();
    expect(errors).toEqual(
      expect.arrayContaining([
        { field: "digitalocean.size", message: "must NOT have fewer than 1 characters" },
        { field: "digitalocean.nodeTag", message: "required field is missing" },
        { field: "digitalocean.onRemoval", message: 'invalid value "delete"' },
        { field: "digitalocean", message: 'unknown field "count"' },
      ]),
    );
  });
});
