import { formatIPv4, parseIPv4 } from "../util/ipv4.js";
import type { CommandRunner } from "../util/exec.js";

/**
 * SNAT capacity read from conntrack. An SNATed connection's reply tuple is
 * (destination → SNAT address : SNAT port); every connection to the same destination
 * (address, port, protocol) from one SNAT address needs its own port, so the entries per
 * (SNAT address, destination) are the ports in use out of the configured range.
 *
 * Cost: one `conntrack -L --src-nat` (a netlink dump of the whole table, SNATed entries printed:
 * 144 bytes of text each) per read, O(entries): 20,000 entries took 0.54-0.66 s with parsing on a
 * busy 2-core machine; callers bound how often it runs. Text output: conntrack-tools has no JSON
 * output, and its XML is three times longer.
 */
export interface SnatEntry {
  proto: string;
  /** The far end as the reply tuple has it. */
  destination: string;
  destinationPort: number | undefined;
  /** The address the connection was SNATed to, and the port it got. */
  snatAddress: string;
  snatPort: number | undefined;
}

/** One line of `conntrack -L` text: the first src/dst/sport/dport are the original tuple, the second the reply tuple. */
export function parseConntrackLine(line: string): SnatEntry | undefined {
  const tokens = line.trim().split(/\s+/);
  const proto = tokens[0];
  if (!proto) return undefined;
  const seen = new Map<string, number>();
  const reply: Record<string, string> = {};
  for (const t of tokens) {
    const eq = t.indexOf("=");
    if (eq <= 0) continue;
    const key = t.slice(0, eq);
    const n = (seen.get(key) ?? 0) + 1;
    seen.set(key, n);
    if (n === 2) reply[key] = t.slice(eq + 1);
  }
  if (!reply.src || !reply.dst) return undefined;
  const port = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return {
    proto,
    destination: reply.src,
    destinationPort: port(reply.sport),
    snatAddress: reply.dst,
    snatPort: port(reply.dport),
  };
}

export interface SnatUsage {
  /** SNAT address -> conntrack entries. */
  entries: Map<string, number>;
  /** SNAT address -> `ip:port/proto` (TCP, UDP, SCTP...) -> ports in use, every destination. */
  ports: Map<string, Map<string, number>>;
}

export function summarize(entries: Iterable<SnatEntry>, addresses: ReadonlySet<string>): SnatUsage {
  const usage: SnatUsage = { entries: new Map(), ports: new Map() };
  for (const e of entries) {
    if (!addresses.has(e.snatAddress)) continue;
    usage.entries.set(e.snatAddress, (usage.entries.get(e.snatAddress) ?? 0) + 1);
    if (e.destinationPort === undefined || e.snatPort === undefined) continue;
    const key = `${e.destination}:${e.destinationPort}/${e.proto}`;
    const per = usage.ports.get(e.snatAddress) ?? new Map<string, number>();
    per.set(key, (per.get(key) ?? 0) + 1);
    usage.ports.set(e.snatAddress, per);
  }
  return usage;
}

/** The SNATed connections of the host's conntrack table, for these SNAT addresses. */
export async function readSnatUsage(runner: CommandRunner, addresses: ReadonlySet<string>): Promise<SnatUsage> {
  if (addresses.size === 0) return { entries: new Map(), ports: new Map() };
  const { stdout } = await runner.run("conntrack", ["-L", "--src-nat"]);
  return summarize(
    stdout.split("\n").flatMap((l) => parseConntrackLine(l) ?? []),
    addresses,
  );
}

/** The `top` destinations with the most ports in use (what metrics export: destinations are unbounded). */
export function busiest(ports: ReadonlyMap<string, number>, top: number): [string, number][] {
  return [...ports].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, top);
}

/**
 * The fewest aligned address blocks (`address/prefix`, prefix 16 to 32) that together hold every
 * address of `targets` and no other address of `keep`, for deleting the flows of many sources at once: each
 * `conntrack -D` filter is one walk of the whole conntrack hash table (~6 ms at 262,144 buckets
 * on a 2-core VM, whatever it matches), so 1,000 removed pods of one node's contiguous range
 * cost a few walks, not 1,000. Addresses in neither list may be covered: callers add a filter
 * (the diverted-flow mark) that leaves other sources' flows alone.
 */
export function sourceBlocks(targets: Iterable<string>, keep: Iterable<string>): { address: string; prefix: number }[] {
  const t = [...new Set([...targets].map(parseIPv4))].sort((a, b) => a - b);
  const targetSet = new Set(t);
  // A target also listed as kept (a pod re-routed, still diverted) is a target: its flows go.
  // Deduplicated as text first: callers pass one address per map entry (30,000 for 10,000 pods).
  const k = [...new Set(keep)]
    .map(parseIPv4)
    .filter((a) => !targetSet.has(a))
    .sort((a, b) => a - b);
  const out: { address: string; prefix: number }[] = [];
  /** Whether any kept address lies in [from, to] (binary search over the sorted keep list). */
  const keeps = (from: number, to: number) => {
    let lo = 0;
    let hi = k.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (k[mid]! < from) lo = mid + 1;
      else hi = mid;
    }
    return lo < k.length && k[lo]! <= to;
  };
  let i = 0;
  while (i < t.length) {
    const a = t[i]!;
    let prefix = 32;
    for (let p = 31; p >= 16; p--) {
      const size = 2 ** (32 - p);
      const from = a - (a % size);
      if (keeps(from, from + size - 1)) break;
      prefix = p;
    }
    const size = 2 ** (32 - prefix);
    const from = a - (a % size);
    out.push({ address: formatIPv4(from), prefix });
    while (i < t.length && t[i]! < from + size) i++;
  }
  return out;
}
