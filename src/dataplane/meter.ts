import { createHash } from "node:crypto";
import type { CommandRunner } from "../util/exec.js";
import { commandKernel } from "./kernel.js";

/**
 * Traffic metering on a gateway, counted by the kernel: one named nft counter per (policy,
 * egress IP, direction), picked for each packet of an SNATed connection by the address it was
 * SNATed to (`ct reply ip daddr`, which is that address for both directions and every packet,
 * the first one included, once the NAT hook has run).
 *
 * The counters live in a table of their own that is never replaced: the gateway's main table is
 * rebuilt whenever its rules change (and on every agent start), which would zero them. Here the
 * agent only adds and deletes counters and map elements, so the kernel keeps counting across
 * agent restarts and an agent that starts again reads the same values (no packet is counted
 * twice). A counter starts from zero only when it is new: its IP or policy is new to this
 * instance, or the host rebooted; Prometheus sees that as a counter reset.
 */
const METER_TABLE = "static_egress_meter";

export type Direction = "out" | "in";
const DIRECTIONS: readonly Direction[] = ["out", "in"];

/** One metered egress IP of this instance: its policy and the address packets are SNATed to (the egress IP, or the anchor behind a 1:1 NAT). */
export interface MeterRow {
  policy: string;
  egressIP: string;
  snatAddress: string;
  /** The App whose dedicated egress the policy is, if any (its usage). */
  app?: string;
}

export interface MeterReading {
  policy: string;
  egressIP: string;
  direction: Direction;
  packets: number;
  bytes: number;
  app?: string;
  /**
   * When the kernel counter was created (its comment): the counts are since then. A new counter
   * (host rebooted, IP new to the instance or given to another policy) has a new `since`, so a
   * reader tells a counter that started again from one that went on. Absent for counters made
   * before counters carried it.
   */
  since?: string;
}

/** A counter's comment: when it was created. */
const SINCE = "since ";

/** After SNAT (priority srcnat = 100), so that the translation is known for the first packet too. */
const CHAIN = "count_egress";
/** The rules as `nft` prints them back (compared on verify). */
export const METER_RULES: Record<Direction, string> = {
  out: "ct status snat ct direction original counter name ct reply ip daddr map @meter_out",
  in: "ct status snat ct direction reply counter name ct reply ip daddr map @meter_in",
};

/** Stable per (policy, egress IP): a restarted agent finds its counters; an IP moved to another policy gets a new one. */
export function counterName(direction: Direction, row: Pick<MeterRow, "policy" | "egressIP">): string {
  return `${direction}_${createHash("sha256").update(`${row.policy}\0${row.egressIP}`).digest("hex").slice(0, 16)}`;
}

interface Kernel {
  present: boolean;
  counters: Set<string>;
  elements: Record<Direction, Map<string, string>>;
  rules: string[];
}

/**
 * What to change in the kernel to meter `rows` (one transaction; "" when nothing changes). New
 * counters carry `createdAt` in their comment (`since <time>`); existing ones are never touched.
 */
export function meterScript(
  rows: readonly MeterRow[],
  now: Kernel,
  table = METER_TABLE,
  createdAt = new Date().toISOString(),
): string {
  const want = wanted(rows);
  const t = `ip ${table}`;
  const comment = `comment "${SINCE}${createdAt}"`;
  if (!now.present) {
    const counters = [...want.counters].map((c) => `  counter ${c} {\n    ${comment}\n  }\n`).join("");
    const map = (d: Direction) => {
      const e = [...want.elements[d]].map(([k, v]) => `${k} : "${v}"`);
      return `  map meter_${d} {\n    type ipv4_addr : counter;\n${e.length ? `    elements = { ${e.join(", ")} }\n` : ""}  }\n`;
    };
    return (
      `table ${t} {\n${counters}${map("out")}${map("in")}  chain ${CHAIN} {\n    ` +
      `type filter hook postrouting priority srcnat + 10; policy accept;\n` +
      `    ${METER_RULES.out}\n    ${METER_RULES.in}\n  }\n}\n`
    );
  }
  const lines: string[] = [];
  for (const d of DIRECTIONS) {
    const gone = [...now.elements[d]].filter(([k, v]) => want.elements[d].get(k) !== v).map(([k]) => k);
    if (gone.length) lines.push(`delete element ${t} meter_${d} { ${gone.join(", ")} }`);
  }
  // Elements first: a counter a map element points at cannot be deleted.
  for (const c of now.counters) if (!want.counters.has(c)) lines.push(`delete counter ${t} ${c}`);
  for (const c of want.counters) if (!now.counters.has(c)) lines.push(`add counter ${t} ${c} { ${comment}; }`);
  for (const d of DIRECTIONS) {
    const added = [...want.elements[d]]
      .filter(([k, v]) => now.elements[d].get(k) !== v)
      .map(([k, v]) => `${k} : "${v}"`);
    if (added.length) lines.push(`add element ${t} meter_${d} { ${added.join(", ")} }`);
  }
  if (now.rules.join("\n") !== [METER_RULES.out, METER_RULES.in].join("\n")) {
    lines.push(
      `flush chain ${t} ${CHAIN}`,
      `add rule ${t} ${CHAIN} ${METER_RULES.out}`,
      `add rule ${t} ${CHAIN} ${METER_RULES.in}`,
    );
  }
  if (lines.length === 0) return "";
  // Declarations are idempotent: they restore a map or the chain someone deleted, and change nothing otherwise.
  const declare = DIRECTIONS.map((d) => `add map ${t} meter_${d} { type ipv4_addr : counter; }`);
  declare.push(`add chain ${t} ${CHAIN} { type filter hook postrouting priority srcnat + 10; policy accept; }`);
  return [...declare, ...lines].join("\n") + "\n";
}

