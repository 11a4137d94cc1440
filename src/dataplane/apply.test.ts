/**
 * How the node and gateway dataplanes change the kernel, on the stateful fake kernel (no root):
 * delta or full replacement, drift repair, add-before-remove ordering, failures mid-apply and
 * cleanup. test/lab/kernel-fake.test.ts keeps the fake honest against a real namespace, and the
 * lab's dataplane and datapath tests stay the truth.
 */
import { describe, expect, it } from "vitest";
import {
  cluster,
  FOREIGN_IP,
  FOREIGN_NFT,
  gatewayPlan,
  INSTANCES,
  nodePlan,
  nodeTopology,
  podIP,
  readBack,
  type InstanceName,
} from "../../test/support/dataplane-scenario.js";
import { FakeKernel } from "../../test/support/fake-kernel.js";
import { formatCidrOrRange, formatRange } from "../util/ipv4.js";
import { MARK_MASK, NODE_REPLY_TABLE } from "../api/datapath.js";
import type { NodePlan } from "../planner/model.js";
import { ANCHOR_TABLE, GATEWAY_TABLE, GatewayDataplane } from "./gateway.js";
import { hex, MAX_DELTA_DELETIONS, OwnedTable, type TableModel } from "./nft.js";
import { BIND_TABLE, divertClasses, divertRows, NodeDataplane } from "./node.js";
import { FailoverWriter, type ApplyCommit, type HealthPort } from "./node-health.js";
import { divertValue } from "../planner/failover.js";

const NODE_TABLES = ["ip static_egress", `bridge ${BIND_TABLE}`, "ip someone_else"];
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

/** A node's namespace: its interfaces, and state of others that must survive. */
async function nodeKernel(pods: readonly number[]): Promise<FakeKernel> {
  const k = new FakeKernel();
  await k.ip([...nodeTopology(pods), ...FOREIGN_IP]);
  await k.nft(FOREIGN_NFT);
  return k;
}

/** What the kernel holds after one apply of `plan` onto a fresh node: what every other path must arrive at. */
async function programmedOnce(pods: readonly number[], plan: NodePlan): Promise<unknown> {
  const k = await nodeKernel(pods);
  await new NodeDataplane(k).apply(plan);
  return readBack(k, NODE_TABLES);
}

const nftWrites = (k: FakeKernel, from = 0) => k.log.slice(from).filter((c) => c.op === "nft");
const ipWrites = (k: FakeKernel, from = 0) =>
  k.log
    .slice(from)
    .filter((c) => c.op === "ip" && c.ok)
    .map((c) => c.text);

const pods = range(10, 4);
/** The class (chain and map) the kernel's `pod_class` sends a pod to. */
const classOf = (k: FakeKernel, ip: string) =>
  (k.elements("ip", "static_egress", "pod_class") as [string, { jump: { target: string } }][]).find(
    ([key]) => key === ip,
  )![1].jump.target;
/** The key of the plan's i-th divert entry in its pod's class map (its destination), and that map. */
const classKey = (k: FakeKernel, plan: NodePlan, i: number) => ({
  map: classOf(k, plan.entries[i]!.podIP),
  key: formatRange(plan.entries[i]!.dst),
});
/** Every divert value the kernel's class maps hold for a pod of `pod_class`. */
const divertValues = (k: FakeKernel) =>
  (k.elements("ip", "static_egress", "pod_class") as [string, { jump: { target: string } }][]).flatMap(([, v]) =>
    (k.elements("ip", "static_egress", v.jump.target) as [unknown, number][]).map(([, value]) => value),
  );
const two = (instances: InstanceName[] = ["a", "b"], p: readonly number[] = pods) =>
  nodePlan(cluster({ instances, pods: p }));

