import { addNamespace, addVethPair } from "../../src/lab/netns.js";
import { runCommand, type CommandRunner } from "../../src/util/exec.js";

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
export async function countElements(runner: CommandRunner, kind: "map" | "set", family: string, table: string, name: string): Promise<number> {
  const { stdout } = await runner.run("nft", ["-j", "list", kind, family, table, name], { timeoutMs: 120_000 });
  const doc = JSON.parse(stdout) as NftJson;
  for (const item of doc.nftables ?? []) {
    const body = kind === "map" ? item.map : item.set;
    if (body) return body.elem?.length ?? 0;
  }
  throw new KernelCheckError(`nft -j list ${kind} ${family} ${table} ${name}: no ${kind} in the output`);
}

/** Fails the benchmark when the kernel does not hold what the plan says (a fast but wrong apply is no result). */
export async function expectElements(runner: CommandRunner, kind: "map" | "set", family: string, table: string, name: string, expected: number, when: string): Promise<number> {
  const actual = await countElements(runner, kind, family, table, name);
  if (actual !== expected) throw new KernelCheckError(`${when}: kernel ${kind} ${table}/${name} holds ${actual} elements, the plan has ${expected}`);
  return actual;
}
