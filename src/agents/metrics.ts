import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { NodePlan } from "../planner/model.js";
import type { VerdictChange } from "./health/monitor.js";
import type { MeterReading } from "../dataplane/meter.js";
import { busiest } from "../dataplane/conntrack.js";
import type { VerificationReport } from "../api/node-report.js";

/** The node agent's metrics. One registry per agent: no global state. */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly instanceUp = new Gauge({
    name: "static_egress_instance_up",
    help: "Gateway instance health as this node sees it (1 up, 0 down)",
    labelNames: ["instance"],
    registers: [this.registry],
  });
  readonly failovers = new Counter({
    name: "static_egress_failovers_total",
    help: "Times a gateway instance was judged down by this node",
    labelNames: ["instance"],
    registers: [this.registry],
  });
  readonly probeRtt = new Gauge({
    name: "static_egress_probe_rtt_seconds",
    help: "Last BFD poll/final round trip to the instance",
    labelNames: ["instance"],
    registers: [this.registry],
  });
  readonly programmedPods = new Gauge({
    name: "static_egress_programmed_pods",
    help: "Pods of this node programmed per policy",
    labelNames: ["policy"],
    registers: [this.registry],
  });
  readonly unavailable = new Gauge({
    name: "static_egress_policy_unavailable",
    help: "1 when a policy has no healthy instance on this node",
    labelNames: ["policy", "failure_policy"],
    registers: [this.registry],
  });
  readonly failClosedDrops = new Gauge({
    name: "static_egress_failclosed_dropped_packets",
    help: "Packets dropped because their gateway instance was down (fail-closed)",
    registers: [this.registry],
  });
  readonly applies = new Counter({
    name: "static_egress_datapath_applies_total",
    help: "Reconciles that applied the datapath",
    registers: [this.registry],
  });
  readonly spoofedDrops = new Gauge({
    name: "static_egress_spoofed_dropped_packets",
    help: "Diverted packets dropped because they did not come from the interface (or bridge port) of the pod owning their source address",
    registers: [this.registry],
  });
  readonly forgedHealthDrops = new Gauge({
    name: "static_egress_forged_health_dropped_packets",
    help: "BFD packets dropped: TTL other than 255, or not from a gateway instance on the interface toward it",
    registers: [this.registry],
  });
  readonly foreignTunnelDrops = new Gauge({
    name: "static_egress_node_foreign_tunnel_dropped_packets",
    help: "VXLAN packets to this node's tunnel port dropped: not from a gateway instance's address with its VNI",
    registers: [this.registry],
  });
  // Continuous verification (docs/policies.md "Verification").
  readonly verifications = new Counter({
    name: "static_egress_verification_total",
    help:
      "Verification probes this node sent through a policy's gateway, by result " +
      "(ok, mismatch: the echo service saw another source, error: no usable answer)",
    labelNames: ["policy", "result"],
    registers: [this.registry],
  });
  readonly verificationMismatch = new Gauge({
    name: "static_egress_verification_mismatch",
    help: "1 while this node's last verification probe of a policy saw a source other than the policy's egress IP",
    labelNames: ["policy"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "static_egress_node_agent_" });
  }

  onVerdict(c: VerdictChange): void {
    this.instanceUp.set({ instance: c.key }, c.to === "up" ? 1 : 0);
    if (c.to === "down" && c.from === "up") this.failovers.inc({ instance: c.key });
  }

  onPlan(plan: NodePlan): void {
    this.applies.inc();
    this.programmedPods.reset();
    for (const [policy, pods] of Object.entries(plan.podsByPolicy)) this.programmedPods.set({ policy }, pods);
    this.unavailable.reset();
    for (const u of plan.unavailable) this.unavailable.set({ policy: u.policy, failure_policy: u.failurePolicy }, 1);
  }

  onVerification(policy: string, report: VerificationReport): void {
    for (const result of ["ok", "mismatch", "error"] as const) this.verifications.inc({ policy, result }, 0);
    this.verifications.inc({ policy, result: report.result });
    this.verificationMismatch.set({ policy }, report.result === "mismatch" ? 1 : 0);
  }

  /** A policy no longer probed here: its mismatch gauge goes (the counters stay, as counters do). */
  onVerificationRemoved(policy: string): void {
    this.verificationMismatch.remove({ policy });
  }
}

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly snatEntries = new Gauge({
    name: "static_egress_gateway_snat_entries",
    help: "Entries in this gateway's SNAT map",
    registers: [this.registry],
  });
  readonly applies = new Counter({
    name: "static_egress_datapath_applies_total",
    help: "Reconciles that applied the datapath",
    registers: [this.registry],
  });
  readonly bfdSessionsUp = new Gauge({
    name: "static_egress_bfd_sessions_up",
    help: "BFD sessions in state Up",
    registers: [this.registry],
  });
  readonly foreignDrops = new Gauge({
    name: "static_egress_gateway_foreign_dropped_packets",
    help:
      "Packets refused because the sender is not the node it claims to be: check=tunnel " +
      "(a node's tunnel port from another address), check=pod_source (a pod address " +
      "through a tunnel other than its node's, or not through a tunnel)",
    labelNames: ["check"],
    registers: [this.registry],
  });

  // Traffic and capacity (docs/metrics.md). `instance` is `<gateway>/<instance>`, as in every static-egress metric.
  readonly egressPackets = new Counter({
    name: "static_egress_gateway_egress_packets_total",
    help:
      "Packets of SNATed connections this instance forwarded, counted by the " +
      "kernel (nft counters kept across agent restarts), by policy, egress " +
      "IP and direction (out: pods to destinations, in: replies)",
    labelNames: ["gateway", "instance", "policy", "egress_ip", "direction"],
    registers: [this.registry],
  });
  readonly egressBytes = new Counter({
    name: "static_egress_gateway_egress_bytes_total",
    help: "Bytes (IP packets, headers included) of SNATed connections this instance forwarded, counted by the kernel, by policy, egress IP and direction",
    labelNames: ["gateway", "instance", "policy", "egress_ip", "direction"],
    registers: [this.registry],
  });
  // Apps' usage (docs/apps.md#usage): what left through an app's dedicated IPs, from the same kernel counters.
  readonly appEgressPackets = new Counter({
    name: "static_egress_app_egress_packets_total",
    help:
      "Packets that left through an App's dedicated IP on this instance (its policy dedicated-egress; " +
      "direction out), counted by the kernel; a counter that starts again (new IP on the instance, host reboot) is a reset",
    labelNames: ["app", "gateway", "instance", "egress_ip"],
    registers: [this.registry],
  });
  readonly appEgressBytes = new Counter({
    name: "static_egress_app_egress_bytes_total",
    help: "Bytes (IP packets, headers included) that left through an App's dedicated IP on this instance, counted by the kernel",
    labelNames: ["app", "gateway", "instance", "egress_ip"],
    registers: [this.registry],
  });
  readonly conntrackEntries = new Gauge({
    name: "static_egress_gateway_conntrack_entries",
    help: "Conntrack entries of connections SNATed to the egress IP",
    labelNames: ["gateway", "instance", "egress_ip"],
    registers: [this.registry],
  });
  readonly snatPortsInUse = new Gauge({
    name: "static_egress_gateway_snat_ports_in_use",
    help: `SNAT source ports of the egress IP in use toward one destination (ip:port/proto); the ${SNAT_TOP_DESTINATIONS} busiest destinations per egress IP`,
    labelNames: ["gateway", "instance", "egress_ip", "destination"],
    registers: [this.registry],
  });
  readonly snatPortsLimit = new Gauge({
    name: "static_egress_gateway_snat_ports_limit",
    help: "SNAT source ports an egress IP has toward one destination (the size of the port range)",
    labelNames: ["gateway", "instance", "egress_ip"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "static_egress_gateway_agent_" });
  }

  /** The kernel's counts as they are: a restarted agent exports the same values, a new counter starts at 0 (a reset). */
  onTraffic(instance: string, readings: readonly MeterReading[]): void {
    this.egressPackets.reset();
    this.egressBytes.reset();
    this.appEgressPackets.reset();
    this.appEgressBytes.reset();
    for (const r of readings) {
      const labels = { ...instanceLabels(instance), policy: r.policy, egress_ip: r.egressIP, direction: r.direction };
      this.egressPackets.inc(labels, r.packets);
      this.egressBytes.inc(labels, r.bytes);
      if (!r.app || r.direction !== "out") continue;
      const app = { app: r.app, ...instanceLabels(instance), egress_ip: r.egressIP };
      this.appEgressPackets.inc(app, r.packets);
      this.appEgressBytes.inc(app, r.bytes);
    }
  }

  onSnatUsage(
    instance: string,
    limit: number,
    usage: readonly { egressIP: string; entries: number; ports: ReadonlyMap<string, number> }[],
  ): void {
    this.conntrackEntries.reset();
    this.snatPortsInUse.reset();
    this.snatPortsLimit.reset();
    for (const u of usage) {
      const labels = { ...instanceLabels(instance), egress_ip: u.egressIP };
      this.conntrackEntries.set(labels, u.entries);
      this.snatPortsLimit.set(labels, limit);
      for (const [destination, n] of busiest(u.ports, SNAT_TOP_DESTINATIONS))
        this.snatPortsInUse.set({ ...labels, destination }, n);
    }
  }
}

/** Destinations are unbounded (every address a pod talks to): only the busiest are exported. */
export const SNAT_TOP_DESTINATIONS = 5;

function instanceLabels(instance: string): { gateway: string; instance: string } {
  return { gateway: instance.split("/")[0] ?? "", instance };
}