describe("delta or full replacement", () => {
  it("programs a fresh node with one full table, and an unchanged plan writes nothing", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const start = k.log.length;
    await dp.apply(two());
    // A full replacement is wrapped in a handover table that marks new flows meanwhile: created
    // (with the new map) before, removed after.
    const [handover, first, removed, ...others] = nftWrites(k, start);
    expect(others).toEqual([]);
    expect(handover!.text).toContain("table ip static_egress_handover {");
    expect(handover!.text).toMatch(/map pod_class \{[^}]*elements = \{ 10\.244\.1\.\d+ : jump class_[0-9a-f]{8}/);
    expect(handover!.text).toMatch(/map class_[0-9a-f]{8} \{[^}]*elements = \{ [\d.]+(\/\d+|-[\d.]+)? : 0x/);
    expect(handover!.text).toMatch(/chain class_[0-9a-f]{8} \{/);
    expect(first!.text).toContain("delete table ip static_egress\ntable ip static_egress {");
    expect(first!.text).toContain(`delete table bridge ${BIND_TABLE}\ntable bridge ${BIND_TABLE} {`);
    expect(removed!.text).toBe("table ip static_egress_handover\ndelete table ip static_egress_handover\n");
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(pods, two()));

    const again = k.log.length;
    const report = await dp.apply(two());
    expect(report).toMatchObject({ nftChanged: false, routingAdded: 0, routingRemoved: 0 });
    expect(k.log.slice(again).filter((c) => c.op === "nft" || c.op === "ip")).toEqual([]);
  });

  it("adds and removes pods as element changes only, arriving where a fresh full apply arrives", async () => {
    const all = range(10, 8);
    const k = await nodeKernel(all);
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], range(10, 5)));
    const start = k.log.length;
    const next = two(["a", "b"], [11, 12, 13, 14, 15, 16, 17]); // pod 10 gone, 15-17 new
    await dp.apply(next);
    const writes = nftWrites(k, start).map((c) => c.text);
    expect(writes).toHaveLength(1);
    const lines = writes[0]!.trim().split("\n");
    expect(lines.every((l) => /^(add|delete) element /.test(l))).toBe(true);
    // One transaction; in each set the deletions come before the additions (a changed value is a delete and an add).
    for (const set of new Set(lines.map((l) => l.split(" ")[4]))) {
      const del = lines.findIndex((l) => l.startsWith(`delete element ip static_egress ${set} `));
      const add = lines.findIndex((l) => l.startsWith(`add element ip static_egress ${set} `));
      if (del >= 0 && add >= 0) expect(del).toBeLessThan(add);
    }
    expect(lines.find((l) => l.startsWith("delete element ip static_egress pod_class"))).toContain(
      `${podIP(10)} : jump class_`,
    );
    expect(lines.find((l) => l.startsWith("add element ip static_egress pod_ifaces"))).toBe(
      `add element ip static_egress pod_ifaces { ${podIP(15)} . "pod15", ${podIP(16)} . "pod16", ${podIP(17)} . "pod17" }`,
    );
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(all, next));
  });

  it("removes any number of pods as a delta; a class appearing or going is a delta too; other structure replaces the table", async () => {
    const many = range(10, MAX_DELTA_DELETIONS + 8);
    const k = await nodeKernel(many);
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], many), { verify: true });
    const classesOf = (p: NodePlan) => divertClasses(p.entries);
    // One pod of each class stays: more than MAX_DELTA_DELETIONS deletions, from hash sets only.
    const { podClass } = classesOf(two(["a", "b"], many));
    const seen = new Set<string>();
    const kept = many.filter((n) => !seen.has(podClass.get(podIP(n))!) && !!seen.add(podClass.get(podIP(n))!));
    const fewer = two(["a", "b"], kept);
    expect(many.length - kept.length).toBeGreaterThan(MAX_DELTA_DELETIONS);
    let start = k.log.length;
    await dp.apply(fewer);
    const [delta, ...rest] = nftWrites(k, start);
    expect(rest).toEqual([]);
    expect(delta!.text).not.toContain("delete table");
    expect(delta!.text.match(/delete element ip static_egress pod_class \{([^}]*)\}/)![1]!.split(",").length).toBe(
      many.length - kept.length,
    );
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(many, fewer));

    // A class whose last pod leaves stays, empty (the next pod of that decision joins it with one
    // element); the next verify deletes its chain and map, in one transaction.
    const few = two(["a", "b"], [kept[0]!]);
    const gone = [...classesOf(fewer).classes.keys()].filter((c) => !classesOf(few).classes.has(c));
    expect(gone.length).toBeGreaterThan(0);
    start = k.log.length;
    await dp.apply(few);
    const [left, ...more] = nftWrites(k, start).map((c) => c.text);
    expect(more).toEqual([]);
    expect(left).toContain("delete element ip static_egress pod_class");
    expect(left).not.toContain("delete chain");
    start = k.log.length;
    await dp.apply(few, { verify: true });
    const [write, ...others] = nftWrites(k, start).map((c) => c.text);
    expect(others).toEqual([]);
    expect(write).not.toContain("delete table");
    for (const c of gone) {
      expect(write).toContain(`flush chain ip static_egress ${c}\ndelete chain ip static_egress ${c}\n`);
      expect(write).toContain(`delete map ip static_egress ${c}\n`);
      expect(write!.indexOf("delete element ip static_egress pod_class")).toBeLessThan(
        write!.indexOf(`delete chain ip static_egress ${c}`),
      );
    }
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(many, few));

    // A third instance gives the pod another decision (its failover instance): a class appearing,
    // made in a transaction of its own ahead of the one that moves the pod's element to it (a new
    // interval map is filled only as its transaction ends).
    start = k.log.length;
    const three = two(["a", "b", "c"], [kept[0]!]);
    const came = [...classesOf(three).classes.keys()].filter((c) => !classesOf(few).classes.has(c));
    expect(came.length).toBeGreaterThan(0);
    await dp.apply(three);
    const [prelude, moved, ...after] = nftWrites(k, start).map((c) => c.text);
    expect(after).toEqual([]);
    for (const c of came) {
      expect(prelude).toMatch(new RegExp(`  map ${c} \\{\\n[^}]*elements = \\{`));
      expect(prelude).toContain(`  chain ${c} {\n    meta mark set ip daddr map @${c} `);
      expect(prelude).not.toContain(`jump ${c}`);
      expect(moved).toContain(`jump ${c} }`);
    }
    expect(moved).not.toContain("delete table");
    // The prelude can be written again (a delta that failed after it is retried): no rule twice.
    await k.nft(prelude!);
    const held = (await readBack(k, NODE_TABLES)) as {
      nft: Record<string, { chains: Record<string, { rules: number }> }>;
    };
    for (const c of came) expect(held.nft["ip static_egress"]!.chains[c]!.rules).toBe(2);
    // The class the pod left stays, empty, until the next verify, which deletes it with a delta.
    start = k.log.length;
    expect((await dp.apply(three, { verify: true })).nftChanged).toBe(true);
    expect(nftWrites(k, start).map((c) => c.text)).toEqual([expect.not.stringContaining("delete table")]);
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(many, three));
    // Its structure was read after the delta: a verify finds the table as written.
    start = k.log.length;
    expect((await dp.apply(three, { verify: true })).nftChanged).toBe(false);
    expect(nftWrites(k, start)).toEqual([]);

    // The node losing its tunnel end changes the chains (no tunnel port to guard): a full replacement.
    start = k.log.length;
    const { tunnel: _gone, ...withoutTunnel } = three;
    await dp.apply(withoutTunnel);
    expect(nftWrites(k, start).map((c) => c.text.split("\n")[1])).toEqual([
      "delete table ip static_egress_handover",
      "delete table ip static_egress",
      "delete table ip static_egress_handover",
    ]);
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(many, withoutTunnel));
  });
});

