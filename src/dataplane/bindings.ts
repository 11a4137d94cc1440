import { parseCidr, parseIPv4 } from "../util/ipv4.js";

/**
 * Which host interface a pod's address belongs to, learned from the node's kernel (pure: the
 * caller reads `ip -json` / `bridge -json` and passes the parsed output).
 *
 * - Routed CNIs (ptp and the like): the CNI plugin installs a host route to the pod address
 *   through the pod's own host-side veth. That route is the binding; no pod can change it.
 * - Bridge CNIs: the route points at the bridge, which every pod shares. The port comes from the
 *   neighbour entry (pod address -> MAC) and the bridge's forwarding database (MAC -> port).
 *   Both are learned from the pods' own frames, so a binding is learned once and then kept while
 *   its port exists; once bound, the bridge filter drops another port's ARP for the address, so
 *   the neighbour entry cannot be poisoned later (docs/security.md).
 */
export interface PodBinding {
  podIP: string;
  /** The interface the pod's packets enter the IP layer on (its veth, or the bridge). */
  iface: string;
  /** The bridge port of the pod, when `iface` is a bridge. */
  port?: string;
}

export interface KernelRoute {
  dst: string;
  dev?: string;
  type?: string;
}
export interface KernelLink {
  ifname: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}
export interface KernelNeighbour {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}
export interface KernelFdbEntry {
  mac: string;
  ifname?: string;
  master?: string;
  state?: string;
  flags?: string[];
}

export interface KernelView {
  routes: readonly KernelRoute[];
  links: readonly KernelLink[];
  neighbours: readonly KernelNeighbour[];
  fdb: readonly KernelFdbEntry[];
}

/** Interface names nft and we accept (kernel names are at most 15 bytes). */
const IFNAME = /^[\w.@-]{1,15}$/;

function isBridge(view: Pick<KernelView, "links">, dev: string): boolean {
  return view.links.some((l) => l.ifname === dev && l.linkinfo?.info_kind === "bridge");
}

/** The device of the most specific unicast route to `ip` (the default route does not count). */
export function routeDevice(routes: readonly KernelRoute[], ip: string): string | undefined {
  const addr = parseIPv4(ip);
  let best: { len: number; dev: string } | undefined;
  for (const r of routes) {
    if (!r.dev || r.dst === "default" || (r.type !== undefined && r.type !== "unicast")) continue;
    let from: number, to: number;
    try {
      ({ from, to } = parseCidr(r.dst.includes("/") ? r.dst : `${r.dst}/32`));
    } catch {
      continue;
    }
    const len = 32 - Math.log2(to - from + 1);
    if (addr >= from && addr <= to && (!best || len > best.len)) best = { len, dev: r.dev };
  }
  return best?.dev;
}

/** The bridge port behind `ip` on bridge `br`, from the neighbour entry and the FDB. */
export function bridgePort(view: KernelView, br: string, ip: string): string | undefined {
  const neigh = view.neighbours.find(
    (n) => n.dst === ip && n.dev === br && n.lladdr && !(n.state ?? []).includes("FAILED"),
  );
  if (!neigh?.lladdr) return undefined;
  const mac = neigh.lladdr.toLowerCase();
  const ports = new Set(view.links.filter((l) => l.master === br).map((l) => l.ifname));
  const entry = view.fdb.find(
    (f) => f.mac.toLowerCase() === mac && f.ifname !== undefined && ports.has(f.ifname) && f.state !== "permanent",
  );
  return entry?.ifname;
}

/**
 * Bindings for `podIPs`: a previous binding of a bridged pod is kept while its port is still a
 * port of the same bridge; anything else is learned from `view`. Pods whose interface cannot be
 * told are left out (their diverted packets are dropped until it can: fail closed).
 */
export function resolveBindings(
  podIPs: readonly string[],
  view: KernelView,
  previous: ReadonlyMap<string, PodBinding> = new Map(),
): Map<string, PodBinding> {
  const out = new Map<string, PodBinding>();
  for (const ip of podIPs) {
    const dev = routeDevice(view.routes, ip);
    if (!dev || !IFNAME.test(dev)) continue;
    if (!isBridge(view, dev)) {
      out.set(ip, { podIP: ip, iface: dev });
      continue;
    }
    const old = previous.get(ip);
    if (old?.port && old.iface === dev && view.links.some((l) => l.ifname === old.port && l.master === dev)) {
      out.set(ip, old);
      continue;
    }
    const port = bridgePort(view, dev, ip);
    if (port && IFNAME.test(port)) out.set(ip, { podIP: ip, iface: dev, port });
  }
  return out;
}
