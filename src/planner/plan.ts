import { SpecValidator } from "../api/v1alpha1/validate.js";
import { appOfPolicy } from "./app-egress.js";
import {
  assignNodeIds,
  DEFAULT_TABLE_BASE,
  markFor,
  NO_INSTANCE_MARK,
  rendezvous,
  tableFor,
  tunnelPortFor,
} from "./ids.js";
import { formatRange, intersect, parseCidr, subtract, type Range } from "../util/ipv4.js";
import type {
  ClusterSnapshot,
  Conflict,
  DivertEntry,
  FailClosedPolicy,
  GatewayProbe,
  NodeDivertEntry,
  NodeProbe,
  NodeInfo,
  GatewayPlan,
  HealthView,
  NodePlan,
  PlannedInstance,
  PodInfo,
  SnatEntry,
  TunnelEnd,
  ValidPolicy,
} from "./model.js";
import {
  isEligiblePod,
  policySelects,
  resolve,
  selectsNodes,
  type Resolution,
  type ResolveOptions,
} from "./resolve.js";
import { labelProjection, matches, selectorKeys } from "./selector.js";
import type { LabelSelector } from "../api/v1alpha1/common.js";

/** One pod's share of one policy: the destinations this policy (not a higher one) decides for it. */
export interface Selection {
  pod: PodInfo;
  podKey: string;
  policy: ValidPolicy;
  destinations: Range[];
}

/** A pod's destinations that only an invalid policy claims: dropped (fail-closed). */
export interface FailClosedSelection {
  pod: PodInfo;
  podKey: string;
  policy: FailClosedPolicy;
  destinations: Range[];
}

/** What the policies decide for every pod of one namespace whose labels agree on the keys they read. */
interface GroupDecision {
  /** Valid policies selecting the pods, in precedence order. */
  candidates: ValidPolicy[];
  decided: { policy: ValidPolicy; destinations: Range[] }[];
  conflicts: Omit<Conflict, "pod">[];
  failClosed: { policy: FailClosedPolicy; destinations: Range[] }[];
}

export interface SelectionResult {
  selections: Selection[];
  /** Destinations left to invalid policies after every valid one (lowest precedence). */
  failClosed: FailClosedSelection[];
  conflicts: Conflict[];
  /** Selected pods per policy resource (all nodes). */
  podsByPolicy: Map<string, number>;
}

/**
 * Which policy decides which destinations of which pod. Policies are walked in precedence
 * order; a later policy only gets the destinations no earlier one took, and every overlap is
 * reported as a conflict naming the winner.
 */