describe("drift repair", () => {
  const tamperings: [string, (k: FakeKernel, plan: NodePlan) => Promise<void>][] = [
    [
      "a pod's element of pod_class",
      (k, plan) => k.nft(`delete element ip static_egress pod_class { ${plan.entries[0]!.podIP} }\n`),
    ],
    [
      "an element of a class map",
      (k, plan) => {
        const { map, key } = classKey(k, plan, 0);
        return k.nft(`delete element ip static_egress ${map} { ${key} }\n`);
      },
    ],
    ["the whole nft table", (k) => k.nft("delete table ip static_egress\n")],
    ["the bridge table", (k) => k.nft(`delete table bridge ${BIND_TABLE}\n`)],
    [
      "an instance's rule",
      (k, plan) =>
        k.ip([
          `rule del priority 10010 fwmark 0x${plan.instances[0]!.mark.toString(16)}/0x1fff0000 lookup ${plan.instances[0]!.table}`,
        ]),
    ],
    ["the catch-all blackhole rule", (k) => k.ip(["rule del priority 10099 fwmark 0x10000000/0x10000000 blackhole"])],
    ["an instance's route", (k, plan) => k.ip([`route del default table ${plan.instances[1]!.table}`])],
    [
      "a tunnel device (and with it its route and neighbour)",
      (k, plan) => k.ip([`link del se-gw${plan.instances[0]!.vni}`]),
    ],
    [
      "a tunnel's neighbour",
      (k, plan) =>
        k.ip([`neigh replace 169.254.53.1 lladdr 02:00:00:00:00:99 dev se-gw${plan.instances[0]!.vni} nud permanent`]),
    ],
  ];

  for (const [what, tamper] of tamperings) {
    it(`someone deletes ${what}: the next verifying apply restores exactly the plan`, async () => {
      const k = await nodeKernel(pods);
      const dp = new NodeDataplane(k);
      const plan = two();
      await dp.apply(plan, { verify: true });
      const programmed = await readBack(k, NODE_TABLES);
      await tamper(k, plan);
      expect(await readBack(k, NODE_TABLES)).not.toEqual(programmed);
      const report = await dp.apply(plan, { verify: true });
      expect(report.nftChanged || report.routingAdded > 0).toBe(true);
      expect(await readBack(k, NODE_TABLES)).toEqual(programmed);
    });
  }

  it("an unchanged plan trusts routing and the nft table until the next verify (reading back is not free); a changed one reads routing back", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const plan = two();
    await dp.apply(plan);
    const programmed = await readBack(k, NODE_TABLES);
    await k.ip([`route del default table ${plan.instances[0]!.table}`]);
    await k.nft(`delete element ip static_egress pod_class { ${plan.entries[0]!.podIP} }\n`);
    await dp.apply(plan);
    const after = (await readBack(k, NODE_TABLES)) as { routes: unknown; nft: unknown };
    expect(after.routes).not.toEqual((programmed as { routes: unknown }).routes);
    expect(after.nft).not.toEqual((programmed as { nft: unknown }).nft);
    await dp.apply(plan, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(programmed);
    // A plan whose routing changes (an instance leaves, then comes back) reads routing back and repairs it.
    await k.ip([`route del default table ${plan.instances[0]!.table}`]);
    await dp.apply(two(["b"]));
    await dp.apply(plan);
    expect(((await readBack(k, NODE_TABLES)) as { routes: unknown }).routes).toEqual(
      (programmed as { routes: unknown }).routes,
    );
  });

  it("packets counted are no drift: a verifying apply keeps the table, and so the drop counters", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    await dp.apply(two(), { verify: true });
    k.count("ip", "static_egress", "forged_health_drops", 3);
    const start = k.log.length;
    const report = await dp.apply(two(), { verify: true });
    expect(report.nftChanged).toBe(false);
    expect(nftWrites(k, start)).toEqual([]);
    expect((await dp.drops()).forgedHealth).toBe(3);
  });

  it("a verifying first apply on a node without our table commits no handover table; replacing a table the kernel holds does", async () => {
    const k = await nodeKernel(pods);
    let start = k.log.length;
    await new NodeDataplane(k).apply(two(), { verify: true });
    expect(nftWrites(k, start).some((w) => w.text.includes("static_egress_handover"))).toBe(false);
    start = k.log.length;
    await new NodeDataplane(k).apply(two(), { verify: true }); // a restarted agent: a full replacement
    expect(nftWrites(k, start).filter((w) => w.text.includes("static_egress_handover")).length).toBe(2);
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(pods, two()));
  });

  it("a verify after element deltas reads the tables back and writes nothing when they hold what the deltas left", async () => {
    const k = await nodeKernel(range(10, 8));
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], range(10, 6)), { verify: true });
    await dp.apply(two(["a", "b"], range(10, 7))); // one pod more: a delta
    await dp.apply(two(["a", "b"], range(11, 6))); // one pod less: a delta
    const start = k.log.length;
    const report = await dp.apply(two(["a", "b"], range(11, 6)), { verify: true });
    expect(report.nftChanged).toBe(false);
    expect(nftWrites(k, start)).toEqual([]);
    expect(k.log.slice(start).filter((c) => c.op === "nftList").length).toBeGreaterThan(0); // it did read
  });

  it("after deltas, an element swapped behind our back (the same count) is found by the verify and repaired", async () => {
    const k = await nodeKernel(range(10, 8));
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], range(10, 6)), { verify: true });
    const plan = two(["a", "b"], range(10, 7));
    await dp.apply(plan);
    const programmed = await readBack(k, NODE_TABLES);
    // Someone moves one class's destination to another instance's mark: as many elements as before.
    const e = plan.entries[0]!;
    const other = plan.instances.find((i) => i.mark !== e.mark)!.mark;
    const { map, key } = classKey(k, plan, 0);
    await k.nft(
      `delete element ip static_egress ${map} { ${key} }\n` +
        `add element ip static_egress ${map} { ${key} : ${hex(other)} }\n`,
    );
    expect(await readBack(k, NODE_TABLES)).not.toEqual(programmed);
    const report = await dp.apply(plan, { verify: true });
    expect(report.nftChanged).toBe(true);
    expect(await readBack(k, NODE_TABLES)).toEqual(programmed);
  });

  it("a full replacement of a shape verified before is verified later without a second replacement", async () => {
    const many = range(10, 4);
    const k = await nodeKernel(many);
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], [10]), { verify: true });
    const { tunnel: _gone, ...withoutTunnel } = two(["a", "b"], [10]);
    await dp.apply(withoutTunnel); // another shape
    await dp.apply(two(["a", "b"], [10])); // the first shape again: a full replacement, not verified
    const start = k.log.length;
    expect((await dp.apply(two(["a", "b"], [10]), { verify: true })).nftChanged).toBe(false);
    expect(nftWrites(k, start)).toEqual([]);
    // A chain someone adds to our table is structure: found, and the table replaced.
    await k.nft("table ip static_egress {\n  chain extra {\n  }\n}\n");
    expect((await dp.apply(two(["a", "b"], [10]), { verify: true })).nftChanged).toBe(true);
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(many, two(["a", "b"], [10])));
  });

  it("a full replacement (a restarted agent, a changed structure) keeps what the named counters counted", async () => {
    const k = await nodeKernel(pods);
    await new NodeDataplane(k).apply(two(), { verify: true });
    k.count("ip", "static_egress", "failclosed_drops", 5);
    const restarted = new NodeDataplane(k);
    const start = k.log.length;
    await restarted.apply(two(["b"]), { verify: true });
    expect(nftWrites(k, start).some((w) => w.text.includes("delete table ip static_egress"))).toBe(true);
    expect((await restarted.drops()).failClosed).toBe(5);
  });

  it("a restarted agent adopts what it finds: the same plan changes no route, rule or device", async () => {
    const k = await nodeKernel(pods);
    await new NodeDataplane(k).apply(two());
    const start = k.log.length;
    await new NodeDataplane(k).apply(two(), { verify: true });
    expect(ipWrites(k, start)).toEqual([]);
  });
});

