/**
 * The numbers the kernel sees, in one place: packet marks, routing tables, rule priorities and
 * UDP ports. The planner computes marks and tables from instance ids, the dataplane programs them,
 * the cloud provider opens the ports in firewalls, and the health agent listens on them; ranges
 * must not overlap, which is visible only when they sit side by side.
 */

/**
 * A node's packet mark carries a flag bit (so one catch-all `ip rule` can blackhole any marked
 * packet whose table is missing) and a 12-bit instance id; each id has its own routing table.
 */
export const MARK_FLAG = 0x1000_0000;
export const MARK_MASK = 0x1fff_0000;
export const MAX_INSTANCE_ID = 0xfff;
/** Node agents own routing tables DEFAULT_TABLE_BASE+1 .. +4095. */
export const DEFAULT_TABLE_BASE = 7000;
/** Node agents own rule priorities DEFAULT_RULE_PRIORITY .. +99. */
export const DEFAULT_RULE_PRIORITY = 10000;

/** Id 0 is never assigned: its mark means "no instance", and the node always drops it. */
export function markFor(id: number): number {
  return (MARK_FLAG | (id << 16)) >>> 0;
}
export const NO_INSTANCE_MARK = markFor(0);

export function tableFor(id: number, base = DEFAULT_TABLE_BASE): number {
  return base + id;
}

/** Gateway: forwarded selected traffic carries this mark (bit 29; node marks use bits 16-28) to take the anchor route. */
export const ANCHOR_MARK = 0x2000_0000;
/** Gateway: table and rule priority of the anchor route (below the node agents' ranges). */
export const ANCHOR_TABLE = 6999;
export const ANCHOR_RULE_PRIORITY = 10003;

/**
 * Gateway: replies to a node's own traffic (ClusterEgressPolicy nodeSelector) go back through that
 * node's tunnel: their destination is the node's InternalIP, the same address the tunnel's own
 * packets go to through the main table, so they are marked (bit 30) and routed by a table of their own.
 */
export const NODE_REPLY_MARK = 0x4000_0000;
export const NODE_REPLY_TABLE = 6998;
export const NODE_REPLY_RULE_PRIORITY = 10004;

/**
 * Node: conntrack-mark bit of the node's own diverted flows (ClusterEgressPolicy nodeSelector):
 * their source becomes the node's InternalIP, the address its gateways accept from its tunnel
 * only. Not a routing mark: the packet mark keeps MARK_MASK bits only.
 */
export const NODE_FLOW_BIT = 0x4000_0000;

/**
 * Node: conntrack-mark bit of a pod's flow the divert map did not divert. Its later packets skip
 * the map (an interval lookup whose cost grows with the map), so traffic that stays on the node's
 * path costs the same at 10 and at 100,000 elements. Set only on original-direction packets of
 * flows without the divert flag; the agent forgets such flows of a pod whose diverted
 * destinations grew, so they are planned afresh.
 */
export const UNDIVERTED_BIT = 0x8000_0000;

/**
 * Node: DigitalOcean StaticRoutes (docs/static-routes.md) live in a table of their own, owned by
 * route protocol 95, looked up by one rule after the pods' rules. A table apart from the
 * gateway's (a cluster node can be a gateway host too).
 */
export const STATIC_ROUTE_TABLE = 6997;
export const STATIC_ROUTE_PROTO = 95;
export const STATIC_ROUTE_RULE_PRIORITY = 10150;

/**
 * Node -> gateway VXLAN (docs/security-gateway-binding.md): each node has its own UDP port, from
 * its node id, so that on a gateway the port, checked against the outer source address,
 * identifies the sending node. The VNI is the instance id. Node ids are 1..MAX_NODE_ID (assigned
 * like instance ids, `assignNodeIds`); ids 1..4095 have the ports they always had (20001..24095),
 * ids 4096..8191 count down from 20000 (id 0's, never assigned) to 15905, so the ports are one
 * contiguous range without a hole, TUNNEL_PORT_MIN..TUNNEL_PORT_MAX, in every nft rule and
 * firewall. It stays below the probe ports, Kubernetes NodePorts (30000+) and Linux's ephemeral
 * ports (32768+).
 */
export const MAX_NODE_ID = 0x1fff;
const TUNNEL_PORT_BASE = 20000;

/** The one mapping of a node id to its tunnel port. */
export function tunnelPortFor(nodeId: number): number {
  if (!Number.isInteger(nodeId) || nodeId < 1 || nodeId > MAX_NODE_ID)
    throw new RangeError(`node id ${nodeId} is outside 1..${MAX_NODE_ID}`);
  // Ids 4096+ count down from 20000: the range grows downwards, contiguous (8,191 ports for 8,191 ids).
  return nodeId <= MAX_INSTANCE_ID ? TUNNEL_PORT_BASE + nodeId : TUNNEL_PORT_BASE + MAX_INSTANCE_ID + 1 - nodeId;
}

/** Every node's tunnel port lies in TUNNEL_PORT_MIN..TUNNEL_PORT_MAX (15905..24095). */
export const TUNNEL_PORT_MIN = tunnelPortFor(MAX_NODE_ID);
export const TUNNEL_PORT_MAX = tunnelPortFor(MAX_INSTANCE_ID);

/** RFC 5881 §4: BFD single-hop control packets go to this UDP port (nodes probe gateways on it). */
export const BFD_CONTROL_PORT = 3784;
/** RFC 5883: multihop BFD; never ours, but dropped and admitted like single-hop. */
export const BFD_MULTIHOP_PORT = 4784;

/**
 * Node: the TCP source ports of verification probes (docs/policies.md "Verification"), one per
 * verifying policy: PROBE_PORT_BASE + its id (1..4095, assigned like instance ids over the
 * verifying policies). The gateway tells the policies' probes apart by it (the node's own address
 * and the echo service are the same for all of them). Between the tunnel ports and Kubernetes
 * NodePorts (30000+), below Linux's ephemeral ports.
 */
export const PROBE_PORT_BASE = 24576;
export const PROBE_PORT_MAX = PROBE_PORT_BASE + MAX_INSTANCE_ID;