export function selectPods(snapshot: ClusterSnapshot, res: Resolution, onlyNode?: string): SelectionResult {
  const nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, n.labels]));
  const namespaced = new Map<string, ValidPolicy[]>();
  const clusterWide: ValidPolicy[] = [];
  for (const p of res.policies) {
    if (p.object.kind === "EgressPolicy") {
      const ns = p.object.metadata.namespace ?? "default";
      namespaced.set(ns, [...(namespaced.get(ns) ?? []), p]);
    } else clusterWide.push(p);
  }
  const rank = new Map(res.policies.map((p, i) => [p.resource, i]));
  const selections: Selection[] = [];
  const failClosed: FailClosedSelection[] = [];
  const conflicts: Conflict[] = [];
  const podsByPolicy = new Map<string, number>();
  // Namespace selectors are matched once per namespace, not once per pod.
  const clusterByNamespace = new Map<string, ValidPolicy[]>();
  const clusterCandidates = (ns: string): ValidPolicy[] => {
    let list = clusterByNamespace.get(ns);
    if (!list) {
      const labels = nsLabels.get(ns) ?? {};
      list = clusterWide.filter(
        (p) => p.object.kind === "ClusterEgressPolicy" && matches(p.object.spec.namespaceSelector, labels),
      );
      clusterByNamespace.set(ns, list);
    }
    return list;
  };
  // Invalid policies' selectors are read for every namespace (policySelects checks the namespace).
  const failClosedSelectors = res.failClosed.map((p) => p.object.spec.podSelector as LabelSelector | undefined);
  // What the policies decide depends only on the pod's namespace and the labels their selectors
  // read: decided once per such group (`decide`), then handed to each of its pods.
  const groupsByNamespace = new Map<string, { keys: string[]; decisions: Map<string, GroupDecision> }>();
  const decide = (pod: PodInfo): GroupDecision => {
    const own = namespaced.get(pod.namespace) ?? [];
    let groups = groupsByNamespace.get(pod.namespace);
    if (!groups) {
      const keys = selectorKeys([
        ...[...own, ...clusterCandidates(pod.namespace)].map((p) => p.object.spec.podSelector),
        ...failClosedSelectors,
      ]);
      groups = { keys, decisions: new Map() };
      groupsByNamespace.set(pod.namespace, groups);
    }
    const projection = labelProjection(pod.labels, groups.keys);
    const known = groups.decisions.get(projection);
    if (known) return known;
    const d: GroupDecision = { candidates: [], decided: [], conflicts: [], failClosed: [] };
    d.candidates = [...own, ...clusterCandidates(pod.namespace)]
      .filter((p) => matches(p.object.spec.podSelector, pod.labels))
      .sort((a, b) => (rank.get(a.resource) ?? 0) - (rank.get(b.resource) ?? 0));
    const taken: { policy: string; ranges: Range[] }[] = [];
    for (const policy of d.candidates) {
      for (const earlier of taken) {
        const overlap = intersect(policy.destinations, earlier.ranges);
        if (overlap.length > 0)
          d.conflicts.push({ winner: earlier.policy, loser: policy.resource, destinations: overlap });
      }
      const destinations = subtract(
        policy.destinations,
        taken.flatMap((t) => t.ranges),
      );
      taken.push({ policy: policy.resource, ranges: destinations });
      if (destinations.length > 0) d.decided.push({ policy, destinations });
    }
    // Invalid policies come last: they only drop what no valid policy decides for the pod.
    for (const policy of res.failClosed) {
      if (!policySelects(policy.object, pod, nsLabels)) continue;
      const destinations = subtract(
        policy.destinations,
        taken.flatMap((t) => t.ranges),
      );
      taken.push({ policy: policy.resource, ranges: destinations });
      if (destinations.length > 0) d.failClosed.push({ policy, destinations });
    }
    groups.decisions.set(projection, d);
    return d;
  };
  for (const pod of snapshot.pods) {
    if (!isEligiblePod(pod)) continue;
    if (onlyNode !== undefined && pod.nodeName !== onlyNode) continue;
    const d = decide(pod);
    const podKey = `${pod.namespace}/${pod.name}`;
    for (const policy of d.candidates) podsByPolicy.set(policy.resource, (podsByPolicy.get(policy.resource) ?? 0) + 1);
    // Each pod gets arrays of its own: callers may keep or change one pod's without touching another's.
    for (const c of d.conflicts) conflicts.push({ pod: podKey, ...c, destinations: [...c.destinations] });
    for (const s of d.decided) selections.push({ pod, podKey, policy: s.policy, destinations: [...s.destinations] });
    for (const f of d.failClosed) failClosed.push({ pod, podKey, policy: f.policy, destinations: [...f.destinations] });
  }
  return { selections, failClosed, conflicts, podsByPolicy };
}

/** One node's share of one node-selecting policy (or, `failClosed`, of an invalid one: dropped). */
export interface NodeSelection {
  node: NodeInfo;
  policy: ValidPolicy | FailClosedPolicy;
  failClosed: boolean;
  destinations: Range[];
}

/**
 * Which node-selecting ClusterEgressPolicy decides which destinations of which node's own
 * traffic: the same precedence as for pods (a later policy only gets what no earlier one took;
 * invalid ones last). The cluster's own ranges (`neverDivert`) are never part of it.
 */
