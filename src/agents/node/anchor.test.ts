import { describe, expect, it } from "vitest";
import type { AnchorIPv4 } from "../../cloud/digitalocean/metadata.js";
import type { Clock } from "../../util/clock.js";
import { ANCHOR_ANNOTATION, AnchorPublisher } from "./anchor.js";

/** Timers run by hand: `fire()` runs the earliest pending callback and returns its delay. */
function manualTimers(): Clock & { pending: { fn: () => void; ms: number }[]; fire(): number } {
  const pending: { fn: () => void; ms: number }[] = [];
  return {
    pending,
    now: () => 0,
    setTimer: (fn, ms) => {
      const t = { fn, ms };
      pending.push(t);
      return t;
    },
    clearTimer: (h) => {
      const i = pending.indexOf(h as { fn: () => void; ms: number });
      if (i >= 0) pending.splice(i, 1);
    },
    fire() {
      const t = pending.shift();
      if (!t) throw new Error("no timer pending");
      t.fn();
      return t.ms;
    },
  };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

function fakeClient(failures = 0) {
  const patches: Record<string, string | null>[] = [];
  let fail = failures;
  return {
    patches,
    patchNodeAnnotations: (node: string, a: Record<string, string | null>) => {
      if (node !== "n1") throw new Error("wrong node");
      if (fail-- > 0) return Promise.reject(new Error("API down"));
      patches.push(a);
      return Promise.resolve();
    },
  };
}

describe("anchor IP publisher", () => {
  it("writes the anchor once, not again while it stays, and removes it when the droplet has none", async () => {
    const client = fakeClient();
    let anchor: AnchorIPv4 | undefined = { address: "10.20.0.5" };
    const p = new AnchorPublisher({ client, node: "n1", read: () => Promise.resolve(anchor) });
    expect(await p.publishOnce()).toBe("written");
    expect(await p.publishOnce()).toBe("unchanged");
    anchor = { address: "10.20.0.6" };
    expect(await p.publishOnce()).toBe("written");
    anchor = undefined;
    expect(await p.publishOnce()).toBe("removed");
    expect(await p.publishOnce()).toBe("unchanged");
    expect(client.patches).toEqual([
      { [ANCHOR_ANNOTATION]: "10.20.0.5" },
      { [ANCHOR_ANNOTATION]: "10.20.0.6" },
      { [ANCHOR_ANNOTATION]: null },
    ]);
  });

  it("trusts the API server's current value: no write after a restart, a repair after a hand edit", async () => {
    const client = fakeClient();
    let current: string | undefined = "10.20.0.5";
    const p = new AnchorPublisher({
      client,
      node: "n1",
      read: () => Promise.resolve({ address: "10.20.0.5" }),
      current: () => current,
    });
    expect(await p.publishOnce()).toBe("unchanged");
    current = "10.99.9.9";
    expect(await p.publishOnce()).toBe("written");
    expect(client.patches).toEqual([{ [ANCHOR_ANNOTATION]: "10.20.0.5" }]);
  });

  it("retries a failing read and a failing write with doubling backoff, then re-checks every recheckMs", async () => {
    const timers = manualTimers();
    const client = fakeClient(1);
    let reads = 0;
    const read = () =>
      ++reads <= 2 ? Promise.reject(new Error("metadata down")) : Promise.resolve({ address: "10.20.0.7" });
    const p = new AnchorPublisher({
      client,
      node: "n1",
      read,
      clock: timers,
      retryBaseMs: 100,
      retryMaxMs: 250,
      recheckMs: 600_000,
    });
    p.start();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      delays.push(timers.fire());
      await flush();
    }
    // start; read fails; read fails; write fails; written; re-check.
    expect(delays).toEqual([0, 100, 200, 250, 600_000]);
    expect(client.patches).toEqual([{ [ANCHOR_ANNOTATION]: "10.20.0.7" }]);
    expect(timers.pending.map((t) => t.ms)).toEqual([600_000]);
    p.stop();
    expect(timers.pending).toEqual([]);
  });
});
