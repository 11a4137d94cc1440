import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_TABLE_BASE,
  MARK_FLAG,
  MARK_MASK,
  MAX_INSTANCE_ID,
  assignIds,
  fnv1a,
  markFor,
  rendezvous,
  tableFor,
} from "./ids.js";
import { shuffled } from "./testing/arbitraries.js";

const preferred = (key: string) => (fnv1a(key) % MAX_INSTANCE_ID) + 1;

/** Instance keys whose preferred ids collide, found by search so the test does not depend on luck. */
function collidingKeys(count: number): string[] {
  const bySlot = new Map<number, string[]>();
  for (let n = 0; ; n++) {
    const key = `gw/i${n}`;
    const slot = preferred(key);
    const group = [...(bySlot.get(slot) ?? []), key];
    if (group.length === count) return group;
    bySlot.set(slot, group);
  }
}

const instanceKeyArb = fc.tuple(fc.constantFrom("gw", "shared", "team-a"), fc.nat(400)).map(([g, i]) => `${g}/i${i}`);
const keySetArb = fc.uniqueArray(instanceKeyArb, { minLength: 1, maxLength: 150 });

function expectValidIds(keys: readonly string[], ids: Map<string, number>) {
  expect([...ids.keys()].sort()).toEqual([...new Set(keys)].sort());
  const values = [...ids.values()];
  expect(new Set(values).size).toBe(values.length);
  for (const id of values) {
    expect(Number.isInteger(id)).toBe(true);
    expect(id).toBeGreaterThanOrEqual(1);
    expect(id).toBeLessThanOrEqual(MAX_INSTANCE_ID);
  }
}

describe("fnv1a", () => {
  it("matches the published FNV-1a 32-bit vectors (stable across processes and versions)", () => {
    expect(fnv1a("")).toBe(0x811c9dc5);
    expect(fnv1a("a")).toBe(0xe40c292c);
    expect(fnv1a("foobar")).toBe(0xbf9cf968);
  });
});

describe("markFor / tableFor", () => {
  it("carries the flag and the id inside the mask, one mark per id", () => {
    const marks = new Set<number>();
    for (let id = 1; id <= MAX_INSTANCE_ID; id++) {
      const mark = markFor(id);
      expect(mark & MARK_FLAG).toBe(MARK_FLAG);
      expect((mark & ~MARK_MASK) >>> 0).toBe(0);
      expect((mark >>> 16) & 0xfff).toBe(id);
      expect(mark).toBeGreaterThan(0);
      marks.add(mark);
    }
    expect(marks.size).toBe(MAX_INSTANCE_ID);
  });

  it("derives one table per id from the base", () => {
    expect(tableFor(1)).toBe(DEFAULT_TABLE_BASE + 1);
    expect(tableFor(MAX_INSTANCE_ID, 20_000)).toBe(20_000 + MAX_INSTANCE_ID);
  });
});

