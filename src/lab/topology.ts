import { POOL_HOST_OFFSET, type LabConfig } from "./config.js";

/** The lab's API server address inside the lab (a relay in the control-plane namespace). */
export const LAB_API_ADDRESS = "10.0.0.2";
export const LAB_API_PORT = 6443;

/**
 * The lab's addressing plan, pure. Private addresses are RFC 1918; every "public" one comes
 * from the documentation ranges. Nothing here can reach outside the lab: the internet
 * namespace is the only router on the public segment and has no uplink.
 */
export const LAB_NETWORK = {
  vpcCidr: "10.0.0.0/24",
  podCidr: "10.244.0.0/16",
  serviceCidr: "10.96.0.0/12",
  publicPrefix: 24,
  internetRouter: "203.0.113.1",
  /** The echo service answers any caller with the source address it saw. */
  echoService: "198.51.100.10",
  /** The firewalled service admits only the allowlist. */
  allowlistService: "198.51.100.20",
  /** A destination no example policy includes (shows that only included destinations divert). */
  otherService: "198.51.100.200",
  udpSinkPort: 9999,
} as const;

export interface LabHost {
  role: "node" | "gateway" | "nat";
  name: string;
  netns: string;
  vpcIP: string;
  publicIP: string;
  /** Names of the fabric-side veth ends (unique inside the fabric namespace only). */
  fabricVpcPort: string;
  fabricPublicPort: string;
}

export interface LabNode extends LabHost {
  role: "node";
  podCidr: string;
  /** The node's cluster CNI (absent in labs made before it existed: ptp). */
  cni?: "ptp" | "bridge";
  labels: Record<string, string>;
}

export interface LabGatewayHost extends LabHost {
  role: "gateway";
  gateway: string;
  egressIPs: string[];
}

/** A plain NAT gateway (StaticRoute gateways): forwards and masquerades to its public IP. */
export interface LabNatHost extends LabHost {
  role: "nat";
}

export interface LabPod {
  name: string;
  namespace: string;
  node: string;
  netns: string;
  labels: Record<string, string>;
}

export interface LabTopology {
  prefix: string;
  fabric: string;
  internet: string;
  nodes: LabNode[];
  gatewayHosts: LabGatewayHost[];
  /** Absent in labs made before NAT gateways existed. */
  natHosts?: LabNatHost[];
  /**
   * The apps' gateway pool (`apps.gatewayPool`): hosts in no gateway until the controller puts
   * one in an app's gateway (`gateway` stays ""; the pool process records the assignment).
   */
  poolHosts?: LabGatewayHost[];
  pods: LabPod[];
}

export function planTopology(prefix: string, cfg: LabConfig): LabTopology {
  const nodes: LabNode[] = cfg.nodes.map((n, i) => ({
    role: "node",
    name: n.name,
    netns: `${prefix}-${n.name}`,
    vpcIP: `10.0.0.${11 + i}`,
    publicIP: `203.0.113.${11 + i}`,
    fabricVpcPort: `n${i}v`,
    fabricPublicPort: `n${i}p`,
    podCidr: `10.244.${i + 1}.0/24`,
    ...(n.cni === "bridge" ? { cni: "bridge" as const } : {}),
    labels: n.labels ?? {},
  }));
  const gatewayHosts: LabGatewayHost[] = cfg.gateways
    .flatMap((g) => g.instances ?? [])
    .map((inst, j) => {
      const gateway = cfg.gateways.find((g) => g.instances?.includes(inst))!.name;
      return {
        role: "gateway",
        name: inst.name,
        gateway,
        netns: `${prefix}-${inst.name}`,
        vpcIP: `10.0.0.${101 + j}`,
        publicIP: `203.0.113.${101 + j}`,
        fabricVpcPort: `g${j}v`,
        fabricPublicPort: `g${j}p`,
        egressIPs: inst.egressIPs,
      };
    });
  const pods: LabPod[] = cfg.pods.map((p) => ({
    name: p.name,
    namespace: p.namespace,
    node: p.node,
    netns: `${prefix}-pod-${p.namespace}-${p.name}`,
    labels: p.labels ?? {},
  }));
  const natHosts: LabNatHost[] = (cfg.natGateways ?? []).map((n, j) => ({
    role: "nat",
    name: n.name,
    netns: `${prefix}-${n.name}`,
    vpcIP: `10.0.0.${201 + j}`,
    publicIP: `203.0.113.${201 + j}`,
    fabricVpcPort: `a${j}v`,
    fabricPublicPort: `a${j}p`,
  }));
  const poolHosts: LabGatewayHost[] = (cfg.apps?.gatewayPool ?? []).map((h, j) => ({
    role: "gateway",
    name: h.name,
    gateway: "",
    netns: `${prefix}-${h.name}`,
    vpcIP: `10.0.0.${POOL_HOST_OFFSET + j}`,
    publicIP: `203.0.113.${POOL_HOST_OFFSET + j}`,
    fabricVpcPort: `p${j}v`,
    fabricPublicPort: `p${j}p`,
    egressIPs: [h.egressIP],
  }));
  return {
    prefix,
    fabric: `${prefix}-fabric`,
    internet: `${prefix}-internet`,
    nodes,
    gatewayHosts,
    natHosts,
    ...(poolHosts.length > 0 ? { poolHosts } : {}),
    pods,
  };
}
