import { SpecValidator } from "../../src/api/v1alpha1/validate.js";
import type { Kernel, NftObject } from "../../src/dataplane/kernel.js";
import type { ClusterSnapshot, GatewayPlan, HealthView, NodePlan } from "../../src/planner/model.js";
import { Planner } from "../../src/planner/plan.js";
import { egressGateway, egressPolicy } from "../../src/planner/testing/arbitraries.js";

/**
 * One small cluster for the dataplane's kernel tests (unit tests on the fake kernel, and the
 * lab test that runs the same steps on a real namespace): node-a with pods on their own veths,
 * node-b, and gateway instances a, b, c of one EgressGateway.
 */

const NODE = "node-a";
export const INSTANCES = {
  a: { address: "10.0.0.101", egressIP: "203.0.113.1" },
  b: { address: "10.0.0.102", egressIP: "203.0.113.2" },
  c: { address: "10.0.0.103", egressIP: "203.0.113.3" },
} as const;
export type InstanceName = keyof typeof INSTANCES;

/** The pods' addresses on node-a (pod i is 10.244.1.i on the veth `pod<i>`). */
export const podIP = (i: number) => `10.244.1.${i}`;

/** A node's namespace before any agent: the VPC interface with a default route, and `pods` pod veths with their host routes. */
export function nodeTopology(pods: readonly number[], address = "10.0.0.11"): string[] {
  return [
    "link set lo up",
    "link add vpc0 type veth peer name vpc0p",
    "link set vpc0p up",
    "link set vpc0 up",
    `addr add ${address}/24 dev vpc0`,
    "route add default via 10.0.0.1 dev vpc0",
    ...pods.flatMap((i) => [
      `link add pod${i} type veth peer name pod${i}p`,
      `link set pod${i}p up`,
      `link set pod${i} up`,
      `route add ${podIP(i)} dev pod${i}`,
    ]),
  ];
}

/** State that belongs to others and must survive everything our agents do. */
export const FOREIGN_IP = [
  "rule add priority 500 fwmark 0x4000/0x4000 lookup 100",
  "route add blackhole 192.0.2.0/24 table 100",
  "route add 198.18.0.0/15 via 10.0.0.1",
];
export const FOREIGN_NFT =
  "table ip someone_else {\n  set blocked {\n    type ipv4_addr;\n    elements = " +
  "{ 192.0.2.9 }\n  }\n  chain c {\n    type filter hook forward priority " +
  "filter; policy accept;\n    ip daddr @blocked drop\n  }\n}\n";

const validator = new SpecValidator();

export function cluster(opts: {
  instances: readonly InstanceName[];
  pods: readonly number[];
  destinationCIDRs?: readonly string[];
}): ClusterSnapshot {
  return {
    policies: [
      egressPolicy(
        "shop",
        "web",
        {
          podSelector: { matchLabels: { app: "web" } },
          gatewayName: "shared",
          egressIPs: opts.instances.map((n) => INSTANCES[n].egressIP),
          ...(opts.destinationCIDRs ? { destinationCIDRs: [...opts.destinationCIDRs] } : {}),
        },
        "2024-01-01T00:00:00Z",
      ),
    ],
    gateways: [
      egressGateway("shared", {
        grants: [{ namespaceSelector: {} }],
        static: {
          instances: opts.instances.map((n) => ({
            name: n,
            address: INSTANCES[n].address,
            egressIPs: [INSTANCES[n].egressIP],
          })),
        },
      }),
    ],
    pods: opts.pods.map((i) => ({
      namespace: "shop",
      name: `web-${i}`,
      labels: { app: "web" },
      nodeName: NODE,
      ips: [podIP(i)],
      phase: "Running" as const,
    })),
    namespaces: [{ name: "shop", labels: {} }],
    nodes: [
      { name: NODE, labels: {}, annotations: {}, internalIP: "10.0.0.11", podCIDRs: ["10.244.1.0/24"] },
      { name: "node-b", labels: {}, annotations: {}, internalIP: "10.0.0.12", podCIDRs: ["10.244.2.0/24"] },
    ],
    network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
  };
}