/**
 * Where a diverted packet goes, for every mark nft has set since the test began (conntrack keeps
 * a flow's mark): into the tunnel of its own instance, or dropped. Anything else leaks.
 */
function leaksOf(k: FakeKernel, marks: ReadonlySet<number>, vniOf: ReadonlyMap<number, number>): string[] {
  const out: string[] = [];
  for (const mark of marks) {
    const where = k.lookup("198.51.100.7", mark);
    if (where.via === "blackhole") continue;
    if (where.via === "route" && vniOf.has(mark) && where.dev === `se-gw${vniOf.get(mark)}`) continue;
    out.push(`${hex(mark)} -> ${JSON.stringify(where)}`);
  }
  return out;
}

/**
 * Watches every kernel change and records each moment a marked packet would leak, or a packet
 * nft is marking right now for an instance that is up (in every plan that has it) would be
 * dropped: a gap in the change.
 */
function watchLeaks(
  k: FakeKernel,
  plans: readonly NodePlan[],
): { leaks: string[]; gaps: string[]; marks: Set<number> } {
  const vniOf = new Map(plans.flatMap((p) => p.instances.map((i) => [i.mark, i.vni] as const)));
  const instances = plans.flatMap((p) => p.instances);
  const alwaysUp = new Set(
    instances.filter((i) => instances.every((j) => j.mark !== i.mark || j.route === "via")).map((i) => i.mark),
  );
  const seen = { leaks: [] as string[], gaps: [] as string[], marks: new Set<number>() };
  k.onChange((call) => {
    const step = `after ${call.op} ${call.text.split("\n")[0]}`;
    // A divert value takes its mark through the remap map (failover); one without an element there is dropped.
    const remap = new Map(k.elements("ip", "static_egress", "remap").map((e) => e as [number, number]));
    const marking = new Set(divertValues(k).flatMap((v) => remap.get(v) ?? []));
    for (const m of marking) seen.marks.add(m);
    for (const leak of leaksOf(k, seen.marks, vniOf)) seen.leaks.push(`${step}: ${leak}`);
    for (const m of marking)
      if (alwaysUp.has(m) && k.lookup("198.51.100.7", m).via !== "route") seen.gaps.push(`${step}: ${hex(m)} dropped`);
  });
  return seen;
}

/** A node programmed for instances a and b, watched, and the plan that replaces a with c. */
async function programmedForMove() {
  const k = await nodeKernel(pods);
  const dp = new NodeDataplane(k);
  const before = two(["a", "b"]);
  const after = two(["b", "c"]);
  const watch = watchLeaks(k, [before, after]);
  await dp.apply(before);
  return { k, dp, before, after, watch };
}

describe("add before remove", () => {
  it("moving every pod from instance a to a new instance c: no marked packet ever leaks, and none of an instance that is up is ever dropped", async () => {
    const { k, dp, before, after, watch } = await programmedForMove();
    const start = k.log.length;
    await dp.apply(after);
    expect(watch.leaks).toEqual([]);
    expect(watch.gaps).toEqual([]);
    // The marks of a and c were both live during the change (a's flows, then c's).
    const a = before.instances.find((i) => i.key === "shared/a")!;
    const c = after.instances.find((i) => i.key === "shared/c")!;
    expect(watch.marks).toContain(a.mark);
    expect(watch.marks).toContain(c.mark);

    // The order, call by call: c's device, route and rule, then the map, then a's rule, route, device.
    const calls = k.log.slice(start).filter((x) => (x.op === "ip" || x.op === "nft") && x.ok);
    const at = (match: (text: string) => boolean) => calls.findIndex((x) => match(x.text));
    const cDevice = at((t) => t.startsWith(`link add se-gw${c.vni} `));
    const cRoute = at((t) => t.startsWith("route replace default") && t.includes(`table ${c.table}`));
    const cRule = at((t) => t.startsWith("rule add priority 10010") && t.endsWith(`lookup ${c.table}`));
    const map = at((t) => t.includes("pod_class"));
    const aRule = at((t) => t.startsWith("rule del priority 10010") && t.endsWith(`lookup ${a.table}`));
    const aRoute = at((t) => t.startsWith("route del") && t.includes(`table ${a.table}`));
    const aDevice = at((t) => t === `link del se-gw${a.vni}`);
    expect([cDevice, cRoute, cRule, map, aRule, aRoute, aDevice].every((i) => i >= 0)).toBe(true);
    expect(cDevice).toBeLessThan(cRoute);
    expect(cRoute).toBeLessThan(cRule);
    expect(cRule).toBeLessThan(map);
    expect(map).toBeLessThan(aRule);
    expect(aRule).toBeLessThan(aRoute);
    expect(aRoute).toBeLessThan(aDevice);
    // The classes that lost their pods (they sent to a) stay, empty, until the next verify.
    await dp.apply(after, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(pods, after));
  });

  it("an instance going down and up again: its table flips between blackhole and the tunnel, never empty", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const up = two();
    const down = nodePlan(cluster({ instances: ["a", "b"], pods }), new Map([["shared/a", "down"]]));
    const watch = watchLeaks(k, [up, down]);
    await dp.apply(up);
    const start = k.log.length;
    await dp.apply(down);
    await dp.apply(up);
    expect(watch.leaks).toEqual([]);
    expect(watch.gaps).toEqual([]);
    const table = up.instances.find((i) => i.key === "shared/a")!.table;
    expect(ipWrites(k, start).filter((t) => t.includes(`table ${table}`))).toEqual([
      `route replace blackhole default table ${table}`,
      `route replace default via 169.254.53.1 dev se-gw${up.instances[0]!.vni} onlink table ${table}`,
    ]);
  });

  it("the leak check can fail: removing before adding leaves marked packets to the node's own route", async () => {
    const k = await nodeKernel(pods);
    const plan = two();
    await new NodeDataplane(k).apply(plan);
    const vniOf = new Map(plan.instances.map((i) => [i.mark, i.vni] as const));
    const marks = new Set(plan.instances.map((i) => i.mark));
    expect(leaksOf(k, marks, vniOf)).toEqual([]);
    const a = plan.instances[0]!;
    await k.ip([
      `rule del priority 10010 fwmark 0x${a.mark.toString(16)}/0x1fff0000 lookup ${a.table}`,
      "rule del priority 10099 fwmark 0x10000000/0x10000000 blackhole",
    ]);
    expect(leaksOf(k, marks, vniOf)).toEqual([
      `${hex(a.mark)} -> {"via":"route","table":"main","dev":"vpc0","gateway":"10.0.0.1"}`,
    ]);
  });
});

