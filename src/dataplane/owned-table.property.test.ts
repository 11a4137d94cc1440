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
