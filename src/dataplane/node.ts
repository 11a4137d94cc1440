import type { NodePlan } from "../planner/model.js";
import {
  BFD_CONTROL_PORT,
  BFD_MULTIHOP_PORT,
  DEFAULT_RULE_PRIORITY,
  DEFAULT_TABLE_BASE,
  MARK_FLAG,
  UNDIVERTED_BIT,
  MARK_MASK,
  MAX_INSTANCE_ID,
  NODE_FLOW_BIT,
} from "../api/datapath.js";
import { formatCidrOrRange, formatIPv4, formatRange, normalize, parseCidr, type Range } from "../util/ipv4.js";
import { sourceBlocks } from "./conntrack.js";
import { fnv1a } from "../planner/ids.js";
import { divertValue, failoverPlan, withHealth } from "../planner/failover.js";
import type { HealthView } from "../planner/model.js";
import {
  FailoverWriter,
  healthSets,
  instanceRoutes,
  type FailoverWrite,
  type FailoverWriterOptions,
  type HealthPort,
} from "./node-health.js";
import { resolveBindings, type KernelView, type PodBinding } from "./bindings.js";
import type { Kernel, NftObject } from "./kernel.js";
import type { KernelWatch, WatchMark } from "./kernel-watch.js";
import { hex, nftRange, OwnedTable, renderFull, type TableModel } from "./nft.js";
import {
  diffRouting,
  loosenRpFilter,
  readRoutes,
  readRules,
  runBatch,
  type RouteSpec,
  type RuleSpec,
} from "./routing.js";
import { connectedSubnets } from "./static-routes.js";
import { settled } from "../util/settled.js";
import {
  GATEWAY_INNER,
  NODE_INNER,
  NODE_TUNNEL_PREFIX,
  nodeTunnelDevice,
  TunnelDevices,
  type TunnelSpec,
} from "./tunnel.js";

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
  /**
   * What changed in the kernel since a read (`KernelWatch`): a verify then reads back only what
   * changed, and a new pod's interface comes from a read made when it appeared.
   */
  watch?: KernelWatch;
  /** The command our nft transactions run as (`ownNftCommand`): the health thread's too. */
  nft?: string;
}

/** How long a prefetch waits after a link event: the events of one pod's interface come as a burst. */
const PREFETCH_DELAY_MS = 3;

/** A node whose pods hang off a bridge: their bindings also need neighbours and the FDB. */
function isBridged(view: Pick<KernelView, "links">): boolean {
  return view.links.some((l) => l.linkinfo?.info_kind === "bridge");
}

/** Every this many verifies, one reads everything back whatever the watch says (it is not the only guard). */
const FULL_VERIFY_EVERY = 10;

/** The node agent's nft table (family ip). */
export const NODE_TABLE = "static_egress";

const defaults = {
  table: NODE_TABLE,
  tableBase: DEFAULT_TABLE_BASE,
  rulePriority: DEFAULT_RULE_PRIORITY,
  procSysNet: "/proc/sys/net",
};

/** The node agent's bridge-family table: binds selected pods' addresses to their bridge ports. */
export const BIND_TABLE = "static_egress_bind";

/**
 * Destinations that are never diverted, whatever a policy says: link-local (the cloud's metadata
 * service at 169.254.169.254 answers each host itself, and must never be asked "as" the
 * gateway), multicast and limited broadcast (no gateway can carry them).
 */
export const ALWAYS_LOCAL = ["169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32"] as const;

/** UDP ports of single-hop BFD control (3784) and multihop BFD (4784): our health probes. */
const HEALTH_PORTS = [BFD_CONTROL_PORT, BFD_MULTIHOP_PORT] as const;

/** The VNI field of a VXLAN header, as nft reads it: 24 bits, 4 bytes after the UDP header (RFC 7348). */
const VXLAN_VNI = "@th,96,24";

/** What the node learned from its kernel for the plan: pod interfaces, the interface to each instance. */
export interface NodeFacts {
  /** Selected pods' addresses -> the interface (and bridge port) their packets must come in on. */
  bindings: ReadonlyMap<string, PodBinding>;
  /** Instance address -> the interface its probes must come in on. */
  instanceDevices: ReadonlyMap<string, string>;
  /** The node's on-link subnets (VPC): its own traffic to them is never diverted. Read only with nodeEntries. */
  localSubnets?: readonly string[];
  /** The user id of the agent's probe sockets: only they take the verification probes' path (default: this process's). */
  probeUid?: number;
}

const noFacts: NodeFacts = { bindings: new Map(), instanceDevices: new Map() };

/**
 * While the node's table is replaced (apply): its marking and enforcing alone, with the new
 * plan's sets and class chains, in a table of its own, committed first: it marks a new flow while
 * the replaced table's maps are still empty. It neither records nor trusts "not diverted"
 * (UNDIVERTED_BIT): the replaced table's chain records that wrongly on the flows it misses
 * meanwhile, and a mark set here overwrites it.
 */
function handoverTableModel(table: TableModel): TableModel {
  const keep = new Set(["never_divert", "pod_class", "remap", "down_instances", "pod_ifaces"]);
  const classes = table.sets.filter((s) => s.name.startsWith(CLASS_PREFIX)).map((s) => s.name);
  const flag = hex(MARK_FLAG);
  return {
    family: "ip",
    name: `${table.name}_handover`,
    sets: table.sets.filter((s) => keep.has(s.name) || s.name.startsWith(CLASS_PREFIX)),
    chains:
      `  chain mark_egress {\n    type filter hook prerouting priority dstnat + 10; policy accept;\n` +
      `    ip daddr @never_divert return\n` +
      `    ct direction reply return\n` +
      `    ct direction original ct mark & ${flag} == ${flag} meta mark set ct mark goto enforce\n` +
      `    ip saddr vmap @pod_class\n  }\n` +
      classChains(classes, false) +
      `  chain enforce {\n    ip saddr . iifname != @pod_ifaces drop\n    meta mark @down_instances drop\n    accept\n  }\n`,
  };
}

/** Names of the class maps and chains (`class_` and 8 hex digits). */
const CLASS_PREFIX = "class_";

/**
 * The divert decision in two stages. A pod's "class" is its whole decision: the sorted list of
 * (destination range, divert value) its entries make. Pods that share a decision (the pods of a
 * label group with the same instances: bench/programming's 10,000 pods × 100 policies make 4)
 * share one: `pod_class`
 * maps a pod's address to a jump into its class's chain, and the class's own interval map
 * `class_<id>` maps a destination to the divert value. The big map is a plain hash (cheap to
 * load, list and delete from); the interval maps are small. A class's id is the FNV-1a hash of its
 * decision (probing forward in sorted order on a collision), so a class keeps its name while
 * others come and go.
 */
export interface DivertClasses {
  /** Pod address -> its class's name. */
  podClass: Map<string, string>;
  /** Class name -> its interval map's elements (`range : value`), sorted by destination. */
  classes: Map<string, string[]>;
  /** A class's decision (its elements joined) -> its name. */
  names: Map<string, string>;
}

