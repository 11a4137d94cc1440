import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { NodePlan } from "../planner/model.js";
import type { VerdictChange } from "./health/monitor.js";

/** The node agent's metrics. One registry per agent: no global state. */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly instanceUp = new Gauge({ name: "static_egress_instance_up", help: "Gateway instance health as this node sees it (1 up, 0 down)", labelNames: ["instance"], registers: [this.registry] });
  readonly failovers = new Counter({ name: "static_egress_failovers_total", help: "Times a gateway instance was judged down by this node", labelNames: ["instance"], registers: [this.registry] });
  readonly probeRtt = new Gauge({ name: "static_egress_probe_rtt_seconds", help: "Last BFD poll/final round trip to the instance", labelNames: ["instance"], registers: [this.registry] });
  readonly programmedPods = new Gauge({ name: "static_egress_programmed_pods", help: "Pods of this node programmed per policy", labelNames: ["policy"], registers: [this.registry] });
  readonly unavailable = new Gauge({ name: "static_egress_policy_unavailable", help: "1 when a policy has no healthy instance on this node", labelNames: ["policy", "failure_policy"], registers: [this.registry] });
  readonly failClosedDrops = new Gauge({ name: "static_egress_failclosed_dropped_packets", help: "Packets dropped because their gateway instance was down (fail-closed)", registers: [this.registry] });
  readonly applies = new Counter({ name: "static_egress_datapath_applies_total", help: "Reconciles that applied the datapath", registers: [this.registry] });
  readonly spoofedDrops = new Gauge({ name: "static_egress_spoofed_dropped_packets", help: "Diverted packets dropped because they did not come from the interface (or bridge port) of the pod owning their source address", registers: [this.registry] });
  readonly forgedHealthDrops = new Gauge({ name: "static_egress_forged_health_dropped_packets", help: "BFD packets dropped: TTL other than 255, or not from a gateway instance on the interface toward it", registers: [this.registry] });
  readonly foreignTunnelDrops = new Gauge({ name: "static_egress_node_foreign_tunnel_dropped_packets", help: "VXLAN packets to this node's tunnel port dropped: not from a gateway instance's address with its VNI", registers: [this.registry] });

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
}

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly snatEntries = new Gauge({ name: "static_egress_gateway_snat_entries", help: "Entries in this gateway's SNAT map", registers: [this.registry] });
  readonly applies = new Counter({ name: "static_egress_datapath_applies_total", help: "Reconciles that applied the datapath", registers: [this.registry] });
  readonly bfdSessionsUp = new Gauge({ name: "static_egress_bfd_sessions_up", help: "BFD sessions in state Up", registers: [this.registry] });
  readonly foreignDrops = new Gauge({
    name: "static_egress_gateway_foreign_dropped_packets",
    help: "Packets refused because the sender is not the node it claims to be: check=tunnel (a node's tunnel port from another address), check=pod_source (a pod address through a tunnel other than its node's, or not through a tunnel)",
    labelNames: ["check"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "static_egress_gateway_agent_" });
  }
}
