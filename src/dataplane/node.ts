import type { NodePlan } from "../planner/model.js";
import { MARK_FLAG, MARK_MASK, MAX_INSTANCE_ID, DEFAULT_TABLE_BASE, NO_INSTANCE_MARK } from "../planner/ids.js";
import { formatRange } from "../planner/ipv4.js";
import type { CommandRunner } from "../util/exec.js";
import { hex, OwnedTable, renderFull, type TableModel } from "./nft.js";
import { diffRouting, readRoutes, readRules, runBatch, type RouteSpec, type RuleSpec } from "./routing.js";
import { GATEWAY_INNER, NODE_INNER, NODE_TUNNEL_PREFIX, nodeTunnelDevice, TunnelDevices, type TunnelSpec } from "./tunnel.js";

export interface NodeDataplaneOptions {
  /** nft table the node agent owns (family ip). */
  table?: string;
  /** Routing tables tableBase+1 .. tableBase+4095 are ours. */
  tableBase?: number;
  /** Rule priorities rulePriority .. rulePriority+99 are ours. */
  rulePriority?: number;
  /**
   * Where the node's /proc/sys/net is. In an unprivileged container /proc/sys is read-only;
   * the DaemonSet mounts the host's at /host/proc/sys/net.
   */
  procSysNet?: string;
}

const defaults = { table: "static_egress", tableBase: DEFAULT_TABLE_BASE, rulePriority: 10000, procSysNet: "/proc/sys/net" };

/**
 * The node's nftables table. Packets from pods get the mark of their gateway instance after
 * destination NAT (so Service traffic is judged by its real destination); marked packets get
 * an identity SNAT one step before the node's own masquerade, which creates the NAT binding
 * so the kernel skips the CNI's masquerade for that flow and the gateway sees the pod address.
 */
export function nodeTableModel(plan: NodePlan, name = defaults.table): TableModel {
  const flag = hex(MARK_FLAG);
  return {
    family: "ip",
    name,
    sets: [
      { kind: "set", name: "never_divert", spec: "type ipv4_addr; flags interval;", elements: plan.neverDivert.map(formatRange) },
      {
        kind: "map",
        name: "divert",
        spec: "type ipv4_addr . ipv4_addr : mark; flags interval;",
        elements: plan.entries.map((e) => `${e.podIP} . ${formatRange(e.dst)} : ${hex(e.mark)}`),
      },
      // Instances judged down, and "no instance yet": their packets are dropped here and counted (fail-closed).
      { kind: "set", name: "down_instances", spec: "type mark;", elements: [hex(NO_INSTANCE_MARK), ...plan.instances.filter((i) => i.route === "blackhole").map((i) => hex(i.mark))] },
    ],
    chains:
      `  counter failclosed_drops {\n  }\n` +
      `  chain mark_egress {\n    type filter hook prerouting priority dstnat + 10; policy accept;\n` +
      `    ip daddr @never_divert return\n` +
      // A diverted flow stays on the instance it started on (a drained instance finishes its
      // connections); flows of a dead instance are deleted from conntrack by the agent.
      `    ct direction original ct mark & ${flag} == ${flag} meta mark set ct mark goto enforce\n` +
      `    meta mark set ip saddr . ip daddr map @divert ct mark set meta mark goto enforce\n  }\n` +
      `  chain enforce {\n    meta mark @down_instances counter name "failclosed_drops" drop\n  }\n` +
      `  chain keep_pod_source {\n    type nat hook postrouting priority srcnat - 10; policy accept;\n` +
      `    meta mark & ${flag} == ${flag} counter snat ip to ip saddr\n  }\n`,
  };
}

export function renderNodeTable(plan: NodePlan, name = defaults.table): string {
  return renderFull(nodeTableModel(plan, name));
}

/**
 * Routing for the plan: one table per instance (into the tunnel to it, or blackhole when down).
 * The tunnel's own (outer) packets keep the inner packet's mark, so their route lookup would
 * meet the instance's table again: a rule before the instance rules sends marked packets to the
 * instance's own VPC address (only tunnel packets: pods' packets to a gateway are never marked)
 * through the main table.
 */
export function nodeRouting(plan: NodePlan, opts: NodeDataplaneOptions = {}): { rules: RuleSpec[]; routes: RouteSpec[] } {
  const prio = opts.rulePriority ?? defaults.rulePriority;
  const rules: RuleSpec[] = plan.tunnel
    ? plan.instances.map((i) => ({ priority: prio + 5, to: `${i.address}/32`, fwmark: MARK_FLAG, mask: MARK_FLAG, action: { table: "main" as const } }))
    : [];
  rules.push(...plan.instances.map((i) => ({ priority: prio + 10, fwmark: i.mark, mask: MARK_MASK, action: { table: i.table } })));
  // Any marked packet whose own rule is missing (mid-change, or stale mark) is dropped, never leaked.
  rules.push({ priority: prio + 99, fwmark: MARK_FLAG, mask: MARK_FLAG, action: "blackhole" });
  const routes: RouteSpec[] = plan.instances.map((i) =>
    i.route === "via" && plan.tunnel
      ? { table: i.table, dst: "default", kind: "via", via: GATEWAY_INNER.address, onlinkDev: nodeTunnelDevice(i.vni) }
      : { table: i.table, dst: "default", kind: "blackhole" },
  );
  return { rules, routes };
}

/** The node's tunnels: one per instance (down ones too, so that failing back is one route change). */
export function nodeTunnels(plan: NodePlan): TunnelSpec[] {
  const end = plan.tunnel;
  if (!end) return [];
  return plan.instances.map((i) => ({
    name: nodeTunnelDevice(i.vni),
    vni: i.vni,
    local: end.address,
    remote: i.address,
    port: end.port,
    mac: NODE_INNER.mac,
    peer: GATEWAY_INNER,
    address: NODE_INNER.address,
  }));
}