/**
 * Each pod's decision: its class map's elements, sorted by destination, and their key. A plan has
 * few distinct destinations and values (every pod of a policy shares them), so each is formatted
 * once, not once per entry (30,000 per plan).
 */
function podDecisions(
  entries: readonly NodePlan["entries"][number][],
): Map<string, { key: string; elements: string[] }> {
  const ranges = new Map<number, Map<number, string>>();
  const values = new Map<number, string>();
  const byPod = new Map<string, NodePlan["entries"][number][]>();
  for (const e of entries) {
    const list = byPod.get(e.podIP);
    if (list) list.push(e);
    else byPod.set(e.podIP, [e]);
  }
  const out = new Map<string, { key: string; elements: string[] }>();
  for (const [ip, list] of byPod) {
    list.sort((a, b) => a.dst.from - b.dst.from || a.dst.to - b.dst.to);
    const elements = list.map((e) => {
      let byTo = ranges.get(e.dst.from);
      if (!byTo) ranges.set(e.dst.from, (byTo = new Map()));
      let range = byTo.get(e.dst.to);
      if (range === undefined) byTo.set(e.dst.to, (range = formatRange(e.dst)));
      const v = divertValue(e);
      let value = values.get(v);
      if (value === undefined) values.set(v, (value = hex(v)));
      return `${range} : ${value}`;
    });
    out.set(ip, { key: elements.join(", "), elements });
  }
  return out;
}

/** The plan's pods in classes (`DivertClasses`). */
export function divertClasses(entries: readonly NodePlan["entries"][number][]): DivertClasses {
  const decisions = podDecisions(entries);
  const elementsOf = new Map<string, string[]>();
  for (const d of decisions.values()) if (!elementsOf.has(d.key)) elementsOf.set(d.key, d.elements);
  const names = new Map<string, string>();
  const classes = new Map<string, string[]>();
  for (const key of [...elementsOf.keys()].sort()) {
    let h = fnv1a(key);
    while (classes.has(className(h))) h = (h + 1) >>> 0;
    names.set(key, className(h));
    classes.set(className(h), elementsOf.get(key)!);
  }
  const podClass = new Map<string, string>();
  for (const [ip, d] of decisions) podClass.set(ip, names.get(d.key)!);
  return { podClass, classes, names };
}

/**
 * `current` with the classes of the last apply that no pod has now (same names, same elements),
 * unless a current class took the name.
 */
function withEmptyClasses(
  current: DivertClasses,
  last: { names: ReadonlyMap<string, string>; elements: ReadonlyMap<string, string[]> } | undefined,
): DivertClasses {
  if (!last) return current;
  for (const [key, name] of last.names) {
    if (current.names.has(key) || current.classes.has(name)) continue;
    current.names.set(key, name);
    current.classes.set(name, last.elements.get(name)!);
  }
  return current;
}

/** How many pods each class has. */
function classPods(classes: DivertClasses): Map<string, number> {
  const out = new Map<string, number>();
  for (const name of classes.podClass.values()) out.set(name, (out.get(name) ?? 0) + 1);
  return out;
}

function className(h: number): string {
  return `${CLASS_PREFIX}${h.toString(16).padStart(8, "0")}`;
}

/** A `pod_class` element: the pod's address -> a jump into its class's chain. */
function podClassElement(ip: string, name: string): string {
  return `${ip} : jump ${name}`;
}

/**
 * One chain per class: the destination's divert value from the class's map, then the mark it
 * takes now (`remap`), recorded in conntrack, and every diverted packet through `enforce`. A
 * destination of the class without a remap element (never planned so) is dropped, never sent on
 * the node's path. A destination outside the class returns to `mark_egress` with the packet's
 * mark untouched: no register carries the class, the jump is the class.
 */
function classChains(names: readonly string[], counted: boolean): string {
  const failClosed = counted ? `counter name "failclosed_drops" drop` : "drop";
  return names
    .map(
      (n) =>
        `  chain ${n} {\n` +
        `    meta mark set ip daddr map @${n} meta mark set meta mark map @remap ct mark set meta mark goto enforce\n` +
        `    ip daddr @${n} ${failClosed}\n  }\n`,
    )
    .join("");
}

/**
 * The node's nftables table. Packets from pods get the mark of their gateway instance after
 * destination NAT (so Service traffic is judged by its real destination); marked packets get
 * an identity SNAT one step before the node's own masquerade, which creates the NAT binding
 * so the kernel skips the CNI's masquerade for that flow and the gateway sees the pod address.
 */
