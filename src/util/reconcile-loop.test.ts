import { describe, expect, it } from "vitest";
import { silentLogger } from "./log.js";
import { ReconcileLoop } from "./reconcile-loop.js";

/** A reconcile that records its passes and ends only when the test lets it. */
function gated(fail: (n: number) => boolean = () => false) {
  const started: number[] = [];
  const ends: (() => void)[] = [];
  const loop = new ReconcileLoop(async () => {
    const n = started.length;
    started.push(n);
    await new Promise<void>((r) => ends.push(r));
    if (fail(n)) throw new Error(`pass ${n} failed`);
  }, silentLogger);
  /** Ends the running pass and lets the loop move on. */
  const end = async () => {
    ends.shift()!();
    await new Promise((r) => setImmediate(r));
  };
  return { loop, started, end };
}

describe("ReconcileLoop.pass", () => {
  it("waits for a pass that starts after the call, not for the one running", async () => {
    const g = gated();
    g.loop.trigger();
    await new Promise((r) => setImmediate(r));
    expect(g.started).toEqual([0]);
    let done = false;
    const p = g.loop.pass().then((ok) => (done = ok));
    await g.end(); // pass 0 ends: it started before the call
    expect(done).toBe(false);
    expect(g.started).toEqual([0, 1]);
    await g.end();
    expect(await p).toBe(true);
  });

  it("does not wait for passes triggered behind it (idle does)", async () => {
    const g = gated();
    const p = g.loop.pass();
    await new Promise((r) => setImmediate(r));
    g.loop.trigger(); // another pod arrives while pass 0 runs
    let idle = false;
    void g.loop.idle().then(() => (idle = true));
    await g.end();
    expect(await p).toBe(true);
    expect(g.started).toEqual([0, 1]);
    expect(idle).toBe(false);
    await g.end();
    expect(idle).toBe(true);
  });

  it("calls arriving together share one pass", async () => {
    const g = gated();
    g.loop.trigger();
    await new Promise((r) => setImmediate(r));
    const both = Promise.all([g.loop.pass(), g.loop.pass()]);
    await g.end();
    await g.end();
    expect(await both).toEqual([true, true]);
    expect(g.started).toEqual([0, 1]);
  });

  it("answers false when its pass fails, and when the loop is stopped", async () => {
    const g = gated((n) => n === 0);
    const p = g.loop.pass();
    await new Promise((r) => setImmediate(r));
    await g.end();
    expect(await p).toBe(false);
    g.loop.stop();
    expect(await g.loop.pass()).toBe(false);
  });
});
