import { StaticEgressError } from "../util/errors.js";

/**
 * Cloud-neutral interface the controller uses to run gateway hosts. Every method is idempotent:
 * calling it again after a crash or a partial failure converges to the same end state, and
 * resources are found again through ownership marks (tags/names), never through local memory.
 */

export { BFD_CONTROL_PORT } from "../api/datapath.js";

export type FirewallProtocol = "tcp" | "udp" | "icmp";

export interface PortRule {
  protocol: FirewallProtocol;
  /** "3784", "8000-9000", or "all"; ignored for ICMP. */
  ports?: string;
}

/**
 * Ports for a routed design, where nodes hand the gateways the pods' packets as they are: all
 * TCP, UDP and ICMP from the nodes. A tunnelled design passes just its tunnel port instead,
 * e.g. `[{ protocol: "udp", ports: "51820" }]` for WireGuard.
 */
export const FORWARD_ALL_FROM_NODES: readonly PortRule[] = [
  { protocol: "tcp", ports: "all" },
  { protocol: "udp", ports: "all" },
  { protocol: "icmp" },
];

export interface GatewayFleetSpec {
  /** Name of the gateway object (Kubernetes name). With clusterId it identifies the fleet. */
  gatewayName: string;
  /** Stable identifier of the Kubernetes cluster (e.g. the DOKS cluster UUID). */
  clusterId: string;
  region: string;
  size: string;
  /** Image slug or numeric image id. */
  image: string;
  /** VPC of the cluster, so gateways and nodes talk over private addresses. */
  vpcUuid?: string;
  /** Number of gateway hosts; host `i` is slot `i`. */
  count: number;
  /**
   * Reserved IPs the user owns, by slot: host `i` gets `reservedIPs[i]`. They are assigned and
   * moved but never created or deleted.
   */
  reservedIPs?: string[];
  /**
   * Slots beyond `reservedIPs` get a reserved IP the provider creates; those IPs are deleted
   * with the fleet or when their slot goes away.
   */
  allocateReservedIPs?: boolean;
  /** Cloud-init user data of new hosts (existing hosts are not rebuilt when it changes). */
  userData: string;
  /** Tag (label) that every node of the cluster carries; the gateway firewall admits these. */
  nodeTag: string;
  /**
   * Traffic the gateways accept from the nodes besides BFD (always open on UDP 3784): the
   * forwarded traffic, e.g. FORWARD_ALL_FROM_NODES or a tunnel port.
   */
  ports: PortRule[];
  /**
   * Source addresses of forwarded traffic besides the nodes' own (the cluster's pod CIDRs): a
   * routed design hands the gateways packets with the pods' addresses, which a firewall rule
   * "from the node tag" does not match. Admitted on `ports` only, never on BFD.
   */
  sourceCIDRs?: string[];
}

export type GatewayHostStatus = "new" | "active" | "off" | "archive" | "gone";

export interface GatewayHost {
  id: string;
  name: string;
  /** Slot of the host in its fleet (0-based). */
  index: number;
  privateIPv4?: string;
  publicIPv4?: string;
  /** The reserved IP currently assigned to the host, if any. */
  reservedIPv4?: string;
  status: GatewayHostStatus;
  /** Built from another size or image than the spec asks (set by ensureGatewayFleet only). */
  outdated?: boolean;
}

export interface ServiceFirewallSpec {
  clusterId: string;
  /** Stable key of the exposed service, e.g. "<namespace>/<name>". */
  name: string;
  /** Hosts (nodes) the ports are opened on: the holder(s) of the service's reserved IP. */
  hostIds: string[];
  ports: PortRule[];
  /** Allowed sources (default: any IPv4 and IPv6 address). */
  sourceAddresses?: string[];
}

export interface CloudProvider {
  /**
   * Converges the fleet to the spec: finds existing hosts by ownership mark, creates missing
   * ones, replaces dead ones, removes surplus and duplicates, ensures the gateway firewall and
   * the reserved-IP assignment. Returns the hosts per slot; a host that is still booting is
   * returned with status "new" (and possibly without its reserved IP) - call again later.
   */
  ensureGatewayFleet(spec: GatewayFleetSpec): Promise<GatewayHost[]>;
  /** The fleet's hosts as they are now, without changing anything. */
  listGatewayHosts(gatewayName: string, clusterId: string): Promise<GatewayHost[]>;
  /**
   * Gateways of the cluster that have a fleet in the cloud (from its ownership mark, which exists
   * from before the first resource until after the last one is removed). Used to find fleets
   * whose gateway is gone. A provider may leave out fleets whose mark does not say the gateway.
   */
  listGatewayFleets(clusterId: string): Promise<string[]>;
  /**
   * Removes everything ensureGatewayFleet created for the fleet (hosts, firewall, reserved IPs
   * it allocated) and nothing else. Missing resources count as removed. With
   * `keepAllocatedReservedIPs` the allocated reserved IPs stay in the account (unassigned once
   * their hosts are gone) and stay recorded as the fleet's: the next ensureGatewayFleet of this
   * gateway name gives them to its slots again, and a later deleteGatewayFleet without the
   * option deletes them.
   */
  deleteGatewayFleet(
    gatewayName: string,
    clusterId: string,
    opts?: { keepAllocatedReservedIPs?: boolean },
  ): Promise<void>;
  /** The reserved IPs recorded as allocated for the fleet (in use by its hosts, or kept), by slot. */
  allocatedReservedIPs(gatewayName: string, clusterId: string): Promise<string[]>;
  /**
   * Deletes one host of the fleet (a rolling replacement: the next ensureGatewayFleet creates its
   * slot again from the current spec). A host that is not the fleet's is left alone: false.
   */
  deleteGatewayHost(gatewayName: string, clusterId: string, hostId: string): Promise<boolean>;
  /** Assigns (or moves) a reserved IP to a host and waits until the cloud reports it done. */
  assignReservedIP(ip: string, hostId: string): Promise<void>;
  /** Host currently holding the reserved IP, undefined when unassigned. */
  reservedIPHolder(ip: string): Promise<string | undefined>;
  /**
   * Ensures a firewall, separate from any firewall the cluster's platform manages, that opens
   * the service ports on the given hosts. Returns the firewall id.
   */
  ensureServiceFirewall(spec: ServiceFirewallSpec): Promise<string>;
  deleteServiceFirewall(clusterId: string, name: string): Promise<void>;
  /** Which of these service firewalls (ServiceFirewallSpec.name) exist: found again after a restart. */
  existingServiceFirewalls(clusterId: string, names: readonly string[]): Promise<string[]>;
  /** Every reserved IP of the account. */
  listReservedIPs(): Promise<string[]>;
}

/** The spec cannot be satisfied as written (invalid names, addresses, counts). */
export class GatewayFleetSpecError extends StaticEgressError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = "GatewayFleetSpecError";
  }
}

/** A reserved IP the caller named does not exist in the account. */
export class ReservedIPNotFoundError extends StaticEgressError {
  constructor(readonly ip: string) {
    super(`reserved IP ${ip} does not exist`);
    this.name = "ReservedIPNotFoundError";
  }
}

/** The host already holds a different reserved IP (a host holds at most one). */
export class ReservedIPConflictError extends StaticEgressError {
  constructor(
    readonly ip: string,
    readonly hostId: string,
    readonly heldIp: string,
  ) {
    super(`cannot assign ${ip} to host ${hostId}: it holds ${heldIp}; unassign that first`);
    this.name = "ReservedIPConflictError";
  }
}
