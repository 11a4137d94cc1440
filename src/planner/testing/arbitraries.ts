/**
 * fast-check generators for planner inputs, reusable by other test suites (dataplane, agents).
 * Clusters are generated as small "shapes" (counts, indices, flags) and then built
 * deterministically, so every generated cluster is valid by construction: distinct egress IPs per
 * policy, pod IPs unique and inside their node's pod CIDR, selectors Kubernetes accepts.
 */
import fc from "fast-check";
import { API_VERSION, type LabelSelector } from "../../api/v1alpha1/common.js";
import type { EgressGateway } from "../../api/v1alpha1/egress-gateway.js";
import type { ClusterEgressPolicy, EgressPolicy } from "../../api/v1alpha1/egress-policy.js";
import type {
  ClusterSnapshot,
  HealthView,
  InstanceHealth,
  NamespaceInfo,
  NodeInfo,
  PodInfo,
  PolicyObject,
} from "../model.js";

/** A small label alphabet, so generated selectors and pods actually meet. */
export type LabelAlphabet = Readonly<Record<string, readonly string[]>>;
const POD_LABELS: LabelAlphabet = { app: ["web", "api", "db"], tier: ["front", "back"], team: ["red", "blue"] };
const NAMESPACE_LABELS: LabelAlphabet = { env: ["prod", "dev"], team: ["red", "blue"] };
const NAMESPACES = ["shop", "billing", "tools"] as const;

/** The cluster's own ranges in generated clusters (never diverted). */
const CLUSTER_NETWORK = {
  podCIDRs: ["10.244.0.0/16"],
  serviceCIDRs: ["10.96.0.0/12"],
  nodeCIDRs: ["10.0.0.0/24"],
} as const;

/** Any 32-bit address as a number. */
export function ipv4NumberArb(): fc.Arbitrary<number> {
  return fc.oneof(
    fc.integer({ min: 0, max: 0xffff_ffff }),
    fc.constantFrom(0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff),
  );
}

/** Labels drawn from `alphabet`: each key present or not (the first key always, so selectors meet). */
export function labelsArb(alphabet: LabelAlphabet = POD_LABELS): fc.Arbitrary<Record<string, string>> {
  const model: Record<string, fc.Arbitrary<string>> = {};
  for (const [key, values] of Object.entries(alphabet)) model[key] = fc.constantFrom(...values);
  const first = Object.keys(alphabet).slice(0, 1);
  return fc.record(model, { requiredKeys: first }) as fc.Arbitrary<Record<string, string>>;
}

/**
 * Valid Kubernetes label selectors over `alphabet` (In/NotIn with values, Exists/DoesNotExist
 * without), including values no object carries and the empty selector (selects everything).
 * Biased toward broad selectors, so that generated policies overlap often.
 */
export function labelSelectorArb(alphabet: LabelAlphabet = POD_LABELS): fc.Arbitrary<LabelSelector> {
  const keys = Object.keys(alphabet);
  const requirement = fc.constantFrom(...keys).chain((key) =>
    fc.oneof(
      fc.record({
        key: fc.constant(key),
        operator: fc.constantFrom("In" as const, "NotIn" as const),
        values: fc.subarray([...(alphabet[key] ?? []), "unused"], { minLength: 1 }),
      }),
      fc.record({ key: fc.constant(key), operator: fc.constantFrom("Exists" as const, "DoesNotExist" as const) }),
    ),
  );
  const oneLabel = fc
    .constantFrom(...keys)
    .chain((key) => fc.constantFrom(...(alphabet[key] ?? [])).map((value) => ({ [key]: value })));
  const model: Record<string, fc.Arbitrary<string>> = {};
  for (const [key, values] of Object.entries(alphabet)) model[key] = fc.constantFrom(...values);
  const matchLabels = fc.record(model, { requiredKeys: [] }) as fc.Arbitrary<Record<string, string>>;
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant({}) },
    { weight: 3, arbitrary: oneLabel.map((matchLabels) => ({ matchLabels })) },
    { weight: 2, arbitrary: requirement.map((r) => ({ matchExpressions: [r] })) },
    {
      weight: 1,
      arbitrary: fc.record(
        { matchLabels, matchExpressions: fc.array(requirement, { minLength: 1, maxLength: 2 }) },
        { requiredKeys: [] },
      ),
    },
  );
}

/**
 * Destination CIDRs for policies: some fixed ones that overlap the cluster's own ranges, and
 * random blocks (with host bits set, to exercise masking) in the documentation ranges.
 */