export interface ApplyReport {
  nftChanged: boolean;
  routingAdded: number;
  routingRemoved: number;
}

/** Applies node plans to the kernel, idempotently, and reads back to repair drift. */
export class NodeDataplane {
  private readonly opts: Required<NodeDataplaneOptions>;
  private readonly table: OwnedTable;
  private readonly tunnels: TunnelDevices;
  private loosenedFor: string | undefined;

  constructor(
    private readonly runner: CommandRunner,
    opts: NodeDataplaneOptions = {},
  ) {
    this.opts = { ...defaults, ...opts };
    this.table = new OwnedTable(runner, "ip", this.opts.table);
    this.tunnels = new TunnelDevices(runner, NODE_TUNNEL_PREFIX, { procSysNet: this.opts.procSysNet });
  }

  private get tableRange() {
    return { from: this.opts.tableBase + 1, to: this.opts.tableBase + MAX_INSTANCE_ID };
  }

  /**
   * Idempotent: an unchanged plan changes nothing. Routes and rules first (add before remove), then the nft table in one transaction, then
   * stale rules and routes. Marks only ever point at tables that exist.
   */
  async apply(plan: NodePlan, opts: { verify?: boolean } = {}): Promise<ApplyReport> {
    const desired = nodeRouting(plan, this.opts);
    const tunnels = nodeTunnels(plan);
    // Tunnels first (routes name them), removed last (after the routes that used them).
    const tunnelsAdded = await this.tunnels.apply(tunnels);
    const actual = await this.readRouting();
    const { add, remove } = diffRouting(desired, actual);
    await runBatch(this.runner, add);
    // Reading a large table back is not free: it is done on `verify` (the periodic drift check).
    const nftChanged = await this.table.apply(nodeTableModel(plan, this.opts.table), opts.verify === true);
    await runBatch(this.runner, remove);
    const tunnelsRemoved = await this.tunnels.removeStale(tunnels);
    const addresses = plan.instances.map((i) => i.address).sort().join(",");
    if (addresses !== this.loosenedFor) {
      await this.loosenReversePathFilter(plan);
      this.loosenedFor = addresses;
    }
    return { nftChanged, routingAdded: add.length + tunnelsAdded, routingRemoved: remove.length + tunnelsRemoved };
  }

  async readRouting(): Promise<{ rules: RuleSpec[]; routes: RouteSpec[] }> {
    const rules = await readRules(this.runner, this.opts.rulePriority, this.opts.rulePriority + 99);
    const routes = await readRoutes(this.runner, this.tableRange);
    return { rules, routes };
  }

  /**
   * Replies from the gateway arrive on the VPC interface with an Internet source whose best
   * route is elsewhere; strict reverse-path filtering would drop them. Loose mode keeps the
   * check (the source must be routable) without requiring the symmetric path.
   */
  private async loosenReversePathFilter(plan: NodePlan): Promise<void> {
    const devices = new Set<string>();
    for (const inst of plan.instances) {
      try {
        const { stdout } = await this.runner.run("ip", ["-json", "route", "get", inst.address]);
        const dev = (JSON.parse(stdout) as { dev?: string }[])[0]?.dev;
        if (dev) devices.add(dev);
      } catch {
        /* unreachable instance: nothing to loosen */
      }
    }
    for (const dev of devices) {
      // Written as a file (through the runner, so in the node's namespace): works with a
      // mounted /proc/sys/net and with interface names that contain dots.
      if (!/^[\w.@-]+$/.test(dev)) continue;
      await this.runner.run("sh", ["-c", `echo 2 > "$0"`, `${this.opts.procSysNet}/ipv4/conf/${dev}/rp_filter`]);
    }
  }

  /**
   * Diverted flows of these pods, or of these (dead) instances, lose their conntrack entry, so
   * their next packet is planned afresh (new instance, or the node's path when no longer
   * selected). `conntrack -D` exits non-zero when nothing matched: not an error.
   */
  async forgetFlows(which: { podIPs?: Iterable<string>; marks?: Iterable<number> }): Promise<void> {
    const jobs: Promise<unknown>[] = [];
    for (const ip of which.podIPs ?? []) {
      jobs.push(this.runner.run("conntrack", ["-D", "-s", ip, "--mark", `${hex(MARK_FLAG)}/${hex(MARK_FLAG)}`]).catch(() => undefined));
    }
    for (const mark of which.marks ?? []) {
      jobs.push(this.runner.run("conntrack", ["-D", "--mark", `${hex(mark)}/${hex(MARK_MASK)}`]).catch(() => undefined));
    }
    await Promise.all(jobs);
  }

  /** Packets dropped because their instance was down (the fail-closed counter). */
  async failClosedDrops(): Promise<number> {
    try {
      const { stdout } = await this.runner.run("nft", ["-j", "list", "counter", "ip", this.opts.table, "failclosed_drops"]);
      const entry = (JSON.parse(stdout) as { nftables: { counter?: { packets: number } }[] }).nftables.find((e) => e.counter);
      return entry?.counter?.packets ?? 0;
    } catch {
      return 0;
    }
  }

  /** Removes everything this agent owns: the nft table first (unmark), then rules, then routes, then tunnels. */
  async cleanup(): Promise<void> {
    await this.table.remove();
    const actual = await this.readRouting();
    const { remove } = diffRouting({ rules: [], routes: [] }, actual);
    await runBatch(this.runner, remove);
    await this.tunnels.removeStale([]);
  }
}
