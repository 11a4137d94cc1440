import { describe, expect, it } from "vitest";
import { toDigitalOceanApp } from "./app-view.js";

describe("an App as DigitalOcean shows one", () => {
  it("usage per dedicated IP and for the app, DigitalOcean's bandwidth_bytes as a uint64 string", () => {
    const view = toDigitalOceanApp({
      metadata: { name: "web", uid: "u-1" },
      status: {
        phase: "ACTIVE",
        dedicated_ips: [
          { ip: "203.0.113.5", id: "203.0.113.5", status: "ASSIGNED" },
          { ip: "203.0.113.9", id: "203.0.113.9", status: "ASSIGNING" },
        ],
        usage: {
          bytes: 12_800,
          packets: 100,
          since: "t0",
          updated_at: "t1",
          ips: [{ ip: "203.0.113.5", bytes: 12_800, packets: 100, since: "t0", counters: [] }],
        },
      },
    });
    expect(view.dedicated_ips).toEqual([
      {
        ip: "203.0.113.5",
        id: "203.0.113.5",
        status: "ASSIGNED",
        usage: { bandwidth_bytes: "12800", packets: "100", since: "t0" },
      },
      { ip: "203.0.113.9", id: "203.0.113.9", status: "ASSIGNING" },
    ]);
    expect(view.bandwidth_usage).toEqual({
      app_id: "u-1",
      bandwidth_bytes: "12800",
      packets: "100",
      since: "t0",
      updated_at: "t1",
    });
    // The bookkeeping (each gateway counter's last value) is not shown.
    expect(JSON.stringify(view)).not.toContain("counters");
  });

  it("no usage field before anything was counted", () => {
    expect(toDigitalOceanApp({ metadata: { name: "web", uid: "u-1" }, status: {} })).not.toHaveProperty(
      "bandwidth_usage",
    );
  });
});
