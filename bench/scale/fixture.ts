/**
 * The synthetic cluster the control-plane scale benchmark serves: nodes with /24 pod CIDRs and
 * VPC addresses, namespaces, Running pods with addresses, gateways and policies. Pure: the same
 * shape gives the same objects, so a run can be compared with the next.
 *
 * Address plan (all private, 10.0.0.0/8; nothing is ever routed):
 *   nodes (VPC)          10.0.0.0/16   node i -> 10.0.0.0 + 10 + i
 *   gateway instances    10.0.255.0/24 (inside the VPC, as gateway hosts are)
 *   pod CIDRs            10.64.0.0/11  node i -> 10.64.0.0 + 256 i, /24 (room for 8,192 nodes)
 *   services             10.96.0.0/12
 *   egress IPs           10.200.0.0/16 the documentation ranges hold only 768 addresses and a
 *                        policy owns its IPs alone; these are never configured on anything here
 */

export interface ScaleShape {
  nodes: number;
  pods: number;
  namespaces: number;
  /** Namespaced EgressPolicies + ClusterEgressPolicies. */
  policies: number;
  /** Of `policies`, how many are ClusterEgressPolicies (namespace selector + pod selector). */
  clusterPolicies: number;
  gateways: number;
  /** Static instances per gateway; each policy has one egress IP on each instance of its gateway. */
  instancesPerGateway: number;
  /** Distinct `app` labels per namespace; pods are spread over them evenly. */
  appsPerNamespace: number;
  /** Namespace label `team` takes this many values (cluster policies select by it). */
  teams: number;
}

export const DEFAULT_SHAPE: ScaleShape = {
  nodes: 5_000,
  pods: 100_000,
  namespaces: 200,
  policies: 1_000,
  clusterPolicies: 50,
  // The CRD allows 64 egress IPs per instance: 1,000 policies need 16 gateways (63 IPs on each instance).
  gateways: 16,
  instancesPerGateway: 2,
  appsPerNamespace: 10,
  teams: 20,
};

export const NETWORK = {
  podCIDRs: ["10.64.0.0/11"],
  serviceCIDRs: ["10.96.0.0/12"],
  nodeCIDRs: ["10.0.0.0/16"],
} as const;

/** Prefix length of the VPC (the node namespace gets its node address with it). */
export const VPC_PREFIX_LENGTH = 16;

const POD_BASE = ip4(10, 64, 0, 0);
const NODE_BASE = ip4(10, 0, 0, 10);
const INSTANCE_BASE = ip4(10, 0, 255, 10);
const EGRESS_BASE = ip4(10, 200, 0, 0);
const MAX_NODES = 8_192;
/** EgressGateway's CRD: spec.static.instances[].egressIPs has at most 64 items. */
const MAX_EGRESS_IPS_PER_INSTANCE = 64;
/** Addresses .2 ... .(2+PODS_PER_NODE_MAX-1) of a node's /24 are the seeded pods; new pods come after. */
const FIRST_POD_HOST = 2;
export const FIRST_EXTRA_POD_HOST = 150;

export type Json = Record<string, unknown>;

function ip4(a: number, b: number, c: number, d: number): number {
  return ((a << 24) >>> 0) + (b << 16) + (c << 8) + d;
}

function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

class ShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShapeError";
  }
}

export function checkShape(s: ScaleShape): void {
  if (s.nodes < 1 || s.nodes > MAX_NODES)
    throw new ShapeError(`nodes: ${s.nodes} is outside 1..${MAX_NODES} (pod CIDRs are /24s in 10.64.0.0/11)`);
  if (Math.ceil(s.pods / s.nodes) > FIRST_EXTRA_POD_HOST - FIRST_POD_HOST)
    throw new ShapeError(
      `pods: more than ${FIRST_EXTRA_POD_HOST - FIRST_POD_HOST} pods per node do not fit the address plan`,
    );
  if (s.clusterPolicies > s.policies) throw new ShapeError("clusterPolicies: more than policies");
  const namespaced = s.policies - s.clusterPolicies;
  if (namespaced > s.namespaces * Math.floor(s.appsPerNamespace / 2))
    throw new ShapeError(
      "policies: namespaced policies need more namespaces or apps (half the apps of a namespace are for namespaced policies)",
    );
  if (s.clusterPolicies > s.teams * Math.ceil(s.appsPerNamespace / 2))
    throw new ShapeError("clusterPolicies: need more teams or apps");
  if (s.gateways * s.instancesPerGateway > 200)
    throw new ShapeError("gateways: at most 200 instances (10.0.255.10-209)");
  if (Math.ceil(s.policies / s.gateways) * s.gateways * s.instancesPerGateway > 65_536)
    throw new ShapeError("policies: egress IPs do not fit 10.200.0.0/16");
  if (Math.ceil(s.policies / s.gateways) > MAX_EGRESS_IPS_PER_INSTANCE)
    throw new ShapeError(
      `policies: more than ${MAX_EGRESS_IPS_PER_INSTANCE} egress IPs per gateway instance (the CRD's limit); use more gateways`,
    );
}