function destinationCidrArb(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom("0.0.0.0/0", "10.0.0.0/8", "10.96.0.0/12", "10.244.1.0/24", "192.0.0.0/16", "198.51.100.0/24"),
    fc
      .tuple(fc.constantFrom("198.51.100", "192.0.2", "203.0.113"), fc.nat(255), fc.integer({ min: 22, max: 32 }))
      .map(([prefix, last, len]) => `${prefix}.${last}/${len}`),
  );
}

/** A health value as a node sees it; `undefined` means "not yet known". */
function healthValueArb(): fc.Arbitrary<InstanceHealth | undefined> {
  return fc.oneof(
    { weight: 5, arbitrary: fc.constant("up" as const) },
    { weight: 3, arbitrary: fc.constant("down" as const) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
}

export interface ClusterScenario {
  snapshot: ClusterSnapshot;
  /** Every gateway instance key (`<gateway>/<instance>`), in gateway then instance order. */
  instanceKeys: string[];
  /** Each node's own view of instance health. */
  health: Map<string, HealthView>;
}

/** Upper bounds of generated clusters (pods ≤ 240, nodes ≤ 250 keep the address plan valid). */
export interface ClusterArbOptions {
  maxNodes?: number;
  maxPods?: number;
  maxGateways?: number;
  maxInstances?: number;
  maxPolicies?: number;
}

const PHASES = ["Running", "Running", "Running", "Pending", "Succeeded", "Failed", undefined] as const;
const TIMESTAMPS = ["2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"] as const;
const POLICY_NAMES = ["web", "api", "batch", "audit"] as const;

/**
 * Random clusters: nodes, namespaces, pods, 1–3 static gateways of 1–4 instances and 0–6 valid
 * policies of both kinds. Each gateway grants each namespace the egress IPs its EgressPolicies
 * use, some grants letting them outrank ClusterEgressPolicies.
 */
export function clusterArb(options: ClusterArbOptions = {}): fc.Arbitrary<ClusterScenario> {
  const maxNodes = options.maxNodes ?? 4;
  const maxInstances = options.maxInstances ?? 4;
  const maxGateways = options.maxGateways ?? 3;
  const node = fc.record({ labels: labelsArb({ zone: ["a", "b"] }) });
  const namespace = fc.record({ labels: labelsArb(NAMESPACE_LABELS) });
  const pod = fc.record({
    namespace: fc.nat(NAMESPACES.length - 1),
    node: fc.nat(maxNodes - 1),
    labels: labelsArb(POD_LABELS),
    phase: fc.constantFrom(...PHASES),
    network: fc.oneof(
      { weight: 8, arbitrary: fc.constant("pod" as const) },
      { weight: 1, arbitrary: fc.constant("dual-stack" as const) },
      { weight: 1, arbitrary: fc.constant("hostNetwork" as const) },
      { weight: 1, arbitrary: fc.constant("no-ip" as const) },
    ),
  });
  const gateway = fc.record({
    // Per namespace: whether its grant on this gateway lets its EgressPolicies outrank ClusterEgressPolicies.
    outrank: fc.array(fc.boolean(), { minLength: NAMESPACES.length, maxLength: NAMESPACES.length }),
    instances: fc.array(
      fc.record({
        drain: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
        spareIPs: fc.nat(1),
      }),
      { minLength: 1, maxLength: maxInstances },
    ),
  });
  const policy = fc.record({
    cluster: fc.boolean(),
    name: fc.constantFrom(...POLICY_NAMES),
    namespace: fc.nat(NAMESPACES.length - 1),
    gateway: fc.nat(),
    // Often every instance of the gateway: failover needs several instances to choose from.
    instances: fc.oneof(
      { weight: 1, arbitrary: fc.constant(Array.from({ length: maxInstances }, () => true)) },
      { weight: 1, arbitrary: fc.array(fc.boolean(), { minLength: maxInstances, maxLength: maxInstances }) },
    ),
    podSelector: labelSelectorArb(POD_LABELS),
    namespaceSelector: labelSelectorArb(NAMESPACE_LABELS),
    destinationCIDRs: fc.option(fc.array(destinationCidrArb(), { minLength: 1, maxLength: 3 }), {
      nil: undefined,
      freq: 3,
    }),
    excludedCIDRs: fc.option(fc.array(destinationCidrArb(), { minLength: 1, maxLength: 2 }), {
      nil: undefined,
      freq: 2,
    }),
    priority: fc.option(fc.constantFrom(0, 50, 100), { nil: undefined, freq: 2 }),
    creationTimestamp: fc.option(fc.constantFrom(...TIMESTAMPS), { nil: undefined, freq: 4 }),
    failurePolicy: fc.option(fc.constantFrom("Drop" as const, "FallbackToNodeIP" as const), {
      nil: undefined,
      freq: 3,
    }),
  });
  return fc
    .record({
      nodes: fc.array(node, { minLength: 1, maxLength: maxNodes }),
      namespaces: fc.array(namespace, { minLength: NAMESPACES.length, maxLength: NAMESPACES.length }),
      pods: fc.array(pod, { maxLength: options.maxPods ?? 14, size: "max" }),
      gateways: fc.array(gateway, { minLength: 1, maxLength: maxGateways }),
      policies: fc.array(policy, { maxLength: options.maxPolicies ?? 6, size: "max" }),
      health: fc.array(
        fc.array(healthValueArb(), { minLength: maxGateways * maxInstances, maxLength: maxGateways * maxInstances }),
        {
          minLength: maxNodes,
          maxLength: maxNodes,
        },
      ),
    })
    .map(buildCluster);
}

type Shape = {
  nodes: { labels: Record<string, string> }[];
  namespaces: { labels: Record<string, string> }[];
  pods: {
    namespace: number;
    node: number;
    labels: Record<string, string>;
    phase: (typeof PHASES)[number];
    network: "pod" | "dual-stack" | "hostNetwork" | "no-ip";
  }[];
  gateways: { outrank: boolean[]; instances: { drain: boolean; spareIPs: number }[] }[];
  policies: {
    cluster: boolean;
    name: string;
    namespace: number;
    gateway: number;
    instances: boolean[];
    podSelector: LabelSelector;
    namespaceSelector: LabelSelector;
    destinationCIDRs: string[] | undefined;
    excludedCIDRs: string[] | undefined;
    priority: number | undefined;
    creationTimestamp: string | undefined;
    failurePolicy: "Drop" | "FallbackToNodeIP" | undefined;
  }[];
  health: (InstanceHealth | undefined)[][];
};

function buildCluster(shape: Shape): ClusterScenario {
  const nodes: NodeInfo[] = shape.nodes.map((n, i) => ({
    name: `node-${i}`,
    labels: n.labels,
    annotations: {},
    internalIP: `10.0.0.${10 + i}`,
    podCIDRs: [`10.244.${i}.0/24`, `fd00:${i}::/64`],
  }));
  const namespaces: NamespaceInfo[] = NAMESPACES.map((name, i) => ({
    name,
    labels: { "kubernetes.io/metadata.name": name, ...shape.namespaces[i]?.labels },
  }));
  const pods: PodInfo[] = shape.pods.map((p, i) => {
    const nodeIndex = p.node % nodes.length;
    const nodeIP = nodes[nodeIndex]?.internalIP as string;
    const podIP = `10.244.${nodeIndex}.${10 + i}`;
    const ips = {
      pod: [podIP],
      "dual-stack": [`fd00:${nodeIndex}::${10 + i}`, podIP],
      hostNetwork: [nodeIP],
      "no-ip": [],
    }[p.network];
    const out: PodInfo = {
      namespace: NAMESPACES[p.namespace] as string,
      name: `pod-${i}`,
      labels: p.labels,
      nodeName: `node-${nodeIndex}`,
      ips,
    };
    if (p.phase !== undefined) out.phase = p.phase;
    if (p.network === "hostNetwork") out.hostNetwork = true;
    return out;
  });

  // Egress IPs: a few spare ones per instance, then one per policy that uses the instance.
  // Public-looking addresses from the documentation ranges only, 250 per range.
  let nextEgressIP = 9;
  const allocate = () => {
    const n = nextEgressIP++;
    return `${["203.0.113", "198.51.100", "192.0.2"][Math.floor(n / 250)] ?? "invalid"}.${1 + (n % 250)}`;
  };
  const gatewayInstances = shape.gateways.map((g, gi) =>
    g.instances.map((inst, ii) => ({
      name: `i${ii}`,
      address: `10.0.1.${gi * 10 + ii + 1}`,
      egressIPs: Array.from({ length: inst.spareIPs }, allocate),
      drain: inst.drain,
    })),
  );

  const seen = new Set<string>();
  const policies: PolicyObject[] = [];
  // Tenancy: each gateway grants each namespace exactly the egress IPs its EgressPolicies use.
  const granted = gatewayInstances.map(() => new Map<string, string[]>());
  for (const p of shape.policies) {
    const gi = p.gateway % gatewayInstances.length;
    const instances = gatewayInstances[gi] ?? [];
    let chosen = instances.filter((_, i) => p.instances[i]);
    if (chosen.length === 0) chosen = instances.slice(0, 1);
    const namespace = NAMESPACES[p.namespace] as string;
    const resource = p.cluster ? `ClusterEgressPolicy/${p.name}` : `EgressPolicy/${namespace}/${p.name}`;
    if (seen.has(resource)) continue;
    seen.add(resource);
    const egressIPs = chosen.map((inst) => {
      const ip = allocate();
      inst.egressIPs.push(ip);
      return ip;
    });
    if (!p.cluster) granted[gi]?.set(namespace, [...(granted[gi]?.get(namespace) ?? []), ...egressIPs]);
    const common = compact({
      podSelector: p.podSelector,
      destinationCIDRs: p.destinationCIDRs,
      excludedCIDRs: p.excludedCIDRs,
      gatewayName: `gw-${gi}`,
      egressIPs,
      failurePolicy: p.failurePolicy,
      priority: p.priority,
    }) as EgressPolicy["spec"];
    const metadata = compact({ name: p.name, creationTimestamp: p.creationTimestamp });
    if (p.cluster) {
      const cep: ClusterEgressPolicy = {
        apiVersion: API_VERSION,
        kind: "ClusterEgressPolicy",
        metadata,
        spec: { ...common, namespaceSelector: p.namespaceSelector },
      };
      policies.push(cep);
    } else {
      const ep: EgressPolicy = {
        apiVersion: API_VERSION,
        kind: "EgressPolicy",
        metadata: { ...metadata, namespace },
        spec: common,
      };
      policies.push(ep);
    }
  }

  const gateways: EgressGateway[] = gatewayInstances.map((instances, gi) => ({
    apiVersion: API_VERSION,
    kind: "EgressGateway",
    metadata: { name: `gw-${gi}` },
    spec: {
      grants: [...(granted[gi] ?? [])].map(([ns, ips]) => ({
        namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": ns } },
        egressIPs: ips,
        outrankClusterPolicies:
          shape.gateways[gi]?.outrank[NAMESPACES.indexOf(ns as (typeof NAMESPACES)[number])] ?? false,
      })),
      static: {
        instances: instances.map((i) => ({
          name: i.name,
          address: i.address,
          egressIPs: i.egressIPs.length > 0 ? i.egressIPs : [allocate()],
          ...(i.drain ? { drain: true } : {}),
        })),
      },
    },
  }));
  const instanceKeys = gatewayInstances.flatMap((instances, gi) => instances.map((i) => `gw-${gi}/${i.name}`));
  const health = new Map(nodes.map((n, i) => [n.name, healthFrom(instanceKeys, shape.health[i] ?? [])]));
  return {
    snapshot: { policies, gateways, pods, namespaces, nodes, network: CLUSTER_NETWORK },
    instanceKeys,
    health,
  };
}

function healthFrom(
  keys: readonly string[],
  values: readonly (InstanceHealth | undefined)[],
): Map<string, InstanceHealth> {
  const out = new Map<string, InstanceHealth>();
  keys.forEach((key, i) => {
    const v = values[i];
    if (v !== undefined) out.set(key, v);
  });
  return out;
}

/** Drops keys whose value is undefined (the schema's optional fields are absent, not undefined). */
function compact<T extends Record<string, unknown>>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** A deterministic Fisher–Yates shuffle (mulberry32), for "input order does not matter" checks. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  let s = seed >>> 0;
  const random = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** The same cluster with every list in another order. */
export function shuffledSnapshot(snapshot: ClusterSnapshot, seed: number): ClusterSnapshot {
  return {
    policies: shuffled(snapshot.policies, seed),
    gateways: shuffled(snapshot.gateways, seed + 1),
    pods: shuffled(snapshot.pods, seed + 2),
    namespaces: shuffled(snapshot.namespaces, seed + 3),
    nodes: shuffled(snapshot.nodes, seed + 4),
    network: snapshot.network,
  };
}

/** Builders for hand-written fixtures. */
export function egressPolicy(
  namespace: string,
  name: string,
  spec: EgressPolicy["spec"],
  creationTimestamp?: string,
): EgressPolicy {
  return {
    apiVersion: API_VERSION,
    kind: "EgressPolicy",
    metadata: compact({ name, namespace, creationTimestamp }),
    spec,
  };
}

export function clusterEgressPolicy(
  name: string,
  spec: ClusterEgressPolicy["spec"],
  creationTimestamp?: string,
): ClusterEgressPolicy {
  return { apiVersion: API_VERSION, kind: "ClusterEgressPolicy", metadata: compact({ name, creationTimestamp }), spec };
}

export function egressGateway(name: string, spec: EgressGateway["spec"], creationTimestamp?: string): EgressGateway {
  return { apiVersion: API_VERSION, kind: "EgressGateway", metadata: compact({ name, creationTimestamp }), spec };
}
