import type { Kernel } from "./kernel.js";
import { loosenRpFilter } from "./routing.js";
import { settled } from "../util/settled.js";

/**
 * Node -> gateway VXLAN tunnels (docs/security-gateway-binding.md). A diverted pod packet leaves
 * the node encapsulated, with the node's own VPC address as outer source, so that
 *  - a VPC that drops foreign source addresses (every cloud VPC) carries it, and
 *  - the gateway can tell which node sent it: each node has its own UDP port (the gateway has
 *    one VXLAN device per node, so the decapsulated packet's input interface names the node),
 *    and the gateway admits a port only from that node's address.
 *
 * The tunnels are point-to-point links with no addresses of their own: each end routes to a
 * fixed link-local next hop whose MAC is a permanent neighbour entry (no ARP in the datapath).
 * Devices are made and read back with `ip` (`ip -json`), like routes and rules.
 */

/** On a node: the tunnel to the instance with this VNI (instance id). */
export function nodeTunnelDevice(vni: number): string {
  return `se-gw${vni}`;
}
/** On a gateway: the tunnel from the node with this UDP port. */
export function gatewayTunnelDevice(port: number): string {
  return `se-nd${port}`;
}
export const NODE_TUNNEL_PREFIX = "se-gw";
export const GATEWAY_TUNNEL_PREFIX = "se-nd";

/**
 * Inner MTU: a 1500-byte VPC minus the VXLAN overhead (outer IPv4 20 + UDP 8 + VXLAN 8 +
 * inner Ethernet 14). TCP's MSS is clamped to fit (the gateway's `clamp_mss` chain).
 */
export const TUNNEL_MTU = 1450;
export const TUNNEL_MSS = TUNNEL_MTU - 40;

/** The next hops inside a tunnel, and their MACs (locally administered, fixed: every tunnel is its own link). */
export const GATEWAY_INNER = { address: "169.254.53.1", mac: "02:5e:9a:00:00:01" } as const;
export const NODE_INNER = { address: "169.254.53.2", mac: "02:5e:9a:00:00:02" } as const;

export interface TunnelSpec {
  name: string;
  vni: number;
  local: string;
  remote: string;
  /** UDP destination port (and, for the kernel, the port this end listens on). */
  port: number;
  /** This end's MAC. */
  mac: string;
  /** The other end: its next-hop address and MAC, as a permanent neighbour entry. */
  peer: { address: string; mac: string };
  /**
   * An address of this end (/32, scope link). A node needs one on its tunnels: the kernel's
   * reverse-path filter in loose mode refuses every packet that arrives on an interface
   * without an IPv4 address, and replies from the Internet arrive on the tunnel.
   */
  address?: string;
}

interface JsonLink {
  ifname: string;
  address?: string;
  mtu?: number;
  flags?: string[];
  linkinfo?: {
    info_kind?: string;
    info_data?: { id?: number; remote?: string; local?: string; port?: number; learning?: boolean };
  };
}

interface JsonNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}

function linkMatches(l: JsonLink, t: TunnelSpec): boolean {
  const d = l.linkinfo?.info_data;
  return (
    l.linkinfo?.info_kind === "vxlan" &&
    d?.id === t.vni &&
    d.remote === t.remote &&
    d.local === t.local &&
    d.port === t.port &&
    d.learning === false &&
    l.address === t.mac &&
    l.mtu === TUNNEL_MTU
  );
}

/**
 * The VXLAN devices an agent owns: every vxlan device whose name starts with `prefix`.
 * `apply` makes the kernel hold exactly the desired ones (adding before the caller's routes
 * need them); `removeStale` deletes the others (after the routes that used them are gone).
 */
export class TunnelDevices {
  constructor(
    private readonly kernel: Kernel,
    private readonly prefix: string,
    /** Where /proc/sys/net is (node agents: loose reverse-path filtering on their tunnels). */
    private readonly looseRpFilter?: { procSysNet: string },
  ) {}

  async read(): Promise<JsonLink[]> {
    return (await this.kernel.ipJson<JsonLink>(["-d", "link", "show", "type", "vxlan"])).filter((l) =>
      l.ifname.startsWith(this.prefix),
    );
  }

  /** Creates missing or different devices, brings them up, sets their neighbour. Returns how many devices it changed. */
  async apply(desired: readonly TunnelSpec[]): Promise<number> {
    if (desired.length === 0) return 0;
    // Three reads, side by side (a CNI ADD may be waiting behind the verify that runs this).
    const [linkList, neighList, addrs] = await settled([
      this.read(),
      this.kernel.ipJson<JsonNeigh>(["-4", "neigh", "show", "nud", "permanent"]),
      desired.some((t) => t.address) ? this.readAddresses() : Promise.resolve(new Set<string>()),
    ] as const);
    const links = new Map(linkList.map((l) => [l.ifname, l]));
    const neighs = new Set(neighList.map((n) => `${n.dev}|${n.dst}|${n.lladdr ?? ""}`));
    const lines: string[] = [];
    const created: string[] = [];
    const changed = new Set<string>();
    for (const t of desired) {
      const have = links.get(t.name);
      if (!have || !linkMatches(have, t)) {
        // A device's VNI, addresses and port cannot all be changed in place: replace it.
        if (have) lines.push(`link del ${t.name}`);
        lines.push(
          `link add ${t.name} address ${t.mac} mtu ${TUNNEL_MTU} type vxlan id ${t.vni} local ${t.local} remote ${t.remote} dstport ${t.port} nolearning`,
        );
        lines.push(`link set ${t.name} up`);
        created.push(t.name);
        changed.add(t.name);
      } else if (!have.flags?.includes("UP")) {
        lines.push(`link set ${t.name} up`);
        changed.add(t.name);
      }
      if (created.includes(t.name) || !neighs.has(`${t.name}|${t.peer.address}|${t.peer.mac}`)) {
        lines.push(`neigh replace ${t.peer.address} lladdr ${t.peer.mac} dev ${t.name} nud permanent`);
        changed.add(t.name);
      }
      if (t.address && (created.includes(t.name) || !addrs.has(`${t.name}|${t.address}`))) {
        lines.push(`addr replace ${t.address}/32 dev ${t.name} scope link`);
        changed.add(t.name);
      }
    }
    if (lines.length === 0) return 0;
    await this.kernel.ip(lines);
    if (this.looseRpFilter) {
      // Replies arrive through the tunnel from Internet addresses routed elsewhere: loose mode.
      await loosenRpFilter(this.kernel, this.looseRpFilter.procSysNet, created);
    }
    return changed.size;
  }

  private async readAddresses(): Promise<Set<string>> {
    const links = await this.kernel.ipJson<{ ifname: string; addr_info?: { local?: string; prefixlen?: number }[] }>([
      "-4",
      "addr",
      "show",
      "type",
      "vxlan",
    ]);
    return new Set(
      links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.prefixlen === 32).map((a) => `${l.ifname}|${a.local}`)),
    );
  }

  /** Deletes our devices that are not desired. Returns how many. */
  async removeStale(desired: readonly TunnelSpec[]): Promise<number> {
    const want = new Set(desired.map((t) => t.name));
    const stale = (await this.read()).filter((l) => !want.has(l.ifname)).map((l) => `link del ${l.ifname}`);
    if (stale.length > 0) await this.kernel.ip(stale);
    return stale.length;
  }
}