export function nodeTableModel(
  plan: NodePlan,
  name = defaults.table,
  facts: NodeFacts = noFacts,
  classes: DivertClasses = divertClasses(plan.entries),
): TableModel {
  const flag = hex(MARK_FLAG);
  const undiverted = hex(UNDIVERTED_BIT);
  // The node's own diverted flows: nodeSelector policies' destinations and verification probes.
  const nodeFlows = (plan.nodeEntries?.length ?? 0) > 0 || (plan.probes?.length ?? 0) > 0;
  const probeUid = facts.probeUid ?? process.getuid?.() ?? 0;
  const podIPs = [...new Set(plan.entries.map((e) => e.podIP))].sort();
  const bound = podIPs.flatMap((ip) => {
    const b = facts.bindings.get(ip);
    return b ? [`${ip} . "${b.iface}"`] : [];
  });
  const peers = healthPeers(plan).flatMap((address) => {
    const dev = facts.instanceDevices.get(address);
    return dev ? [`"${dev}" . ${address}`] : [];
  });
  return {
    family: "ip",
    name,
    sets: [
      {
        kind: "set",
        name: "never_divert",
        spec: "type ipv4_addr; flags interval;",
        elements: normalize([...plan.neverDivert, ...ALWAYS_LOCAL.map(parseCidr)]).map(formatRange),
      },
      // Pod -> its class (DivertClasses); each class's destination -> its instance's mark, with its
      // failover instance's id in the low bits (divertValue).
      {
        kind: "map",
        name: "pod_class",
        spec: "type ipv4_addr : verdict;",
        elements: podIPs.map((ip) => podClassElement(ip, classes.podClass.get(ip)!)),
      },
      ...[...classes.classes].map(([n, elements]) => ({
        kind: "map" as const,
        name: n,
        spec: "type ipv4_addr : mark; flags interval;",
        elements,
      })),
      // Divert value -> the mark packets take now: a dead instance's pods go to their failover
      // instance with a change of this small map alone (failoverMarks), before any replan.
      ...healthSets(plan),
      // A selected pod's address is diverted only when it comes in on that pod's own interface.
      { kind: "set", name: "pod_ifaces", spec: "type ipv4_addr . ifname;", elements: bound },
      // Health probes are heard only from an instance's address, on the interface toward it.
      { kind: "set", name: "health_peers", spec: "type ifname . ipv4_addr;", elements: peers },
      // VXLAN into this node's tunnel port: only from an instance's address, with its own VNI.
      // The node's own traffic (nodeSelector policies): destination -> mark, and what it never takes.
      {
        kind: "map",
        name: "node_divert",
        spec: "type ipv4_addr : mark; flags interval;",
        elements: (plan.nodeEntries ?? []).map((e) => `${formatRange(e.dst)} : ${hex(e.mark)}`),
      },
      {
        kind: "set",
        name: "node_keep",
        spec: "type ipv4_addr; flags interval;",
        elements: plan.nodeEntries?.length
          ? normalize([...(plan.keepLocal ?? []), ...(facts.localSubnets ?? [])].flatMap(addressRange)).map(formatRange)
          : [],
      },
      // Verification probes: the agent's probe socket (echo address . source port . echo port) -> mark.
      {
        kind: "map",
        name: "probe_divert",
        spec: "type ipv4_addr . inet_service . inet_service : mark;",
        elements: (plan.probes ?? []).map((p) => `${p.address} . ${p.sourcePort} . ${p.port} : ${hex(p.mark)}`),
      },
      {
        kind: "set",
        name: "tunnel_sources",
        spec: `typeof ip saddr . udp dport . ${VXLAN_VNI};`,
        elements: plan.tunnel ? plan.instances.map((i) => `${i.address} . ${plan.tunnel!.port} . ${i.vni}`) : [],
      },
    ],
    chains:
      `  counter failclosed_drops {\n  }\n` +
      `  counter spoofed_drops {\n  }\n` +
      `  counter forged_health_drops {\n  }\n` +
      `  chain mark_egress {\n    type filter hook prerouting priority dstnat + 10; policy accept;\n` +
      `    ip daddr @never_divert return\n` +
      // Replies are never diverted (the map's keys are pod sources).
      `    ct direction reply return\n` +
      // A diverted flow stays on the instance it started on (a drained instance finishes its
      // connections); flows of a dead instance are deleted from conntrack by the agent.
      `    ct direction original ct mark & ${flag} == ${flag} meta mark set ct mark goto enforce\n` +
      // A flow the map did not divert skips it from then on (UNDIVERTED_BIT).
      `    ct mark & ${undiverted} == ${undiverted} return\n` +
      // A selected pod's class decides (a diverted packet ends in enforce; one its class does not
      // divert comes back here, its mark untouched).
      `    ip saddr vmap @pod_class\n` +
      `    ct direction original ct mark & ${flag} == 0 ct mark set ct mark or ${undiverted}\n  }\n` +
      classChains([...classes.classes.keys()], true) +
      // Checked for every diverted packet, new or established: a pod that takes another pod's
      // address (or rides its conntrack entry) never leaves with that pod's egress IP. Accepted
      // here: also when it came from a class chain, nothing after its jump applies.
      `  chain enforce {\n    ip saddr . iifname != @pod_ifaces counter name "spoofed_drops" drop\n` +
      `    meta mark @down_instances counter name "failclosed_drops" drop\n    accept\n  }\n` +
      `  chain keep_pod_source {\n    type nat hook postrouting priority srcnat - 10; policy accept;\n` +
      (nodeFlows && plan.tunnel
        ? `    ct mark & ${hex(NODE_FLOW_BIT)} == ${hex(NODE_FLOW_BIT)} counter snat ip to ${plan.tunnel.address}\n`
        : "") +
      `    meta mark & ${flag} == ${flag} counter snat ip to ip saddr\n  }\n` +
      // The node's own packets (and hostNetwork pods'): the prerouting chain never sees them. Never
      // the tunnels' own packets (already marked, to an instance: never_divert), health probes,
      // replies of connections made to the node, the cluster's ranges, the API server, the VPC.
      (!nodeFlows
        ? ""
        : `  chain mark_node_egress {\n    type route hook output priority mangle; policy accept;\n` +
          `    meta mark & ${flag} == ${flag} return\n` +
          // This node's tunnels send to its own port only (not the whole range, whose other ports
          // may be a nodeSelector policy's destinations).
          `    udp dport { ${[...HEALTH_PORTS, ...(plan.tunnel ? [plan.tunnel.port] : [])].join(", ")} } return\n` +
          `    ct direction reply return\n` +
          // The node's own addresses (loopback too): delivered locally, never through a tunnel.
          `    fib daddr type local return\n` +
          `    ip daddr @never_divert return\n` +
          // A verification probe: only a socket of the agent's user, on its policy's source port,
          // to its echo service. Every packet is marked by the current plan (a probe whose instance
          // changed mid-way fails rather than keep the old path).
          (plan.probes?.length
            ? `    meta skuid ${probeUid} meta l4proto tcp meta mark set ip daddr . tcp sport . tcp dport map @probe_divert ` +
              `ct mark set meta mark | ${hex(NODE_FLOW_BIT)} goto node_enforce\n`
            : "") +
          `    ip daddr @node_keep return\n` +
          `    ct mark & ${hex(NODE_FLOW_BIT)} == ${hex(NODE_FLOW_BIT)} meta mark set ct mark & ${hex(MARK_MASK)} goto node_enforce\n` +
          `    meta mark set ip daddr map @node_divert ct mark set meta mark | ${hex(NODE_FLOW_BIT)} goto node_enforce\n  }\n` +
          `  chain node_enforce {\n    meta mark @down_instances counter name "failclosed_drops" drop\n  }\n`) +
      // RFC 5881 section 5 (GTSM): only a directly connected peer can send TTL 255. Node's dgram
      // cannot read the received TTL, so it is checked here, before the socket; a pod on this
      // node is directly connected too, hence the interface and source binding.
      `  chain health_in {\n    type filter hook input priority filter - 10; policy accept;\n` +
      `    udp dport { ${HEALTH_PORTS.join(", ")} } ip ttl != 255 counter name "forged_health_drops" drop\n` +
      `    udp dport { ${HEALTH_PORTS.join(", ")} } iifname . ip saddr != @health_peers counter name "forged_health_drops" drop\n  }\n` +
      // The kernel hands a VXLAN packet to the device of its (port, VNI) whatever its outer
      // source: without this, any host on the VPC could inject "replies" into a pod's tunnel.
      // Checked before the vxlan socket (input hook); a node without a tunnel end has no port.
      `  counter foreign_tunnel_drops {\n  }\n` +
      (plan.tunnel
        ? `  chain tunnel_in {\n    type filter hook input priority filter - 10; policy accept;\n` +
          `    udp dport ${plan.tunnel.port} ip saddr . udp dport . ${VXLAN_VNI} != @tunnel_sources counter name "foreign_tunnel_drops" drop\n  }\n` +
          // The tunnels' own (outer) packets are not connection-tracked (nothing reads their
          // state; each would cost a conntrack lookup, and the outer packets carry the inner
          // packet's mark, which would give them an identity SNAT binding of their own).
          `  chain tunnel_notrack_in {\n    type filter hook prerouting priority raw; policy accept;\n    udp dport ${plan.tunnel.port} notrack\n  }\n` +
          `  chain tunnel_notrack_out {\n    type filter hook output priority raw; policy accept;\n    udp dport ${plan.tunnel.port} notrack\n  }\n`
        : ""),
  };
}