function selectNodes(snapshot: ClusterSnapshot, res: Resolution, onlyNode?: string): NodeSelection[] {
  const valid = res.policies.filter((p) => selectsNodes(p.object));
  const invalid = res.failClosed.filter((p) => selectsNodes(p.object));
  if (valid.length === 0 && invalid.length === 0) return [];
  const out: NodeSelection[] = [];
  for (const node of snapshot.nodes) {
    if (onlyNode !== undefined && node.name !== onlyNode) continue;
    const taken: Range[] = [...res.neverDivert];
    for (const [policies, failClosed] of [
      [valid, false],
      [invalid, true],
    ] as const) {
      for (const policy of policies) {
        if (!selectsNodes(policy.object) || !matches(policy.object.spec.nodeSelector, node.labels)) continue;
        const destinations = subtract(policy.destinations, taken);
        taken.push(...destinations);
        if (destinations.length > 0) out.push({ node, policy, failClosed, destinations });
      }
    }
  }
  return out;
}

/**
 * The instance a pod's traffic uses, as seen by one node. Healthy, not-draining instances are
 * preferred; rendezvous hashing keeps pods of healthy instances where they are when another
 * instance dies. `undefined` means no instance is usable (fail-closed or fallback applies).
 */
function chooseInstance(
  podKey: string,
  policy: ValidPolicy,
  res: Resolution,
  health: HealthView,
  alsoDown?: string,
): string | undefined {
  return rendezvous(podKey, usableInstances(policy, res, health, alsoDown));
}

/** The instances `chooseInstance` picks among: the healthy, not-draining ones, else the healthy ones. */
function usableInstances(policy: ValidPolicy, res: Resolution, health: HealthView, alsoDown?: string): string[] {
  const eligible = [...policy.egressIPsByInstance.keys()].sort();
  const up = eligible.filter((k) => k !== alsoDown && health.get(k) !== "down");
  const serving = up.filter((k) => !res.instances.get(k)?.drain);
  return serving.length > 0 ? serving : up;
}

/**
 * `chooseInstance` for many pods under one health view: each policy's candidate list is worked
 * out once (per instance counted down), not once per pod.
 */
function instanceChooser(
  res: Resolution,
  health: HealthView,
): (podKey: string, policy: ValidPolicy, alsoDown?: string) => string | undefined {
  const lists = new Map<ValidPolicy, Map<string, string[]>>();
  return (podKey, policy, alsoDown = "") => {
    let byDown = lists.get(policy);
    if (!byDown) lists.set(policy, (byDown = new Map()));
    let list = byDown.get(alsoDown);
    if (!list) byDown.set(alsoDown, (list = usableInstances(policy, res, health, alsoDown || undefined)));
    return rendezvous(podKey, list);
  };
}

export interface PlanOptions extends ResolveOptions {
  tableBase?: number;
  validator?: SpecValidator;
}

/** Everything planned in one pass: verdicts and conflicts for status, plus per-node and per-gateway plans on demand. */
export class Planner {
  readonly resolution: Resolution;
  private readonly validator: SpecValidator;

  constructor(
    readonly snapshot: ClusterSnapshot,
    private readonly options: PlanOptions = {},
  ) {
    this.validator = options.validator ?? new SpecValidator();
    this.resolution = resolve(snapshot, this.validator, options);
  }

