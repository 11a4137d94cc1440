/**
 * OwnedTable's element deltas start from an index of the applied elements that each accepted delta
 * updates (not rebuilt from the applied model each time). Random sequences of models, some applies
 * refused by the kernel, some unchanged: after each, the kernel holds exactly the last applied
 * model's elements. Structural deltas (chains and sets appearing and going, as the node's divert
 * classes) leave the kernel as a fresh apply would, also when the first or the second of their two
 * transactions is refused (it fails when the prelude is not idempotent).
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

/** Pods in classes, as the node's divert decision: a verdict map, one chain and interval map per class in use. */
const CLASSES: Record<string, string[]> = {
  class_0: ["198.51.100.0/24 : 0x10010000"],
  class_1: ["198.51.100.0/24 : 0x10020000"],
  class_2: ["198.51.100.0/24 : 0x10010000", "203.0.113.0/24 : 0x10010000"],
  class_3: ["203.0.113.0/25 : 0x10020000"],
};

function classModel(podClass: ReadonlyMap<string, string>): TableModel {
  const used = [...new Set(podClass.values())].sort();
  return {
    family: "ip",
    name: "t",
    sets: [
      {
        kind: "map",
        name: "pod_class",
        spec: "type ipv4_addr : verdict;",
        elements: [...podClass].map(([ip, c]) => `${ip} : jump ${c}`),
      },
      ...used.map((c) => ({
        kind: "map" as const,
        name: c,
        spec: "type ipv4_addr : mark; flags interval;",
        elements: CLASSES[c]!,
      })),
    ],
    chains:
      "  chain mark {\n    type filter hook prerouting priority 0; policy accept;\n    ip saddr vmap @pod_class\n  }\n" +
      used.map((c) => `  chain ${c} {\n    meta mark set ip daddr map @${c}\n  }\n`).join(""),
  };
}

/** The table as the kernel holds it, in one order, without handles: what a fresh apply of the same model holds too. */
async function tableShape(k: FakeKernel): Promise<string> {
  const objects = (await k.nftList("table ip t", { stateless: true })) ?? [];
  return JSON.stringify(
    objects
      .map((o) => {
        const [kind, body] = Object.entries(o)[0]!;
        const { handle: _h, elem, ...rest } = body as { handle?: number; elem?: unknown[] };
        return JSON.stringify({
          [kind]: { ...rest, ...(elem ? { elem: elem.map((e) => JSON.stringify(e)).sort() } : {}) },
        });
      })
      .sort(),
  );
}

describe("OwnedTable structural deltas (divert classes appearing and going)", () => {
  it("leave the kernel as a fresh apply of the last applied model, through refusals at either transaction; a verify then writes nothing", async () => {
    const pods = ADDRESSES.slice(0, 6);
    const stepArb = fc.record({
      classes: fc.array(fc.constantFrom(...Object.keys(CLASSES)), { minLength: pods.length, maxLength: pods.length }),
      present: fc.subarray(pods, { minLength: 1 }),
      refused: fc.constantFrom("no", "first", "second"),
      verify: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 10 }), async (steps) => {
        const k = new FakeKernel();
        const table = new OwnedTable(k, "ip", "t");
        let held: TableModel | undefined;
        for (const step of steps) {
          const m = classModel(new Map(step.present.map((ip) => [ip, step.classes[pods.indexOf(ip)]!])));
          if (held && step.refused !== "no") {
            // The first nft write (a prelude, or the only one), or the second (the delta after a prelude).
            let writes = 0;
            const nft = k.nft.bind(k);
            k.nft = async (script) => {
              if (++writes === (step.refused === "first" ? 1 : 2)) k.failNext("nft");
              return nft(script);
            };
            try {
              await table.apply(m, step.verify);
              held = m; // nothing to refuse: one write only, or none
            } catch {
              // Refused: the next apply writes it again over what a prelude left (verifying or not).
              await table.apply(m, step.verify);
              held = m;
            } finally {
              k.nft = nft;
            }
          } else {
            await table.apply(m, step.verify);
            held = m;
          }
          const fresh = new FakeKernel();
          await new OwnedTable(fresh, "ip", "t").apply(held, false);
          expect(await tableShape(k)).toEqual(await tableShape(fresh));
        }
        await table.apply(held!, true);
        const start = k.log.length;
        expect(await table.apply(held!, true)).toBe(false);
        expect(k.log.slice(start).filter((c) => c.op === "nft")).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });
});
