import { addNamespace, execIn } from "../../src/lab/netns.js";
import { markFor, tableFor } from "../../src/planner/ids.js";
import type { NodePlan } from "../../src/planner/model.js";
import { formatIPv4, parseCidr, parseIPv4 } from "../../src/util/ipv4.js";

/**
 * A namespace that stands in for a node: `dev` (one end of a veth pair; this kernel has no dummy
 * devices) carries the node's VPC address 10.0.0.11/24, so routes via the instances resolve.
 */
export async function addNodeNamespace(ns: string, dev = "vpc0"): Promise<void> {
  await addNamespace(ns);
  await execIn(ns, "ip", ["link", "add", dev, "type", "veth", "peer", "name", `${dev}p`]);
  await execIn(ns, "ip", ["link", "set", `${dev}p`, "up"]);
  await execIn(ns, "ip", ["addr", "add", "10.0.0.11/24", "dev", dev]);
  await execIn(ns, "ip", ["link", "set", dev, "up"]);
}

/**
 * That node's plan: two instances (gw/a, gw/b, each the other's failover), `pods` pods from
 * 10.244.1.10 diverting 198.51.100.0/24, alternately to a and b; gw/a's route as `health` says.
 */
export function twoInstancePlan(health: "via" | "blackhole", pods = 3): NodePlan {
  const instances = [
    { key: "gw/a", address: "10.0.0.101", mark: markFor(1), table: tableFor(1), route: health, vni: 1 },
    { key: "gw/b", address: "10.0.0.102", mark: markFor(2), table: tableFor(2), route: "via" as const, vni: 2 },
  ];
  const entries = Array.from({ length: pods }, (_, i) => ({
    podIP: formatIPv4(parseIPv4("10.244.1.10") + i),
    dst: parseCidr("198.51.100.0/24"),
    mark: markFor(1 + (i % 2)),
    policy: "EgressPolicy/a/p",
    instance: i % 2 === 0 ? "gw/a" : "gw/b",
    failoverMark: markFor(2 - (i % 2)),
  }));
  return {
    node: "n",
    instances,
    entries,
    neverDivert: [parseCidr("10.0.0.0/8")],
    unavailable: [],
    podsByPolicy: {},
    tunnel: { address: "10.0.0.11", port: 20011 },
  };
}
