import { formatRange, parseCidr, parseIPv4, type Range } from "../util/ipv4.js";
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
 * 0.6 s), so larger deletions from an interval set fall back to a full replacement, which is
 * atomic too. A plain hash set or map deletes in constant time per element (1,000 pods from the
 * node's `pod_class`: 0.02 s): no cap. */
export const MAX_DELTA_DELETIONS = 64;

/** Whether deleting `count` elements from this set is too many for one delta (`MAX_DELTA_DELETIONS`). */
function tooManyDeletions(set: { spec: string }, count: number): boolean {
  return count > MAX_DELTA_DELETIONS && /\bflags [^;]*\binterval\b/.test(set.spec);
}

/**
 * Each set's elements as last applied, each with the stamp of the last delta that saw it in its
 * next model: a delta looks every next element up once and builds nothing of the set's size.
 */
type ElementIndex = Map<string, Map<string, number>>;

let stamps = 0;

function renderDelta(
  prev: TableModel,
  next: TableModel,
  prevIndex?: ElementIndex,
):
  | {
      prelude: string;
      script: string;
      index: ElementIndex;
      changes: { set: string; added: string[]; removed: string[] }[];
    }
  | undefined {
  if (prev.family !== next.family || prev.name !== next.name) return undefined;
  const structure = structureDelta(prev, next);
  if (!structure) return undefined;
  const lines: string[] = [];
  const index: ElementIndex = new Map();
  const changes: { set: string; added: string[]; removed: string[] }[] = [];
  const prevSets = new Map(prev.sets.map((s) => [s.name, s]));
  for (const b of next.sets) {
    const a = prevSets.get(b.name);
    if (!a) continue; // a set of its own: written whole with its chain (structure.before)
    if (a.kind !== b.kind || a.spec !== b.spec) return undefined;
    const had = prevIndex?.get(a.name) ?? new Map(a.elements.map((e) => [e, 0]));
    index.set(b.name, had);
    // Stamp what the next model still has; what is left unstamped was removed.
    const stamp = ++stamps;
    let kept = 0;
    const added: string[] = [];
    for (const e of b.elements) {
      const seen = had.get(e);
      if (seen === undefined) added.push(e);
      else if (seen !== stamp) {
        had.set(e, stamp);
        kept++;
      }
    }
    const removed = kept === had.size ? [] : a.elements.filter((e) => had.get(e) !== stamp);
    if (removed.length + added.length > 0) changes.push({ set: b.name, added, removed });
    if (b.replace) {
      if (removed.length + added.length === 0) continue;
      lines.push(renderRewrite(next.family, next.name, b).trimEnd());
      continue;
    }
    if (tooManyDeletions(b, removed.length)) return undefined;
    if (removed.length > 0)
      lines.push(`delete element ${next.family} ${next.name} ${b.name} { ${removed.join(", ")} }`);
    if (added.length > 0) lines.push(`add element ${next.family} ${next.name} ${b.name} { ${added.join(", ")} }`);
  }
  lines.push(...structure.after);
  for (const b of next.sets) if (!prevSets.has(b.name)) index.set(b.name, new Map(b.elements.map((e) => [e, 0])));
  return { prelude: structure.before, script: lines.join("\n") + (lines.length > 0 ? "\n" : ""), index, changes };
}

/** The blocks of a model's chains text: `counter x {..}` and `chain x {..}`, by kind and name. */
function chainBlocks(chains: string): Map<string, string> | undefined {
  const blocks = new Map<string, string>();
  const re = /^ {2}(chain|counter) (\S+) \{\n[\s\S]*?^ {2}\}\n/gm;
  let at = 0;
  for (let m = re.exec(chains); m; m = re.exec(chains)) {
    if (m.index !== at) return undefined; // text between blocks: not ours to split
    blocks.set(`${m[1]} ${m[2]}`, m[0]);
    at = m.index + m[0].length;
  }
  return at === chains.length ? blocks : undefined;
}

/**
 * The structure a delta may change: regular chains (no hook) added or removed whole, with sets
 * added or removed whole (the node's divert classes: a chain and its map). Everything both models
 * have must be the same. `before` creates what is new, as a transaction of its own ahead of the
 * delta: the kernel fills a new interval map only as its transaction ends (as a replaced table's,
 * "Full replacements go through a handover table" in docs/design.md), so an element that jumps to
 * it must come in a later transaction (a lab test counted 4 unmarked packets of a pod moved to a
 * class made in the same transaction). Nothing refers to what `before` makes until then; it is
 * idempotent (declared, flushed, filled), so a delta that failed after it can be written again.
 * `after` removes what went, after the elements that referred to it, in the delta's transaction.
 * Undefined when anything else differs (a full replacement).
 */
function structureDelta(prev: TableModel, next: TableModel): { before: string; after: string[] } | undefined {
  if (prev.chains === next.chains && prev.sets.map((s) => s.name).join() === next.sets.map((s) => s.name).join())
    return { before: "", after: [] };
  const was = chainBlocks(prev.chains);
  const now = chainBlocks(next.chains);
  if (!was || !now) return undefined;
  const plain = (block: string) => block.startsWith("  chain ") && !/^ {4}type \w+ hook /m.test(block);
  for (const [key, block] of now) if (was.has(key) ? was.get(key) !== block : !plain(block)) return undefined;
  for (const [key, block] of was) if (!now.has(key) && !plain(block)) return undefined;
  // Common blocks keep their order (rules are compared as text; the order of chains is not).
  const prevSets = new Set(prev.sets.map((s) => s.name));
  const nextSets = new Set(next.sets.map((s) => s.name));
  const newSets = next.sets.filter((s) => !prevSets.has(s.name));
  const newChains = [...now].filter(([key]) => !was.has(key));
  const t = `${next.family} ${next.name}`;
  const before =
    newSets.length + newChains.length === 0
      ? ""
      : `table ${t} {\n` +
        newSets.map((s) => `  ${s.kind} ${s.name} {\n    ${s.spec}\n  }\n`).join("") +
        newChains.map(([key]) => `  ${key} {\n  }\n`).join("") +
        "}\n" +
        newSets.map((s) => `flush ${s.kind} ${t} ${s.name}\n`).join("") +
        newChains.map(([key]) => `flush chain ${t} ${key.slice("chain ".length)}\n`).join("") +
        `table ${t} {\n` +
        newSets.map((s) => `  ${s.kind} ${s.name} {\n    ${s.spec}\n${elementsClause(s.elements)}  }\n`).join("") +
        newChains.map(([, block]) => block).join("") +
        "}\n";
  const after = [
    ...[...was.keys()]
      .filter((key) => !now.has(key))
      .flatMap((key) => {
        const name = key.slice("chain ".length);
        return [`flush chain ${next.family} ${next.name} ${name}`, `delete chain ${next.family} ${next.name} ${name}`];
      }),
    ...prev.sets
      .filter((s) => !nextSets.has(s.name))
      .map((s) => `delete ${s.kind} ${next.family} ${next.name} ${s.name}`),
  ];
  return { before, after };
}

/** One set or map rewritten whole: flushed and filled again (within the caller's transaction). */
export function renderRewrite(family: string, table: string, set: TableModel["sets"][number]): string {
  return (
    `flush ${set.kind} ${family} ${table} ${set.name}\n` +
    (set.elements.length > 0 ? `add element ${family} ${table} ${set.name} { ${set.elements.join(", ")} }\n` : "")
  );
}

function elementsClause(elements: readonly string[]): string {
  return elements.length === 0 ? "" : `    elements = { ${elements.join(",\n      ")} }\n`;
}

/**
 * The table as the kernel has it, undefined if absent: its structure (nft's JSON listing without
 * set elements or counter values) and each set's elements in one canonical form (`elementKey`).
 * `--stateless` drops the anonymous counters' values but not the named counters' (nft 1.0.6), and
 * packets counted are no drift.
 */
async function listTable(
  kernel: Kernel,
  family: string,
  name: string,
  opts: { terse?: boolean } = {},
): Promise<TableListing | undefined> {
  const objects = await kernel.nftList(`table ${family} ${name}`, { stateless: true, ...opts });
  if (!objects) return undefined;
  const elements = new Map<string, Set<string>>();
  // Handles change with every replacement; what a table does does not.
  const structure = objects.map((o) => {
    const [kind, body] = Object.entries(o)[0] ?? ["", {}];
    const { handle: _handle, elem, ...rest } = body as { handle?: number; elem?: unknown[]; name?: string };
    if (kind === "counter") return { counter: { ...rest, packets: 0, bytes: 0 } };
    if (kind === "set" || kind === "map") elements.set(String(rest.name), new Set((elem ?? []).map(kernelElementKey)));
    return { [kind]: rest };
  });
  // In one order whatever built the table: the kernel lists objects in the order they were made
  // (a chain a delta added comes last), which is no drift; rules keep their order within a chain.
  const order = (o: Record<string, unknown>) => {
    const [kind, body] = Object.entries(o)[0]!;
    const b = body as { name?: string; chain?: string };
    return `${kind}\u0000${b.chain ?? b.name ?? ""}`;
  };
  const keyed = structure.map((o) => [order(o), o] as const);
  keyed.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { structure: JSON.stringify(keyed.map(([, o]) => o)), elements };
}

/** Names of the chains and sets one model has and the other has not. */
function touchedNames(a: TableModel, b: TableModel): Set<string> {
  const names = (t: TableModel) =>
    new Set([...t.sets.map((s) => s.name), ...[...(chainBlocks(t.chains)?.keys() ?? [])].map((k) => k.split(" ")[1]!)]);
  const x = names(a);
  const y = names(b);
  return new Set([...x, ...y].filter((n) => !x.has(n) || !y.has(n)));
}

/** A listing's structure without the chains, sets and rules of `touched` names. */
function untouched(structure: string, touched: ReadonlySet<string>): string {
  const objects = JSON.parse(structure) as Record<string, { name?: string; chain?: string }>[];
  return JSON.stringify(
    objects.filter((o) => {
      const [kind, body] = Object.entries(o)[0]!;
      const name = kind === "rule" ? body.chain : kind === "counter" ? undefined : body.name;
      return name === undefined || !touched.has(name);
    }),
  );
}

interface TableListing {
  structure: string;
  elements: Map<string, Set<string>>;
}

/**
 * One element of ours (`10.0.0.1 . 198.51.100.0-198.51.100.199 : 0x1`) in the one form both it and
 * nft's listing of it (`kernelElementKey`) take: addresses and ranges as `formatRange` writes them
 * (nft prints a range that is a prefix as one), numbers in decimal, names unquoted.
 */
function elementKey(text: string): string {
  const [key, value] = splitOnce(text, " : ");
  const parts = key.split(" . ").map(textPart);
  return value === undefined ? parts.join(" . ") : `${parts.join(" . ")} : ${textPart(value)}`;
}

function splitOnce(text: string, sep: string): [string, string | undefined] {
  const at = text.indexOf(sep);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + sep.length)];
}

