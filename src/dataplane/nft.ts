import type { Kernel } from "./kernel.js";

/**
 * nftables through the `nft` command. Every change is one `nft -f` run, i.e. one kernel
 * transaction: all of it or none of it, so no packet ever sees a half-programmed table
 * (never flush-then-add in separate steps).
 */

/** A table we own, as data: set/map declarations with their elements, plus chains. */
export interface TableModel {
  family: "ip" | "inet" | "bridge";
  name: string;
  sets: {
    kind: "set" | "map";
    name: string;
    /** e.g. `type ipv4_addr; flags interval;` */ spec: string;
    elements: string[];
    /**
     * A change rewrites the whole set (flush, then add, in the same transaction) instead of
     * deleting and adding elements: right whatever the kernel holds, for a small set that
     * another writer (the node's failover) may have changed since our last apply.
     */
    replace?: boolean;
  }[];
  chains: string;
}

/**
 * Full replacement: declare (so delete cannot fail), delete, declare again with everything. The
 * named counters the model declares (`counter x {\n  }`) start from `counts` (what the replaced
 * table had counted), so a replacement never resets a drop metric.
 */
export function renderFull(
  t: TableModel,
  counts: ReadonlyMap<string, { packets: number; bytes: number }> = new Map(),
): string {
  const sets = t.sets.map((s) => `  ${s.kind} ${s.name} {\n    ${s.spec}\n${elementsClause(s.elements)}  }\n`).join("");
  const chains = t.chains.replace(/^ {2}counter (\S+) \{\n {2}\}\n/gm, (decl, name: string) => {
    const c = counts.get(name);
    return c ? `  counter ${name} {\n    packets ${c.packets} bytes ${c.bytes}\n  }\n` : decl;
  });
  return `table ${t.family} ${t.name}\ndelete table ${t.family} ${t.name}\ntable ${t.family} ${t.name} {\n${sets}${chains}}\n`;
}

/**
 * Element-only change from `prev` to `next` (deletes first, then adds, one transaction), or
 * undefined when anything but elements differs. Adding one pod to 10,000 costs one element.
 */
/** Deleting many elements of an interval map one by one is far slower in the kernel than
 * rebuilding it (measured: 1,000 deletions from 30,000 elements took 16 s, a full replace
 * 0.6 s), so larger deletions fall back to a full replacement, which is atomic too. */
export const MAX_DELTA_DELETIONS = 64;

function renderDelta(prev: TableModel, next: TableModel): string | undefined {
  if (
    prev.family !== next.family ||
    prev.name !== next.name ||
    prev.chains !== next.chains ||
    prev.sets.length !== next.sets.length
  )
    return undefined;
  const lines: string[] = [];
  for (let i = 0; i < next.sets.length; i++) {
    const a = prev.sets[i]!;
    const b = next.sets[i]!;
    if (a.kind !== b.kind || a.name !== b.name || a.spec !== b.spec) return undefined;
    const had = new Set(a.elements);
    const has = new Set(b.elements);
    const removed = a.elements.filter((e) => !has.has(e));
    const added = b.elements.filter((e) => !had.has(e));
    if (b.replace) {
      if (removed.length + added.length === 0) continue;
      lines.push(`flush ${b.kind} ${next.family} ${next.name} ${b.name}`);
      if (b.elements.length > 0)
        lines.push(`add element ${next.family} ${next.name} ${b.name} { ${b.elements.join(", ")} }`);
      continue;
    }
    if (removed.length > MAX_DELTA_DELETIONS) return undefined;
    if (removed.length > 0)
      lines.push(`delete element ${next.family} ${next.name} ${b.name} { ${removed.join(", ")} }`);
    if (added.length > 0) lines.push(`add element ${next.family} ${next.name} ${b.name} { ${added.join(", ")} }`);
  }
  return lines.join("\n") + (lines.length > 0 ? "\n" : "");
}

function elementsClause(elements: readonly string[]): string {
  return elements.length === 0 ? "" : `    elements = { ${elements.join(",\n      ")} }\n`;
}

/**
 * The table as the kernel has it (nft's JSON listing without counter values), undefined if absent.
 * `--stateless` drops the anonymous counters' values but not the named counters' (nft 1.0.6), and
 * packets counted are no drift.
 */
async function listTable(kernel: Kernel, family: string, name: string): Promise<string | undefined> {
  const objects = await kernel.nftList(`table ${family} ${name}`, { stateless: true });
  return (
    objects &&
    JSON.stringify(
      objects.map((o) => (o.counter ? { counter: { ...(o.counter as object), packets: 0, bytes: 0 } } : o)),
    )
  );
}

export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * One nft table owned by an agent. Applies a model with the smallest atomic change (element
 * delta when only elements changed, full replacement otherwise) and, on `verify`, reads the
 * kernel back and replaces the table if anyone else changed it.
 */
export class OwnedTable {
  private applied: TableModel | undefined;
  /** The kernel's listing right after our last full apply; undefined after a delta. */
  private listing: string | undefined;

  constructor(
    private readonly kernel: Kernel,
    readonly family: "ip" | "inet" | "bridge",
    readonly name: string,
  ) {}

  /**
   * The packets of every named counter of the table, in one listing (empty when the table is not
   * there: nothing was dropped by it).
   */
  async counters(): Promise<Map<string, number>> {
    return new Map([...(await this.counts())].map(([name, c]) => [name, c.packets]));
  }

  /** Packets and bytes of every named counter of the table (empty when the table is not there). */
  private async counts(): Promise<Map<string, { packets: number; bytes: number }>> {
    try {
      const entries = ((await this.kernel.nftList(`counters table ${this.family} ${this.name}`)) ?? []) as {
        counter?: { name: string; packets: number; bytes: number };
      }[];
      return new Map(
        entries.flatMap((e) =>
          e.counter ? [[e.counter.name, { packets: e.counter.packets, bytes: e.counter.bytes }] as const] : [],
        ),
      );
    } catch {
      return new Map();
    }
  }

  /** Returns true when the kernel was changed. */
  async apply(model: TableModel, verify: boolean): Promise<boolean> {
    const change = await this.prepare(model, verify);
    if (change.script === "") return false;
    await this.kernel.nft(change.script);
    await change.commit();
    return true;
  }

  /**
   * The script that brings the kernel to `model` ("" when nothing changes), and what to record
   * once it is applied. Lets an owner of several tables change them in one transaction.
   */
  async prepare(
    model: TableModel,
    verify: boolean,
  ): Promise<{ script: string; full: boolean; commit: () => Promise<void> }> {
    if (verify) {
      const now = await listTable(this.kernel, this.family, this.name);
      if (now === undefined || this.listing === undefined || now !== this.listing) this.applied = undefined;
    }
    const delta = this.applied ? renderDelta(this.applied, model) : undefined;
    if (delta === "") return { script: "", full: false, commit: async () => undefined };
    const full = delta === undefined;
    return {
      // A full replacement (rare: structure changed, an agent restart, drift) carries the named
      // counters over, also those of a table an earlier agent process left; deltas keep them anyway.
      script: full ? renderFull(model, await this.counts()) : delta,
      full,
      commit: async () => {
        this.listing = full && verify ? await listTable(this.kernel, this.family, this.name) : undefined;
        this.applied = model;
      },
    };
  }

  async remove(): Promise<void> {
    await this.kernel.nft(`table ${this.family} ${this.name}\ndelete table ${this.family} ${this.name}\n`);
    this.applied = undefined;
    this.listing = undefined;
  }
}