describe("failure mid-apply", () => {
  it("a refused nft transaction leaves the tables as they were, removes nothing, and the retry converges", async () => {
    const { k, dp, after, watch } = await programmedForMove();
    const programmed = (await readBack(k, NODE_TABLES)) as { nft: unknown; rules: unknown[] };
    k.failNext("nft");
    const start = k.log.length;
    await expect(dp.apply(after)).rejects.toThrow(/Cannot allocate memory/);
    const failed = (await readBack(k, NODE_TABLES)) as { nft: unknown; rules: unknown[] };
    expect(failed.nft).toEqual(programmed.nft);
    // Only additions happened: every rule of before is still there (a's flows still go to a).
    expect(ipWrites(k, start).filter((t) => /^(rule|route|link) del/.test(t))).toEqual([]);
    for (const r of programmed.rules) expect(failed.rules).toContainEqual(r);
    // The reconcile loop retries with verify.
    await dp.apply(after, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(pods, after));
    expect(watch.leaks).toEqual([]);
    expect(watch.gaps).toEqual([]);
  });

  it("a delta the kernel refuses (an element deleted behind our back) changes nothing at all; the verifying retry converges", async () => {
    const k = await nodeKernel(range(10, 6));
    const dp = new NodeDataplane(k);
    const first = two(["a", "b"], range(10, 5));
    await dp.apply(first);
    await k.nft(`delete element ip static_egress pod_class { ${first.entries[0]!.podIP} }\n`);
    const tampered = await readBack(k, NODE_TABLES);
    const next = two(["a", "b"], [11, 12, 13, 14, 15]); // removes pod 10 (already gone), adds pod 15
    await expect(dp.apply(next)).rejects.toThrow(/No such file or directory/);
    expect(await readBack(k, NODE_TABLES)).toEqual(tampered); // pod 15's addition did not happen either
    await dp.apply(next, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(range(10, 6), next));
  });

  it("an ip batch that fails half-way keeps its earlier lines, opens no gap, and the retry converges", async () => {
    const { k, dp, after, watch } = await programmedForMove();
    k.failNext("ip", /^rule add priority 10010/, "RTNETLINK answers: No buffer space available");
    await expect(dp.apply(after)).rejects.toThrow(/No buffer space/);
    const c = after.instances.find((i) => i.key === "shared/c")!;
    expect(k.lookup("198.51.100.7", c.mark)).toEqual({ via: "blackhole" }); // c's route is there, its rule is not: dropped
    await dp.apply(after, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(pods, after));
    expect(watch.leaks).toEqual([]);
    expect(watch.gaps).toEqual([]);
  });
});

describe("cleanup", () => {
  it("the node agent removes its tables, rules, routes and tunnels, and nothing of anyone else's", async () => {
    const k = await nodeKernel(pods);
    const untouched = await readBack(k, NODE_TABLES);
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b", "c"]));
    await dp.cleanup();
    expect(await readBack(k, NODE_TABLES)).toEqual(untouched);
    expect(k.hasTable("ip", "someone_else")).toBe(true);
  });

  it("the gateway agent removes its table, return routes, anchor rule and route, and nothing of anyone else's", async () => {
    const k = new FakeKernel();
    await k.ip([
      ...nodeTopology([], INSTANCES.a.address),
      ...FOREIGN_IP,
      "route add 10.99.0.0/16 via 10.0.0.1 proto 94 table 100",
    ]);
    await k.nft(FOREIGN_NFT);
    const tables = [`ip ${GATEWAY_TABLE}`, "ip someone_else"];
    const untouched = await readBack(k, tables);
    const dp = new GatewayDataplane(k, { anchor: { address: "10.20.0.5", gateway: "10.0.0.1" } });
    await dp.apply(gatewayPlan(cluster({ instances: ["a", "b"], pods }), "a"));
    const programmed = (await readBack(k, tables)) as { routes: { table?: string; dev?: string }[] };
    expect(programmed.routes.filter((r) => r.dev?.startsWith("se-nd"))).toHaveLength(2); // the return routes to node-a and node-b
    expect(programmed.routes.some((r) => r.table === String(ANCHOR_TABLE))).toBe(true);
    await dp.cleanup();
    expect(await readBack(k, tables)).toEqual(untouched);
  });
});

