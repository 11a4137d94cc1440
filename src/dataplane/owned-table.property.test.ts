/**
 * OwnedTable's element deltas start from an index of the applied elements that each accepted delta
 * updates (not rebuilt from the applied model each time). Random sequences of models, some applies
 * refused by the kernel, some unchanged: after each, the kernel holds exactly the last applied
 * model's elements.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FakeKernel } from "../../test/support/fake-kernel.js";
import { OwnedTable, type TableModel } from "./nft.js";

const ADDRESSES = Array.from({ length: 12 }, (_, i) => `192.0.2.${i + 1}`);

function model(a: readonly string[], b: readonly string[]): TableModel {
  return {
    family: "ip",
    name: "t",
    sets: [
      { kind: "set", name: "a", spec: "type ipv4_addr;", elements: [...a] },
      { kind: "set", name: "b", spec: "type ipv4_addr;", elements: [...b] },
    ],
    chains: "  chain c {\n    ip saddr @a ip daddr @b accept\n  }\n",
  };
}

async function kernelElements(k: FakeKernel): Promise<Record<string, string[]>> {
  const objects = (await k.nftList("table ip t")) ?? [];
  const out: Record<string, string[]> = {};
  for (const o of objects) {
    const s = (o as { set?: { name: string; elem?: string[] } }).set;
    if (s) out[s.name] = [...(s.elem ?? [])].sort();
  }
  return out;
}

const stepArb = fc.record({
  a: fc.subarray(ADDRESSES),
  b: fc.subarray(ADDRESSES),
  refused: fc.boolean(),
  verify: fc.boolean(),
});

describe("OwnedTable deltas", () => {
  it("leave the kernel with exactly the last applied model's elements, through refused and unchanged applies", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 12 }), async (steps) => {
        const k = new FakeKernel();
        const table = new OwnedTable(k, "ip", "t");
        let held: TableModel | undefined;
        for (const step of steps) {
          const m = model(step.a, step.b);
          const same = (x: readonly string[], y: readonly string[]) =>
            x.length === y.length && x.every((e) => y.includes(e));
          const differs = !held || !same(held.sets[0]!.elements, step.a) || !same(held.sets[1]!.elements, step.b);
          if (step.refused && differs) {
            k.failNext("nft");
            await expect(table.apply(m, step.verify)).rejects.toThrow();
          } else {
            await table.apply(m, step.verify);
            held = m;
          }
          const want = held ?? model([], []);
          const kernel = await kernelElements(k);
          expect(held ? kernel : {}).toEqual(
            held ? { a: [...want.sets[0]!.elements].sort(), b: [...want.sets[1]!.elements].sort() } : {},
          );
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("OwnedTable partial deltas (a node agent's pod fast path)", () => {
  it("mix with whole-model applies: the kernel holds what they left, and a model of it is no change", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ add: fc.subarray(ADDRESSES), drop: fc.subarray(ADDRESSES), whole: fc.boolean() }), {
          minLength: 1,
          maxLength: 10,
        }),
        async (steps) => {
          const k = new FakeKernel();
          const table = new OwnedTable(k, "ip", "t");
          let a = new Set<string>();
          for (const step of steps) {
            if (step.whole || table.preparePartial([]) === undefined) {
              a = new Set(step.add);
              // Verifying, as the agent's first apply: a table's structure is known after one.
              await table.apply(model([...a], []), true);
            } else {
              const added = step.add.filter((e) => !a.has(e));
              const removed = step.drop.filter((e) => a.has(e) && !step.add.includes(e));
              const change = table.preparePartial([{ set: "a", added, removed }]);
              if (!change) throw new Error("refused a delta from what was applied");
              if (change.script !== "") await k.nft(change.script);
              change.commit();
              for (const e of removed) a.delete(e);
              for (const e of added) a.add(e);
            }
            expect((await kernelElements(k)).a).toEqual([...a].sort());
          }
          // The whole model of what the partial deltas left changes nothing.
          expect(await table.apply(model([...a], []), false)).toBe(false);
          expect(await table.apply(model([...a], []), true)).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("refuses a delta that does not start from what was applied, writing nothing", async () => {
    const k = new FakeKernel();
    const table = new OwnedTable(k, "ip", "t");
    expect(table.preparePartial([{ set: "a", added: ["192.0.2.1"], removed: [] }])).toBeUndefined(); // nothing applied
    await table.apply(model(["192.0.2.1"], []), false);
    expect(table.preparePartial([{ set: "a", added: ["192.0.2.1"], removed: [] }])).toBeUndefined(); // already there
    expect(table.preparePartial([{ set: "a", added: [], removed: ["192.0.2.2"] }])).toBeUndefined(); // not there
    expect(table.preparePartial([{ set: "c", added: ["192.0.2.2"], removed: [] }])).toBeUndefined(); // no such set
    expect((await kernelElements(k)).a).toEqual(["192.0.2.1"]);
  });
});
