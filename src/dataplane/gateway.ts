import type { GatewayPlan } from "../planner/model.js";
import { formatRange } from "../planner/ipv4.js";
import type { CommandRunner } from "../util/exec.js";
import { OwnedTable, type TableModel } from "./nft.js";
import { diffRouting, readRoutes, runBatch, type RouteSpec } from "./routing.js";

export interface GatewayDataplaneOptions {
  table?: string;
  /** Return routes in the main table are owned by this protocol number. */
  routeProto?: number;
  /** UDP port of the health protocol (BFD), admitted from cluster nodes only. */
  healthPort?: number;
}

const defaults = { table: "static_egress_gw", routeProto: 94, healthPort: 3784 };

/**
 * The gateway's nftables table. It forwards a new flow only when (pod, destination) is in the
 * SNAT map, i.e. a pod selected by a policy with an IP on this instance: the gateway is never
 * an open relay, and a pod can only ever leave with its own policy's IP. Everything else that
 * would cross the gateway is dropped. Health probes are admitted from cluster nodes only.
 */
export function gatewayTableModel(plan: GatewayPlan, o: Required<GatewayDataplaneOptions> = defaults): TableModel {
  return {
    family: "ip",
    name: o.table,
    sets: [
      { kind: "set", name: "cluster_nodes", spec: "type ipv4_addr;", elements: plan.nodeAddresses },
      {
        kind: "map",
        name: "egress_snat",
        spec: "type ipv4_addr . ipv4_addr : ipv4_addr; flags interval;",
        elements: plan.snat.map((e) => `${e.podIP} . ${formatRange(e.dst)} : ${e.egressIP}`),
      },
    ],
    chains:
      `  chain health_from_nodes {\n    type filter hook input priority filter - 10; policy accept;\n` +
      `    udp dport { ${o.healthPort}, 4784 } ip saddr != @cluster_nodes counter drop\n  }\n` +
      `  chain forward_selected {\n    type filter hook forward priority filter - 10; policy drop;\n` +
      `    ct state established,related accept\n` +
      `    ct state new ip saddr . ip daddr @egress_snat accept\n` +
      `    counter comment "not a selected pod: never relay"\n  }\n` +
      `  chain snat_to_egress_ip {\n    type nat hook postrouting priority srcnat - 10; policy accept;\n` +
      `    snat ip to ip saddr . ip daddr map @egress_snat\n  }\n`,
  };
}

export function gatewayRoutes(plan: GatewayPlan, o: Required<GatewayDataplaneOptions> = defaults): RouteSpec[] {
  return plan.returnRoutes.map((r) => ({ table: "main" as const, dst: r.cidr, kind: "via" as const, via: r.via, proto: o.routeProto }));
}

export class GatewayDataplane {
  private readonly opts: Required<GatewayDataplaneOptions>;
  private readonly table: OwnedTable;

  constructor(
    private readonly runner: CommandRunner,
    opts: GatewayDataplaneOptions = {},
  ) {
    this.opts = { ...defaults, ...opts };
    this.table = new OwnedTable(runner, "ip", this.opts.table);
  }

  async apply(plan: GatewayPlan, opts: { verify?: boolean } = {}): Promise<{ nftChanged: boolean; routingAdded: number; routingRemoved: number }> {
    await this.runner.run("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
    const actual = { rules: [], routes: await readRoutes(this.runner, undefined, this.opts.routeProto) };
    const { add, remove } = diffRouting({ rules: [], routes: gatewayRoutes(plan, this.opts) }, actual);
    await runBatch(this.runner, add);
    const nftChanged = await this.table.apply(gatewayTableModel(plan, this.opts), opts.verify === true);
    await runBatch(this.runner, remove);
    return { nftChanged, routingAdded: add.length, routingRemoved: remove.length };
  }

  async cleanup(): Promise<void> {
    await this.table.remove();
    const routes = await readRoutes(this.runner, undefined, this.opts.routeProto);
    await runBatch(this.runner, diffRouting({ rules: [], routes: [] }, { rules: [], routes }).remove);
  }
}