describe("gateway", () => {
  it("forwarding is turned on last, after its filter table and its tunnels; drift of a return route is repaired", async () => {
    const k = new FakeKernel();
    await k.ip(nodeTopology([], INSTANCES.a.address));
    const dp = new GatewayDataplane(k);
    const plan = gatewayPlan(cluster({ instances: ["a", "b"], pods }), "a");
    await dp.apply(plan);
    const writes = k.log.filter((c) => c.ok && (c.op === "nft" || c.op === "ip" || c.op === "writeProcSys"));
    const forward = writes.findIndex((c) => c.op === "writeProcSys" && c.text === "/proc/sys/net/ipv4/ip_forward 1");
    expect(forward).toBe(writes.length - 1);
    expect(writes.findIndex((c) => c.op === "nft")).toBeLessThan(forward);
    expect(writes.findIndex((c) => c.text.startsWith("link add se-nd"))).toBeLessThan(forward);
    const programmed = await readBack(k, [`ip ${GATEWAY_TABLE}`]);
    const ret = plan.returnRoutes[0]!;
    await k.ip([`route del ${ret.cidr} table main proto 94`]);
    await dp.apply(plan);
    expect(await readBack(k, [`ip ${GATEWAY_TABLE}`])).toEqual(programmed);
  });

  it("a node's reply route (a /32, listed as the bare address) stays through later applies, which write nothing", async () => {
    const k = new FakeKernel();
    await k.ip(nodeTopology([], INSTANCES.a.address));
    const dp = new GatewayDataplane(k);
    const base = gatewayPlan(cluster({ instances: ["a", "b"], pods }), "a");
    const tunnel = base.tunnels[0]!;
    const plan = { ...base, nodeReturns: [{ address: tunnel.address, port: tunnel.port }] };
    await dp.apply(plan);
    const programmed = await readBack(k, [`ip ${GATEWAY_TABLE}`]);
    const replyRoute = (b: unknown) =>
      (b as { routes: { table?: string; dst?: string }[] }).routes.filter((r) => r.table === String(NODE_REPLY_TABLE));
    expect(replyRoute(programmed)).toMatchObject([{ dst: tunnel.address }]);
    for (let i = 0; i < 3; i++) {
      expect(await dp.apply(plan)).toEqual({ nftChanged: false, routingAdded: 0, routingRemoved: 0 });
      expect(await readBack(k, [`ip ${GATEWAY_TABLE}`])).toEqual(programmed);
    }
  });
});

describe("the divert decision in two stages (pod_class, then the pod's class)", () => {
  it("pods sharing a decision share one class, and the kernel's rows are exactly the plan's entries", async () => {
    const all = range(10, 12);
    const k = await nodeKernel(all);
    const plan = nodePlan(cluster({ instances: ["a", "b"], pods: all, destinationCIDRs: ["0.0.0.0/0"] }));
    await new NodeDataplane(k).apply(plan);
    const classes = new Set(
      (k.elements("ip", "static_egress", "pod_class") as [string, { jump: { target: string } }][]).map(
        ([, v]) => v.jump.target,
      ),
    );
    expect(classes.size).toBeGreaterThan(0);
    expect(classes.size).toBeLessThan(all.length); // 12 pods, a handful of decisions
    expect(classes).toEqual(new Set(divertClasses(plan.entries).podClass.values()));
    const row = (ip: string, dst: string, value: number) => `${ip} . ${dst} : ${hex(value)}`;
    const rows = divertRows((await k.nftList("table ip static_egress"))!).map((r) =>
      row(r.podIP, formatRange(r.dst), r.value),
    );
    expect(rows.sort()).toEqual(plan.entries.map((e) => row(e.podIP, formatRange(e.dst), divertValue(e))).sort());
  });

  it("a pod joins a held class with one pod_class element; a new class takes the full apply; an emptied class stays to the next verify", async () => {
    const all = range(10, 12);
    const k = await nodeKernel(all);
    const dp = new NodeDataplane(k);
    const base = range(10, 6);
    const before = two(["a", "b"], base);
    await dp.apply(before);
    const held = divertClasses(before.entries);
    // A pod whose decision is one the kernel holds.
    const full = divertClasses(two(["a", "b"], all).entries);
    const joining = all.find((n) => !base.includes(n) && held.names.has(keyOf(full, podIP(n))))!;
    expect(joining).toBeDefined();
    const after = two(["a", "b"], [...base, joining]);
    const added = after.entries.filter((e) => e.podIP === podIP(joining));
    const start = k.log.length;
    expect(await dp.applyPods(after, { removed: [], added })).toMatchObject({ nftChanged: true });
    const writes = nftWrites(k, start).map((c) => c.text);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toContain(
      `add element ip static_egress pod_class { ${podIP(joining)} : jump ${full.podClass.get(podIP(joining))} }`,
    );
    expect(writes[0]).not.toMatch(/class_[0-9a-f]{8} \{ [\d.]/); // no class map written
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(all, after));

    // A decision no class holds: nothing written, the caller applies the plan in full.
    const moved = added.map((e) => ({ ...e, dst: { from: e.dst.from, to: e.dst.to - 1 } }));
    const mark = k.log.length;
    expect(await dp.applyPods(after, { removed: added, added: moved })).toBeUndefined();
    expect(nftWrites(k, mark)).toEqual([]);

    // The last pod of a class leaving: its pod_class element alone; the class stays, empty, and
    // the next pod of that decision joins it the same way; the next verify deletes it.
    const one = two(["a", "b"], [10]);
    await dp.apply(one);
    const classOf10 = divertClasses(one.entries).podClass.get(podIP(10))!;
    let last = k.log.length;
    const none = two(["a", "b"], []);
    expect(await dp.applyPods(none, { removed: one.entries, added: [] })).toMatchObject({ nftChanged: true });
    expect(nftWrites(k, last).map((c) => c.text)).toEqual([
      expect.stringContaining(`delete element ip static_egress pod_class { ${podIP(10)} : jump ${classOf10} }`),
    ]);
    expect(nftWrites(k, last)[0]!.text).not.toContain("delete chain");
    last = k.log.length;
    expect(await dp.applyPods(one, { removed: [], added: one.entries })).toMatchObject({ nftChanged: true });
    expect(nftWrites(k, last)).toHaveLength(1);
    await dp.applyPods(none, { removed: one.entries, added: [] });
    await dp.apply(none, { verify: true });
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(all, none));
  });
  it("a class appearing after drift does not adopt the drift: the next verify still finds and repairs it", async () => {
    const all = range(10, 4);
    const k = await nodeKernel(all);
    const dp = new NodeDataplane(k);
    const one = two(["a", "b"], [10]);
    await dp.apply(one, { verify: true });
    await k.nft("table ip static_egress {\n  chain extra {\n  }\n}\n"); // someone else's chain in our table
    const more = two(["a", "b"], all);
    expect(divertClasses(more.entries).classes.size).toBeGreaterThan(divertClasses(one.entries).classes.size);
    const start = k.log.length;
    await dp.apply(more); // a class appears: a delta, which leaves the foreign chain alone
    expect(
      nftWrites(k, start)
        .map((c) => c.text)
        .join(""),
    ).not.toContain("delete table");
    expect((await dp.apply(more, { verify: true })).nftChanged).toBe(true);
    expect(await readBack(k, NODE_TABLES)).toEqual(await programmedOnce(all, more));
  });
});

