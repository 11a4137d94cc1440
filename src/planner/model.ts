// The cluster as read (the planner's input) is defined by the API layer, below the planner.
import type {
  ClusterNetwork,
  ClusterSnapshot,
  HealthView,
  InstanceHealth,
  NamespaceInfo,
  NodeInfo,
  PodInfo,
  PolicyObject,
} from "../api/cluster.js";
export type {
  ClusterNetwork,
  ClusterSnapshot,
  HealthView,
  InstanceHealth,
  NamespaceInfo,
  NodeInfo,
  PodInfo,
  PolicyObject,
};
import type { FieldError } from "../api/v1alpha1/validate.js";
import type { Range } from "../util/ipv4.js";

/** A gateway instance, resolved from its gateway's source, with its stable datapath ids. */
export interface ResolvedInstance {
  /** `<gateway>/<instance>`: the name used in health maps, logs and status. */
  key: string;
  gateway: string;
  name: string;
  address: string;
  egressIPs: readonly string[];
  drain: boolean;
  /** Probe timing and hold-down from the gateway's spec.health (defaults 100 ms x 3, 5 s). */
  health: { intervalMs: number; multiplier: number; holdDownMs: number };
  /** 1..4095, stable for a given set of instances; derives the mark and routing table. */
  id: number;
}

/** Verdict about one policy or gateway: valid, or the field errors that make it Invalid. */
export interface Verdict {
  /** `EgressPolicy/<ns>/<name>`, `ClusterEgressPolicy/<name>` or `EgressGateway/<name>`. */
  resource: string;
  valid: boolean;
  errors: FieldError[];
}

/** A policy that passed validation, normalized for planning. */
export interface ValidPolicy {
  resource: string;
  object: PolicyObject;
  gateway: string;
  /** Included minus excluded; the cluster's own ranges are removed separately (`neverDivert`). */
  destinations: Range[];
  /**
   * instance key -> this policy's egress IPs on that instance, in spec order: usually one; several
   * make a pool that new connections spread over (more source ports to one destination).
   */
  egressIPsByInstance: ReadonlyMap<string, readonly string[]>;
  failurePolicy: "Drop" | "FallbackToNodeIP";
  priority: number;
  /**
   * Whether the policy may come before ClusterEgressPolicies by `priority`: every
   * ClusterEgressPolicy, and an EgressPolicy whose namespace's grant says so.
   */
  outranksClusterPolicies: boolean;
  /** spec.verification, resolved (docs/policies.md "Verification"); absent when the policy asks for none. */
  verification?: PlannedVerification;
}

/** A policy's verification: where its probes go, how often, and the source port that marks them as its own. */
export interface PlannedVerification {
  url: string;
  /** The url's host: the HTTP Host header. */
  host: string;
  /** The IPv4 address probes connect to (the host, or spec.verification.address for a name). */
  address: string;
  port: number;
  path: string;
  intervalSeconds: number;
  timeoutSeconds: number;
  /** The probes' TCP source port on every node: PROBE_PORT_BASE + an id of the policy's own. */
  sourcePort: number;
}

/** An invalid policy that still drops its pods' traffic (fail-closed, lowest precedence). */
export interface FailClosedPolicy {
  resource: string;
  object: PolicyObject;
  /** What it would have diverted (or everything, when that does not parse). */
  destinations: Range[];
}

/** Two policies selected the same pod for the same destinations; the winner is named. */
export interface Conflict {
  pod: string;
  winner: string;
  loser: string;
  destinations: Range[];
}

/** One row of a datapath map: this pod's traffic to these destinations. */
export interface DivertEntry {
  podIP: string;
  dst: Range;
  /** Node side: the mark that picks the instance's routing table. */
  mark: number;
  policy: string;
  instance: string;
  /**
   * The mark of the instance the pod would take if `instance` went down (the planner's own choice
   * then, drained instances last); absent when there is none (the pod would be blocked). Lets the
   * node fail over before it replans (src/planner/failover.ts).
   */
  failoverMark?: number;
}

export interface PlannedInstance {
  key: string;
  address: string;
  mark: number;
  table: number;
  /** `via`: route to the instance; `blackhole`: instance is down (fail-closed). */
  route: "via" | "blackhole";
  /** VXLAN network identifier of the node's tunnel to this instance (its id). */
  vni: number;
}

/** One end of a node -> gateway VXLAN tunnel: the node's VPC address and its own UDP port. */
export interface TunnelEnd {
  address: string;
  port: number;
}

