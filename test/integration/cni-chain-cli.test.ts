import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/lab/paths.js";

// `static-egress cni chain|unchain` as a person runs them (the built CLI: `npm run build` first).
const cli = join(packageRoot(), "dist", "cli", "main.js");
let dir: string;
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` first`);
  dir = await mkdtemp(join(tmpdir(), "se-cni-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("cni chain / unchain", () => {
  it("chains with the agent config's ranges, says when nothing changed, and unchains", async () => {
    const netd = join(dir, "net.d");
    await mkdir(netd);
    const list = { cniVersion: "1.0.0", name: "k8s", plugins: [{ type: "ptp", ipam: { type: "host-local" } }] };
    await writeFile(join(netd, "10-k8s.conflist"), JSON.stringify(list));
    const config = join(dir, "agent.yaml");
    await writeFile(
      config,
      "clusterNetwork:\n  podCIDRs: [10.244.0.0/16]\n  serviceCIDRs: [10.96.0.0/12]\n  nodeCIDRs: [10.0.0.0/16]\n",
    );
    let r = run("cni", "chain", "--conf-dir", netd, "--config", config);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`${join(netd, "10-k8s.conflist")}: chained\n`);
    const chained = JSON.parse(await readFile(join(netd, "10-k8s.conflist"), "utf8"));
    expect(chained.plugins.at(-1)).toEqual({
      type: "static-egress",
      agentSocket: "/run/static-egress/cni.sock",
      clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12", "10.0.0.0/16"],
    });
    expect(run("cni", "chain", "--conf-dir", netd, "--config", config).stdout).toContain(": already chained");
    r = run("cni", "unchain", "--conf-dir", netd);
    expect(r.stdout).toContain(": unchained");
    expect(JSON.parse(await readFile(join(netd, "10-k8s.conflist"), "utf8")).plugins).toEqual(list.plugins);
  });

  it("fails with exit 1 and a message naming the directory or file", async () => {
    const r = run("cni", "chain", "--conf-dir", join(dir, "nowhere"));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^static-egress: .*nowhere: cannot read the CNI config directory \(ENOENT\)/);
    const flannel = join(dir, "flannel");
    await mkdir(flannel);
    await writeFile(
      join(flannel, "10-flannel.conf"),
      JSON.stringify({ cniVersion: "0.3.1", name: "cbr0", type: "flannel" }),
    );
    const f = run("cni", "chain", "--conf-dir", flannel);
    expect(f.status).toBe(1);
    expect(f.stderr).toContain("10-flannel.conf: a single-plugin configuration");
  });
});
