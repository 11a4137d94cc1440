import { addNamespace, addVethPair } from "../../src/lab/netns.js";
import type { DivertEntry } from "../../src/planner/model.js";
import { divertValue } from "../../src/planner/failover.js";
import { runCommand, type CommandRunner } from "../../src/util/exec.js";
import type { NftObject } from "../../src/dataplane/kernel.js";
import { divertRows } from "../../src/dataplane/node.js";

/**
 * A bare namespace standing in for a node: a veth pair whose both ends live inside it, with the
 * node's VPC address on one end, so `route ... via <instance address>` resolves on-link. Nothing
 * is created in the root namespace and the namespace has no route out.
 */
export async function createNodeNamespace(ns: string, address: string, prefixLength: number): Promise<void> {
  await addNamespace(ns);
  await addVethPair({ ns, name: "vpc0" }, { ns, name: "vpc1" });
  await runCommand("ip", ["-n", ns, "addr", "add", `${address}/${prefixLength}`, "dev", "vpc0"]);
}

/**
 * What a routed CNI (ptp) leaves on a node for each pod: a host-side interface and a /32 route to
 * the pod's address through it (a veth pair here, both ends in the node's namespace: no pod
 * namespace behind it; this kernel has no dummy devices). The agent binds
 * each pod to its interface from that route, as on a real node.
 */
export async function addPodRoutes(ns: string, podIPs: readonly string[]): Promise<void> {
  if (podIPs.length === 0) return;
  const lines = podIPs.flatMap((ip, k) => [
    `link add pod${k} type veth peer name pod${k}p`,
    `link set pod${k}p up`,
    `link set pod${k} up`,
    `route add ${ip}/32 dev pod${k} scope link`,
  ]);
  await runCommand("ip", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
}

export class KernelCheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KernelCheckError";
  }
}

interface NftJson {
  nftables?: { map?: { elem?: unknown[] }; set?: { elem?: unknown[] } }[];
}

/** How many elements the kernel holds in one nft set or map (read back with `nft -j`). */
async function countElements(
  runner: CommandRunner,
  kind: "map" | "set",
  family: string,
  table: string,
  name: string,
): Promise<number> {
  const { stdout } = await runner.run("nft", ["-j", "list", kind, family, table, name], { timeoutMs: 120_000 });
  const doc = JSON.parse(stdout) as NftJson;
  for (const item of doc.nftables ?? []) {
    const body = kind === "map" ? item.map : item.set;
    if (body) return body.elem?.length ?? 0;
  }
  throw new KernelCheckError(`nft -j list ${kind} ${family} ${table} ${name}: no ${kind} in the output`);
}

/** Fails the benchmark when the kernel does not hold what the plan says (a fast but wrong apply is no result). */
export async function expectElements(
  runner: CommandRunner,
  kind: "map" | "set",
  family: string,
  table: string,
  name: string,
  expected: number,
  when: string,
): Promise<number> {
  const actual = await countElements(runner, kind, family, table, name);
  if (actual !== expected)
    throw new KernelCheckError(
      `${when}: kernel ${kind} ${table}/${name} holds ${actual} elements, the plan has ${expected}`,
    );
  return actual;
}

/**
 * The node's divert decision as the kernel holds it, `<pod IP> <first>-<last> <value>` per pod and
 * destination: each pod's class (`pod_class`), then that class's map (`divertRows`), from one listing.
 */
async function readDivert(runner: CommandRunner, table: string): Promise<string[]> {
  const { stdout } = await runner.run("nft", ["-j", "list", "table", "ip", table], { timeoutMs: 120_000 });
  const doc = JSON.parse(stdout) as { nftables?: NftObject[] };
  if (!doc.nftables?.some((x) => (x.map as { name?: string } | undefined)?.name === "pod_class"))
    throw new KernelCheckError(`nft -j list table ip ${table}: no pod_class map in the output`);
  return divertRows(doc.nftables).map((r) => `${r.podIP} ${r.dst.from}-${r.dst.to} ${r.value}`);
}

/** How many (pod, destination) rows the node's divert decision holds in the kernel (`readDivert`). */
export async function countDivert(runner: CommandRunner, table: string): Promise<number> {
  return (await readDivert(runner, table)).length;
}

/** Fails the benchmark unless the kernel's divert decision has `expected` rows. */
export async function expectDivertCount(
  runner: CommandRunner,
  table: string,
  expected: number,
  when: string,
): Promise<void> {
  const actual = await countDivert(runner, table);
  if (actual !== expected)
    throw new KernelCheckError(`${when}: kernel divert decision holds ${actual} rows, the plan has ${expected}`);
}

/**
 * Fails unless the kernel's `divert` map holds exactly the plan's entries (pod, destination range,
 * instance mark and failover instance): not only as many, but the same ones, read back independently of the dataplane.
 */
export async function expectDivert(
  runner: CommandRunner,
  table: string,
  entries: readonly DivertEntry[],
  when: string,
): Promise<void> {
  const kernel = new Set(await readDivert(runner, table));
  // The map's value is the mark with the pod's failover instance in its low bits (`divertValue`).
  const planned = new Set(entries.map((e) => `${e.podIP} ${e.dst.from}-${e.dst.to} ${divertValue(e)}`));
  const missing = [...planned].filter((x) => !kernel.has(x));
  const extra = [...kernel].filter((x) => !planned.has(x));
  if (missing.length || extra.length || kernel.size !== entries.length) {
    throw new KernelCheckError(
      `${when}: kernel divert decision differs from the plan: ${missing.length} missing ` +
        `(e.g. ${missing.slice(0, 3).join(", ")}), ${extra.length} extra (e.g. ${extra.slice(0, 3).join(", ")})`,
    );
  }
}