/** An address or CIDR as a range; nothing for what does not parse (then it is not ours to keep). */
function addressRange(text: string): Range[] {
  try {
    return [parseCidr(text.includes("/") ? text : `${text}/32`)];
  } catch {
    return [];
  }
}

/** Addresses whose health replies this node admits: its instances', and other probed hosts' (StaticRoute gateways). */
function healthPeers(plan: NodePlan): string[] {
  return [...new Set([...plan.instances.map((i) => i.address), ...(plan.probedPeers ?? [])])].sort();
}

/**
 * The bridge-family table: on a bridge every pod's packets reach the IP layer on the bridge
 * device, so the IP table's interface check cannot tell pods apart. Here, at the bridge port,
 * a frame whose IP or ARP sender address is a bound pod's must come in on that pod's port.
 * No br_netfilter needed: nft's bridge family sees the port as `iifname`.
 */
export function bindTableModel(plan: NodePlan, facts: NodeFacts = noFacts, name = BIND_TABLE): TableModel {
  const bridged = [...new Set(plan.entries.map((e) => e.podIP))].sort().flatMap((ip) => {
    const b = facts.bindings.get(ip);
    return b?.port ? [b] : [];
  });
  return {
    family: "bridge",
    name,
    sets: [
      { kind: "set", name: "guarded", spec: "type ipv4_addr;", elements: bridged.map((b) => b.podIP) },
      {
        kind: "set",
        name: "ports",
        spec: "type ipv4_addr . ifname;",
        elements: bridged.map((b) => `${b.podIP} . "${b.port}"`),
      },
    ],
    chains:
      `  counter spoofed_drops {\n  }\n` +
      `  chain bind_ports {\n    type filter hook prerouting priority filter; policy accept;\n` +
      `    ip saddr @guarded ip saddr . iifname != @ports counter name "spoofed_drops" drop\n` +
      `    arp saddr ip @guarded arp saddr ip . iifname != @ports counter name "spoofed_drops" drop\n  }\n`,
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
export function nodeRouting(
  plan: NodePlan,
  opts: NodeDataplaneOptions = {},
): { rules: RuleSpec[]; routes: RouteSpec[] } {
  const prio = opts.rulePriority ?? defaults.rulePriority;
  const rules: RuleSpec[] = plan.tunnel
    ? plan.instances.map((i) => ({
        priority: prio + 5,
        to: `${i.address}/32`,
        fwmark: MARK_FLAG,
        mask: MARK_FLAG,
        action: { table: "main" as const },
      }))
    : [];
  rules.push(
    ...plan.instances.map((i) => ({
      priority: prio + 10,
      fwmark: i.mark,
      mask: MARK_MASK,
      action: { table: i.table },
    })),
  );
  // Any marked packet whose own rule is missing (mid-change, or stale mark) is dropped, never leaked.
  rules.push({ priority: prio + 99, fwmark: MARK_FLAG, mask: MARK_FLAG, action: "blackhole" });
  return { rules, routes: instanceRoutes(plan) };
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
  /** Selected pods whose interface is not known (yet): their diverted packets are dropped. */
  unbound: number;
}

/** Applies node plans to the kernel, idempotently, and reads back to repair drift. */
export class NodeDataplane {
  private readonly opts: Required<Omit<NodeDataplaneOptions, "watch" | "nft">>;
  private readonly watch: KernelWatch | undefined;
  private readonly nft: string | undefined;
  /** The last kernel view read, the watch's mark taken before that read, and which read it was. */
  private view: { view: KernelView; mark: WatchMark | undefined; seq: number } | undefined;
  /** A read of the view under way (a prefetch, or an apply's). */
  private viewRead: { promise: Promise<KernelView>; mark: WatchMark | undefined } | undefined;
  private viewSeq = 0;
  /** The view every binding was last resolved from (a verify with the same view has nothing to redo). */
  private resolvedFrom: KernelView | undefined;
  /** The watch's marks before the last read-back of the nft tables, routing, instance devices and subnets. */
  private marks: { table?: WatchMark; routing?: WatchMark; devices?: WatchMark; subnets?: WatchMark } = {};
  private verifies = 0;
  private prefetch: NodeJS.Timeout | undefined;
  /** Applies under way: their own tunnels and routes make link events, which start no prefetch meanwhile. */
  private applying = 0;
  private prefetchDeferred = false;
  /** The selected pods of the last apply: a pod among them found unbound by a fresh view is unbound. */
  private podIPs = new Set<string>();
  private readonly bindableListeners = new Set<() => void>();
  private readonly table: OwnedTable;
  private readonly bindTable: OwnedTable;
  private readonly tunnels: TunnelDevices;
  private loosenedFor: string | undefined;
  /** The routing and tunnels the last successful apply left in the kernel (unset while one runs or after a failure). */
  private appliedRouting: string | undefined;
  private bindings = new Map<string, PodBinding>();
  /**
   * The classes the kernel holds: name by decision (as the last full apply wrote them), and how
   * many pods each has now. A pod event may join one, or leave one that keeps a pod.
   */
  private classes:
    | { names: ReadonlyMap<string, string>; pods: ReadonlyMap<string, number>; elements: ReadonlyMap<string, string[]> }
    | undefined;
  private instanceDevices = new Map<string, string>();
  /** Failovers, and the node table's writes: on this thread, until `useHealthPort` hands them to the health thread. */
  private writer: FailoverWriter;
  private health: HealthPort;

  constructor(
    private readonly kernel: Kernel,
    opts: NodeDataplaneOptions = {},
  ) {
    const { watch, nft, ...rest } = opts;
    this.opts = { ...defaults, ...rest };
    this.watch = watch;
    this.nft = nft;
    // A link or route came or went (a pod's interface, usually): read the view now, so that the
    // pod's API event, which comes after its CNI ADD, finds its interface already known.
    watch?.onLinks(() => this.schedulePrefetch());
    this.table = new OwnedTable(kernel, "ip", this.opts.table);
    this.bindTable = new OwnedTable(kernel, "bridge", BIND_TABLE);
    this.tunnels = new TunnelDevices(kernel, NODE_TUNNEL_PREFIX, { procSysNet: this.opts.procSysNet });
    this.writer = new FailoverWriter(kernel, { table: this.opts.table });
    this.health = this.writer;
  }

  /**
   * From now on the latest health comes from `port`, and the node table is written through it
   * (the node agent's health thread, which fails over on its own; `applyHealth` is then refused).
   */
  useHealthPort(port: HealthPort): void {
    this.health = port;
  }

  /** A read of the pods' interfaces soon (`PREFETCH_DELAY_MS`), or once the applies under way end. */
  private schedulePrefetch(): void {
    if (this.applying > 0) {
      this.prefetchDeferred = true;
      return;
    }
    this.prefetch ??= setTimeout(() => {
      this.prefetch = undefined;
      if (this.view && isBridged(this.view.view)) return; // not kept for bridged nodes
      this.readView().then(
        (view) => {
          // A selected pod's interface came after its event (or its CNI ADD): apply again.
          const unbound = [...this.podIPs].filter((ip) => !this.bindings.has(ip));
          if (unbound.length > 0 && resolveBindings(unbound, view).size > 0)
            for (const l of this.bindableListeners) l();
        },
        () => undefined, // a failed read is read again when needed
      );
    }, PREFETCH_DELAY_MS).unref();
  }

  /** Runs `fn` as an apply: link events meanwhile start their prefetch when it ends. */
  private async applyingDo<T>(fn: () => Promise<T>): Promise<T> {
    this.applying++;
    try {
      return await fn();
    } finally {
      if (--this.applying === 0 && this.prefetchDeferred) {
        this.prefetchDeferred = false;
        this.schedulePrefetch();
      }
    }
  }

  /** Called when the kernel now has the interface of a selected pod that had none (with a watch). */
  onBindable(listener: () => void): void {
    this.bindableListeners.add(listener);
  }

  /** What a failover writer on another thread needs to know of this dataplane. */
  get failoverOptions(): FailoverWriterOptions {
    return { table: this.opts.table, ...(this.nft ? { nft: this.nft } : {}) };
  }

  private get tableRange() {
    return { from: this.opts.tableBase + 1, to: this.opts.tableBase + MAX_INSTANCE_ID };
  }

  /**
   * Idempotent: an unchanged plan changes nothing. Routes and rules first (add before remove), then the nft table in one transaction, then
   * stale rules and routes. Marks only ever point at tables that exist.
   */
  apply(planned: NodePlan, opts: { verify?: boolean } = {}): Promise<ApplyReport> {
    return this.applyingDo(() => this.applyWhole(planned, opts));
  }

  private async applyWhole(planned: NodePlan, opts: { verify?: boolean }): Promise<ApplyReport> {
    // The latest health wins over the plan's (a failover may have been applied since it was made).
    const latest = this.health.latest();
    const plan = latest ? withHealth(planned, latest) : planned;
    const desired = nodeRouting(plan, this.opts);
    const tunnels = nodeTunnels(plan);
    // Routing and tunnels as the last apply left them need no read-back (four commands) until
    // the next verify, like the nft table: a new pod (CNI ADD) usually changes neither.
    const appliedKey = JSON.stringify([desired, tunnels]);
    const verify = opts.verify === true;
    // A verify reads back what the watch cannot vouch for; every FULL_VERIFY_EVERY-th, everything.
    const full = verify && (!this.watch || ++this.verifies % FULL_VERIFY_EVERY === 0);
    const unchanged = this.appliedRouting === appliedKey && (!verify || this.vouched(this.marks.routing, full));
    this.appliedRouting = undefined;
    // Tunnels first (routes name them, and replacing a device drops its routes: read after),
    // removed last (after the routes that used them); additions are written by the health port
    // with the nft change (before it). The kernel's pod and instance interfaces are read beside
    // them: independent reads, and a CNI ADD may be waiting behind a verify.
    const [{ tunnelsAdded, add, remove }, facts] = await settled([
      (async () => {
        if (unchanged) return { tunnelsAdded: 0, add: [], remove: [] };
        const mark = this.watch?.mark();
        const tunnelsAdded = await this.tunnels.apply(tunnels);
        const { add, remove } = diffRouting(desired, await this.readRouting());
        this.marks.routing = mark;
        return { tunnelsAdded, add, remove };
      })(),
      this.learnFacts(plan, verify, full),
    ] as const);
    // Reading a large table back is not free: it is done on `verify` (the periodic drift check).
    // Both tables change in one transaction: a pod's divert entry and its port binding together.
    // A class whose last pod left stays (empty) until the next verify: the next pod of that
    // decision (a pod replaced, a rollout) joins it with one element, not a new map and chain in a
    // transaction of their own.
    const classes = verify ? divertClasses(plan.entries) : withEmptyClasses(divertClasses(plan.entries), this.classes);
    const model = nodeTableModel(plan, this.opts.table, facts, classes);
    // Tables no one else has written since their last read-back hold what we wrote since.
    const readBack = verify && (full || this.watch?.tablesSince(this.marks.table) !== true);
    const tableMark = readBack ? this.watch?.mark() : undefined;
    const changes = await settled([
      this.table.prepare(model, readBack),
      this.bindTable.prepare(bindTableModel(plan, facts), readBack),
    ] as const);
    const prelude = changes.map((c) => c.prelude).join("");
    const script = changes.map((c) => c.script).join("");
    // A replaced table's interval map is filled only as its transaction ends, after its chain is
    // live: a new flow in between would miss it and leave with the node's address. A handover
    // table with the new map, committed first, marks those packets meanwhile. (A table created
    // where none was marks nothing before its commit either way: no handover.)
    const handover = changes[0]!.full && changes[0]!.replaces ? handoverTableModel(model) : undefined;
    // Through the health port, which knows the apply's health and re-asserts a newer one after it.
    this.classes = undefined;
    await this.health.commitApply({
      plan: failoverPlan(plan),
      ...(add.length > 0 ? { routes: add } : {}),
      ...(prelude !== "" ? { prelude } : {}),
      script,
      ...(handover
        ? {
            handover: {
              create: renderFull(handover),
              remove: `table ip ${handover.name}\ndelete table ip ${handover.name}\n`,
            },
          }
        : {}),
    });
    await settled(changes.map((c) => (c.prelude + c.script !== "" ? c.commit() : Promise.resolve())));
    if (readBack) this.marks.table = tableMark;
    this.classes = { names: classes.names, pods: classPods(classes), elements: classes.classes };
    const nftChanged = prelude + script !== "";
    await runBatch(this.kernel, remove);
    const tunnelsRemoved = unchanged ? 0 : await this.tunnels.removeStale(tunnels);
    const addresses = healthPeers(plan).join(",");
    if (addresses !== this.loosenedFor) {
      await this.loosenReversePathFilter();
      this.loosenedFor = addresses;
    }
    const unbound = new Set(plan.entries.map((e) => e.podIP).filter((ip) => !facts.bindings.has(ip))).size;
    this.appliedRouting = appliedKey;
    return {
      nftChanged,
      routingAdded: add.length + tunnelsAdded,
      routingRemoved: remove.length + tunnelsRemoved,
      unbound,
    };
  }

  /**
   * The fast path of a pod event: `plan` is the last applied plan with only some pods' entries
   * changed (`removed` went, `added` came). Writes their divert elements, their `pod_ifaces` and
   * bridge-port bindings, and the small health sets (rewritten if the plan's divert values
   * changed) as one delta through the health port, without building the whole table. Undefined,
   * with nothing written, when it cannot start from what the last apply left (routing, tunnels or
   * health changed since, no apply yet, an element that is not where the delta expects it): the
   * caller then applies the plan in full.
   */
  applyPods(
    planned: NodePlan,
    change: { removed: readonly NodePlan["entries"][number][]; added: readonly NodePlan["entries"][number][] },
  ): Promise<ApplyReport | undefined> {
    return this.applyingDo(() => this.applySomePods(planned, change));
  }

  private async applySomePods(
    planned: NodePlan,
    change: { removed: readonly NodePlan["entries"][number][]; added: readonly NodePlan["entries"][number][] },
  ): Promise<ApplyReport | undefined> {
    const latest = this.health.latest();
    const plan = latest ? withHealth(planned, latest) : planned;
    if (this.appliedRouting !== JSON.stringify([nodeRouting(plan, this.opts), nodeTunnels(plan)])) return undefined;
    const before = new Set(change.removed.map((e) => e.podIP));
    const after = new Set(change.added.map((e) => e.podIP));
    const gone = [...before].filter((ip) => !after.has(ip));
    const came = [...after].filter((ip) => !before.has(ip));
    // A new pod's interface: from the kernel as a full apply would (the routes, links).
    const missing = came.filter((ip) => !this.bindings.get(ip));
    const learned =
      missing.length > 0 ? resolveBindings(missing, await this.viewFor(missing), this.bindings) : new Map();
    const bindingOf = (ip: string) => this.bindings.get(ip) ?? learned.get(ip);
    const iface = (ips: readonly string[]) =>
      ips.flatMap((ip) => {
        const b = bindingOf(ip);
        return b ? [`${ip} . "${b.iface}"`] : [];
      });
    const bridged = (ips: readonly string[]) => ips.flatMap((ip) => (bindingOf(ip)?.port ? [bindingOf(ip)!] : []));
    // Each pod's class, by its decision: only a class the kernel holds (a class appearing is a
    // change of structure, written by a full apply; one whose last pod leaves stays, empty, until
    // the next verify). A pod whose decision stayed keeps its element.
    const classes = this.classes;
    if (!classes) return undefined;
    const was = podDecisions(change.removed);
    const now = podDecisions(change.added);
    const classRemoved: string[] = [];
    const classAdded: string[] = [];
    const pods = new Map(classes.pods);
    for (const [from, to, out, step] of [
      [was, now, classRemoved, -1],
      [now, was, classAdded, 1],
    ] as const)
      for (const [ip, d] of from) {
        const name = classes.names.get(d.key);
        if (name === undefined) return undefined;
        if (to.get(ip)?.key === d.key) continue;
        out.push(podClassElement(ip, name));
        pods.set(name, (pods.get(name) ?? 0) + step);
      }
    if ([...pods.values()].some((n) => n < 0)) return undefined;
    const ipTable = this.table.preparePartial(
      [
        { set: "pod_class", removed: classRemoved, added: classAdded },
        { set: "pod_ifaces", removed: iface(gone), added: iface(came) },
      ],
      healthSets(plan),
    );
    const bindTable = this.bindTable.preparePartial([
      { set: "guarded", removed: bridged(gone).map((b) => b.podIP), added: bridged(came).map((b) => b.podIP) },
      {
        set: "ports",
        removed: bridged(gone).map((b) => `${b.podIP} . "${b.port}"`),
        added: bridged(came).map((b) => `${b.podIP} . "${b.port}"`),
      },
    ]);
    if (!ipTable || !bindTable) return undefined;
    const script = ipTable.script + bindTable.script;
    if (script !== "") {
      this.appliedRouting = undefined;
      await this.health.commitApply({ plan: failoverPlan(plan), script });
      this.appliedRouting = JSON.stringify([nodeRouting(plan, this.opts), nodeTunnels(plan)]);
    }
    ipTable.commit();
    bindTable.commit();
    this.classes = { ...classes, pods };
    for (const ip of gone) this.bindings.delete(ip);
    for (const [ip, b] of learned) this.bindings.set(ip, b);
    for (const ip of gone) this.podIPs.delete(ip);
    for (const ip of came) this.podIPs.add(ip);
    return {
      nftChanged: script !== "",
      routingAdded: 0,
      routingRemoved: 0,
      unbound: came.filter((ip) => !bindingOf(ip)).length,
    };
  }

  /**
   * Pod interfaces and the interface toward each instance, from the kernel. Read only when
   * something is missing (a new pod or instance) or on a verify the watch cannot vouch for;
   * otherwise the last answer holds.
   */
  private async learnFacts(plan: NodePlan, verify: boolean, full: boolean): Promise<NodeFacts> {
    const podIPs = [...new Set(plan.entries.map((e) => e.podIP))].sort();
    const addresses = healthPeers(plan);
    const vouched = (mark: WatchMark | undefined) => this.vouched(mark, full);
    const missing = podIPs.filter((ip) => !this.bindings.has(ip));
    const marked = async <T>(key: "devices" | "subnets", read: () => Promise<T>): Promise<T> => {
      const mark = this.watch?.mark();
      const value = await read();
      this.marks[key] = mark;
      return value;
    };
    // Independent reads, side by side.
    const [view, devices, localSubnets] = await settled([
      verify
        ? (this.freshView(full) ?? this.readView())
        : missing.length > 0
          ? this.viewFor(missing)
          : Promise.resolve(undefined),
      (verify && !vouched(this.marks.devices)) || addresses.some((a) => !this.instanceDevices.has(a))
        ? marked("devices", () => this.readInstanceDevices(addresses))
        : Promise.resolve(undefined),
      plan.nodeEntries?.length && ((verify && !vouched(this.marks.subnets)) || !this.localSubnets)
        ? marked("subnets", () => connectedSubnets(this.kernel))
        : Promise.resolve(undefined),
    ] as const);
    const kept = (ips: readonly string[]) =>
      new Map(ips.flatMap((ip) => (this.bindings.has(ip) ? [[ip, this.bindings.get(ip)!] as const] : [])));
    if (view && verify && view !== this.resolvedFrom) {
      this.bindings = resolveBindings(podIPs, view, this.bindings);
      this.resolvedFrom = view;
    } else if (view) {
      // Only the missing: a binding is never taken away by a view older than the one it came from.
      const learned = resolveBindings(missing, view, this.bindings);
      this.bindings = kept(podIPs);
      for (const [ip, b] of learned) this.bindings.set(ip, b);
    } else this.bindings = kept(podIPs);
    this.podIPs = new Set(podIPs);
    if (devices) this.instanceDevices = devices;
    if (localSubnets) this.localSubnets = localSubnets;
    return {
      bindings: this.bindings,
      instanceDevices: this.instanceDevices,
      ...(plan.nodeEntries?.length ? { localSubnets: this.localSubnets ?? [] } : {}),
    };
  }

  /** Links, addresses, routes and rules have not changed since `mark` (never on a full verify). */
  private vouched(mark: WatchMark | undefined, full: boolean): boolean {
    return !full && this.watch?.linksSince(mark) === true;
  }

  /**
   * The kernel view, if the watch vouches that the kernel has not changed since it was read (or
   * since a read under way began). Bridged nodes' views are never reused: their neighbours and
   * FDB are not watched.
   */
  private freshView(full = false): Promise<KernelView> | undefined {
    if (!this.watch || full) return undefined;
    if (this.view && !isBridged(this.view.view) && this.watch.linksSince(this.view.mark))
      return Promise.resolve(this.view.view);
    if (this.viewRead && this.watch.linksSince(this.viewRead.mark)) return this.viewRead.promise;
    return undefined;
  }

  /**
   * A view for `missing` pods: the fresh one when it binds every pod new to the plan, else a new
   * read (a pod's CNI ADD can reach us before the watch has told us of its interface). A pod the
   * last apply had already, unbound, stays so while the kernel is unchanged; its interface
   * coming later is a change (`onBindable`).
   */
  private async viewFor(missing: readonly string[]): Promise<KernelView> {
    const fresh = this.freshView();
    if (fresh) {
      const view = await fresh;
      const newcomers = missing.filter((ip) => !this.podIPs.has(ip));
      if (resolveBindings(newcomers, view).size === newcomers.length) return view;
    }
    return this.readView();
  }

  /** Reads the view, with the watch's mark before the read; the newest read started is kept. */
  private readView(): Promise<KernelView> {
    const mark = this.watch?.mark();
    const seq = ++this.viewSeq;
    const promise: Promise<KernelView> = this.readKernelView().then(
      (view) => {
        if (this.viewRead?.promise === promise) this.viewRead = undefined;
        if (!this.view || seq > this.view.seq) this.view = { view, mark, seq };
        return view;
      },
      (e: unknown) => {
        if (this.viewRead?.promise === promise) this.viewRead = undefined;
        throw e;
      },
    );
    this.viewRead = { promise, mark };
    return promise;
  }

  private localSubnets: string[] | undefined;

  /**
   * The interface toward each instance address: one `ip` for all of them (a node has one per
   * instance). An unreachable instance is left out: its probes are not heard, it is down anyway.
   */
  private async readInstanceDevices(addresses: readonly string[]): Promise<Map<string, string>> {
    const devices = new Map<string, string>();
    for (const [address, dev] of await this.kernel.routeDevices(addresses))
      if (/^[\w.@-]{1,15}$/.test(dev)) devices.set(address, dev);
    return devices;
  }

  private async readKernelView(): Promise<KernelView> {
    // Independent reads: side by side (a new pod's CNI ADD waits for them).
    const [routes, links] = await Promise.all([
      this.kernel.ipJson<KernelView["routes"][number]>(["-4", "route", "show", "table", "main"]),
      this.kernel.ipJson<KernelView["links"][number]>(["-d", "link", "show"]),
    ]);
    const bridged = isBridged({ links });
    // Neighbours and the FDB matter only for bridge CNIs.
    const neighbours = bridged
      ? await this.kernel.ipJson<KernelView["neighbours"][number]>(["-4", "neigh", "show"])
      : [];
    const fdb = bridged ? await this.kernel.bridgeJson<KernelView["fdb"][number]>(["fdb", "show"]) : [];
    return { routes, links, neighbours, fdb };
  }

  /**
   * What this node's kernel holds for one pod address, read only (`static-egress explain --local`):
   * its rows of the divert decision (its class in `pod_class`, that class's map), the interface it
   * is bound to, and for each mark the rule that picks a table, that table's routes and the tunnel
   * they leave through.
   */
  async readPod(podIP: string): Promise<PodKernelView> {
    const objects = await this.kernel.nftList(`table ip ${this.opts.table}`, { stateless: true });
    const set = (kind: "map" | "set", name: string) =>
      (objects ?? []).map((o) => o[kind] as NftSetJson | undefined).find((x) => x?.name === name)?.elem ?? [];
    // A divert value is the mark its packets take through the remap map (failover).
    const remap = new Map(
      set("map", "remap").map((e) => {
        const [value, mark] = e as [unknown, unknown];
        return [Number(value) >>> 0, Number(mark) >>> 0] as const;
      }),
    );
    const entries = divertRows(objects ?? [], podIP).map((r) => ({
      dst: formatCidrOrRange(r.dst),
      mark: remap.get(r.value) ?? (r.value & MARK_MASK) >>> 0,
    }));
    const bound = set("set", "pod_ifaces")
      .map((e) => (e as { concat?: unknown[] }).concat ?? [])
      .find(([ip]) => ip === podIP)?.[1];
    const down = new Set(set("set", "down_instances").map((m) => Number(m) >>> 0));
    const { rules, routes } = await this.readRouting();
    const tunnels = await this.tunnels.read();
    const marks = [...new Set(entries.map((e) => e.mark))].sort((a, b) => a - b);
    return {
      table: `ip ${this.opts.table}`,
      present: objects !== undefined,
      entries,
      ...(typeof bound === "string" ? { boundInterface: bound } : {}),
      paths: marks.map((mark) => {
        // The first rule (by priority) whose fwmark matches: the instance's own, or the catch-all blackhole.
        const rule = rules
          .filter((r) => r.to === undefined && (mark & r.mask) >>> 0 === (r.fwmark & r.mask) >>> 0)
          .sort((a, b) => a.priority - b.priority)[0];
        const table = rule && rule.action !== "blackhole" ? rule.action.table : undefined;
        const own = table === undefined ? [] : routes.filter((r) => r.table === table);
        const dev = own.find((r) => r.onlinkDev)?.onlinkDev;
        const link = dev === undefined ? undefined : tunnels.find((l) => l.ifname === dev);
        return {
          mark,
          down: down.has(mark),
          ...(rule ? { rule } : {}),
          routes: own,
          ...(link?.linkinfo?.info_data?.remote
            ? {
                tunnel: {
                  device: link.ifname,
                  remote: link.linkinfo.info_data.remote,
                  vni: link.linkinfo.info_data.id ?? 0,
                },
              }
            : {}),
        };
      }),
    };
  }

  async readRouting(): Promise<{ rules: RuleSpec[]; routes: RouteSpec[] }> {
    const [rules, routes] = await settled([
      readRules(this.kernel, this.opts.rulePriority, this.opts.rulePriority + 99),
      readRoutes(this.kernel, this.tableRange),
    ] as const);
    return { rules, routes };
  }

  /**
   * Replies from the gateway arrive with an Internet source whose best route is elsewhere;
   * strict reverse-path filtering would drop them. Loose mode keeps the check (the source must
   * be routable) without requiring the symmetric path. With the tunnels the replies arrive on
   * the tunnel devices (loosened when created); the interface toward the instances (the one
   * `health_peers` names) is loosened too, as before.
   */
  private async loosenReversePathFilter(): Promise<void> {
    // learnFacts keeps only valid interface names.
    await loosenRpFilter(this.kernel, this.opts.procSysNet, [...new Set(this.instanceDevices.values())]);
  }

  /**
   * Fails over ahead of the next apply, on this thread (`FailoverWriter.setHealth`): the last
   * applied plan with this health, written as the small change it is, with no pod replanned. Runs
   * beside an apply in flight (which re-asserts the latest health when its write ends); calls run
   * in order. Resolves with the instances whose route changed (none before the first apply).
   */
  async applyHealth(health: HealthView): Promise<string[]> {
    return (await this.applyHealthTimed(health)).changed;
  }

  /** `applyHealth`, with when each step ended. */
  async applyHealthTimed(health: HealthView): Promise<FailoverWrite> {
    if (this.health !== this.writer) throw new Error("gateway health is written by the health thread here");
    this.appliedRouting = undefined; // the next apply reads routing back
    return this.writer.setHealth(health);
  }

  /**
   * Diverted flows of these pods, or of these (dead) instances, and undiverted flows of pods that
   * now divert more, lose their conntrack entry, so their next packet is planned afresh (new
   * instance, the node's path when no longer selected, the gateway's when newly selected). The
   * pods' diverted flows are deleted by address block (`sourceBlocks`: never a block holding a
   * `keep` address, the pods still diverted), all in one conntrack batch: a bulk removal of 1,000
   * pods once started 1,000 processes, each walking the whole table.
   */
  async forgetFlows(which: {
    podIPs?: Iterable<string>;
    marks?: Iterable<number>;
    undivertedPodIPs?: Iterable<string>;
    keep?: Iterable<string>;
    /** The node's pods whose undiverted flows stay (every pod of the node; `undivertedPodIPs` win). */
    keepUndiverted?: Iterable<string>;
  }): Promise<void> {
    const blocks = (targets: Iterable<string>, keep: Iterable<string>, bit: number) =>
      sourceBlocks(targets, keep).map((b) => [
        "-s",
        b.address,
        ...(b.prefix < 32
          ? ["--mask-src", formatIPv4(b.prefix === 0 ? 0 : (0xffffffff << (32 - b.prefix)) >>> 0)]
          : []),
        "--mark",
        `${hex(bit)}/${hex(bit)}`,
      ]);
    const filters: string[][] = blocks(which.podIPs ?? [], which.keep ?? [], MARK_FLAG);
    // By block too (a policy selecting 1,000 pods at once is a few filters). Both verdicts: a
    // handover table (a full replacement) may have marked such a flow already.
    const undiverted = [...(which.undivertedPodIPs ?? [])];
    if (undiverted.length > 0)
      for (const bit of [UNDIVERTED_BIT, MARK_FLAG])
        filters.push(...blocks(undiverted, which.keepUndiverted ?? [], bit));
    for (const mark of which.marks ?? []) filters.push(["--mark", `${hex(mark)}/${hex(MARK_MASK)}`]);
    if (filters.length > 0) await this.kernel.deleteFlows(filters);
  }

  /**
   * The table's drop counters: packets of a down instance (fail-closed), diverted packets not from
   * their pod's interface or bridge port (spoofed, both tables), VXLAN to this node's port not from
   * an instance (foreign tunnel), health probes with another TTL or not from an instance on the
   * interface toward it (forged health).
   */
  async drops(): Promise<{ failClosed: number; spoofed: number; foreignTunnel: number; forgedHealth: number }> {
    const ip = await this.table.counters();
    const bridge = await this.bindTable.counters();
    const n = (m: Map<string, number>, name: string) => m.get(name) ?? 0;
    return {
      failClosed: n(ip, "failclosed_drops"),
      spoofed: n(ip, "spoofed_drops") + n(bridge, "spoofed_drops"),
      foreignTunnel: n(ip, "foreign_tunnel_drops"),
      forgedHealth: n(ip, "forged_health_drops"),
    };
  }

  /** Removes everything this agent owns: the nft table first (unmark), then rules, then routes, then tunnels. */
  async cleanup(): Promise<void> {
    this.appliedRouting = undefined;
    this.classes = undefined;
    this.writer.reset();
    await this.table.remove();
    await this.bindTable.remove();
    // A handover table an agent left when it died mid-replace.
    await this.kernel.nft(`table ip ${this.opts.table}_handover\ndelete table ip ${this.opts.table}_handover\n`);
    const actual = await this.readRouting();
    const { remove } = diffRouting({ rules: [], routes: [] }, actual);
    await runBatch(this.kernel, remove);
    await this.tunnels.removeStale([]);
  }
}

/**
 * The divert decision a listing of the node's table holds (`nft -j list table`), one row per pod
 * and destination as the one-stage map had them: each pod's class (`pod_class`, a jump), then that
 * class's map. Only `podIP`'s rows when given. A pod whose class map is missing has no rows.
 */
export function divertRows(
  objects: readonly NftObject[],
  podIP?: string,
): { podIP: string; dst: Range; value: number }[] {
  const maps = new Map<string, unknown[]>();
  for (const o of objects) {
    const m = o.map as NftSetJson | undefined;
    if (m) maps.set(m.name, m.elem ?? []);
  }
  const rows: { podIP: string; dst: Range; value: number }[] = [];
  const parsed = new Map<string, { dst: Range; value: number }[]>();
  for (const e of maps.get("pod_class") ?? []) {
    const [ip, verdict] = e as [unknown, { jump?: { target?: string } }];
    const target = verdict?.jump?.target;
    if (typeof ip !== "string" || target === undefined || (podIP !== undefined && ip !== podIP)) continue;
    let list = parsed.get(target);
    if (!list)
      parsed.set(
        target,
        (list = (maps.get(target) ?? []).map((c) => {
          const [dst, value] = c as [unknown, unknown];
          return { dst: nftRange(dst), value: Number(value) >>> 0 };
        })),
      );
    for (const r of list) rows.push({ podIP: ip, ...r });
  }
  return rows;
}

/** One pod address as the node's kernel holds it (`NodeDataplane.readPod`). */
export interface PodKernelView {
  /** The nft table read, e.g. `ip static_egress`; `present` false when the node agent has not made it. */
  table: string;
  present: boolean;
  /** Its class's rows (`pod_class`, then the class's map): destination (a CIDR, or from-to) -> mark. */
  entries: { dst: string; mark: number }[];
  /** The interface its packets must come in on (`pod_ifaces`); absent: not bound, diverted packets drop. */
  boundInterface?: string;
  paths: {
    mark: number;
    /** In `down_instances`: dropped (fail-closed) before routing. */
    down: boolean;
    rule?: RuleSpec;
    routes: RouteSpec[];
    tunnel?: { device: string; remote: string; vni: number };
  }[];
}

interface NftSetJson {
  name: string;
  elem?: unknown[];
}
