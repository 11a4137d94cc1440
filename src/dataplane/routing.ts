import type { Kernel } from "./kernel.js";

/**
 * Policy routing through `ip -json` (read) and `ip -batch` (write). Rules and routes have no
 * transactions, so changes go in the order that never opens a gap: add or replace what is
 * missing first, remove what is stale last (as cilium's egress gateway does).
 */

export interface RuleSpec {
  priority: number;
  /** Only packets to this prefix (`a.b.c.d/len`). */
  to?: string;
  fwmark: number;
  mask: number;
  /** Lookup this table, or drop the packet (`blackhole`). */
  action: { table: number | "main" } | "blackhole";
}

export interface RouteSpec {
  table: number | "main";
  dst: string; // "default" or a CIDR
  kind: "via" | "blackhole";
  via?: string;
  /** With `via`: a next hop on this device, taken as on-link (a tunnel's inner next hop). */
  onlinkDev?: string;
  /** Routes in shared tables (main) are owned by their protocol number. */
  proto?: number;
}

function ruleLine(r: RuleSpec): string {
  const action = r.action === "blackhole" ? "blackhole" : `lookup ${r.action.table}`;
  return `rule add priority ${r.priority}${r.to ? ` to ${r.to}` : ""} fwmark 0x${r.fwmark.toString(16)}/0x${r.mask.toString(16)} ${action}`;
}

function ruleKey(r: RuleSpec): string {
  return `${r.priority}|${r.to ?? ""}|${r.fwmark >>> 0}|${r.mask >>> 0}|${r.action === "blackhole" ? "blackhole" : r.action.table}`;
}

function routeLine(verb: "replace" | "del", r: RouteSpec): string {
  const target =
    r.kind === "blackhole"
      ? `blackhole ${r.dst}`
      : `${r.dst} via ${r.via}${r.onlinkDev ? ` dev ${r.onlinkDev} onlink` : ""}`;
  return `route ${verb} ${target} table ${r.table}${r.proto !== undefined ? ` proto ${r.proto}` : ""}`;
}

function routeKey(r: RouteSpec): string {
  return `${r.table}|${hostDst(r.dst)}|${r.kind}|${r.via ?? ""}|${r.onlinkDev ?? ""}`;
}

/** The kernel lists a /32 route as the bare address; a plan may name it either way. */
function hostDst(dst: string): string {
  return dst.endsWith("/32") ? dst.slice(0, -3) : dst;
}

interface JsonRule {
  priority: number;
  dst?: string;
  dstlen?: number;
  fwmark?: string;
  fwmask?: string;
  table?: string;
  action?: string;
}

/** Our rules: those whose priority lies in [from, to]. */
export async function readRules(kernel: Kernel, from: number, to: number): Promise<RuleSpec[]> {
  const rules = await kernel.ipJson<JsonRule>(["-4", "rule", "show"]);
  return rules
    .filter((r) => r.priority >= from && r.priority <= to && r.fwmark !== undefined)
    .map((r) => ({
      priority: r.priority,
      ...(r.dst !== undefined && r.dst !== "all" ? { to: `${r.dst}/${r.dstlen ?? 32}` } : {}),
      fwmark: Number(r.fwmark),
      mask: r.fwmask !== undefined ? Number(r.fwmask) : 0xffffffff,
      action:
        r.action === "blackhole"
          ? ("blackhole" as const)
          : { table: r.table === "main" ? ("main" as const) : Number(r.table) },
    }));
}

interface JsonRoute {
  dst: string;
  type?: string;
  gateway?: string;
  dev?: string;
  table?: string;
  protocol?: string;
  flags?: string[];
}

/** Routes in our own tables (a numeric range), plus routes of our protocol in the main table. */
export async function readRoutes(
  kernel: Kernel,
  tables: { from: number; to: number } | undefined,
  proto?: number,
): Promise<RouteSpec[]> {
  const routes = await kernel.ipJson<JsonRoute>(["-4", "route", "show", "table", "all"]);
  const out: RouteSpec[] = [];
  for (const r of routes) {
    const table = r.table === undefined ? "main" : /^\d+$/.test(r.table) ? Number(r.table) : r.table;
    const ours =
      (typeof table === "number" && tables && table >= tables.from && table <= tables.to) ||
      (table === "main" && proto !== undefined && (r.protocol === String(proto) || Number(r.protocol) === proto));
    if (!ours) continue;
    out.push({
      table: table as number | "main",
      dst: r.dst,
      kind: r.type === "blackhole" ? "blackhole" : "via",
      ...(r.gateway ? { via: r.gateway } : {}),
      // Only on-link next hops name their device (ours are tunnels); other routes are matched without it.
      ...(r.gateway && r.dev && r.flags?.includes("onlink") ? { onlinkDev: r.dev } : {}),
      ...(table === "main" && proto !== undefined ? { proto } : {}),
    });
  }
  return out;
}

export async function runBatch(kernel: Kernel, lines: readonly string[]): Promise<void> {
  if (lines.length > 0) await kernel.ip(lines);
}

/** Lines that make `actual` become `desired`, split so additions can precede removals. */
export function diffRouting(
  desired: { rules: RuleSpec[]; routes: RouteSpec[] },
  actual: { rules: RuleSpec[]; routes: RouteSpec[] },
): { add: string[]; remove: string[] } {
  const haveRoutes = new Set(actual.routes.map(routeKey));
  const wantRoutes = new Set(desired.routes.map(routeKey));
  const haveRules = new Set(actual.rules.map(ruleKey));
  const wantRules = new Set(desired.rules.map(ruleKey));
  // A route for the same (table, dst) is replaced in place: one netlink change, no gap.
  const add = [
    ...desired.routes.filter((r) => !haveRoutes.has(routeKey(r))).map((r) => routeLine("replace", r)),
    ...desired.rules.filter((r) => !haveRules.has(ruleKey(r))).map(ruleLine),
  ];
  const replacedDst = new Set(desired.routes.map((r) => `${r.table}|${hostDst(r.dst)}`));
  const remove = [
    ...actual.rules.filter((r) => !wantRules.has(ruleKey(r))).map((r) => ruleLine(r).replace(/^rule add/, "rule del")),
    ...actual.routes
      .filter((r) => !wantRoutes.has(routeKey(r)) && !replacedDst.has(`${r.table}|${hostDst(r.dst)}`))
      .map((r) => routeLine("del", r)),
  ];
  return { add, remove };
}

/**
 * Loose reverse-path filtering on these devices (rp_filter 2): replies from the Internet arrive on
 * it with sources routed elsewhere; loose mode still checks that the source is routable. Written
 * as a file: works with a mounted /proc/sys/net and with interface names that contain dots.
 */
export async function loosenRpFilter(kernel: Kernel, procSysNet: string, devs: readonly string[]): Promise<void> {
  for (const dev of devs)
    if (!/^[\w.@-]{1,15}$/.test(dev)) throw new Error(`not an interface name: ${JSON.stringify(dev)}`);
  // One process for all of them (a new node creates a tunnel per instance).
  await kernel.writeProcSys(
    devs.map((dev) => `${procSysNet}/ipv4/conf/${dev}/rp_filter`),
    "2",
  );
}
