import { describe, expect, it } from "vitest";
import { failoverOutcome, streamDatagrams, type Datagram } from "./failover.js";

const A = "192.0.2.10";
const B = "192.0.2.20";
const window = { killedAt: 1_000, until: 3_000, victim: [A], survivors: [B] };

/** One datagram per ms from `from` to `to` (inclusive), through `src`. */
function flow(from: number, to: number, src: string): Datagram[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ({ src, seq: from + i, sent: from + i }));
}

describe("failoverOutcome", () => {
  it("measures the gap from the last delivery to the first through the survivor, and what came after", () => {
    const rows = [...flow(0, 1_000, A), ...flow(1_300, 3_000, B)];
    expect(failoverOutcome(rows, window)).toEqual({
      resumed: true,
      resumedVia: B,
      gapMs: 300,
      afterGap: 1_701,
      afterGapBySource: { [B]: 1_701 },
      lostAfterGap: 0,
      longestGapInWindowMs: 300,
      wrongSource: 0,
      wrongExamples: [],
    });
  });

  it("counts a flow that never came back as failed, not as a small gap", () => {
    const rows = flow(0, 1_000, A);
    const o = failoverOutcome(rows, window);
    expect(o.resumed).toBe(false);
    expect(o.failure).toMatch(/no datagram sent after the kill arrived through a surviving instance/);
    expect(o.gapMs).toBe(2_000);
    // What the old window metric saw here: no gap at all.
    expect(o.longestGapInWindowMs).toBe(1);
  });

  it("does not count datagrams still leaving through the killed instance as a failover", () => {
    // The agent killed, the kernel still forwarding through A: the flow never moved.
    const o = failoverOutcome(flow(0, 3_000, A), window);
    expect(o.resumed).toBe(false);
  });

  it("measures from the last delivery through the victim when the victim forwarded past the kill", () => {
    const rows = [...flow(0, 1_040, A), ...flow(1_070, 3_000, B)];
    expect(failoverOutcome(rows, window)).toMatchObject({ resumed: true, gapMs: 30, afterGap: 1_931 });
  });

  it("fails a flow that went back to the victim, or stopped again after resuming", () => {
    const back = [...flow(0, 1_000, A), ...flow(1_300, 2_000, B), ...flow(2_001, 3_000, A)];
    expect(failoverOutcome(back, window)).toMatchObject({
      resumed: false,
      failure: `the flow went back to ${A} after resuming through ${B}`,
    });
    const stopped = [...flow(0, 1_000, A), ...flow(1_300, 1_400, B)];
    expect(failoverOutcome(stopped, window)).toMatchObject({ resumed: false, afterGap: 101 });
  });

  it("counts losses after the gap and sources outside the policy's", () => {
    const rows = [
      ...flow(0, 1_000, A),
      ...flow(1_300, 2_000, B),
      ...flow(2_101, 3_000, B),
      { src: "10.244.1.5", seq: 2_050, sent: 2_050 },
    ];
    expect(failoverOutcome(rows, window)).toMatchObject({
      resumed: true,
      lostAfterGap: 99,
      wrongSource: 1,
      wrongExamples: [{ src: "10.244.1.5", seq: 2_050, msAfterKill: 1_050 }],
    });
  });
});

describe("streamDatagrams", () => {
  it("reads one stream's records, in sequence order", () => {
    const records = [
      { src: A, payload: "t 1 101" },
      { src: A, payload: "other 0 100" },
      { src: B, payload: "t 0 100" },
    ];
    expect(streamDatagrams(records, "t")).toEqual([
      { src: B, seq: 0, sent: 100 },
      { src: A, seq: 1, sent: 101 },
    ]);
  });
});