/** What one node's datapath should be. Sorted, so equal inputs give equal plans. */
export interface NodePlan {
  node: string;
  instances: PlannedInstance[];
  entries: DivertEntry[];
  /** Destinations never diverted, checked before the map (cluster pod/service/node CIDRs, gateways). */
  neverDivert: Range[];
  /** Policies with no healthy instance, and what that means for their pods here. */
  unavailable: { policy: string; failurePolicy: "Drop" | "FallbackToNodeIP"; pods: number }[];
  /** Selected pods on this node per policy (for status and metrics). */
  podsByPolicy: Record<string, number>;
  /**
   * This node's end of its tunnels to the instances; undefined when the cluster state gives the
   * node no IPv4 InternalIP (then no gateway would accept its traffic: every instance is planned
   * as a blackhole, fail-closed).
   */
  tunnel?: TunnelEnd;
  /**
   * Other hosts this node probes (StaticRoute gateways, src/planner/static-routes.ts): their
   * health replies are admitted like an instance's, from their address on the interface toward them.
   */
  probedPeers?: string[];
  /**
   * The node's own traffic (and hostNetwork pods') to these destinations, for ClusterEgressPolicies
   * with a nodeSelector: marked on output, sent with the node's InternalIP through its tunnel.
   * Absent when no such policy selects this node.
   */
  nodeEntries?: NodeDivertEntry[];
  /** Set by the agent: addresses the node's own traffic is never diverted from (the API server's). */
  keepLocal?: string[];
  /**
   * Verification probes this node sends (policies with spec.verification whose traffic this node
   * diverts): each from the agent's own socket, on the policy's source port, through the instance
   * the node uses for the policy. Absent when there are none.
   */
  probes?: NodeProbe[];
}

/** One policy's probe from this node: where to, through which instance, and what the far side should see. */
export interface NodeProbe extends PlannedVerification {
  policy: string;
  instance: string;
  /** The instance's mark (as in `instances`). */
  mark: number;
  /** The policy's egress IPs on that instance: the source the echo service must report. */
  expected: readonly string[];
}

/** One row of the node-traffic map: the node's own packets to `dst` take `mark`'s instance. */
export interface NodeDivertEntry {
  dst: Range;
  mark: number;
  policy: string;
  instance: string;
}

export interface SnatEntry {
  podIP: string;
  dst: Range;
  /** The policy's (first) egress IP on this instance. */
  egressIP: string;
  /** Every egress IP of the policy on this instance, when it has several: new connections spread over them. */
  pool?: readonly string[];
  policy: string;
}

/** What one gateway instance's datapath should be. */
export interface GatewayPlan {
  instance: string;
  address: string;
  snat: SnatEntry[];
  /** Replies go back to each node's pod CIDRs via that node (`via`), through its tunnel (`port`). */
  returnRoutes: { cidr: string; via: string; port: number }[];
  /** Only these hosts may use the gateway (health probes and forwarding). */
  nodeAddresses: string[];
  egressIPs: string[];
  /**
   * Which policy owns which of this instance's egress IPs (every valid policy, selecting pods or
   * not): what the gateway meters; `app` when the policy is an App's dedicated egress (its usage).
   */
  egressIPOwners: { egressIP: string; policy: string; app?: string }[];
  /** VXLAN network identifier of this instance's tunnels (its id). */
  vni: number;
  /** One tunnel per node (not this host itself), sorted by node name. */
  tunnels: (TunnelEnd & { node: string })[];
  /** Which node's tunnel (port) may bring packets from which pod address: the pods of the SNAT map, on their own node. */
  podsByTunnel: { port: number; podIP: string }[];
  /**
   * Nodes whose own traffic this instance SNATs: replies to their InternalIP go back through their
   * tunnel (not the main table, where the tunnel's own packets to that address are routed).
   * Absent when there are none.
   */
  nodeReturns?: { address: string; port: number }[];
  /**
   * Verification probes this instance SNATs: from a node's address and the policy's source port to
   * the echo service, to the policy's (first) egress IP here. Every node may send them (each picks
   * its instance alone). Absent when there are none.
   */
  probes?: GatewayProbe[];
}

export interface GatewayProbe {
  /** The node's InternalIP (its tunnel end). */
  node: string;
  /** The echo service's address and port. */
  dst: string;
  dport: number;
  /** The policy's probe source port. */
  sport: number;
  egressIP: string;
  policy: string;
}
