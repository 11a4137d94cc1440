import { describe, expect, it } from "vitest";
import type { Lab } from "./lab.js";
import { analyzeStream } from "./traffic.js";

// The sink's records as the lab keeps them: `<tag> <seq> <sent-ms>` from a source address.
const labWith = (rows: [src: string, seq: number, sent: number][]) =>
  ({
    udpRecords: () => rows.map(([src, seq, sent]) => ({ src, payload: `s ${seq} ${sent}`, t: sent + 1 })),
  }) as unknown as Lab;

describe("analyzeStream", () => {
  it("counts lost datagrams by sequence number, not by time: a stalled sender loses nothing", () => {
    // Sender stalled 300 ms between seq 2 and 3: a long gap, nothing lost.
    const stalled = analyzeStream(
      labWith([
        ["192.0.2.10", 1, 1000],
        ["192.0.2.10", 2, 1001],
        ["192.0.2.10", 3, 1301],
      ]),
      "s",
      ["192.0.2.10"],
    );
    expect(stalled).toMatchObject({ received: 3, lost: 0, longestGapMs: 300, gapStartedAt: 1001 });
    // Seq 3 and 4 never arrived; a duplicate of 5 is not a loss made good.
    const lossy = analyzeStream(
      labWith([
        ["192.0.2.10", 1, 1000],
        ["192.0.2.10", 2, 1001],
        ["192.0.2.20", 5, 1004],
        ["192.0.2.20", 5, 1004],
      ]),
      "s",
      ["192.0.2.10", "192.0.2.20"],
    );
    expect(lossy.lost).toBe(2);
    expect(lossy.lostSeqs).toEqual([
      { seq: 3, after: 1001 },
      { seq: 4, after: 1001 },
    ]);
    expect(lossy.sources).toEqual({ "192.0.2.10": 2, "192.0.2.20": 2 });
    expect(lossy.lastSource).toBe("192.0.2.20");
  });

  it("names every datagram from a source outside the allowed ones", () => {
    const r = analyzeStream(
      labWith([
        ["192.0.2.10", 1, 1000],
        ["10.244.1.5", 2, 1001],
        ["192.0.2.10", 3, 1002],
      ]),
      "s",
      ["192.0.2.10"],
    );
    expect(r.wrongSource).toEqual([{ src: "10.244.1.5", seq: 2 }]);
    expect(analyzeStream(labWith([]), "s", [])).toMatchObject({ received: 0, lost: 0, lastSource: undefined });
  });
});
