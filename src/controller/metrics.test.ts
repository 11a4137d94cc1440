import { describe, expect, it } from "vitest";
import { ControllerMetrics } from "./metrics.js";

describe("controller metrics", () => {
  it("counts passes by result and exports the last pass's invalid resources and instance health", async () => {
    const m = new ControllerMetrics();
    m.onPass({
      scope: "keyed",
      durationMs: 40,
      failedSteps: 0,
      invalid: ["EgressPolicy/web/a", "EgressPolicy/web/b", "EgressGateway/g"],
      instanceHealth: new Map([["shared", ["Up", "Up", "Unknown"]]]),
    });
    m.onPass({
      durationMs: 1200,
      failedSteps: 2,
      invalid: ["EgressPolicy/web/a"],
      instanceHealth: new Map([["shared", ["Up", "Down"]]]),
    });
    const text = await m.registry.metrics();
    expect(text).toContain('static_egress_controller_passes_total{result="ok",scope="keyed"} 1');
    expect(text).toContain('static_egress_controller_passes_total{result="error",scope="full"} 1');
    expect(text).toContain("static_egress_controller_failed_steps 2");
    expect(text).toContain("static_egress_controller_pass_duration_seconds_count 2");
    expect(text).toContain('static_egress_controller_pass_duration_seconds_bucket{le="1"} 1');
    // The last pass replaces what the one before said: no stale series.
    expect(text).toContain('static_egress_invalid_resources{kind="EgressPolicy"} 1');
    expect(text).not.toContain('kind="EgressGateway"');
    expect(text).toContain('static_egress_gateway_instances{gateway="shared",health="Up"} 1');
    expect(text).toContain('static_egress_gateway_instances{gateway="shared",health="Down"} 1');
    expect(text).not.toContain('health="Unknown"');
    expect(text).toContain("static_egress_controller_leader 0");
  });
});
