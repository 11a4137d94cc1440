import type { GatewayPlan } from "../planner/model.js";
import { formatRange } from "../util/ipv4.js";
import type { Kernel } from "./kernel.js";
import { OwnedTable, type TableModel } from "./nft.js";
import { diffRouting, readRoutes, readRules, runBatch, type RouteSpec, type RuleSpec } from "./routing.js";
import {
  GATEWAY_INNER,
  GATEWAY_TUNNEL_PREFIX,
  gatewayTunnelDevice,
  NODE_INNER,
  TUNNEL_MSS,
  TunnelDevices,
  type TunnelSpec,
} from "./tunnel.js";
import {
  ANCHOR_MARK,
  ANCHOR_RULE_PRIORITY,
  ANCHOR_TABLE,
  BFD_CONTROL_PORT,
  BFD_MULTIHOP_PORT,
  NODE_REPLY_MARK,
  NODE_REPLY_RULE_PRIORITY,
  NODE_REPLY_TABLE,
  TUNNEL_PORT_MIN,
  TUNNEL_PORT_MAX,
} from "../api/datapath.js";
import type { CommandRunner } from "../util/exec.js";
import { MeterTable, type MeterReading } from "./meter.js";
import { readSnatUsage } from "./conntrack.js";

export interface GatewayDataplaneOptions {
  table?: string;
  /** Return routes in the main table are owned by this protocol number. */
  routeProto?: number;
  /** UDP port of the health protocol (BFD), admitted from cluster nodes only. */
  healthPort?: number;
  /**
   * Egress through a cloud's 1:1 NAT (DigitalOcean's anchor IP): SNAT to `address`, a local
   * address the platform translates to the host's reserved IP, and send that traffic via the
   * platform's `gateway` for it. Without it the gateway SNATs to the egress IPs themselves.
   */
  anchor?: { address: string; gateway: string } | undefined;
  /**
   * The source ports SNAT may use (TCP and UDP). Unset: the kernel's choice (the pod's own port
   * if free, else one of 1024-65535 for ports above 1023). What `snat_ports_limit` is measured against.
   */
  snatPorts?: { from: number; to: number } | undefined;
  /**
   * Runs the traffic meter (its own nft table) and the conntrack reader. They are not behind the
   * Kernel seam (its fake models neither); unset, the gateway meters nothing. Agents pass the
   * local runner.
   */
  metering?: CommandRunner | undefined;
}

export { ANCHOR_MARK, ANCHOR_TABLE };

export { NODE_REPLY_MARK, NODE_REPLY_TABLE };

/** The gateway agent's nftables table (family ip). */
export const GATEWAY_TABLE = "static_egress_gw";
type ResolvedOptions = Required<Omit<GatewayDataplaneOptions, "anchor" | "snatPorts" | "metering">> &
  Pick<GatewayDataplaneOptions, "anchor" | "snatPorts" | "metering">;
const defaults: ResolvedOptions = { table: GATEWAY_TABLE, routeProto: 94, healthPort: BFD_CONTROL_PORT };
/** The kernel's range for remapped source ports of 1024 and above, when none is given. */
const DEFAULT_SNAT_PORTS = { from: 1024, to: 65535 };

/** Named counters of packets refused because their sender is not the node it claims to be. */
const FOREIGN_TUNNEL_COUNTER = "foreign_tunnel_drops";
const FOREIGN_SOURCE_COUNTER = "foreign_source_drops";

/**
 * The gateway's nftables table. It forwards a new flow only when (pod, destination) is in the
 * SNAT map, i.e. a pod selected by a policy with an IP on this instance: the gateway is never
 * an open relay, and a pod can only ever leave with its own policy's IP. Everything else that
 * would cross the gateway is dropped. Health probes are admitted from cluster nodes only.
 *
 * A pod's packets are forwarded only from the node that runs the pod: they must arrive through
 * that node's tunnel (input interface . pod address in `pods_by_tunnel`), and a node's tunnel
 * port is admitted only from that node's address (`tunnel_peers`, checked in the underlay, with
 * a strict reverse-path check). Both refusals are counted.
 */