export function nodeName(i: number): string {
  return `node-${String(i).padStart(5, "0")}`;
}

export function nodeAddress(i: number): string {
  return formatIp(NODE_BASE + i);
}

function nodePodCidr(i: number): string {
  return `${formatIp(POD_BASE + i * 256)}/24`;
}

/** The pod address `host` in node i's /24. */
export function podAddress(node: number, host: number): string {
  return formatIp(POD_BASE + node * 256 + host);
}

export function namespaceName(i: number): string {
  return `ns-${String(i).padStart(3, "0")}`;
}

function team(ns: number, s: ScaleShape): string {
  return `team-${ns % s.teams}`;
}

/** Namespaced policies use apps 0 .. half-1, cluster policies apps half .. end: they never overlap. */
function namespacedApps(s: ScaleShape): number {
  return Math.floor(s.appsPerNamespace / 2);
}

const OWNER_UID = "6f1c0d52-3a1b-4c1e-9f0e-7d0b2a9c4e11";

/** Where seeded pod `index` lives: nodes in turn, namespace and app hashed (a node hosts many namespaces). */
function podPlacement(s: ScaleShape, index: number): { node: number; host: number; ns: number; app: number } {
  const h = mix(index);
  return {
    node: index % s.nodes,
    host: FIRST_POD_HOST + Math.floor(index / s.nodes),
    ns: h % s.namespaces,
    app: mix(h ^ 0x5bd1e995) % s.appsPerNamespace,
  };
}

/** murmur3's 32-bit finalizer: a cheap, deterministic spread. */
function mix(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A Pod about the size of a real Deployment's pod (without managedFields): about 2.5 KB of JSON. */
export function podObject(s: ScaleShape, index: number): Json {
  return podManifest(podParams(s, index));
}

export interface PodParams {
  namespace: string;
  name: string;
  app: string;
  node: string;
  hostIP: string;
  podIP: string;
}

/** The pod as created (spec, metadata); `podStatus` is what the kubelet writes once it runs. */
export function podManifest(p: PodParams): Json {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: p.name,
      namespace: p.namespace,
      labels: { app: p.app, "pod-template-hash": "5d8f7c9b4", "app.kubernetes.io/part-of": "shop" },
      annotations: { "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z" },
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: `${p.app}-5d8f7c9b4`,
          uid: OWNER_UID,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      nodeName: p.node,
      serviceAccountName: "default",
      containers: [
        {
          name: "app",
          image: "registry.example/shop/app:1.4.2",
          ports: [{ name: "http", containerPort: 8080, protocol: "TCP" }],
          env: [
            { name: "LOG_LEVEL", value: "info" },
            { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
          ],
          resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "256Mi" } },
          readinessProbe: {
            httpGet: { path: "/healthz", port: 8080, scheme: "HTTP" },
            periodSeconds: 10,
            timeoutSeconds: 1,
            successThreshold: 1,
            failureThreshold: 3,
          },
          volumeMounts: [
            { name: "kube-api-access", mountPath: "/var/run/secrets/kubernetes.io/serviceaccount", readOnly: true },
          ],
          terminationMessagePath: "/dev/termination-log",
          terminationMessagePolicy: "File",
          imagePullPolicy: "IfNotPresent",
        },
      ],
      volumes: [
        {
          name: "kube-api-access",
          projected: {
            defaultMode: 420,
            sources: [
              { serviceAccountToken: { expirationSeconds: 3607, path: "token" } },
              { configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] } },
            ],
          },
        },
      ],
      tolerations: [
        { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
        { key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
      ],
    },
  };
}