describe("assignIds", () => {
  it("gives every key a distinct id in 1..4095", () => {
    fc.assert(
      fc.property(keySetArb, (keys) => expectValidIds(keys, assignIds(keys))),
      { numRuns: 300 },
    );
  });

  it("does not depend on input order or repeated keys", () => {
    fc.assert(
      fc.property(keySetArb, fc.integer(), (keys, seed) => {
        const again = assignIds([...shuffled(keys, seed), ...keys.slice(0, 3)]);
        expect([...again.entries()].sort()).toEqual([...assignIds(keys).entries()].sort());
      }),
      { numRuns: 300 },
    );
  });

  it("resolves collisions: the first key in sorted order keeps its preferred id, the others probe forward", () => {
    const keys = collidingKeys(3);
    const slot = preferred(keys[0] as string);
    const ids = assignIds(shuffled(keys, 7));
    expectValidIds(keys, ids);
    const [first, second, third] = [...keys].sort();
    expect(ids.get(first as string)).toBe(slot);
    expect(ids.get(second as string)).toBe((slot % MAX_INSTANCE_ID) + 1);
    expect(ids.get(third as string)).toBe(((slot + 1) % MAX_INSTANCE_ID) + 1);
  });

  it("removing a key leaves every key that sat on its preferred id where it was", () => {
    fc.assert(
      fc.property(keySetArb, fc.nat(), (keys, pick) => {
        const removed = keys[pick % keys.length] as string;
        const before = assignIds(keys);
        const after = assignIds(keys.filter((k) => k !== removed));
        expect(after.has(removed)).toBe(false);
        for (const [key, id] of after) {
          // Only a key that had collided (sat off its preferred id) may move.
          if (before.get(key) === preferred(key)) expect(id, key).toBe(before.get(key));
          if (id !== before.get(key)) expect(before.get(key), key).not.toBe(preferred(key));
        }
      }),
      { numRuns: 300 },
    );
  });

  it("removing a key that no one collided with changes nobody's id", () => {
    const colliding = collidingKeys(2);
    const others = ["gw/x", "gw/y", "other/z"].filter((k) => !colliding.includes(k));
    const before = assignIds([...colliding, ...others]);
    const after = assignIds([...colliding, ...others.slice(1)]);
    for (const key of [...colliding, ...others.slice(1)]) expect(after.get(key)).toBe(before.get(key));
  });

  it("removing the winner of a collision moves the key that had collided with it", () => {
    const [winner, loser] = [...collidingKeys(2)].sort() as [string, string];
    expect(assignIds([winner, loser]).get(loser)).not.toBe(preferred(loser));
    expect(assignIds([loser]).get(loser)).toBe(preferred(loser));
  });

  it("fills all 4095 ids and refuses a 4096th key", () => {
    const keys = Array.from({ length: MAX_INSTANCE_ID }, (_, i) => `gw/i${i}`);
    const ids = assignIds(keys);
    expectValidIds(keys, ids);
    expect(new Set(ids.values()).size).toBe(MAX_INSTANCE_ID);
    expect(() => assignIds([...keys, "gw/one-too-many"])).toThrow(/4095/);
  });

  it("returns an empty map for no keys", () => {
    expect(assignIds([]).size).toBe(0);
  });
});

describe("rendezvous", () => {
  const subjectsArb = fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 60 });
  const candidatesArb = fc.uniqueArray(fc.constantFrom("gw/a", "gw/b", "gw/c", "gw/d", "gw/e", "x/1", "x/2"), {
    minLength: 1,
    maxLength: 7,
  });

  it("picks one of the candidates, whatever their order", () => {
    fc.assert(
      fc.property(subjectsArb, candidatesArb, fc.integer(), (subjects, candidates, seed) => {
        for (const s of subjects) {
          const choice = rendezvous(s, candidates);
          expect(candidates).toContain(choice);
          expect(rendezvous(s, shuffled(candidates, seed))).toBe(choice);
        }
      }),
    );
  });

  it("removing a candidate moves only the subjects that were on it", () => {
    fc.assert(
      fc.property(subjectsArb, candidatesArb, fc.nat(), (subjects, candidates, pick) => {
        fc.pre(candidates.length >= 2);
        const removed = candidates[pick % candidates.length] as string;
        const rest = candidates.filter((c) => c !== removed);
        for (const s of subjects) {
          const before = rendezvous(s, candidates);
          const after = rendezvous(s, rest);
          if (before !== removed) expect(after, s).toBe(before);
          else expect(rest).toContain(after);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("adding a candidate moves subjects only onto the new one", () => {
    fc.assert(
      fc.property(subjectsArb, candidatesArb, fc.nat(), (subjects, candidates, pick) => {
        fc.pre(candidates.length >= 2);
        const added = candidates[pick % candidates.length] as string;
        const without = candidates.filter((c) => c !== added);
        for (const s of subjects) {
          const after = rendezvous(s, candidates);
          if (after !== added) expect(after).toBe(rendezvous(s, without));
        }
      }),
    );
  });

  it("spreads subjects over the candidates", () => {
    const candidates = ["gw/a", "gw/b", "gw/c"];
    const counts = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const c = rendezvous(`ns/pod-${i}`, candidates) as string;
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    for (const c of candidates) expect(counts.get(c) ?? 0).toBeGreaterThan(700);
  });

  it("has no choice without candidates", () => {
    expect(rendezvous("ns/pod", [])).toBeUndefined();
  });
});

describe("assignIds beyond its space", () => {
  it("names what ran out", () => {
    const nodes = Array.from({ length: MAX_INSTANCE_ID + 1 }, (_, i) => `node-${i}`);
    expect(() => assignIds(nodes, "nodes in the cluster")).toThrow(`more than ${MAX_INSTANCE_ID} nodes in the cluster`);
    expect(() => assignIds(nodes)).toThrow(`more than ${MAX_INSTANCE_ID} gateway instances`);
  });
});