export function gatewayTableModel(plan: GatewayPlan, o: ResolvedOptions = defaults): TableModel {
  // A policy with several egress IPs here: new connections take them in turn (numgen inc, in
  // the NAT hook, which sees only a connection's first packet); conntrack keeps a connection on
  // its IP. Behind a 1:1 NAT there is one address to SNAT to: no pools.
  const pools = o.anchor ? [] : [...new Set(plan.snat.flatMap((e) => (e.pool ? [e.pool.join(",")] : [])))].sort();
  const poolOf = new Map(pools.map((p, i) => [p, `snat_pool_${i}`]));
  const ports = o.snatPorts ? ` : ${o.snatPorts.from}-${o.snatPorts.to}` : "";
  // Ports can be given only for protocols that have them; ICMP and the rest take the address only.
  const snat = (to: string) =>
    (ports
      ? `    meta l4proto { tcp, udp } snat ip to ${to}${ports}
`
      : "") +
    `    snat ip to ${to}
`;
  const poolChains = pools
    .map(
      (p) => `  chain ${poolOf.get(p)} {
${snat(
  `numgen inc mod ${p.split(",").length} map { ${p
    .split(",")
    .map((ip, i) => `${i} : ${ip}`)
    .join(", ")} }`,
)}  }
`,
    )
    .join("");
  return {
    family: "ip",
    name: o.table,
    sets: [
      { kind: "set", name: "cluster_nodes", spec: "type ipv4_addr;", elements: plan.nodeAddresses },
      {
        kind: "set",
        name: "tunnel_peers",
        spec: "type ipv4_addr . inet_service;",
        elements: plan.tunnels.map((t) => `${t.address} . ${t.port}`),
      },
      {
        kind: "set",
        name: "pods_by_tunnel",
        spec: "type ifname . ipv4_addr;",
        elements: plan.podsByTunnel.map((p) => `"${gatewayTunnelDevice(p.port)}" . ${p.podIP}`),
      },
      {
        kind: "set",
        name: "node_sources",
        spec: "type ipv4_addr;",
        elements: (plan.nodeReturns ?? []).map((n) => n.address),
      },
      {
        kind: "map",
        name: "egress_snat",
        spec: "type ipv4_addr . ipv4_addr : ipv4_addr; flags interval;",
        // Behind a 1:1 NAT the host SNATs to its anchor address; the platform makes it the egress IP.
        elements: plan.snat.map((e) => `${e.podIP} . ${formatRange(e.dst)} : ${o.anchor?.address ?? e.egressIP}`),
      },
      // Verification probes (docs/policies.md "Verification"): node . echo service . the policy's
      // source port . echo port -> the policy's egress IP here. Checked before egress_snat: a node
      // whose own traffic to the echo service leaves with another policy's IP keeps doing so.
      {
        kind: "map",
        name: "probe_snat",
        spec: "type ipv4_addr . ipv4_addr . inet_service . inet_service : ipv4_addr;",
        elements: (plan.probes ?? []).map(
          (p) => `${p.node} . ${p.dst} . ${p.sport} . ${p.dport} : ${o.anchor?.address ?? p.egressIP}`,
        ),
      },
      ...(pools.length
        ? [
            {
              kind: "map" as const,
              name: "egress_snat_pools",
              spec: "type ipv4_addr . ipv4_addr : verdict; flags interval;",
              elements: plan.snat.flatMap((e) =>
                e.pool ? [`${e.podIP} . ${formatRange(e.dst)} : goto ${poolOf.get(e.pool.join(","))}`] : [],
              ),
            },
          ]
        : []),
    ],
    chains:
      `  counter ${FOREIGN_TUNNEL_COUNTER} {\n  }\n  counter ${FOREIGN_SOURCE_COUNTER} {\n  }\n` +
      `  chain health_from_nodes {\n    type filter hook input priority filter - 10; policy accept;\n` +
      // RFC 5881 section 5: a one-hop peer sends with TTL 255; a routed (forged) packet has less.
      `    udp dport { ${o.healthPort}, ${BFD_MULTIHOP_PORT} } ip ttl != 255 counter drop\n` +
      `    udp dport { ${o.healthPort}, ${BFD_MULTIHOP_PORT} } ip saddr != @cluster_nodes counter drop\n  }\n` +
      // A node's tunnel port, from that node's address only, arriving where that address lives.
      `  chain tunnel_from_nodes {\n    type filter hook input priority filter - 10; policy accept;\n` +
      `    udp dport ${TUNNEL_PORT_MIN}-${TUNNEL_PORT_MAX} ip saddr . udp dport != @tunnel_peers counter name "${FOREIGN_TUNNEL_COUNTER}" drop\n` +
      `    udp dport ${TUNNEL_PORT_MIN}-${TUNNEL_PORT_MAX} fib saddr . iif oif missing counter name "${FOREIGN_TUNNEL_COUNTER}" drop\n  }\n` +
      // The tunnels' own (outer) packets need no connection tracking: nothing here reads their
      // state, and each one would cost a conntrack lookup (and an entry per node and hash port).
      // Only to and from the tunnels' address: a reply to a pod's UDP flow (SNATed, its source
      // port kept) may have a destination port in the range, and untracked it is never translated back.
      `  chain tunnel_notrack_in {\n    type filter hook prerouting priority raw; policy accept;\n` +
      (plan.address ? `    ip daddr ${plan.address} udp dport ${TUNNEL_PORT_MIN}-${TUNNEL_PORT_MAX} notrack\n` : "") +
      `  }\n` +
      `  chain tunnel_notrack_out {\n    type filter hook output priority raw; policy accept;\n` +
      (plan.address ? `    ip saddr ${plan.address} udp dport ${TUNNEL_PORT_MIN}-${TUNNEL_PORT_MAX} notrack\n` : "") +
      `  }\n` +
      `  chain forward_selected {\n    type filter hook forward priority filter - 10; policy drop;\n` +
      `    ct state established,related ct direction reply accept\n` +
      // Everything else must come from a pod, through the tunnel of the node that runs it.
      `    iifname . ip saddr != @pods_by_tunnel counter name "${FOREIGN_SOURCE_COUNTER}" drop\n` +
      `    ct state established,related accept\n` +
      `    ct state new ip saddr . ip daddr @egress_snat accept\n` +
      (plan.probes?.length
        ? `    ct state new meta l4proto tcp ip saddr . ip daddr . tcp sport . tcp dport @probe_snat accept\n`
        : "") +
      `    counter comment "not a selected pod: never relay"\n  }\n` +
      poolChains +
      `  chain snat_to_egress_ip {\n    type nat hook postrouting priority srcnat - 10; policy accept;\n` +
      (plan.probes?.length
        ? `    meta l4proto tcp snat ip to ip saddr . ip daddr . tcp sport . tcp dport map @probe_snat${ports}\n`
        : "") +
      (pools.length ? `    ip saddr . ip daddr vmap @egress_snat_pools\n` : "") +
      snat("ip saddr . ip daddr map @egress_snat") +
      `  }\n` +
      // Tunnelled packets are 50 bytes longer: TCP segments are sized to fit, both ways.
      `  chain clamp_mss {\n    type filter hook forward priority mangle; policy accept;\n` +
      `    iifname "${GATEWAY_TUNNEL_PREFIX}*" tcp flags & syn == syn tcp option maxseg size > ${TUNNEL_MSS} tcp option maxseg size set ${TUNNEL_MSS}\n` +
      `    oifname "${GATEWAY_TUNNEL_PREFIX}*" tcp flags & syn == syn tcp option maxseg size > ${TUNNEL_MSS} tcp option maxseg size set ${TUNNEL_MSS}\n  }\n` +
      // After the reply's destination is translated back (dstnat), before its route lookup.
      (plan.nodeReturns?.length
        ? `  chain mark_node_replies {\n    type filter hook prerouting priority dstnat + 10; policy accept;\n` +
          `    ct direction reply ct status snat ip daddr @node_sources meta mark set meta mark | 0x${NODE_REPLY_MARK.toString(16)}\n  }\n` +
          // Routed: the mark is cleared, else the tunnel's own (outer) packet, which carries it, would take the same route again.
          `  chain clear_node_reply_mark {\n    type filter hook postrouting priority mangle; policy accept;\n` +
          `    meta mark & 0x${NODE_REPLY_MARK.toString(16)} == 0x${NODE_REPLY_MARK.toString(16)} ` +
          `meta mark set meta mark & 0x${(~NODE_REPLY_MARK >>> 0).toString(16)}\n  }\n`
        : "") +
      (o.anchor
        ? `  chain mark_for_anchor {\n    type filter hook prerouting priority mangle; policy accept;\n` +
          `    ip saddr . ip daddr @egress_snat meta mark set meta mark | 0x${ANCHOR_MARK.toString(16)}\n` +
          (plan.probes?.length
            ? `    meta l4proto tcp ip saddr . ip daddr . tcp sport . tcp dport @probe_snat ` +
              `meta mark set meta mark | 0x${ANCHOR_MARK.toString(16)}\n`
            : "") +
          `  }\n`
        : ""),
  };
}

