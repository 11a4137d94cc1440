import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloudPlugins, dedicatedEgressOptions, type ControllerFlags } from "../../src/cli/controller.js";
import { silentLogger } from "../../src/util/log.js";

// The controller's cloud flags: what they require, and errors that name the flag.
let dir: string;
const base: ControllerFlags = { config: "x", namespace: "static-egress", leaseSeconds: "15" };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "se-cloud-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("controller --cloud flags", () => {
  it("without --cloud there are no plugins", () => {
    expect(cloudPlugins(base, silentLogger)).toBeUndefined();
  });

  it.each<[Partial<ControllerFlags>, RegExp]>([
    [{ cloud: "aws" }, /^--cloud: unknown cloud "aws"/],
    [{ cloud: "digitalocean" }, /^--cluster-id is required/],
    [
      { cloud: "digitalocean", clusterId: "c1", digitaloceanTokenFile: "/nonexistent/token" },
      /token file \/nonexistent\/token/,
    ],
    [
      {
        cloud: "digitalocean",
        clusterId: "c1",
        digitaloceanTokenFile: "TOKEN",
        gatewayUserDataFile: "/nonexistent/ud",
      },
      /^--gateway-user-data-file: cannot read \/nonexistent\/ud/,
    ],
  ])("%j fails naming what is wrong", async (flags, message) => {
    const token = join(dir, "token");
    await writeFile(token, "dop_v1_test\n");
    const f = {
      ...base,
      ...flags,
      ...(flags.digitaloceanTokenFile === "TOKEN" ? { digitaloceanTokenFile: token } : {}),
    };
    expect(() => cloudPlugins(f, silentLogger)).toThrow(message);
  });

  it("with a token file and a cluster id: both plugins", async () => {
    const token = join(dir, "token");
    await writeFile(token, "dop_v1_test\n");
    const p = cloudPlugins(
      { ...base, cloud: "digitalocean", clusterId: "c1", digitaloceanTokenFile: token },
      silentLogger,
    );
    expect(p?.plugins.map((x) => x.name)).toEqual(["digitalocean-gateway-fleet", "digitalocean-reserved-ip"]);
    await p?.stop();
  });
});

describe("controller --apps-digitalocean", () => {
  it("needs --cloud digitalocean, excludes --apps-gateway-pool, and names a bad field of its file", async () => {
    const file = join(dir, "apps-do.yaml");
    await writeFile(file, "region: ams3\nsize: s-1vcpu-1gb\nnodeTag: k8s:c1\n");
    const pool = join(dir, "pool.yaml");
    await writeFile(pool, "hosts: []\n");
    expect(() => dedicatedEgressOptions({ ...base, appsDigitalocean: file }, undefined)).toThrow(
      /^--apps-digitalocean needs --cloud digitalocean/,
    );
    const token = join(dir, "token");
    await writeFile(token, "dop_v1_test\n");
    const cloud = cloudPlugins(
      { ...base, cloud: "digitalocean", clusterId: "c1", digitaloceanTokenFile: token },
      silentLogger,
    )!;
    try {
      expect(() => dedicatedEgressOptions({ ...base, appsDigitalocean: file, appsGatewayPool: pool }, cloud)).toThrow(
        /^--apps-digitalocean and --apps-gateway-pool: give one/,
      );
      const bad = join(dir, "bad.yaml");
      await writeFile(bad, "region: ams3\nsize: s-1vcpu-1gb\nonRemoval: delete\n");
      expect(() => dedicatedEgressOptions({ ...base, appsDigitalocean: bad }, cloud)).toThrow(
        /^--apps-digitalocean: .*bad\.yaml: digitalocean\.nodeTag: required field is missing; digitalocean\.onRemoval: invalid value "delete"/,
      );
      const ok = dedicatedEgressOptions({ ...base, appsDigitalocean: file }, cloud);
      expect(ok.digitalocean?.config).toEqual({ region: "ams3", size: "s-1vcpu-1gb", nodeTag: "k8s:c1" });
      expect(ok.gatewayPool).toBeUndefined();
    } finally {
      await cloud.stop();
    }
  });
});
