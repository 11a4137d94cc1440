import type { EgressGateway } from "./v1alpha1/egress-gateway.js";
import type { ClusterEgressPolicy, EgressPolicy } from "./v1alpha1/egress-policy.js";

/*
 * The cluster as an agent or the controller reads it: the planner's input. It lives here, below
 * the planner, because the readers (src/api/objects.ts, src/kube) build it and must not depend
 * on the planner.
 */

/** The planner's whole input about the cluster: what an agent has read from its source. */
export interface ClusterSnapshot {
  policies: readonly PolicyObject[];
  gateways: readonly EgressGateway[];
  pods: readonly PodInfo[];
  namespaces: readonly NamespaceInfo[];
  nodes: readonly NodeInfo[];
  network: ClusterNetwork;
}

export type PolicyObject = EgressPolicy | ClusterEgressPolicy;

/** Addresses that belong to the cluster itself; traffic to them is never diverted. */
export interface ClusterNetwork {
  podCIDRs: readonly string[];
  serviceCIDRs: readonly string[];
  nodeCIDRs: readonly string[];
}

export interface PodInfo {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  nodeName?: string;
  ips: readonly string[];
  phase?: string;
  hostNetwork?: boolean;
}

export interface NamespaceInfo {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export interface NodeInfo {
  name: string;
  labels: Readonly<Record<string, string>>;
  annotations: Readonly<Record<string, string>>;
  /** The address other hosts (gateways) reach this node at. */
  internalIP?: string;
  podCIDRs: readonly string[];
}

/** Health of gateway instances as one node sees them. Missing means not yet known. */
export type InstanceHealth = "up" | "down";
export type HealthView = ReadonlyMap<string, InstanceHealth>;
