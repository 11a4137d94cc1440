import { describe, expect, it } from "vitest";
import { settled } from "./settled.js";

describe("settled", () => {
  it("gives every value, in order", async () => {
    expect(await settled([Promise.resolve(1), Promise.resolve("a")] as const)).toEqual([1, "a"]);
  });

  it("rejects with the first failure only after the others have settled", async () => {
    let slowDone = false;
    const slow = new Promise<void>((r) => setTimeout(() => ((slowDone = true), r()), 20));
    await expect(
      settled([Promise.reject(new Error("first")), slow, Promise.reject(new Error("second"))]),
    ).rejects.toThrow("first");
    expect(slowDone).toBe(true);
  });
});
