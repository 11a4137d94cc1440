import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { PassOutcome } from "./controller.js";

/** The controller's metrics. One registry per controller: no global state. */
export class ControllerMetrics {
  readonly registry = new Registry();
  readonly leader = new Gauge({
    name: "static_egress_controller_leader",
    help: "1 while this replica holds the Lease and reconciles",
    registers: [this.registry],
  });
  readonly passes = new Counter({
    name: "static_egress_controller_passes_total",
    help:
      "Reconcile passes, by result (error: at least one object's step failed and is retried) and scope " +
      "(full: planned from every object; keyed: only the statuses changed node reports touch)",
    labelNames: ["result", "scope"],
    registers: [this.registry],
  });
  readonly passSeconds = new Histogram({
    name: "static_egress_controller_pass_duration_seconds",
    help: "Time one reconcile pass over every policy, gateway and plugin took",
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly lastPass = new Gauge({
    name: "static_egress_controller_last_pass_timestamp_seconds",
    help: "When the last pass ended (Unix time)",
    registers: [this.registry],
  });
  readonly failedSteps = new Gauge({
    name: "static_egress_controller_failed_steps",
    help: "Objects whose step failed in the last pass",
    registers: [this.registry],
  });
  readonly invalid = new Gauge({
    name: "static_egress_invalid_resources",
    help: "Policies and gateways the planner found Invalid, by kind",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly cloudFailing = new Gauge({
    name: "static_egress_cloud_failing_jobs",
    help: "Gateways (or reserved IPs) whose cloud provisioning failed at the last attempt and is being retried, by plugin (0 on a standby)",
    labelNames: ["plugin"],
    registers: [this.registry],
  });
  readonly instances = new Gauge({
    name: "static_egress_gateway_instances",
    help: "Gateway instances by health as written to status (Up, Down, PartiallyDown, Unknown, ...)",
    labelNames: ["gateway", "health"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "static_egress_controller_" });
    this.leader.set(0);
  }

  onPass(p: PassOutcome): void {
    this.passes.inc({ result: p.failedSteps === 0 ? "ok" : "error", scope: p.scope ?? "full" });
    this.passSeconds.observe(p.durationMs / 1000);
    this.lastPass.set(Date.now() / 1000);
    this.failedSteps.set(p.failedSteps);
    this.invalid.reset();
    for (const resource of p.invalid) this.invalid.inc({ kind: resource.split("/")[0] ?? "" });
    this.instances.reset();
    for (const [gateway, healths] of p.instanceHealth)
      for (const health of healths) this.instances.inc({ gateway, health });
  }
}
