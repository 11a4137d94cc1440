import type { PlannedStaticRoute } from "../planner/static-routes.js";
import { STATIC_ROUTE_PROTO, STATIC_ROUTE_RULE_PRIORITY, STATIC_ROUTE_TABLE } from "../api/datapath.js";
import type { Kernel } from "./kernel.js";
import { NODE_TUNNEL_PREFIX } from "./tunnel.js";

/**
 * The node's StaticRoutes in the kernel (docs/static-routes.md). They live in a routing table of
 * their own, consulted by one `ip rule` placed after the pod-diversion rules (marked pod traffic
 * keeps its gateway instance) and before the main table, so the main table is never written:
 * removing our table and rule gives back exactly the routes and rules the node had. Both carry
 * our protocol number: only what we wrote is read back, repaired or removed.
 */
export { STATIC_ROUTE_PROTO, STATIC_ROUTE_RULE_PRIORITY, STATIC_ROUTE_TABLE };

export interface StaticRouteWriterOptions {
  table?: number;
  proto?: number;
  priority?: number;
}

interface JsonRoute {
  dst: string;
  type?: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  table?: string;
  scope?: string;
  prefsrc?: string;
}

interface JsonRule {
  priority: number;
  table?: string;
  protocol?: string;
}

/** What we own in the kernel: our routes (destination -> gateway, or blackhole) and whether our rule is there. */
export interface StaticRouteKernelState {
  routes: { dst: string; via?: string }[];
  rule: boolean;
}

function sameProto(p: string | undefined, proto: number): boolean {
  return p === String(proto) || Number(p) === proto;
}

/**
 * `ip -batch` lines that turn `actual` into `desired`: routes replaced in place (a failover is one
 * netlink change, no gap), the rule added once there is something to look up, and removed, last,
 * when nothing is left.
 */
export function staticRouteChanges(
  desired: readonly PlannedStaticRoute[],
  actual: StaticRouteKernelState,
  o: Required<StaticRouteWriterOptions>,
): { add: string[]; remove: string[] } {
  const line = (verb: "replace" | "del", r: { dst: string; via?: string }) =>
    `route ${verb} ${r.via ? `${r.dst} via ${r.via}` : `blackhole ${r.dst}`} table ${o.table} proto ${o.proto}`;
  const have = new Map(actual.routes.map((r) => [r.dst, r.via ?? ""]));
  const want = new Set(desired.map((r) => r.dst));
  const add = desired.filter((r) => have.get(r.dst) !== (r.via ?? "")).map((r) => line("replace", r));
  if (desired.length > 0 && !actual.rule)
    add.push(`rule add priority ${o.priority} lookup ${o.table} protocol ${o.proto}`);
  const remove = actual.routes.filter((r) => !want.has(r.dst)).map((r) => line("del", r));
  if (desired.length === 0 && actual.rule)
    remove.push(`rule del priority ${o.priority} lookup ${o.table} protocol ${o.proto}`);
  return { add, remove };
}

/** The node's own on-link subnets (see StaticRouteWriter.connectedSubnets). */
export async function connectedSubnets(kernel: Kernel): Promise<string[]> {
  const routes = await kernel.ipJson<JsonRoute>([
    "-4",
    "route",
    "show",
    "table",
    "main",
    "scope",
    "link",
    "proto",
    "kernel",
  ]);
  return [
    ...new Set(
      routes
        .filter((r) => r.dst.includes("/") && r.prefsrc && !r.dev?.startsWith(NODE_TUNNEL_PREFIX))
        .map((r) => r.dst),
    ),
  ].sort();
}

/** Writes the planned static routes with `ip -json` (read) and `ip -batch` (write). */
export class StaticRouteWriter {
  private readonly o: Required<StaticRouteWriterOptions>;

  constructor(
    private readonly kernel: Kernel,
    opts: StaticRouteWriterOptions = {},
  ) {
    this.o = { table: STATIC_ROUTE_TABLE, proto: STATIC_ROUTE_PROTO, priority: STATIC_ROUTE_RULE_PRIORITY, ...opts };
  }

  private async json<T>(args: string[]): Promise<T[]> {
    return this.kernel.ipJson<T>(args);
  }

  async read(): Promise<StaticRouteKernelState> {
    // `table all`: asking for an empty table by number is an error ("FIB table does not exist").
    const routes = (await this.json<JsonRoute>(["-4", "route", "show", "table", "all"]))
      .filter((r) => r.table === String(this.o.table) && sameProto(r.protocol, this.o.proto))
      .map((r) => ({
        dst: r.dst.includes("/") ? r.dst : `${r.dst}/32`,
        ...(r.type !== "blackhole" && r.gateway ? { via: r.gateway } : {}),
      }));
    const rule = (await this.json<JsonRule>(["-4", "rule", "show"])).some(
      (r) => r.priority === this.o.priority && r.table === String(this.o.table) && sameProto(r.protocol, this.o.proto),
    );
    return { routes, rule };
  }

  /**
   * The node's own on-link subnets (the kernel's prefix routes of its addresses in the main
   * table), which a gateway must be in; our tunnels' link-local next hops are not counted.
   */
  connectedSubnets(): Promise<string[]> {
    return connectedSubnets(this.kernel);
  }

  /** Idempotent: an unchanged plan reads and writes nothing else. Returns how many lines it ran. */
  async apply(desired: readonly PlannedStaticRoute[]): Promise<{ added: number; removed: number }> {
    const { add, remove } = staticRouteChanges(desired, await this.read(), this.o);
    await this.batch(add);
    await this.batch(remove);
    return { added: add.length, removed: remove.length };
  }

  /** Removes every route and the rule we wrote (the agent's --cleanup). */
  async cleanup(): Promise<void> {
    await this.apply([]);
  }

  private async batch(lines: readonly string[]): Promise<void> {
    await this.kernel.ip(lines);
  }
}
