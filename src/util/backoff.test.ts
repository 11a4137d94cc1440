import { describe, expect, it } from "vitest";
import { backoffMs } from "./backoff.js";

describe("backoffMs", () => {
  it("starts at the base, doubles, and stops at the cap", () => {
    const b = { baseMs: 100, maxMs: 1_000 };
    expect([0, 1, 2, 3, 4, 5, 30].map((n) => backoffMs(n, b))).toEqual([100, 100, 200, 400, 800, 1_000, 1_000]);
  });
});