function textPart(part: string): string {
  const p = part.trim();
  if (p.startsWith('"') && p.endsWith('"')) return p.slice(1, -1);
  if (/^(?:0x[0-9a-f]+|\d+)$/i.test(p)) return String(Number(p));
  if (/^[\d.]+\/\d+$/.test(p)) return formatRange(parseCidr(p));
  return p;
}

/** An element of nft's JSON listing in `elementKey`'s form; 30,000 of them per verify, so plain string work. */
function kernelElementKey(e: unknown): string {
  if (Array.isArray(e)) return `${kernelPart(e[0])} : ${kernelPart(e[1])}`;
  return kernelPart(e);
}

function kernelPart(p: unknown): string {
  if (typeof p === "string") return p;
  if (typeof p === "number") return String(p);
  const o = (p ?? {}) as Record<string, unknown>;
  if (Array.isArray(o.concat)) return o.concat.map(kernelPart).join(" . ");
  if (o.prefix || o.range) return formatRange(nftRange(o));
  if (o.elem) return kernelPart((o.elem as { val: unknown }).val);
  // A verdict: {"accept": null}, {"goto": {"target": "x"}}.
  const [verdict, arg] = Object.entries(o)[0] ?? ["?", null];
  const target = (arg as { target?: string } | null)?.target;
  return target === undefined ? verdict : `${verdict} ${target}`;
}