/** Replies to a node's pods go back through that node's tunnel (a VPC that drops foreign sources would drop them otherwise). */
export function gatewayRoutes(plan: GatewayPlan, o: ResolvedOptions = defaults): RouteSpec[] {
  const routes: RouteSpec[] = plan.returnRoutes.map((r) => ({
    table: "main" as const,
    dst: r.cidr,
    kind: "via" as const,
    via: NODE_INNER.address,
    onlinkDev: gatewayTunnelDevice(r.port),
    proto: o.routeProto,
  }));
  if (o.anchor) routes.push({ table: ANCHOR_TABLE, dst: "default", kind: "via", via: o.anchor.gateway });
  for (const n of plan.nodeReturns ?? []) {
    routes.push({
      table: NODE_REPLY_TABLE,
      dst: `${n.address}/32`,
      kind: "via",
      via: NODE_INNER.address,
      onlinkDev: gatewayTunnelDevice(n.port),
    });
  }
  return routes;
}

/** One tunnel per node: its own port, so the input interface names the node. */
export function gatewayTunnels(plan: GatewayPlan): TunnelSpec[] {
  if (!plan.address) return [];
  return plan.tunnels.map((t) => ({
    name: gatewayTunnelDevice(t.port),
    vni: plan.vni,
    local: plan.address,
    remote: t.address,
    port: t.port,
    mac: GATEWAY_INNER.mac,
    peer: NODE_INNER,
  }));
}

