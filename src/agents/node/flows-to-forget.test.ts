import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { NodePlan } from "../../planner/model.js";
import { flowsToForget } from "./node-agent.js";

type Entry = NodePlan["entries"][number];

/** flowsToForget as it was written first: a map of string keys per side (the oracle). */
function byKeys(before: NodePlan, after: NodePlan, existedBefore: ReadonlySet<string>) {
  const decider = (e: Entry) => (e.instance === "" ? `${e.policy} (dropped)` : e.policy);
  const key = (e: Entry) => `${e.podIP}|${e.dst.from}|${e.dst.to}`;
  const now = new Map<string, string>();
  for (const e of after.entries) now.set(key(e), decider(e));
  const was = new Set(before.entries.map(key));
  const pods = new Set<string>();
  for (const e of before.entries) if (now.get(key(e)) !== decider(e)) pods.add(e.podIP);
  const grown = new Set<string>();
  for (const e of after.entries) if (!was.has(key(e)) && existedBefore.has(e.podIP)) grown.add(e.podIP);
  return { podIPs: [...pods].sort(), undivertedPodIPs: [...grown].sort() };
}

const entryArb: fc.Arbitrary<Entry> = fc.record({
  podIP: fc.constantFrom("10.244.0.2", "10.244.0.10", "10.244.0.3", "10.244.1.2"),
  dst: fc.constantFrom({ from: 1, to: 5 }, { from: 1, to: 9 }, { from: 6, to: 9 }, { from: 20, to: 20 }),
  mark: fc.constant(0x10010000),
  policy: fc.constantFrom("EgressPolicy/a/p", "EgressPolicy/a/q"),
  instance: fc.constantFrom("", "gw/i0", "gw/i1"),
});

/** Entries as the planner writes them (one per pod and destination, sorted), or as given. */
const entriesArb = fc.tuple(fc.array(entryArb, { maxLength: 12 }), fc.boolean()).map(([entries, sorted]) => {
  if (!sorted) return entries;
  const unique = new Map(entries.map((e) => [`${e.podIP}|${e.dst.from}|${e.dst.to}`, e]));
  return [...unique.values()].sort((a, b) =>
    a.podIP !== b.podIP ? (a.podIP < b.podIP ? -1 : 1) : a.dst.from - b.dst.from || a.dst.to - b.dst.to,
  );
});

const plan = (entries: Entry[]): NodePlan => ({
  node: "n",
  instances: [],
  entries,
  neverDivert: [],
  unavailable: [],
  podsByPolicy: {},
});

describe("flowsToForget", () => {
  it("finds the same pods by a merge walk of sorted plans as by matching keys (and falls back on unsorted ones)", () => {
    fc.assert(
      fc.property(entriesArb, entriesArb, fc.subarray(["10.244.0.2", "10.244.0.10", "10.244.1.2"]), (b, a, old) => {
        const got = flowsToForget(plan(b), plan(a), new Set(old));
        const want = byKeys(plan(b), plan(a), new Set(old));
        expect({ podIPs: got.podIPs, undivertedPodIPs: got.undivertedPodIPs }).toEqual(want);
      }),
      { numRuns: 2000 },
    );
  });
});
