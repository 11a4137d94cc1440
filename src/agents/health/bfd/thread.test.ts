import { afterEach, describe, expect, it } from "vitest";
import { BfdAgent, type BfdStateChange } from "./agent.js";
import { BfdThread } from "./thread.js";

// Real UDP on loopback: two sessions, A (127.0.0.2) and B (127.0.0.3), on a port of their own.
const A = "127.0.0.2";
const B = "127.0.0.3";
const port = 40_000 + Math.floor(Math.random() * 10_000);

/** Holds this thread's event loop, as a long reconcile does. */
function blockFor(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

const waitFor = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
};

type Sessions = (BfdAgent | BfdThread) & { stop(): Promise<void> };
let running: Sessions[] = [];
afterEach(async () => {
  await Promise.all(running.map((s) => s.stop()));
  running = [];
});

async function pair(make: (local: string) => Sessions): Promise<{ changes: BfdStateChange[] }> {
  const a = make(A);
  const b = make(B);
  running = [a, b];
  await Promise.all([a.start(), b.start()]);
  const changes: BfdStateChange[] = [];
  a.on("change", (c: BfdStateChange) => changes.push(c));
  await a.addPeer({ peer: B });
  await b.addPeer({ peer: A });
  await waitFor(() => changes.some((c) => c.to === "Up"));
  return { changes };
}

describe("BFD on a thread of its own", () => {
  it("a session on the agent's own thread goes Down when that thread is held for 1 s", async () => {
    const { changes } = await pair((local) => new BfdAgent({ localAddress: local, port }));
    blockFor(1_000);
    await waitFor(() => changes.some((c) => c.to === "Down"));
    expect(changes.find((c) => c.to === "Down")?.peer).toBe(B);
  });

  it("a BfdThread's session stays Up while the main thread is held for 1 s, and its changes still arrive", async () => {
    const { changes } = await pair((local) => new BfdThread({ localAddress: local, port }));
    blockFor(1_000);
    await new Promise((r) => setTimeout(r, 500)); // what the thread said meanwhile arrives now
    expect(changes.map((c) => c.to)).not.toContain("Down");
    expect(changes.at(-1)?.to).toBe("Up");
    // Still a live session: removing the peer on B brings A down (AdminDown crosses the threads).
    await running[1]!.removePeer(A);
    await waitFor(() => changes.some((c) => c.to === "Down"));
    expect((await (running[0] as BfdThread).statuses()).map((s) => [s.peer, s.state])).toEqual([[B, "Down"]]);
  });

  it("errors cross the boundary with their message", async () => {
    const t = new BfdThread({ localAddress: A, port });
    running = [t];
    await t.start();
    await expect(t.addPeer({ peer: "not-an-address" })).rejects.toThrow(/peer not-an-address is not an IP address/);
    await expect(t.removePeer(B)).resolves.toBeUndefined();
  });
});