export function gatewayRules(o: ResolvedOptions = defaults, plan?: GatewayPlan): RuleSpec[] {
  const rules: RuleSpec[] = o.anchor
    ? [{ priority: ANCHOR_RULE_PRIORITY, fwmark: ANCHOR_MARK, mask: ANCHOR_MARK, action: { table: ANCHOR_TABLE } }]
    : [];
  if (plan?.nodeReturns?.length)
    rules.push({
      priority: NODE_REPLY_RULE_PRIORITY,
      fwmark: NODE_REPLY_MARK,
      mask: NODE_REPLY_MARK,
      action: { table: NODE_REPLY_TABLE },
    });
  return rules;
}

export class GatewayDataplane {
  private readonly opts: ResolvedOptions;
  private readonly table: OwnedTable;
  private readonly tunnels: TunnelDevices;
  private readonly meter: MeterTable | undefined;
  /** SNAT address -> the egress IP it stands for (itself, or the anchor's reserved IP), from the last apply. */
  private snatAddresses = new Map<string, string>();

  constructor(
    private readonly kernel: Kernel,
    opts: GatewayDataplaneOptions = {},
  ) {
    this.opts = { ...defaults, ...opts };
    this.table = new OwnedTable(kernel, "ip", this.opts.table);
    this.tunnels = new TunnelDevices(kernel, GATEWAY_TUNNEL_PREFIX);
    this.meter = this.opts.metering ? new MeterTable(this.opts.metering) : undefined;
  }

