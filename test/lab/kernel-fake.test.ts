import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GATEWAY_TABLE, GatewayDataplane } from "../../src/dataplane/gateway.js";
import { commandKernel, type Kernel } from "../../src/dataplane/kernel.js";
import { BIND_TABLE, divertClasses, NodeDataplane } from "../../src/dataplane/node.js";
import { addNamespace, deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { formatRange } from "../../src/util/ipv4.js";
import type { NodePlan } from "../../src/planner/model.js";
import { divertValue } from "../../src/planner/failover.js";
import { inNamespace } from "../../src/util/exec.js";
import {
  cluster,
  FOREIGN_IP,
  FOREIGN_NFT,
  gatewayPlan,
  INSTANCES,
  nodePlan,
  nodeTopology,
  readBack,
} from "../support/dataplane-scenario.js";
import { FakeKernel } from "../support/fake-kernel.js";

// Keeps the fake kernel (test/support/fake-kernel.ts) honest: the same steps run on a real
// network namespace and on the fake, and after each one both read back the same (through the
// listings our readers parse), and both accept or refuse the same commands.
const prefix = newRunPrefix();
const nodeNs = `${prefix}-fknode`;
const gwNs = `${prefix}-fkgw`;
const NODE_TABLES = ["ip static_egress", `bridge ${BIND_TABLE}`, "ip someone_else"];
const pods = [10, 11, 12, 13, 14];

interface Pair {
  real: Kernel;
  fake: FakeKernel;
}
const node: Pair = { real: commandKernel(inNamespace(nodeNs)), fake: new FakeKernel() };
const gw: Pair = { real: commandKernel(inNamespace(gwNs)), fake: new FakeKernel() };

async function same(pair: Pair, tables: readonly string[]): Promise<void> {
  expect(await readBack(pair.fake, tables)).toEqual(await readBack(pair.real, tables));
}

/** Runs `step` on both kernels; both must succeed or both fail, and hold the same afterwards. */
async function both(pair: Pair, tables: readonly string[], step: (k: Kernel) => Promise<unknown>): Promise<boolean> {
  const outcome = async (k: Kernel): Promise<{ ok: boolean; error?: string }> =>
    step(k).then(
      () => ({ ok: true }),
      (e: Error) => ({ ok: false, error: e.message.split("\n")[0] }),
    );
  const real = await outcome(pair.real);
  const fake = await outcome(pair.fake);
  expect(
    fake.ok,
    `the fake ${fake.ok ? "accepted" : `refused (${fake.error})`}, the kernel ${real.ok ? "accepted" : `refused (${real.error})`}`,
  ).toBe(real.ok);
  await same(pair, tables);
  return real.ok;
}

beforeAll(async () => {
  await addNamespace(nodeNs);
  await addNamespace(gwNs);
  for (const k of [node.real, node.fake]) {
    await k.ip([...nodeTopology(pods), ...FOREIGN_IP]);
    await k.nft(FOREIGN_NFT);
  }
  for (const k of [gw.real, gw.fake]) await k.ip([...nodeTopology([], INSTANCES.a.address), ...FOREIGN_IP]);
});

afterAll(async () => {
  await deleteNamespacesWithPrefix(`${prefix}-`);
});

describe("the fake kernel reads back like the real one", () => {
  const dps = { real: new NodeDataplane(node.real), fake: new NodeDataplane(node.fake) };
  const apply = (plan: NodePlan, verify = false) =>
    both(node, NODE_TABLES, (k) => (k === node.real ? dps.real : dps.fake).apply(plan, { verify }));
  const ab = nodePlan(cluster({ instances: ["a", "b"], pods: pods.slice(0, 3) }));

  it("a node before any agent", async () => {
    await same(node, NODE_TABLES);
  });

  it("a node agent's first apply, a delta, a new instance replacing one, and a no-op", async () => {
    expect(await apply(ab)).toBe(true);
    expect(await apply(nodePlan(cluster({ instances: ["a", "b"], pods })))).toBe(true);
    expect(await apply(nodePlan(cluster({ instances: ["b", "c"], pods })))).toBe(true);
    expect(await apply(nodePlan(cluster({ instances: ["b", "c"], pods }), new Map([["shared/b", "down"]])))).toBe(true);
    expect(await apply(nodePlan(cluster({ instances: ["b", "c"], pods })), true)).toBe(true);
    for (const address of [INSTANCES.b.address, "10.244.1.11", "198.18.0.1"]) {
      const where = async (k: Kernel) =>
        (await k.ipJson<{ dst?: string; dev?: string; gateway?: string }>(["route", "get", address])).map(
          ({ dst, dev, gateway }) => ({ dst, dev, gateway }),
        );
      expect(await where(node.fake)).toEqual(await where(node.real));
    }
    const counters = async (k: Kernel) =>
      ((await k.nftList("counters table ip static_egress")) ?? [])
        .flatMap((o) => (o.counter ? [(o.counter as { name: string }).name] : []))
        .sort();
    expect(await counters(node.fake)).toEqual(await counters(node.real));
  });

  it("packets counted are no drift: a verifying apply keeps the counters on both", async () => {
    const plan = nodePlan(cluster({ instances: ["b", "c"], pods }));
    // A health probe with a TTL below 255, from the node itself: dropped and counted.
    await execIn(nodeNs, "bash", ["-c", "echo probe > /dev/udp/127.0.0.1/3784"]);
    node.fake.count("ip", "static_egress", "forged_health_drops", 1);
    expect(await apply(plan, true)).toBe(true);
    expect((await dps.fake.drops()).forgedHealth).toBe(1);
    expect((await dps.real.drops()).forgedHealth).toBe(1);
  });

  it("drift behind the agent's back, and its repair", async () => {
    const plan = nodePlan(cluster({ instances: ["b", "c"], pods }));
    const b = plan.instances.find((i) => i.key === "shared/b")!;
    const c = plan.instances.find((i) => i.key === "shared/c")!;
    expect(
      await both(node, NODE_TABLES, (k) =>
        k.nft(`delete element ip static_egress pod_class { ${plan.entries[0]!.podIP} }\n`),
      ),
    ).toBe(true);
    expect(
      await both(node, NODE_TABLES, (k) =>
        k.ip([`rule del priority 10010 fwmark 0x${b.mark.toString(16)}/0x1fff0000 lookup ${b.table}`]),
      ),
    ).toBe(true);
    expect(await both(node, NODE_TABLES, (k) => k.ip([`link del se-gw${c.vni}`]))).toBe(true); // takes its route and neighbour along
    expect(await apply(plan, true)).toBe(true);
    expect(await both(node, NODE_TABLES, (k) => k.nft("delete table ip static_egress\n"))).toBe(true);
    expect(await apply(plan, true)).toBe(true);
  });

  it("the same commands are accepted and refused", async () => {
    const plan = nodePlan(cluster({ instances: ["b", "c"], pods }));
    const c = plan.instances.find((i) => i.key === "shared/c")!;
    const pod = plan.entries[0]!.podIP;
    const first = formatRange(plan.entries[0]!.dst);
    const cls = divertClasses(plan.entries).podClass.get(pod)!;
    const nft: [string, boolean][] = [
      [`add element ip static_egress down_instances { 0x10000000 }\n`, true], // exists, same: a no-op
      [`create element ip static_egress down_instances { 0x10000000 }\n`, false],
      [`add element ip static_egress ${cls} { ${first} : 0x10000000 }\n`, false], // exists with another value
      [`add element ip static_egress ${cls} { ${first} : 0x${divertValue(plan.entries[0]!).toString(16)} }\n`, true], // exists, same
      [`add element ip static_egress pod_class { ${pod} : jump ${cls} }\n`, true], // exists, same
      [`add element ip static_egress pod_class { 10.244.1.99 : jump class_00000000 }\n`, false], // no such chain
      [`add element ip static_egress pod_class { 10.244.1.99 : jump ${cls} }\n`, true],
      [`delete element ip static_egress pod_class { 10.244.1.98 }\n`, false], // not there (a hash map)
      [
        `add element ip static_egress down_instances { 0x10000009 }\ndelete element ip static_egress down_instances { 0x10000007 }\n`,
        false,
      ], // all or nothing
      [`add element ip static_egress never_divert { 10.0.0.0-10.0.0.127 }\n`, false], // overlaps 10.0.0.0/24
      [`delete element ip static_egress never_divert { 10.0.0.0/16 }\n`, false],
      [
        `delete element ip static_egress never_divert { 10.0.0.0-10.0.0.255 }\nadd element ip static_egress never_divert { 10.0.0.0/24 }\n`,
        true,
      ],
      [`add element ip static_egress pod_ifaces { 10.244.1.99 . "pod99" }\n`, true],
      [`add element ip static_egress nosuch { 10.244.1.99 }\n`, false],
      ["delete table ip nosuch\n", false],
      ["table ip static_egress {\n  chain extra {\n    ip daddr @nosuch drop\n  }\n}\n", false],
      ["table ip static_egress\n", true],
    ];
    for (const [script, accepted] of nft)
      expect({ script, ok: await both(node, NODE_TABLES, (k) => k.nft(script)) }).toEqual({ script, ok: accepted });
    const ip: [string[], boolean][] = [
      [["rule add priority 10099 fwmark 0x10000000/0x10000000 blackhole"], false], // a duplicate
      [["rule del priority 10077 fwmark 0x1/0x1 lookup 7000"], false],
      [[`route add default via 169.254.53.1 dev se-gw${c.vni} onlink table ${c.table}`], false], // exists
      [[`route replace default via 169.254.53.1 dev se-gw${c.vni} onlink table ${c.table}`], true],
      // The batch stops at the device that is not up; the line before it stays.
      [
        [
          "link add se-gwt address 02:5e:9a:00:00:02 mtu 1450 type vxlan id 4000 local 10.0.0.11 remote 10.0.0.199 dstport 20999 nolearning",
          "route replace default via 169.254.53.1 dev se-gwt onlink table 7999",
          "link set se-gwt up",
        ],
        false,
      ],
      [
        [
          "link set se-gwt up",
          "route replace default via 169.254.53.1 dev se-gwt onlink table 7999",
          "route replace blackhole 203.0.113.0/24 table 7999 proto 94",
        ],
        true,
      ],
      [["link set se-gwt down"], true], // takes the route through it along
      [["route del default table 7999"], false],
      [["link del se-gwt"], true],
      [["link del se-gwt"], false],
      [["route add 10.1.2.3/24 dev vpc0"], false], // host bits set
      [["route replace default via 10.9.9.9 table 7997"], false], // no connected route to the next hop
      [["route replace default via 10.0.0.1 table 7997"], true],
      [["route del default via 10.0.0.1 table 7997"], true],
    ];
    for (const [lines, accepted] of ip)
      expect({ lines, ok: await both(node, NODE_TABLES, (k) => k.ip(lines)) }).toEqual({ lines, ok: accepted });
  });

  it("the node agent's cleanup", async () => {
    expect(await both(node, NODE_TABLES, (k) => (k === node.real ? dps.real : dps.fake).cleanup())).toBe(true);
  });

  it("a gateway agent's apply with an anchor, a changed plan, and its cleanup", async () => {
    const tables = [`ip ${GATEWAY_TABLE}`];
    const anchor = { address: "10.20.0.5", gateway: "10.0.0.1" };
    const g = { real: new GatewayDataplane(gw.real, { anchor }), fake: new GatewayDataplane(gw.fake, { anchor }) };
    const on = (k: Kernel) => (k === gw.real ? g.real : g.fake);
    expect(await both(gw, tables, (k) => on(k).apply(gatewayPlan(cluster({ instances: ["a", "b"], pods }), "a")))).toBe(
      true,
    );
    expect(
      await both(gw, tables, (k) =>
        on(k).apply(gatewayPlan(cluster({ instances: ["a", "b"], pods: pods.slice(2) }), "a")),
      ),
    ).toBe(true);
    expect(await both(gw, tables, (k) => on(k).cleanup())).toBe(true);
  });
});