export function podStatus(p: Pick<PodParams, "hostIP" | "podIP">, startedAt = "2025-01-01T00:00:00Z"): Json {
  const cond = (type: string) => ({ type, status: "True", lastProbeTime: null, lastTransitionTime: startedAt });
  return {
    phase: "Running",
    hostIP: p.hostIP,
    hostIPs: [{ ip: p.hostIP }],
    podIP: p.podIP,
    podIPs: [{ ip: p.podIP }],
    startTime: startedAt,
    qosClass: "Burstable",
    conditions: ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"].map(cond),
    containerStatuses: [
      {
        name: "app",
        ready: true,
        started: true,
        restartCount: 0,
        image: "registry.example/shop/app:1.4.2",
        imageID: "registry.example/shop/app@sha256:3c5e3c0a1f0b5d2a9c1e8f7b6a5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d",
        containerID: "containerd://9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
        state: { running: { startedAt } },
        lastState: {},
      },
    ],
  };
}

/** Params of seeded pod `index`. */
export function podParams(s: ScaleShape, index: number): PodParams {
  const at = podPlacement(s, index);
  return {
    namespace: namespaceName(at.ns),
    name: `app-${at.app}-${index.toString(36).padStart(4, "0")}`,
    app: `app-${at.app}`,
    node: nodeName(at.node),
    hostIP: nodeAddress(at.node),
    podIP: podAddress(at.node, at.host),
  };
}

export function nodeObject(i: number): Json {
  const name = nodeName(i);
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      labels: {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": `zone-${i % 3}`,
        "node.kubernetes.io/instance-type": "s-4vcpu-8gb",
      },
    },
    spec: { podCIDR: nodePodCidr(i), podCIDRs: [nodePodCidr(i)], providerID: `digitalocean://${100000 + i}` },
    status: {
      addresses: [
        { type: "InternalIP", address: nodeAddress(i) },
        { type: "Hostname", address: name },
      ],
      capacity: { cpu: "4", memory: "8148204Ki", pods: "110" },
      allocatable: { cpu: "3900m", memory: "7000000Ki", pods: "110" },
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "kubelet is posting ready status",
          lastHeartbeatTime: "2025-01-01T00:00:00Z",
          lastTransitionTime: "2025-01-01T00:00:00Z",
        },
      ],
      nodeInfo: {
        kubeletVersion: "v1.32.0",
        containerRuntimeVersion: "containerd://1.7.24",
        kernelVersion: "6.1.0",
        osImage: "Debian GNU/Linux 12 (bookworm)",
        architecture: "amd64",
        operatingSystem: "linux",
      },
    },
  };
}

export function namespaceObject(s: ScaleShape, i: number): Json {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: namespaceName(i), labels: { "kubernetes.io/metadata.name": namespaceName(i), team: team(i, s) } },
  };
}

function gatewayName(g: number): string {
  return `gw-${g}`;
}

export function instanceAddress(s: ScaleShape, g: number, k: number): string {
  return formatIp(INSTANCE_BASE + g * s.instancesPerGateway + k);
}

/** Egress IP of policy p on instance k of its gateway. */
function egressIP(s: ScaleShape, p: number, k: number): string {
  return formatIp(EGRESS_BASE + p * s.instancesPerGateway + k);
}

function gatewayOf(s: ScaleShape, p: number): number {
  return p % s.gateways;
}

export function gatewayObject(s: ScaleShape, g: number): Json {
  const instances = Array.from({ length: s.instancesPerGateway }, (_, k) => ({
    name: `i-${k}`,
    address: instanceAddress(s, g, k),
    egressIPs: range(s.policies)
      .filter((p) => gatewayOf(s, p) === g)
      .map((p) => egressIP(s, p, k)),
  }));
  // Every namespace may use every gateway (a cluster admin's grant; without one, EgressPolicies are Invalid).
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "EgressGateway",
    metadata: { name: gatewayName(g) },
    spec: { grants: [{ namespaceSelector: {} }], static: { instances } },
  };
}

export interface PolicyRef {
  kind: "EgressPolicy" | "ClusterEgressPolicy";
  namespace?: string;
  name: string;
}

