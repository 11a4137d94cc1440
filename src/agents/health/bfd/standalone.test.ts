import { describe, expect, it } from "vitest";
import { parseStandaloneArgs } from "./standalone.js";

describe("standalone BFD peer arguments", () => {
  it("maps flags to a peer config with 100 ms x 3 defaults", () => {
    expect(parseStandaloneArgs(["--local", "10.0.0.2", "--peer", "10.0.0.1", "--passive"])).toEqual({
      logLevel: "silent",
      localAddress: "10.0.0.2",
      peer: {
        peer: "10.0.0.1",
        local: "10.0.0.2",
        desiredMinTxMs: 100,
        requiredMinRxMs: 100,
        detectMultiplier: 3,
        passive: true,
        rttProbeIntervalMs: 0,
      },
    });
  });

  it("requires both addresses and refuses unknown flags", () => {
    expect(() => parseStandaloneArgs(["--local", "10.0.0.2"])).toThrow(/--peer/);
    expect(() => parseStandaloneArgs(["--local", "a", "--peer", "b", "--bogus"])).toThrow();
  });
});
