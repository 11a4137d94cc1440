import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseLabConfig, type LabConfig } from "../../src/lab/config.js";
import { Lab, waitFor, type LabPodStatus } from "../../src/lab/lab.js";
import { newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";

export function exampleLabConfig(): LabConfig {
  const path = join(packageRoot(), "examples", "lab.yaml");
  return parseLabConfig(readFileSync(path, "utf8"), path);
}

/** A lab owned by this test process; removed in afterAll (and as a leftover if we crash). */
export async function startLab(cfg: LabConfig = exampleLabConfig()): Promise<Lab> {
  return Lab.up(cfg, { prefix: newRunPrefix(), persistent: false });
}

/** Polls `lab status` until every pod leaves with an expected address. */
export async function waitConverged(lab: Lab, target?: string, timeoutMs = 30_000): Promise<LabPodStatus[]> {
  let last: LabPodStatus[] = [];
  await waitFor(
    async () => {
      last = await lab.status(target);
      return last.every((r) => r.ok);
    },
    timeoutMs,
    "lab did not converge",
    200,
  ).catch((e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(last.filter((r) => !r.ok))}`, { cause: e });
  });
  return last;
}

export function byPod(rows: readonly LabPodStatus[]): Map<string, LabPodStatus> {
  return new Map(rows.map((r) => [r.pod, r]));
}

/**
 * Every named nft counter with packets in the lab's nodes and gateway hosts, as
 * `<host>/<family> <table>/<counter>` -> packets: where a datagram that never arrived was dropped.
 */
export function namedCounters(lab: Lab): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of [...lab.topology.nodes, ...lab.topology.gatewayHosts]) {
    const r = spawnSync("ip", ["netns", "exec", h.netns, "nft", "-j", "list", "counters"], { encoding: "utf8" });
    if (r.status !== 0) continue;
    const doc = JSON.parse(r.stdout) as {
      nftables: { counter?: { family: string; table: string; name: string; packets: number } }[];
    };
    for (const { counter: c } of doc.nftables)
      if (c && c.packets > 0) out[`${h.name}/${c.family} ${c.table}/${c.name}`] = c.packets;
  }
  return out;
}

/** The counters that grew from `before` to `after`, by how much. */
export function grown(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)] as const)
      .filter(([, d]) => d > 0),
  );
}