/** An interval of nft's JSON listing (an address, `{prefix}` or `{range}`) as a range. */
export function nftRange(v: unknown): Range {
  if (typeof v === "string") return { from: parseIPv4(v), to: parseIPv4(v) };
  const o = v as { prefix?: { addr: string; len: number }; range?: [string, string] };
  if (o?.prefix) return parseCidr(`${o.prefix.addr}/${o.prefix.len}`);
  if (o?.range) return { from: parseIPv4(o.range[0]), to: parseIPv4(o.range[1]) };
  throw new Error(`not an address interval in an nft listing: ${JSON.stringify(v)}`);
}

/** What decides a table's structure: its chains and set declarations, not their elements. */
function shapeOf(t: TableModel): string {
  return JSON.stringify([t.family, t.name, t.chains, t.sets.map((s) => [s.kind, s.name, s.spec])]);
}

/**
 * Whether the kernel's elements are exactly the model's, set by set. `keys` remembers each
 * element's canonical form between verifies (most elements stay from one to the next).
 */
function sameElements(model: TableModel, kernel: TableListing, keys: Map<string, string>): boolean {
  const same = model.sets.every((s) => {
    const held = kernel.elements.get(s.name);
    if (!held || held.size !== new Set(s.elements).size) return false;
    return s.elements.every((e) => {
      let key = keys.get(e);
      if (key === undefined) keys.set(e, (key = elementKey(e)));
      return held.has(key);
    });
  });
  const total = model.sets.reduce((n, s) => n + s.elements.length, 0);
  if (keys.size > 2 * total + 1024) {
    const current = new Set(model.sets.flatMap((s) => s.elements));
    for (const e of keys.keys()) if (!current.has(e)) keys.delete(e);
  }
  return same;
}

