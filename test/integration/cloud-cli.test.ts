import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cloudPlugins, type ControllerFlags } from "../../src/cli/controller.js";
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