function wanted(rows: readonly MeterRow[]): {
  counters: Set<string>;
  elements: Record<Direction, Map<string, string>>;
} {
  const counters = new Set<string>();
  const elements: Record<Direction, Map<string, string>> = { out: new Map(), in: new Map() };
  for (const row of rows) {
    // One counter per SNAT address: behind a 1:1 NAT an instance has one address (the anchor), and one egress IP.
    if (elements.out.has(row.snatAddress)) continue;
    for (const d of DIRECTIONS) {
      counters.add(counterName(d, row));
      elements[d].set(row.snatAddress, counterName(d, row));
    }
  }
  return { counters, elements };
}

type NftJson = {
  nftables: {
    counter?: { name: string; packets: number; bytes: number; comment?: string };
    map?: { name: string; elem?: [string, string][] };
    rule?: { chain: string };
  }[];
};

export class MeterTable {
  /** counter name -> what it counts (from the last apply). */
  private labels = new Map<string, Omit<MeterReading, "packets" | "bytes">>();

  constructor(
    private readonly runner: CommandRunner,
    readonly table = METER_TABLE,
  ) {}

  /** Brings the kernel's counters and maps to `rows`, keeping every counter that stays. Returns true when it changed anything. */
  async apply(rows: readonly MeterRow[]): Promise<boolean> {
    const script = meterScript(rows, await this.read(), this.table);
    if (script !== "") await commandKernel(this.runner).nft(script);
    this.labels = new Map();
    const seen = new Set<string>();
    for (const row of rows) {
      if (seen.has(row.snatAddress)) continue;
      seen.add(row.snatAddress);
      for (const direction of DIRECTIONS)
        this.labels.set(counterName(direction, row), {
          policy: row.policy,
          egressIP: row.egressIP,
          direction,
          ...(row.app ? { app: row.app } : {}),
        });
    }
    return script !== "";
  }

  /** Every metered (policy, egress IP, direction) with the kernel's counts, in one `nft` listing. */
  async readings(): Promise<MeterReading[]> {
    let json: NftJson;
    try {
      json = JSON.parse(
        (await this.runner.run("nft", ["-j", "list", "counters", "table", "ip", this.table])).stdout,
      ) as NftJson;
    } catch {
      return [];
    }
    return json.nftables.flatMap((e) => {
      const l = e.counter ? this.labels.get(e.counter.name) : undefined;
      if (!e.counter || !l) return [];
      const since = e.counter.comment?.startsWith(SINCE) ? e.counter.comment.slice(SINCE.length) : undefined;
      return [{ ...l, packets: e.counter.packets, bytes: e.counter.bytes, ...(since ? { since } : {}) }];
    });
  }

  private async read(): Promise<Kernel> {
    const empty: Kernel = {
      present: false,
      counters: new Set(),
      elements: { out: new Map(), in: new Map() },
      rules: [],
    };
    let stdout: string;
    try {
      ({ stdout } = await this.runner.run("nft", ["-j", "list", "table", "ip", this.table]));
    } catch (e) {
      if (/No such file or directory/.test(String((e as Error).message))) return empty;
      throw e;
    }
    if (!stdout.trim()) return empty;
    const json = JSON.parse(stdout) as NftJson;
    const now: Kernel = { ...empty, present: true };
    for (const e of json.nftables) {
      if (e.counter) now.counters.add(e.counter.name);
      if (e.map?.name === "meter_out" || e.map?.name === "meter_in")
        now.elements[e.map.name === "meter_out" ? "out" : "in"] = new Map(e.map.elem ?? []);
    }
    // The rules in nft's own words (the JSON form would need a translation of its own).
    const chain = await this.runner
      .run("nft", ["--stateless", "list", "chain", "ip", this.table, CHAIN])
      .catch(() => ({ stdout: "" }));
    now.rules = chain.stdout
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l.startsWith("ct "));
    if (!chain.stdout) now.rules = ["(chain missing)"];
    return now;
  }

  async remove(): Promise<void> {
    await commandKernel(this.runner).nft(`table ip ${this.table}\ndelete table ip ${this.table}\n`);
    this.labels = new Map();
  }
}