export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * One nft table owned by an agent. Applies a model with the smallest atomic change (element
 * delta when only elements changed, full replacement otherwise) and, on `verify`, reads the
 * kernel back and replaces the table if anyone else changed it: its structure against the
 * listing after our last full apply, its elements against what our deltas since left (so a
 * verify after deltas costs a listing, not a replacement).
 */
export class OwnedTable {
  private applied: TableModel | undefined;
  /**
   * The kernel's structure (no elements, no handles) for each shape of model (chains and set
   * declarations) read after a full apply: a later replacement with the same shape (a bulk
   * removal) needs no second listing to be verified.
   */
  private readonly structures = new Map<string, string>();
  private readonly elementKeys = new Map<string, string>();
  /** Each set's elements of `applied`, once a delta indexed them (the next delta's starting point). */
  private appliedIndex: ElementIndex | undefined;
  /** Sets of `applied` whose elements a partial delta changed: their true elements are the index's. */
  private readonly stale = new Set<string>();

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
    if (change.prelude + change.script === "") return false;
    if (change.prelude !== "") await this.kernel.nft(change.prelude);
    if (change.script !== "") await this.kernel.nft(change.script);
    await change.commit();
    return true;
  }

  /**
   * The scripts that bring the kernel to `model` (both "" when nothing changes), and what to
   * record once they are applied. Lets an owner of several tables change them in one transaction.
   */
  async prepare(
    model: TableModel,
    verify: boolean,
  ): Promise<{
    /** New chains and sets a delta makes, in a transaction of their own first ("" for none; `structureDelta`). */
    prelude: string;
    /** The rest of the change, one transaction after the prelude. */
    script: string;
    full: boolean;
    replaces: boolean;
    commit: () => Promise<void>;
  }> {
    this.materialize();
    // Whether a full apply replaces a table the kernel holds (unknown without a listing: assume so).
    let replaces = true;
    if (verify) {
      const now = await listTable(this.kernel, this.family, this.name);
      replaces = now !== undefined;
      const intact =
        now !== undefined &&
        this.applied !== undefined &&
        now.structure === this.structures.get(shapeOf(this.applied)) &&
        sameElements(this.applied, now, this.elementKeys);
      if (!intact) {
        this.applied = undefined;
        this.appliedIndex = undefined;
      }
    }
    const rendered = this.applied ? renderDelta(this.applied, model, this.appliedIndex) : undefined;
    const delta = rendered ? rendered.prelude + rendered.script : undefined;
    if (delta === "") {
      // Unchanged: the index holds the applied elements as they are.
      this.appliedIndex = rendered!.index;
      return { script: "", prelude: "", full: false, replaces, commit: async () => undefined };
    }
    const full = delta === undefined;
    // A delta that added or removed chains and sets (the node's divert classes) made a new shape:
    // the structure it started from, and the names it touched.
    const was = this.applied;
    const reshaped =
      !full && was && shapeOf(model) !== shapeOf(was)
        ? { from: this.structures.get(shapeOf(was)), touched: touchedNames(was, model) }
        : undefined;
    return {
      // A full replacement (rare: structure changed, an agent restart, drift) carries the named
      // counters over, also those of a table an earlier agent process left; deltas keep them anyway.
      script: full ? renderFull(model, replaces ? await this.counts() : new Map()) : rendered!.script,
      prelude: full ? "" : rendered!.prelude,
      full,
      replaces,
      commit: async () => {
        // A new shape's structure is read on verify (until then the next verify replaces the table
        // again: it cannot tell drift from ours), or after a delta that changed it.
        const shape = shapeOf(model);
        if (full && verify && !this.structures.has(shape)) {
          const read = await listTable(this.kernel, this.family, this.name, { terse: true });
          if (this.structures.size >= 8) this.structures.clear();
          if (read) this.structures.set(shape, read.structure);
        } else if (reshaped?.from !== undefined && !this.structures.has(shape)) {
          // A reshaping delta's structure is read at once, and kept only if all it did not touch
          // is as the verified structure it started from (no drift of before is adopted as ours).
          const read = await listTable(this.kernel, this.family, this.name, { terse: true });
          if (read && untouched(read.structure, reshaped.touched) === untouched(reshaped.from, reshaped.touched)) {
            if (this.structures.size >= 8) this.structures.clear();
            this.structures.set(shape, read.structure);
          }
        }
        this.applied = model;
        // The index follows the kernel only once it took the delta.
        if (rendered) {
          for (const c of rendered.changes) {
            const held = rendered.index.get(c.set)!;
            for (const e of c.removed) held.delete(e);
            for (const e of c.added) held.set(e, 0);
          }
        }
        this.appliedIndex = rendered?.index;
      },
    };
  }

  async remove(): Promise<void> {
    await this.kernel.nft(`table ${this.family} ${this.name}\ndelete table ${this.family} ${this.name}\n`);
    this.applied = undefined;
    this.appliedIndex = undefined;
    this.stale.clear();
  }

  /**
   * A change of a few elements named by the caller, without a whole model (a node agent's fast
   * path for one pod: building and diffing a 30,000-element model is what it avoids): `deltas`
   * add and delete elements of sets, `whole` sets (small ones) are rewritten if they differ from
   * what was applied. Undefined, with nothing changed, when it cannot be a delta from what this
   * table knows it applied: no indexed apply yet, an unknown set, a deletion of an element not
   * there or an addition of one that is (the caller then applies the whole model).
   */
  preparePartial(
    deltas: readonly { set: string; added: readonly string[]; removed: readonly string[] }[],
    whole: TableModel["sets"] = [],
  ): { script: string; commit: () => void } | undefined {
    const applied = this.applied;
    if (!applied) return undefined;
    // After a full apply the sets are not indexed yet: indexed once, as a delta would.
    const index =
      this.appliedIndex ?? new Map(applied.sets.map((s) => [s.name, new Map(s.elements.map((e) => [e, 0]))]));
    const lines: string[] = [];
    const declared = (name: string) => applied.sets.find((s) => s.name === name);
    for (const d of deltas) {
      const held = index.get(d.set);
      const set = declared(d.set);
      if (!held || !set || set.replace || tooManyDeletions(set, d.removed.length)) return undefined;
      if (d.removed.some((e) => !held.has(e)) || d.added.some((e) => held.has(e))) return undefined;
      if (new Set(d.added).size !== d.added.length || new Set(d.removed).size !== d.removed.length) return undefined;
      if (d.removed.length > 0)
        lines.push(`delete element ${this.family} ${this.name} ${d.set} { ${d.removed.join(", ")} }`);
      if (d.added.length > 0) lines.push(`add element ${this.family} ${this.name} ${d.set} { ${d.added.join(", ")} }`);
    }
    const rewritten: TableModel["sets"] = [];
    for (const w of whole) {
      const held = index.get(w.name);
      const set = declared(w.name);
      if (!held || !set || set.kind !== w.kind || set.spec !== w.spec || !w.replace) return undefined;
      const same = held.size === new Set(w.elements).size && w.elements.every((e) => held.has(e));
      if (same) continue;
      lines.push(renderRewrite(this.family, this.name, w).trimEnd());
      rewritten.push(w);
    }
    return {
      script: lines.join("\n") + (lines.length > 0 ? "\n" : ""),
      commit: () => {
        // Only once the kernel took it (like `prepare`'s commit).
        this.appliedIndex = index;
        for (const d of deltas) {
          const held = index.get(d.set)!;
          for (const e of d.removed) held.delete(e);
          for (const e of d.added) held.set(e, 0);
          if (d.removed.length + d.added.length > 0) this.stale.add(d.set);
        }
        for (const w of rewritten) {
          index.set(w.name, new Map(w.elements.map((e) => [e, 0])));
          this.stale.add(w.name);
        }
      },
    };
  }

  /** `applied` with the elements partial deltas left (from the index), before anything reads them. */
  private materialize(): void {
    if (this.stale.size === 0) return;
    const applied = this.applied;
    const index = this.appliedIndex;
    if (applied && index)
      this.applied = {
        ...applied,
        sets: applied.sets.map((s) =>
          this.stale.has(s.name) ? { ...s, elements: [...index.get(s.name)!.keys()] } : s,
        ),
      };
    this.stale.clear();
  }
}
