import { describe, expect, it } from "vitest";
import { counterName, meterScript, METER_RULES } from "./meter.js";

const checkout = { policy: "EgressPolicy/payments/checkout", egressIP: "192.0.2.10", snatAddress: "192.0.2.10" };
const exporter = { policy: "EgressPolicy/reporting/exporter", egressIP: "192.0.2.11", snatAddress: "192.0.2.11" };
const absent = {
  present: false,
  counters: new Set<string>(),
  elements: { out: new Map<string, string>(), in: new Map<string, string>() },
  rules: [],
};
const kernelWith = (...rows: (typeof checkout)[]) => ({
  present: true,
  counters: new Set(rows.flatMap((r) => [counterName("out", r), counterName("in", r)])),
  elements: {
    out: new Map(rows.map((r) => [r.snatAddress, counterName("out", r)])),
    in: new Map(rows.map((r) => [r.snatAddress, counterName("in", r)])),
  },
  rules: [METER_RULES.out, METER_RULES.in],
});

describe("gateway metering table", () => {
  it("a counter per (policy, egress IP, direction), stable across agents, new when the IP moves to another policy", () => {
    expect(counterName("out", checkout)).toBe(counterName("out", { ...checkout }));
    expect(counterName("out", checkout)).not.toBe(counterName("in", checkout));
    expect(counterName("out", checkout)).not.toBe(
      counterName("out", { ...checkout, policy: "EgressPolicy/other/app" }),
    );
    expect(counterName("out", checkout)).toMatch(/^out_[0-9a-f]{16}$/);
  });

  it("creates the table with its counters, maps and the rules counting after SNAT", () => {
    const script = meterScript([checkout], absent, undefined, "2026-12-04T21:00:00.000Z");
    expect(script).toContain(
      `counter ${counterName("out", checkout)} {\n    comment "since 2026-12-04T21:00:00.000Z"\n  }`,
    );
    expect(script).toContain(`192.0.2.10 : "${counterName("in", checkout)}"`);
    expect(script).toContain("type filter hook postrouting priority srcnat + 10; policy accept;");
    expect(script).toContain(METER_RULES.out);
    expect(script).not.toContain("delete");
  });

  it("changes nothing when the kernel has it all: a restarted agent keeps the kernel's counts", () => {
    expect(meterScript([checkout, exporter], kernelWith(checkout, exporter))).toBe("");
  });

  it("adds and removes only what changed, never touching the counters that stay", () => {
    const script = meterScript([exporter], kernelWith(checkout), undefined, "2026-12-04T21:00:00.000Z");
    const lines = script
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("add map") && !l.startsWith("add chain"));
    expect(lines).toEqual([
      "delete element ip static_egress_meter meter_out { 192.0.2.10 }",
      "delete element ip static_egress_meter meter_in { 192.0.2.10 }",
      `delete counter ip static_egress_meter ${counterName("out", checkout)}`,
      `delete counter ip static_egress_meter ${counterName("in", checkout)}`,
      // A new counter says when it began: its counts are since then (a reader tells a restarted count from one that went on).
      `add counter ip static_egress_meter ${counterName("out", exporter)} { comment "since 2026-12-04T21:00:00.000Z"; }`,
      `add counter ip static_egress_meter ${counterName("in", exporter)} { comment "since 2026-12-04T21:00:00.000Z"; }`,
      `add element ip static_egress_meter meter_out { 192.0.2.11 : "${counterName("out", exporter)}" }`,
      `add element ip static_egress_meter meter_in { 192.0.2.11 : "${counterName("in", exporter)}" }`,
    ]);
    // An egress IP given to another policy: a new counter (the old policy's count is not carried over).
    const moved = { ...checkout, policy: "EgressPolicy/other/app" };
    expect(meterScript([moved], kernelWith(checkout))).toContain(
      `add element ip static_egress_meter meter_out { 192.0.2.10 : "${counterName("out", moved)}" }`,
    );
  });

  it("restores rules someone changed without recreating the counters", () => {
    const script = meterScript([checkout], { ...kernelWith(checkout), rules: [] });
    expect(script).toContain("flush chain ip static_egress_meter count_egress");
    expect(script).not.toMatch(/counter ip static_egress_meter/);
  });
});