export function nodePlan(snapshot: ClusterSnapshot, health: HealthView = new Map()): NodePlan {
  return new Planner(snapshot, { validator }).planNode(NODE, health);
}

export function gatewayPlan(snapshot: ClusterSnapshot, instance: InstanceName): GatewayPlan {
  const plan = new Planner(snapshot, { validator }).planGateway(`shared/${instance}`);
  if (!plan) throw new Error(`no instance ${instance} in the cluster`);
  return plan;
}

/**
 * What a kernel holds, as our readers see it, without what differs between two kernels holding
 * the same things (handles, interface indexes, element order, generated MACs): the unit tests
 * compare a kernel changed step by step with one programmed once, and the lab test compares
 * the fake with the real kernel.
 */
export async function readBack(kernel: Kernel, tables: readonly string[]): Promise<unknown> {
  const nft: Record<string, unknown> = {};
  for (const t of tables) nft[t] = nftShape(await kernel.nftList(`table ${t}`, { stateless: true }));
  const sorted = <T>(xs: readonly T[]) => [...xs].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  type Link = {
    ifname: string;
    flags?: string[];
    mtu?: number;
    master?: string;
    address?: string;
    linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
  };
  const links = (await kernel.ipJson<Link>(["-d", "link", "show"])).map((l) => {
    const d = l.linkinfo?.info_data;
    return {
      ifname: l.ifname,
      flags: l.flags,
      mtu: l.mtu,
      ...(l.master ? { master: l.master } : {}),
      kind: l.linkinfo?.info_kind ?? "loopback",
      ...(l.linkinfo?.info_kind === "vxlan" && d
        ? {
            address: l.address,
            vxlan: { id: d.id, local: d.local, remote: d.remote, port: d.port, learning: d.learning },
          }
        : {}),
    };
  });
  type Addr = { ifname?: string; addr_info?: { local?: string; prefixlen?: number; scope?: string }[] };
  const addrs = (await kernel.ipJson<Addr>(["-4", "addr", "show", "type", "vxlan"]))
    .filter((a) => a.ifname)
    .map((a) => ({
      ifname: a.ifname,
      addr_info: a.addr_info?.map((i) => ({ local: i.local, prefixlen: i.prefixlen, scope: i.scope })),
    }));
  return {
    nft,
    // Rules of one priority may be listed in another order; ours never overlap.
    rules: sorted(await kernel.ipJson(["-4", "rule", "show"])),
    routes: sorted(
      (await kernel.ipJson<{ table?: string }>(["-4", "route", "show", "table", "all"])).filter(
        (r) => r.table !== "local",
      ),
    ),
    links: sorted(links),
    neighbours: sorted(await kernel.ipJson(["-4", "neigh", "show", "nud", "permanent"])),
    addresses: sorted(addrs),
  };
}

/** A table's sets (elements in a fixed order), counters and chains (with their number of rules: the fake keeps rule bodies as text). */
function nftShape(objects: NftObject[] | undefined): unknown {
  if (!objects) return null;
  const out: { sets: Record<string, unknown>; counters: string[]; chains: Record<string, unknown> } = {
    sets: {},
    counters: [],
    chains: {},
  };
  for (const o of objects) {
    const set = (o.set ?? o.map) as
      { name: string; type: unknown; map?: string; flags?: string[]; elem?: unknown[] } | undefined;
    if (set)
      out.sets[set.name] = {
        type: set.type,
        map: set.map,
        flags: set.flags,
        elem: (set.elem ?? []).map((e) => JSON.stringify(e)).sort(),
      };
    const counter = o.counter as { name: string } | undefined;
    if (counter) out.counters.push(counter.name);
    const chain = o.chain as { name: string; type?: string; hook?: string; prio?: number; policy?: string } | undefined;
    if (chain)
      out.chains[chain.name] = { type: chain.type, hook: chain.hook, prio: chain.prio, policy: chain.policy, rules: 0 };
    const rule = o.rule as { chain: string } | undefined;
    if (rule) (out.chains[rule.chain] as { rules: number }).rules++;
  }
  out.counters.sort();
  return out;
}
