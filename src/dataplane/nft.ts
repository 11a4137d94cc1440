import type { CommandRunner } from "../util/exec.js";

/**
 * nftables through the `nft` command. A table is always replaced in one transaction: the
 * script declares the table (so `delete` cannot fail), deletes it and declares it again with
 * its full contents. The kernel commits all of it or none of it, so no packet ever sees a
 * half-programmed table (never flush-then-add in separate steps).
 */
export function replaceTableScript(family: string, name: string, body: string): string {
  return `table ${family} ${name}\ndelete table ${family} ${name}\ntable ${family} ${name} {\n${body}}\n`;
}

export async function applyNftScript(runner: CommandRunner, script: string): Promise<void> {
  await runner.run("nft", ["-f", "-"], { input: script });
}

/** The table as the kernel has it, in nft's canonical text form; undefined if it does not exist. */
export async function listTable(runner: CommandRunner, family: string, name: string): Promise<string | undefined> {
  try {
    const { stdout } = await runner.run("nft", ["--stateless", "list", "table", family, name]);
    return stdout;
  } catch (e) {
    if (/No such file or directory/.test(String((e as Error).message))) return undefined;
    throw e;
  }
}

export async function deleteTable(runner: CommandRunner, family: string, name: string): Promise<void> {
  // Declaring it first makes the delete succeed whether or not the table exists.
  await applyNftScript(runner, `table ${family} ${name}\ndelete table ${family} ${name}\n`);
}

/** Renders `{ a, b, c }` element lists in chunks nft parses quickly; empty sets get no elements clause. */
export function elementsClause(elements: readonly string[]): string {
  return elements.length === 0 ? "" : `    elements = { ${elements.join(",\n      ")} }\n`;
}

export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, "0")}`;
}