  /** The desired datapath of one node, given its own view of gateway health. */
  planNode(node: string, health: HealthView): NodePlan {
    const res = this.resolution;
    const tableBase = this.options.tableBase ?? DEFAULT_TABLE_BASE;
    const tunnel = this.tunnelEnds().get(node);
    const instances: PlannedInstance[] = [...res.instances.values()]
      .map((i) => ({
        key: i.key,
        address: i.address,
        mark: markFor(i.id),
        table: tableFor(i.id, tableBase),
        // Without a tunnel end of its own no gateway accepts this node's traffic: fail-closed.
        route: health.get(i.key) === "down" || !tunnel ? ("blackhole" as const) : ("via" as const),
        vni: i.id,
      }))
      .sort((a, b) => a.key.localeCompare(b.key));
    const { selections, failClosed } = selectPods(this.snapshot, res, node);
    const { entries, unavailable, podsByPolicy } = this.divertEntries(selections, failClosed, health);
    entries.sort(compareEntries);
    const nodeEntries = this.planNodeTraffic(node, health, unavailable);
    const probes = tunnel ? this.planProbes(instances, entries, nodeEntries, tunnel) : [];
    return {
      node,
      instances,
      entries,
      neverDivert: res.neverDivert,
      unavailable: [...unavailable.values()].sort((a, b) => a.policy.localeCompare(b.policy)),
      // Keys in a fixed order too: equal inputs must serialize to equal plans, whatever the pod order.
      podsByPolicy: Object.fromEntries(Object.entries(podsByPolicy).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      ...(tunnel ? { tunnel } : {}),
      ...(nodeEntries.length > 0 ? { nodeEntries } : {}),
      ...(probes.length > 0 ? { probes } : {}),
    };
  }

  /**
   * The divert entries of these selections (one node's pods) under `health`, unsorted, with the
   * policies left without a usable instance and the pods per policy: `planNode` for every pod of
   * the node, `planPods` for a few.
   */
  private divertEntries(
    selections: readonly Selection[],
    failClosed: readonly FailClosedSelection[],
    health: HealthView,
  ): {
    entries: DivertEntry[];
    unavailable: Map<string, { policy: string; failurePolicy: "Drop" | "FallbackToNodeIP"; pods: number }>;
    podsByPolicy: Record<string, number>;
  } {
    const res = this.resolution;
    const entries: DivertEntry[] = [];
    const unavailable = new Map<string, { policy: string; failurePolicy: "Drop" | "FallbackToNodeIP"; pods: number }>();
    const podsByPolicy: Record<string, number> = {};
    const choose = instanceChooser(res, health);
    const chooseAllUp = instanceChooser(res, new Map());
    for (const s of selections) {
      podsByPolicy[s.policy.resource] = (podsByPolicy[s.policy.resource] ?? 0) + 1;
      let instance = choose(s.podKey, s.policy);
      if (instance === undefined) {
        const u = unavailable.get(s.policy.resource) ?? {
          policy: s.policy.resource,
          failurePolicy: s.policy.failurePolicy,
          pods: 0,
        };
        u.pods++;
        unavailable.set(s.policy.resource, u);
        if (s.policy.failurePolicy === "FallbackToNodeIP") continue;
        // Fail-closed: keep the pod pinned to an instance whose table holds a blackhole route,
        // or, when the policy has no instance at all yet, to the mark that is always dropped.
        instance = rendezvous(s.podKey, [...s.policy.egressIPsByInstance.keys()].sort()) ?? "";
      }
      const mark = instance === "" ? NO_INSTANCE_MARK : markFor(res.instances.get(instance)?.id as number);
      // Where the pod goes if its instance dies: precomputed, so the node can switch before replanning.
      // With no other instance up now, the one it would take were they all up: the node moves the
      // pod there only if that one is up by then (failoverMarks), so a plan made while the other
      // instance was down still fails over once it is back, without waiting for a replan.
      const next =
        instance !== "" && health.get(instance) !== "down"
          ? (choose(s.podKey, s.policy, instance) ?? chooseAllUp(s.podKey, s.policy, instance))
          : undefined;
      const failoverMark = next === undefined ? undefined : markFor(res.instances.get(next)?.id as number);
      for (const ip of s.pod.ips) {
        if (ip.includes(":")) continue; // IPv4 only for now
        for (const dst of s.destinations) {
          // Plain object literals (no spread): 30,000 of them per plan at 10,000 pods.
          const e: DivertEntry = { podIP: ip, dst, mark, policy: s.policy.resource, instance };
          if (failoverMark !== undefined) e.failoverMark = failoverMark;
          entries.push(e);
        }
      }
    }
    // An invalid policy's pods take the path of a policy with no instance: the mark the node
    // always drops and counts (failclosed_drops), never the node's IP.
    for (const s of failClosed) {
      for (const ip of s.pod.ips) {
        if (ip.includes(":")) continue;
        for (const dst of s.destinations)
          entries.push({ podIP: ip, dst, mark: NO_INSTANCE_MARK, policy: s.policy.resource, instance: "" });
      }
    }
    return { entries, unavailable, podsByPolicy };
  }

  /**
   * What `planNode` plans for these pods alone (their entries, sorted; the policies that select
   * them, also on other nodes), under the same resolution and health: a node agent's fast path
   * for one pod event. The caller checks that nothing else of the node's plan depends on them.
   */
  planPods(
    node: string,
    health: HealthView,
    pods: readonly PodInfo[],
  ): {
    entries: DivertEntry[];
    /** Valid policies selecting the pods (for their datapath cost), whichever node they are on. */
    candidates: string[];
    /** Invalid policies that select the pods (fail-closed, their cost counted too). */
    failClosedCandidates: string[];
    unavailable: string[];
    podsByPolicy: Record<string, number>;
  } {
    const snapshot = { ...this.snapshot, pods: [...pods] };
    const all = selectPods(snapshot, this.resolution);
    const { selections, failClosed } = selectPods(snapshot, this.resolution, node);
    const { entries, unavailable, podsByPolicy } = this.divertEntries(selections, failClosed, health);
    const nsLabels = new Map(this.snapshot.namespaces.map((n) => [n.name, n.labels]));
    const failClosedCandidates = this.resolution.failClosed
      .filter((p) => pods.some((pod) => isEligiblePod(pod) && policySelects(p.object, pod, nsLabels)))
      .map((p) => p.resource);
    return {
      entries: entries.sort(compareEntries),
      candidates: [...all.podsByPolicy.keys()],
      failClosedCandidates,
      unavailable: [...unavailable.keys()],
      podsByPolicy,
    };
  }

  /**
   * Verification probes of this node: one per verifying policy whose traffic the node diverts
   * (its pods', or its own under a nodeSelector), through the instance the node uses for it (its
   * first diverted entry's), expecting the policy's egress IPs there. None for a policy whose
   * traffic here has no usable instance (its pods are dropped or leave with the node IP: Ready
   * says so) or whose instance is this node itself.
   */
  private planProbes(
    instances: readonly PlannedInstance[],
    entries: readonly DivertEntry[],
    nodeEntries: readonly NodeDivertEntry[],
    tunnel: TunnelEnd,
  ): NodeProbe[] {
    const usable = new Map(
      instances.filter((i) => i.route === "via" && i.address !== tunnel.address).map((i) => [i.key, i]),
    );
    const inUse = new Map<string, string>();
    for (const e of [...entries, ...nodeEntries])
      if (!inUse.has(e.policy) && usable.has(e.instance)) inUse.set(e.policy, e.instance);
    const out: NodeProbe[] = [];
    for (const p of this.resolution.policies) {
      const instance = inUse.get(p.resource);
      if (!p.verification || instance === undefined) continue;
      const expected = p.egressIPsByInstance.get(instance) ?? [];
      if (expected.length === 0) continue;
      out.push({ ...p.verification, policy: p.resource, instance, mark: usable.get(instance)!.mark, expected });
    }
    return out.sort((a, b) => a.sourcePort - b.sourcePort);
  }

  /**
   * The node's own traffic under node-selecting policies: pinned to an instance like a pod (the
   * node's name is its rendezvous key); with no instance up, Drop keeps the mark of a down
   * instance (dropped and counted), FallbackToNodeIP leaves the traffic alone.
   */
  private planNodeTraffic(
    node: string,
    health: HealthView,
    unavailable: Map<string, { policy: string; failurePolicy: "Drop" | "FallbackToNodeIP"; pods: number }>,
  ): NodeDivertEntry[] {
    const res = this.resolution;
    const out: NodeDivertEntry[] = [];
    for (const s of selectNodes(this.snapshot, res, node)) {
      let instance = "";
      if (!s.failClosed) {
        const policy = s.policy as ValidPolicy;
        const chosen = chooseInstance(`node/${node}`, policy, res, health);
        if (chosen === undefined) {
          const u = unavailable.get(policy.resource) ?? {
            policy: policy.resource,
            failurePolicy: policy.failurePolicy,
            pods: 0,
          };
          unavailable.set(policy.resource, u);
          if (policy.failurePolicy === "FallbackToNodeIP") continue;
          instance = rendezvous(`node/${node}`, [...policy.egressIPsByInstance.keys()].sort()) ?? "";
        } else instance = chosen;
      }
      const mark = instance === "" ? NO_INSTANCE_MARK : markFor(res.instances.get(instance)?.id as number);
      for (const dst of s.destinations) out.push({ dst, mark, policy: s.policy.resource, instance });
    }
    return out.sort((a, b) => a.dst.from - b.dst.from);
  }

  private tunnels: Map<string, TunnelEnd> | undefined;

  /**
   * Every node's tunnel end: its IPv4 InternalIP and a UDP port of its own (from a stable id over
   * all node names, so that nodes and gateways computing it from the same nodes agree).
   */
  tunnelEnds(): Map<string, TunnelEnd> {
    if (this.tunnels) return this.tunnels;
    // 8,191 nodes at most; crossing 4,095 renumbers the nodes once (docs/design.md).
    const ids = assignNodeIds(this.snapshot.nodes.map((n) => n.name));
    this.tunnels = new Map();
    for (const n of this.snapshot.nodes) {
      if (!n.internalIP || n.internalIP.includes(":")) continue;
      this.tunnels.set(n.name, { address: n.internalIP, port: tunnelPortFor(ids.get(n.name) as number) });
    }
    return this.tunnels;
  }

  /**
   * The desired datapath of one gateway instance: SNAT for every pod of every policy that has
   * an egress IP on this instance, whichever node it runs on (nodes choose instances on their own).
   */
  planGateway(instanceKey: string): GatewayPlan | undefined {
    const res = this.resolution;
    const instance = res.instances.get(instanceKey);
    if (!instance) return undefined;
    const { selections } = selectPods(this.snapshot, res);
    const ends = this.tunnelEnds();
    const snat: SnatEntry[] = [];
    const podsByTunnel = new Map<string, { port: number; podIP: string }>();
    for (const s of selections) {
      const ips = s.policy.egressIPsByInstance.get(instanceKey);
      const egressIP = ips?.[0];
      if (!ips || !egressIP) continue;
      const pool = ips.length > 1 ? { pool: ips } : {};
      const end = s.pod.nodeName !== undefined ? ends.get(s.pod.nodeName) : undefined;
      for (const ip of s.pod.ips) {
        if (ip.includes(":")) continue;
        for (const dst of s.destinations) snat.push({ podIP: ip, dst, egressIP, ...pool, policy: s.policy.resource });
        // A pod's packets are accepted only from its own node's tunnel.
        if (end && end.address !== instance.address)
          podsByTunnel.set(`${end.port}|${ip}`, { port: end.port, podIP: ip });
      }
    }
    // Nodes' own traffic: the node's InternalIP is its "pod address", accepted from its own tunnel only.
    const nodeReturns = new Map<string, { address: string; port: number }>();
    for (const s of selectNodes(this.snapshot, res)) {
      if (s.failClosed) continue;
      const ips = (s.policy as ValidPolicy).egressIPsByInstance.get(instanceKey);
      const egressIP = ips?.[0];
      const end = ends.get(s.node.name);
      if (!ips || !egressIP || !end || end.address === instance.address) continue;
      // A node's connections share its instance's SNAT pool like a pod's do.
      const pool = ips.length > 1 ? { pool: ips } : {};
      for (const dst of s.destinations)
        snat.push({ podIP: end.address, dst, egressIP, ...pool, policy: s.policy.resource });
      podsByTunnel.set(`${end.port}|${end.address}`, { port: end.port, podIP: end.address });
      nodeReturns.set(end.address, { address: end.address, port: end.port });
    }
    // Verification probes: any node may send them (each picks its instance alone), from its own
    // tunnel and address, on the policy's source port only.
    const probes: GatewayProbe[] = [];
    for (const p of res.policies) {
      const egressIP = p.egressIPsByInstance.get(instanceKey)?.[0];
      if (!p.verification || !egressIP) continue;
      for (const end of ends.values()) {
        if (end.address === instance.address) continue;
        probes.push({
          node: end.address,
          dst: p.verification.address,
          dport: p.verification.port,
          sport: p.verification.sourcePort,
          egressIP,
          policy: p.resource,
        });
        podsByTunnel.set(`${end.port}|${end.address}`, { port: end.port, podIP: end.address });
        nodeReturns.set(end.address, { address: end.address, port: end.port });
      }
    }
    probes.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : a.sport - b.sport));
    snat.sort(compareEntries);
    const nodes = [...this.snapshot.nodes].filter((n) => n.internalIP).sort((a, b) => a.name.localeCompare(b.name));
    const tunnels = nodes
      .filter((n) => ends.has(n.name) && n.internalIP !== instance.address)
      .map((n) => ({ node: n.name, ...(ends.get(n.name) as TunnelEnd) }));
    const portOf = new Map(tunnels.map((t) => [t.node, t.port]));
    const returnRoutes = nodes
      .filter((n) => portOf.has(n.name))
      .flatMap((n) =>
        n.podCIDRs
          .filter((c) => !c.includes(":"))
          .map((cidr) => ({
            cidr: canonicalCidr(cidr),
            via: n.internalIP as string,
            port: portOf.get(n.name) as number,
          })),
      );
    return {
      instance: instanceKey,
      address: instance.address,
      snat,
      returnRoutes,
      nodeAddresses: nodes.map((n) => n.internalIP as string).filter((a) => a !== instance.address),
      egressIPs: [...instance.egressIPs].sort(),
      egressIPOwners: res.policies
        .flatMap((p) => {
          const app = appOfPolicy(p.object);
          return (p.egressIPsByInstance.get(instanceKey) ?? []).map((egressIP) => ({
            egressIP,
            policy: p.resource,
            ...(app ? { app } : {}),
          }));
        })
        .sort((a, b) => (a.egressIP < b.egressIP ? -1 : a.egressIP > b.egressIP ? 1 : 0)),
      vni: instance.id,
      tunnels,
      podsByTunnel: [...podsByTunnel.values()].sort(
        (a, b) => a.port - b.port || (a.podIP < b.podIP ? -1 : a.podIP > b.podIP ? 1 : 0),
      ),
      ...(nodeReturns.size > 0 ? { nodeReturns: [...nodeReturns.values()].sort((a, b) => a.port - b.port) } : {}),
      ...(probes.length > 0 ? { probes } : {}),
    };
  }
}

function canonicalCidr(cidr: string): string {
  const r = parseCidr(cidr);
  const len = 32 - Math.log2(r.to - r.from + 1);
  return `${formatRange({ from: r.from, to: r.from })}/${len}`;
}

function compareEntries(a: { podIP: string; dst: Range }, b: { podIP: string; dst: Range }): number {
  return a.podIP === b.podIP ? a.dst.from - b.dst.from : a.podIP < b.podIP ? -1 : 1;
}