  async apply(
    plan: GatewayPlan,
    opts: { verify?: boolean } = {},
  ): Promise<{ nftChanged: boolean; routingAdded: number; routingRemoved: number }> {
    // The tunnels first: the return routes go through them. On a host that boots with
    // forwarding off, a new device inherits that (conf.default.forwarding = 0), so a device that
    // exists before the filter below is loaded forwards nothing either.
    const tunnels = gatewayTunnels(plan);
    const tunnelsAdded = await this.tunnels.apply(tunnels);
    const actual = await this.readRouting();
    const { add, remove } = diffRouting(
      { rules: gatewayRules(this.opts, plan), routes: gatewayRoutes(plan, this.opts) },
      actual,
    );
    await runBatch(this.kernel, add);
    const nftChanged = await this.table.apply(gatewayTableModel(plan, this.opts), opts.verify === true);
    const owners = plan.egressIPOwners.map((o) => ({ ...o, snatAddress: this.opts.anchor?.address ?? o.egressIP }));
    await this.meter?.apply(owners);
    // Reversed so that the first owner of an address wins, as in the meter.
    this.snatAddresses = new Map(owners.reverse().map((o) => [o.snatAddress, o.egressIP]));
    await runBatch(this.kernel, remove);
    const tunnelsRemoved = await this.tunnels.removeStale(tunnels);
    // Only now: the forward filter (policy drop, tunnel binding) is in place before the host
    // forwards anything, on first start and after a reboot (hosts boot with forwarding off;
    // docs/security.md).
    await this.kernel.writeProcSys("/proc/sys/net/ipv4/ip_forward", "1");
    return { nftChanged, routingAdded: add.length + tunnelsAdded, routingRemoved: remove.length + tunnelsRemoved };
  }

  /** Our rules (anchor, node replies) and routes (anchor and node-reply tables, our protocol in main). */
  private async readRouting(): Promise<{ rules: RuleSpec[]; routes: RouteSpec[] }> {
    return {
      rules: await readRules(this.kernel, ANCHOR_RULE_PRIORITY, NODE_REPLY_RULE_PRIORITY),
      routes: await readRoutes(this.kernel, { from: NODE_REPLY_TABLE, to: ANCHOR_TABLE }, this.opts.routeProto),
    };
  }

  /** Packets refused because their sender was not the node it claimed to be (named counters). */
  async foreignDrops(): Promise<{ tunnel: number; source: number }> {
    const counters = await this.table.counters();
    return { tunnel: counters.get(FOREIGN_TUNNEL_COUNTER) ?? 0, source: counters.get(FOREIGN_SOURCE_COUNTER) ?? 0 };
  }

  /** Packets and bytes per policy, egress IP and direction, as the kernel counted them. */
  traffic(): Promise<MeterReading[]> {
    return this.meter?.readings() ?? Promise.resolve([]);
  }

  /** The source ports each egress IP may use toward one destination. */
  get snatPortsLimit(): number {
    const r = this.opts.snatPorts ?? DEFAULT_SNAT_PORTS;
    return r.to - r.from + 1;
  }

  /** Per egress IP of this instance: its conntrack entries, and ports in use per destination (`ip:port/proto`). */
  async snatUsage(): Promise<{ egressIP: string; entries: number; ports: ReadonlyMap<string, number> }[]> {
    if (!this.opts.metering) return [];
    const usage = await readSnatUsage(this.opts.metering, new Set(this.snatAddresses.keys()));
    return [...this.snatAddresses].map(([address, egressIP]) => ({
      egressIP,
      entries: usage.entries.get(address) ?? 0,
      ports: usage.ports.get(address) ?? new Map(),
    }));
  }

  async cleanup(): Promise<void> {
    await this.table.remove();
    await this.meter?.remove();
    await runBatch(this.kernel, diffRouting({ rules: [], routes: [] }, await this.readRouting()).remove);
    await this.tunnels.removeStale([]);
  }
}