/** Policy p: the first `policies - clusterPolicies` are namespaced, the rest cluster-wide. */
export function policyObject(s: ScaleShape, p: number): Json {
  const namespaced = s.policies - s.clusterPolicies;
  const half = namespacedApps(s);
  const common = {
    gatewayName: gatewayName(gatewayOf(s, p)),
    egressIPs: range(s.instancesPerGateway).map((k) => egressIP(s, p, k)),
    ...(p % 3 === 0
      ? { destinationCIDRs: ["198.51.100.0/24", "203.0.113.0/24"], excludedCIDRs: ["203.0.113.128/25"] }
      : {}),
  };
  if (p < namespaced) {
    const ns = p % s.namespaces;
    const app = Math.floor(p / s.namespaces);
    return {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: `egress-app-${app}`, namespace: namespaceName(ns) },
      spec: { podSelector: { matchLabels: { app: `app-${app}` } }, ...common },
    };
  }
  const c = p - namespaced;
  const t = c % s.teams;
  const app = half + Math.floor(c / s.teams);
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "ClusterEgressPolicy",
    metadata: { name: `team-${t}-app-${app}` },
    spec: {
      namespaceSelector: { matchLabels: { team: `team-${t}` } },
      podSelector: { matchExpressions: [{ key: "app", operator: "In", values: [`app-${app}`] }] },
      ...common,
    },
  };
}

export function policyRef(s: ScaleShape, p: number): PolicyRef {
  const o = policyObject(s, p) as { kind: PolicyRef["kind"]; metadata: { name: string; namespace?: string } };
  return { kind: o.kind, name: o.metadata.name, ...(o.metadata.namespace ? { namespace: o.metadata.namespace } : {}) };
}

/**
 * Pods each policy selects, computed from the shape alone (the controller's `selectedPods`
 * must agree). Keys: `EgressPolicy/<ns>/<name>` or `ClusterEgressPolicy/<name>`.
 */
export function expectedSelectedPods(s: ScaleShape): Map<string, number> {
  const perNsApp = new Map<string, number>();
  for (let i = 0; i < s.pods; i++) {
    const at = podPlacement(s, i);
    const key = `${at.ns}/${at.app}`;
    perNsApp.set(key, (perNsApp.get(key) ?? 0) + 1);
  }
  const out = new Map<string, number>();
  const namespaced = s.policies - s.clusterPolicies;
  const half = namespacedApps(s);
  for (let p = 0; p < s.policies; p++) {
    const ref = policyRef(s, p);
    if (p < namespaced) {
      out.set(
        `EgressPolicy/${ref.namespace}/${ref.name}`,
        perNsApp.get(`${p % s.namespaces}/${Math.floor(p / s.namespaces)}`) ?? 0,
      );
    } else {
      const c = p - namespaced;
      const app = half + Math.floor(c / s.teams);
      let n = 0;
      for (let ns = 0; ns < s.namespaces; ns++)
        if (ns % s.teams === c % s.teams) n += perNsApp.get(`${ns}/${app}`) ?? 0;
      out.set(`ClusterEgressPolicy/${ref.name}`, n);
    }
  }
  return out;
}

/** Whether some policy selects pods labelled app-`app` in namespace number `ns`. */
function isSelected(s: ScaleShape, ns: number, app: number): boolean {
  const half = namespacedApps(s);
  if (app < half) return app * s.namespaces + ns < s.policies - s.clusterPolicies;
  return (app - half) * s.teams + (ns % s.teams) < s.clusterPolicies;
}

/** Addresses of the seeded pods on node i that some policy selects (what its agent must program). */
export function selectedPodIPsOnNode(s: ScaleShape, node: number): string[] {
  return podsOnNode(s, node)
    .filter((i) => {
      const at = podPlacement(s, i);
      return isSelected(s, at.ns, at.app);
    })
    .map((i) => podParams(s, i).podIP)
    .sort();
}

/** Indexes of the seeded pods on node i. */
export function podsOnNode(s: ScaleShape, node: number): number[] {
  const out: number[] = [];
  for (let i = node; i < s.pods; i += s.nodes) out.push(i);
  return out;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Command-line options for the cluster's shape (node:util parseArgs), shared by the scripts. */
export const SHAPE_OPTIONS = {
  nodes: { type: "string", default: String(DEFAULT_SHAPE.nodes) },
  pods: { type: "string", default: String(DEFAULT_SHAPE.pods) },
  namespaces: { type: "string", default: String(DEFAULT_SHAPE.namespaces) },
  policies: { type: "string", default: String(DEFAULT_SHAPE.policies) },
  "cluster-policies": { type: "string", default: String(DEFAULT_SHAPE.clusterPolicies) },
} as const;

export function shapeFromOptions(values: {
  nodes: string;
  pods: string;
  namespaces: string;
  policies: string;
  "cluster-policies": string;
}): ScaleShape {
  return {
    ...DEFAULT_SHAPE,
    nodes: Number(values.nodes),
    pods: Number(values.pods),
    namespaces: Number(values.namespaces),
    policies: Number(values.policies),
    clusterPolicies: Number(values["cluster-policies"]),
  };
}
