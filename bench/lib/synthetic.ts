import type { EgressGateway } from "../../src/api/v1alpha1/egress-gateway.js";
import type { EgressPolicy } from "../../src/api/v1alpha1/egress-policy.js";
import { API_VERSION } from "../../src/api/v1alpha1/common.js";
import { formatIPv4, parseIPv4 } from "../../src/util/ipv4.js";
import type { ClusterSnapshot, PodInfo } from "../../src/planner/model.js";
import type { KubeObject } from "../../src/api/objects.js";

/**
 * A synthetic cluster for the programming benchmark: one node with a /16 pod CIDR, gateways
 * with static instances, M policies (each selecting its own share of the pods by label) and N
 * pods on that node. Every address is private (10/8) or from the documentation ranges.
 */
export const SYNTHETIC = {
  node: "bench-node",
  nodeIP: "10.0.0.11",
  vpcPrefix: 24,
  podCidr: "10.244.0.0/16",
  namespace: "apps",
  gateways: 2,
  instancesPerGateway: 2,
  /** Every policy diverts these, minus the exclusion: 3 map elements per selected pod. */
  destinationCIDRs: ["198.51.100.0/24", "203.0.113.0/24"],
  excludedCIDRs: ["198.51.100.200/32"],
  rangesPerPod: 3,
} as const;

/** Egress IPs handed out to instances: the documentation ranges, .1 to .254 each. */
function egressPool(): string[] {
  const pool: string[] = [];
  for (const net of ["192.0.2", "198.51.100", "203.0.113"]) for (let h = 1; h <= 254; h++) pool.push(`${net}.${h}`);
  return pool;
}

function instanceAddress(gateway: number, instance: number): string {
  return `10.0.0.${101 + gateway * SYNTHETIC.instancesPerGateway + instance}`;
}

/** Pod i's address: 10.244.0.2 upwards, skipping nothing a /16 cannot hold (N <= 65,000). */
function podIP(i: number): string {
  return formatIPv4(parseIPv4("10.244.0.2") + i);
}

function syntheticPod(i: number, policies: number): PodInfo {
  return {
    namespace: SYNTHETIC.namespace,
    name: `pod-${i}`,
    labels: { app: `app-${i % policies}` },
    nodeName: SYNTHETIC.node,
    ips: [podIP(i)],
    phase: "Running",
  };
}

export interface SyntheticOptions {
  pods: number;
  policies: number;
  /**
   * Each policy excludes an address of its own (198.51.100.(j+1)) instead of the shared one: still
   * 3 ranges per pod, but every policy's pods make their own divert classes (up to 253 policies).
   */
  distinctPolicies?: boolean;
}

export function syntheticSnapshot({ pods, policies, distinctPolicies }: SyntheticOptions): ClusterSnapshot {
  const { gateways: G, instancesPerGateway: I } = SYNTHETIC;
  const pool = egressPool();
  // Policy j uses gateway j % G and needs one IP on each of its instances.
  const ipsPerInstance = Math.ceil(policies / G);
  if (ipsPerInstance * G * I > pool.length)
    throw new RangeError(`${policies} policies need more egress IPs than the documentation ranges hold`);
  if (pods > 65_000) throw new RangeError(`${pods} pods do not fit the node's /16 pod CIDR`);
  if (distinctPolicies && policies > 253) throw new RangeError("distinct policies: at most 253");
  const ipOf = (g: number, inst: number, k: number) => pool[(g * I + inst) * ipsPerInstance + k]!;
  const created = "2026-01-01T00:00:00Z";

  const gatewayObjects: EgressGateway[] = Array.from({ length: G }, (_, g) => ({
    apiVersion: API_VERSION,
    kind: "EgressGateway",
    metadata: { name: `gw-${g}`, creationTimestamp: created },
    spec: {
      // Tenancy: without a grant every EgressPolicy in the namespace is Invalid.
      grants: [{ namespaceSelector: {} }],
      static: {
        instances: Array.from({ length: I }, (_, inst) => ({
          name: `gw-${g}-${inst}`,
          address: instanceAddress(g, inst),
          egressIPs: Array.from({ length: ipsPerInstance }, (_, k) => ipOf(g, inst, k)),
        })),
      },
    },
  }));

  const policyObjects: EgressPolicy[] = Array.from({ length: policies }, (_, j) => {
    const g = j % G;
    const k = Math.floor(j / G);
    return {
      apiVersion: API_VERSION,
      kind: "EgressPolicy",
      metadata: { name: `policy-${j}`, namespace: SYNTHETIC.namespace, creationTimestamp: created },
      spec: {
        podSelector: { matchLabels: { app: `app-${j}` } },
        gatewayName: `gw-${g}`,
        egressIPs: Array.from({ length: I }, (_, inst) => ipOf(g, inst, k)),
        destinationCIDRs: [...SYNTHETIC.destinationCIDRs],
        excludedCIDRs: distinctPolicies ? [`198.51.100.${j + 1}/32`] : [...SYNTHETIC.excludedCIDRs],
      },
    };
  });

  return {
    policies: policyObjects,
    gateways: gatewayObjects,
    pods: Array.from({ length: pods }, (_, i) => syntheticPod(i, policies)),
    namespaces: [{ name: SYNTHETIC.namespace, labels: { "kubernetes.io/metadata.name": SYNTHETIC.namespace } }],
    nodes: [
      {
        name: SYNTHETIC.node,
        labels: {},
        annotations: {},
        internalIP: SYNTHETIC.nodeIP,
        podCIDRs: [SYNTHETIC.podCidr],
      },
    ],
    network: { podCIDRs: [SYNTHETIC.podCidr], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
  };
}

/** The same cluster with one more pod (the element-delta case). */
export function withExtraPod(snapshot: ClusterSnapshot, index: number, policies: number): ClusterSnapshot {
  return { ...snapshot, pods: [...snapshot.pods, syntheticPod(index, policies)] };
}

/**
 * The cluster as the API server would hand it to a node agent's informers: the policy and gateway
 * objects, and Pod, Node and Namespace objects that `snapshotFromObjects` reads back into `snapshot`.
 */
export function syntheticObjects(snapshot: ClusterSnapshot): KubeObject[] {
  return [
    ...(snapshot.policies as unknown as KubeObject[]),
    ...(snapshot.gateways as unknown as KubeObject[]),
    ...snapshot.namespaces.map((n) => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: n.name, labels: { ...n.labels } },
    })),
    ...snapshot.nodes.map((n) => ({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: n.name, labels: { ...n.labels }, annotations: { ...n.annotations } },
      spec: { podCIDRs: [...n.podCIDRs] },
      status: { addresses: n.internalIP ? [{ type: "InternalIP", address: n.internalIP }] : [] },
    })),
    ...snapshot.pods.map(podObject),
  ];
}

/** Pod `index` of the synthetic cluster as a Pod object (running, with its address). */
export function syntheticPodObject(index: number, policies: number): KubeObject {
  return podObject(syntheticPod(index, policies));
}

function podObject(p: PodInfo): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: p.namespace, labels: { ...p.labels } },
    spec: p.nodeName ? { nodeName: p.nodeName } : {},
    status: { phase: p.phase, podIP: p.ips[0], podIPs: p.ips.map((ip) => ({ ip })) },
  };
}
