import { describe, expect, it } from "vitest";
import { EventHistory, type ChangeEvent } from "./history.js";

const ev = (rv: number): ChangeEvent => ({ rv, type: "MODIFIED", key: `k${rv}`, object: { metadata: { name: `k${rv}` } } });

describe("EventHistory", () => {
  it("serves every event after a covered resourceVersion", () => {
    const h = new EventHistory(10);
    [3, 5, 8].forEach((rv) => h.push(ev(rv)));
    expect(h.since(0)?.map((e) => e.rv)).toEqual([3, 5, 8]);
    expect(h.since(4)?.map((e) => e.rv)).toEqual([5, 8]);
    expect(h.since(8)).toEqual([]);
    expect(h.since(100)).toEqual([]);
  });

  it("stops covering resourceVersions older than the window", () => {
    const h = new EventHistory(3);
    for (let rv = 1; rv <= 5; rv++) h.push(ev(rv));
    expect(h.length).toBe(3);
    expect(h.compactedRv).toBe(2);
    expect(h.since(1)).toBeUndefined();
    expect(h.since(2)?.map((e) => e.rv)).toEqual([3, 4, 5]);
  });

  it("compacts on demand", () => {
    const h = new EventHistory(10);
    for (let rv = 1; rv <= 5; rv++) h.push(ev(rv));
    h.compact(7);
    expect(h.length).toBe(0);
    expect(h.since(6)).toBeUndefined();
    expect(h.since(7)).toEqual([]);
    h.push(ev(8));
    expect(h.since(7)?.map((e) => e.rv)).toEqual([8]);
  });

  it("rejects a useless capacity", () => {
    expect(() => new EventHistory(0)).toThrow(RangeError);
  });
});
