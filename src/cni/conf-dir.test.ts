import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "../lab/lab.js";
import { silentLogger } from "../util/log.js";
import { chainConfDir, ConfDirKeeper, unchainConfDir } from "./conf-dir.js";
import type { ChainEntry } from "./conflist.js";

const entry: ChainEntry = { agentSocket: "/run/static-egress/cni.sock", clusterCIDRs: ["10.244.0.0/16"] };
const calico = {
  cniVersion: "0.3.1",
  name: "k8s-pod-network",
  plugins: [
    { type: "calico", ipam: { type: "calico-ipam" } },
    { type: "portmap", capabilities: { portMappings: true } },
  ],
};
let dir: string;
const types = async (file: string) =>
  (JSON.parse(await readFile(join(dir, file), "utf8")) as { plugins: { type: string }[] }).plugins.map((p) => p.type);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "se-cni-conf-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("chaining into a CNI config directory", () => {
  it("chains into the file the runtime uses, keeps its mode, leaves other files and no temporary file", async () => {
    await writeFile(join(dir, "10-calico.conflist"), JSON.stringify(calico), { mode: 0o644 });
    await writeFile(join(dir, "99-loopback.conflist"), JSON.stringify({ ...calico, name: "other" }), { mode: 0o600 });
    expect(await chainConfDir(dir, entry)).toEqual({ file: join(dir, "10-calico.conflist"), changed: true });
    expect(await types("10-calico.conflist")).toEqual(["calico", "portmap", "static-egress"]);
    expect(await types("99-loopback.conflist")).toEqual(["calico", "portmap"]);
    expect((await stat(join(dir, "10-calico.conflist"))).mode & 0o777).toBe(0o644);
    expect((await readdir(dir)).sort()).toEqual(["10-calico.conflist", "99-loopback.conflist"]);
    expect((await chainConfDir(dir, entry)).changed).toBe(false);
    expect(await unchainConfDir(dir)).toEqual({ file: join(dir, "10-calico.conflist"), changed: true });
    expect(await types("10-calico.conflist")).toEqual(["calico", "portmap"]);
  });

  it("says clearly when there is nothing to chain into", async () => {
    await expect(chainConfDir(join(dir, "missing"), entry)).rejects.toThrow(
      /missing: cannot read the CNI config directory \(ENOENT\)/,
    );
    await expect(chainConfDir(dir, entry)).rejects.toThrow(/no CNI configuration yet/);
    await writeFile(
      join(dir, "10-flannel.conf"),
      JSON.stringify({ cniVersion: "0.3.1", name: "cbr0", type: "flannel" }),
    );
    await expect(chainConfDir(dir, entry)).rejects.toThrow(/10-flannel\.conf: a single-plugin configuration/);
  });

  it("the keeper chains again when the cluster CNI rewrites its file, and when the file appears late", async () => {
    const keeper = new ConfDirKeeper(dir, entry, silentLogger, 200);
    try {
      expect(await keeper.start()).toBeUndefined(); // nothing to chain into yet: not fatal
      await writeFile(join(dir, "05-cilium.conflist"), JSON.stringify(calico));
      await waitFor(
        async () => (await types("05-cilium.conflist")).at(-1) === "static-egress",
        5_000,
        "not chained when the file appeared",
      );
      // The cluster CNI restarts and writes its file again, without our entry.
      await writeFile(join(dir, "05-cilium.conflist"), JSON.stringify(calico));
      await waitFor(
        async () => (await types("05-cilium.conflist")).at(-1) === "static-egress",
        5_000,
        "not chained again after a rewrite",
      );
      await keeper.settled();
      expect(await types("05-cilium.conflist")).toEqual(["calico", "portmap", "static-egress"]);
    } finally {
      keeper.stop();
    }
  });
});
