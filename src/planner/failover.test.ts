import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Planner } from "./plan.js";
import { clusterArb } from "./testing/arbitraries.js";
import type { InstanceHealth } from "./model.js";
import { formatRange, parseCidr } from "../util/ipv4.js";
import { divertValue, downMarks, failoverMarks, withHealth } from "./failover.js";
import { markFor, tableFor } from "./ids.js";
import type { NodePlan } from "./model.js";
import { NO_INSTANCE_MARK } from "../api/datapath.js";
import { cluster, nodePlan } from "../../test/support/dataplane-scenario.js";

const inst = (id: number, route: "via" | "blackhole" = "via") => ({
  key: `gw/i${id}`,
  address: `10.0.0.${100 + id}`,
  mark: markFor(id),
  table: tableFor(id),
  route,
  vni: id,
});
const entry = (podIP: string, id: number, next?: number) => ({
  podIP,
  dst: parseCidr("198.51.100.0/24"),
  mark: id === 0 ? NO_INSTANCE_MARK : markFor(id),
  policy: "EgressPolicy/a/p",
  instance: id === 0 ? "" : `gw/i${id}`,
  ...(next === undefined ? {} : { failoverMark: markFor(next) }),
});
const plan = (over: Partial<NodePlan> = {}): NodePlan => ({
  node: "n",
  instances: [inst(1), inst(2), inst(3)],
  entries: [entry("10.244.1.1", 1, 2), entry("10.244.1.2", 1, 3), entry("10.244.1.3", 2, 1), entry("10.244.1.4", 3)],
  neverDivert: [],
  unavailable: [],
  podsByPolicy: {},
  tunnel: { address: "10.0.0.11", port: 20011 },
  ...over,
});

describe("failover ahead of the replan", () => {
  it("a divert value is the instance's mark with the failover instance's id in the low bits", () => {
    expect(divertValue(entry("10.244.1.1", 1, 2))).toBe((markFor(1) | 2) >>> 0);
    expect(divertValue(entry("10.244.1.4", 3))).toBe(markFor(3));
    expect(divertValue(entry("10.244.1.5", 0))).toBe(NO_INSTANCE_MARK);
  });

  it("all up: every value keeps its own mark", () => {
    expect(failoverMarks(plan())).toEqual([
      [(markFor(1) | 2) >>> 0, markFor(1)],
      [(markFor(1) | 3) >>> 0, markFor(1)],
      [(markFor(2) | 1) >>> 0, markFor(2)],
      [markFor(3), markFor(3)],
    ]);
    expect(withHealth(plan(), new Map([["gw/i1", "up"]]))).toStrictEqual(plan());
  });

  it("an instance down: its pods take each their own failover instance, the others stay; its table is a blackhole", () => {
    const after = withHealth(plan(), new Map([["gw/i1", "down"]]));
    expect(after.instances.map((i) => i.route)).toEqual(["blackhole", "via", "via"]);
    expect(after.entries).toEqual(plan().entries); // no pod replanned
    expect(new Map(failoverMarks(after))).toEqual(
      new Map([
        [(markFor(1) | 2) >>> 0, markFor(2)],
        [(markFor(1) | 3) >>> 0, markFor(3)],
        [(markFor(2) | 1) >>> 0, markFor(2)],
        [markFor(3), markFor(3)],
      ]),
    );
    expect(downMarks(after)).toEqual([markFor(1)]);
  });

  it("fail-closed: no failover instance, or it is down too: the own mark, which is down (dropped), never no mark", () => {
    const after = withHealth(
      plan(),
      new Map([
        ["gw/i1", "down"],
        ["gw/i3", "down"],
      ]),
    );
    const marks = new Map(failoverMarks(after));
    expect(marks.get((markFor(1) | 3) >>> 0)).toBe(markFor(1)); // its failover (3) is down too
    expect(marks.get(markFor(3))).toBe(markFor(3)); // none planned
    expect(downMarks(after).sort()).toEqual([markFor(1), markFor(3)].sort());
    for (const [, mark] of marks) expect(mark).not.toBe(0);
  });

  it("without a tunnel end every instance stays a blackhole, whatever the health", () => {
    const { tunnel: _, ...noTunnel } = plan({
      instances: [inst(1, "blackhole"), inst(2, "blackhole"), inst(3, "blackhole")],
    });
    const after = withHealth(noTunnel, new Map([["gw/i1", "up"]]));
    expect(after.instances.every((i) => i.route === "blackhole")).toBe(true);
    expect(new Map(failoverMarks(after)).get((markFor(1) | 2) >>> 0)).toBe(markFor(1));
  });
});

describe("the precomputed failover is the planner's own choice once the instance is down", () => {
  it("for every node and every instance in use: each pod's failover mark is the mark the replan gives it (or none: blocked)", () => {
    fc.assert(
      fc.property(clusterArb(), (scenario) => {
        const planner = new Planner(scenario.snapshot);
        for (const node of scenario.snapshot.nodes) {
          const health = scenario.health.get(node.name) ?? new Map<string, InstanceHealth>();
          const before = planner.planNode(node.name, health);
          for (const key of new Set(before.entries.map((e) => e.instance))) {
            if (key === "" || health.get(key) === "down") continue;
            const replanned = planner.planNode(node.name, new Map([...health, [key, "down"]]));
            const now = new Map(
              withHealth(before, new Map([...health, [key, "down"]])).instances.map((i) => [i.key, i]),
            );
            const fast = new Map(failoverMarks(withHealth(before, new Map([...health, [key, "down"]]))));
            const after = new Map(replanned.entries.map((e) => [`${e.podIP} ${formatRange(e.dst)}`, e]));
            for (const e of before.entries.filter((x) => x.instance === key)) {
              const r = after.get(`${e.podIP} ${formatRange(e.dst)}`);
              const taken = fast.get(divertValue(e))!;
              if (r && r.instance !== key && r.instance !== "" && health.get(r.instance) !== "down")
                expect(taken).toBe(r.mark); // moved: to the same instance as the replan's
              else {
                // No other instance up (or FallbackToNodeIP): blocked until the replan, never unmarked.
                expect(taken).toBe(e.mark);
                expect(now.get(key)?.route).toBe("blackhole");
              }
            }
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe("a plan made while the other instance was down", () => {
  it("still names it as the failover: once it is back, the pods of a dying instance move to it without a replan", () => {
    const snapshot = cluster({ instances: ["a", "b"], pods: [10, 11, 12, 13, 14, 15] });
    for (const down of ["shared/a", "shared/b"]) {
      const other = down === "shared/a" ? "shared/b" : "shared/a";
      const planned = nodePlan(snapshot, new Map([[down, "down"]]));
      const mark = planned.instances.find((i) => i.key === down)!.mark;
      const otherMark = planned.instances.find((i) => i.key === other)!.mark;
      // Every pod on the one instance up, each with the instance that was down as its failover.
      expect(planned.entries.every((e) => e.instance === other && e.failoverMark === mark)).toBe(true);
      // That one is back (the remap follows the health, no replan), then the other dies.
      const moved = new Map(failoverMarks(withHealth(planned, new Map([[other, "down"]]))));
      for (const e of planned.entries) expect(moved.get(divertValue(e))).toBe(mark);
      // Both down: blocked (its own mark, dropped), never unmarked.
      const blocked = new Map(
        failoverMarks(
          withHealth(
            planned,
            new Map([
              [other, "down"],
              [down, "down"],
            ]),
          ),
        ),
      );
      for (const e of planned.entries) expect(blocked.get(divertValue(e))).toBe(otherMark);
    }
  });
});