/** A pod's decision (its class's key) in `classes`. */
function keyOf(classes: ReturnType<typeof divertClasses>, ip: string): string {
  const name = classes.podClass.get(ip)!;
  return [...classes.names].find(([, n]) => n === name)![0];
}

describe("OwnedTable: deletions per delta", () => {
  it(`deletes any number of elements of a hash set as a delta, more than ${MAX_DELTA_DELETIONS} of an interval set by a full replacement`, async () => {
    const k = new FakeKernel();
    const t = new OwnedTable(k, "ip", "t");
    const addresses = range(1, MAX_DELTA_DELETIONS + 2).map((n) => `10.1.${n}.1`);
    const model = (hash: string[], interval: string[]): TableModel => ({
      family: "ip",
      name: "t",
      sets: [
        { kind: "set", name: "hash", spec: "type ipv4_addr;", elements: hash },
        { kind: "set", name: "ranges", spec: "type ipv4_addr; flags interval;", elements: interval },
      ],
      chains: "",
    });
    await t.apply(model(addresses, addresses), false);
    let start = k.log.length;
    await t.apply(model(addresses.slice(0, 1), addresses), false);
    expect(nftWrites(k, start).map((c) => c.text)).toEqual([
      `delete element ip t hash { ${addresses.slice(1).join(", ")} }\n`,
    ]);
    start = k.log.length;
    await t.apply(model(addresses.slice(0, 1), addresses.slice(0, 1)), false);
    expect(nftWrites(k, start)[0]!.text).toContain("delete table ip t\n");
    expect(k.elements("ip", "t", "ranges")).toEqual([addresses[0]]);
  });
});

describe("readPod: one pod address as the kernel holds it (explain --local)", () => {
  const plan = nodePlan(
    cluster({ instances: ["a", "b"], pods, destinationCIDRs: ["198.51.100.0/24", "192.0.2.0/25"] }),
  );

  it("reads back the pod's divert rows, its interface, and for its mark the rule, table route and tunnel", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    await dp.apply(plan);
    for (const i of pods) {
      const view = await dp.readPod(podIP(i));
      const own = plan.entries.filter((e) => e.podIP === podIP(i));
      expect(view.present).toBe(true);
      expect(view.boundInterface).toBe(`pod${i}`);
      expect(view.entries.map((e) => `${e.dst}=${hex(e.mark)}`).sort()).toEqual(
        own.map((e) => `${formatCidrOrRange(e.dst)}=${hex(e.mark)}`).sort(),
      );
      const instance = plan.instances.find((x) => x.key === own[0]!.instance)!;
      expect(view.paths).toEqual([
        {
          mark: instance.mark,
          down: false,
          rule: { priority: 10010, fwmark: instance.mark, mask: MARK_MASK, action: { table: instance.table } },
          routes: [
            {
              table: instance.table,
              dst: "default",
              kind: "via",
              via: "169.254.53.1",
              onlinkDev: `se-gw${instance.vni}`,
            },
          ],
          tunnel: { device: `se-gw${instance.vni}`, remote: instance.address, vni: instance.vni },
        },
      ]);
    }
  });

  it("an instance the node sees down: its mark is in down_instances and its table holds a blackhole", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const down = nodePlan(cluster({ instances: ["a"], pods }), new Map([["shared/a", "down"]]));
    await dp.apply(down);
    const view = await dp.readPod(podIP(pods[0]!));
    expect(view.paths).toMatchObject([{ down: true, routes: [{ kind: "blackhole" }] }]);
    expect(view.paths[0]!.tunnel).toBeUndefined();
  });

  it("an address the node does not divert has no rows; a node without our table says so", async () => {
    const k = await nodeKernel(pods);
    expect(await new NodeDataplane(k).readPod(podIP(10))).toEqual({
      table: "ip static_egress",
      present: false,
      entries: [],
      paths: [],
    });
    await new NodeDataplane(k).apply(plan);
    expect((await new NodeDataplane(k).readPod("10.244.1.200")).entries).toEqual([]);
  });
});

