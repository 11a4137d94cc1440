import type { NftObject } from "../../src/dataplane/kernel.js";
import { hex } from "../../src/dataplane/nft.js";
import { divertRows } from "../../src/dataplane/node.js";
import { execIn } from "../../src/lab/netns.js";
import { formatRange } from "../../src/util/ipv4.js";

/**
 * A node's divert decision as its kernel holds it, one row per pod and destination
 * (`10.244.1.10 . 198.51.100.0/24 : 0x10010002`): each pod's class (`pod_class`), then that class's
 * map, read from one listing of the table in the namespace `ns`.
 */
export async function divertListing(ns: string, table = "static_egress"): Promise<string[]> {
  const out = await execIn(ns, "nft", ["-j", "list", "table", "ip", table]);
  const objects = (JSON.parse(out) as { nftables: NftObject[] }).nftables;
  return divertRows(objects).map((r) => `${r.podIP} . ${formatRange(r.dst)} : ${hex(r.value)}`);
}

/** The class (chain and map) a pod's address jumps to in the node's `pod_class`, if any. */
export async function classOfPod(ns: string, podIP: string, table = "static_egress"): Promise<string | undefined> {
  const out = await execIn(ns, "nft", ["-j", "list", "map", "ip", table, "pod_class"]);
  const objects = (JSON.parse(out) as { nftables: { map?: { elem?: [string, { jump?: { target: string } }][] } }[] })
    .nftables;
  return objects.flatMap((o) => o.map?.elem ?? []).find(([ip]) => ip === podIP)?.[1].jump?.target;
}