describe("failover ahead of the queue (applyHealth)", () => {
  it("a dead instance's pods move while a long apply is in flight; the apply's older view does not stay", async () => {
    const k = await nodeKernel(range(10, 6));
    const dp = new NodeDataplane(k);
    const base = two(["a", "b"]);
    await dp.apply(base);
    const [a, b] = ["shared/a", "shared/b"].map((key) => base.instances.find((i) => i.key === key)!);
    expect(base.entries.some((e) => e.instance === a!.key)).toBe(true);

    // The next apply (two more pods, planned with both instances up) is held inside its nft transaction.
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const nft = k.nft.bind(k);
    const isHealth = (script: string) => script.startsWith("flush map ip static_egress remap");
    let holding = true;
    k.nft = async (script) => {
      if (holding && !isHealth(script)) {
        holding = false;
        events.push("apply: nft starts");
        await held;
      }
      await nft(script);
      events.push(isHealth(script) ? "failover: nft" : "apply: nft done");
    };
    const applying = dp.apply(two(["a", "b"], range(10, 6)));
    while (!events.includes("apply: nft starts")) await new Promise((r) => setTimeout(r, 1));

    expect(await dp.applyHealth(new Map([[a!.key, "down"]]))).toEqual([a!.key]);
    events.push("failover: done");
    const movedEarly = new Map(k.elements("ip", "static_egress", "remap") as [number, number][]);
    release();
    await applying;
    // Failed over before the apply ended; the apply (older view) was followed by the failover again.
    expect(events).toEqual([
      "apply: nft starts",
      "failover: nft",
      "failover: done",
      "apply: nft done",
      "failover: nft",
    ]);

    for (const remap of [movedEarly, new Map(k.elements("ip", "static_egress", "remap") as [number, number][])]) {
      // Every divert value (a's pods' included) now takes b's mark: none left on a, none unmarked.
      expect([...remap.values()].every((m) => m === b!.mark)).toBe(true);
      expect(remap.size).toBeGreaterThan(0);
    }
    for (const value of divertValues(k))
      expect(new Map(k.elements("ip", "static_egress", "remap") as [number, number][]).has(value)).toBe(true);
    expect(k.elements("ip", "static_egress", "down_instances")).toContain(a!.mark);
    expect(k.lookup("198.51.100.7", a!.mark).via).toBe("blackhole");
    // a's flows are forgotten by its mark, after the remap.
    expect(k.log.filter((c) => c.op === "deleteFlows").map((c) => c.text)).toContain(
      `--mark ${hex(a!.mark)}/${hex(MARK_MASK)}`,
    );
  });

  it("a failover while an apply adds an instance writes remap for both plans' values; after it, every value has its element", async () => {
    const k = await nodeKernel(range(10, 6));
    const dp = new NodeDataplane(k);
    await dp.apply(two(["a", "b"], range(10, 6)));
    const next = two(["a", "b", "c"], range(10, 6));
    const a = next.instances.find((i) => i.key === "shared/a")!;
    const nextValues = new Set(next.entries.map(divertValue));
    const oldValues = new Set(two(["a", "b"], range(10, 6)).entries.map(divertValue));
    expect([...nextValues].some((v) => !oldValues.has(v))).toBe(true);

    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const nft = k.nft.bind(k);
    const isHealth = (script: string) => script.startsWith("flush map ip static_egress remap");
    const failovers: string[] = [];
    let holding = true;
    let heldNow = false;
    k.nft = async (script) => {
      if (holding && !isHealth(script)) {
        holding = false;
        heldNow = true;
        await held;
      }
      if (isHealth(script)) failovers.push(script);
      await nft(script);
    };
    const applying = dp.apply(next);
    while (!heldNow) await new Promise((r) => setTimeout(r, 1));
    await dp.applyHealth(new Map([[a.key, "down"]]));
    // Written while the apply was on its way: the coming plan's values are there too.
    const written = failovers[0]!;
    for (const v of [...nextValues, ...oldValues]) expect(written).toContain(`${hex(v)} : `);
    release();
    await applying;
    const remap = new Map(k.elements("ip", "static_egress", "remap") as [number, number][]);
    for (const value of divertValues(k)) expect(remap.has(value)).toBe(true);
    expect([...remap.values()]).not.toContain(a.mark);
    expect(k.elements("ip", "static_egress", "down_instances")).toContain(a.mark);
  });

  it("with a health port, every table write goes through it, planned with its health; applyHealth is refused", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const writer = new FailoverWriter(k, dp.failoverOptions);
    const commits: ApplyCommit[] = [];
    const down = new Map([["shared/a", "down" as const]]);
    const port: HealthPort = {
      latest: () => down,
      commitApply: (req) => {
        commits.push(req);
        return writer.commitApply(req);
      },
    };
    dp.useHealthPort(port);
    const plan = two();
    await dp.apply(plan);
    expect(commits).toHaveLength(1);
    // Its failover part: one entry per divert value, the health it was rendered with.
    expect(commits[0]!.plan.entries).toHaveLength(new Set(plan.entries.map(divertValue)).size);
    expect(commits[0]!.plan.instances.find((i) => i.key === "shared/a")?.route).toBe("blackhole");
    expect(commits[0]!.handover?.create).toContain("table ip static_egress_handover {");
    const a = plan.instances.find((i) => i.key === "shared/a")!;
    expect(k.elements("ip", "static_egress", "down_instances")).toContain(a.mark);
    expect(k.lookup("198.51.100.7", a.mark).via).toBe("blackhole");
    await expect(dp.applyHealth(new Map())).rejects.toThrow(/health thread/);
    // An unchanged plan still reports to the port (it learns the applied plan), writing nothing.
    const before = nftWrites(k).length;
    await dp.apply(plan);
    expect(commits).toHaveLength(2);
    expect(commits[1]!.script).toBe("");
    expect(nftWrites(k).length).toBe(before);
  });

  it("an apply rendered with an older view (an instance down that is back up) leaves its route and sets to the latest", async () => {
    const k = await nodeKernel(pods);
    const dp = new NodeDataplane(k);
    const writer = new FailoverWriter(k, dp.failoverOptions);
    const plan = two();
    const a = plan.instances.find((i) => i.key === "shared/a")!;
    await writer.setHealth(new Map([["shared/a", "up"]]));
    // The agent's copy of the view still says a is down (its thread was held): so the apply renders.
    dp.useHealthPort({ latest: () => new Map([["shared/a", "down"]]), commitApply: (req) => writer.commitApply(req) });
    await dp.apply(plan);
    expect(k.lookup("198.51.100.7", a.mark).via).not.toBe("blackhole");
    expect(k.elements("ip", "static_egress", "down_instances")).not.toContain(a.mark);
    // The stale blackhole was written (the apply's own route) and replaced at once, before the nft write.
    const lines = k.log.filter((c) => c.op === "ip" || c.op === "nft").map((c) => `${c.op}: ${c.text.split("\n")[0]}`);
    const stale = lines.findIndex((l) => l.includes(`blackhole default table ${a.table}`));
    const fixed = lines.findIndex((l, n) => n > stale && l.includes(`table ${a.table}`) && !l.includes("blackhole"));
    const nft = lines.findIndex((l) => l.startsWith("nft: table ip static_egress_handover"));
    expect(stale).toBeGreaterThanOrEqual(0);
    expect(fixed).toBeGreaterThan(stale);
    expect(fixed).toBeLessThan(nft);
  });
});
