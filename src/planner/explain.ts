import type { FieldError } from "../api/v1alpha1/validate.js";
import {
  contains,
  formatCidrOrRange,
  intersect,
  normalize,
  parseCidrOrRange,
  parseIPv4,
  subtract,
  type Range,
} from "../util/ipv4.js";
import { StaticEgressError } from "../util/errors.js";
import { NO_INSTANCE_MARK } from "./ids.js";
import type {
  HealthView,
  InstanceHealth,
  NodeDivertEntry,
  PlannedInstance,
  PodInfo,
  PolicyObject,
  ValidPolicy,
} from "./model.js";
import { selectPods, type Planner } from "./plan.js";
import { isEligiblePod, policyResource, policySelects, selectsNodes } from "./resolve.js";

/*
 * `static-egress explain <namespace>/<pod>` (docs/explain.md): why a pod leaves with the address it
 * leaves with. Pure: given the planner (the cluster as read, resolved) and the node's last report,
 * it says which policy decides which destinations of the pod, every other policy that selects the
 * pod and why it lost, and the path each decision takes on the pod's node. The CLI adds what the
 * node's kernel holds (`--local`) and compares the two with `compareWithKernel`.
 */

export class ExplainError extends StaticEgressError {}

/** Which rule of docs/policies.md "Precedence" put one policy before another, for a pod and destination. */
export type PrecedenceRule = "tenancy" | "priority" | "scope" | "age" | "name" | "invalid";

/** Health of an instance as one node reported it: `unknown` when it reported nothing on it (planned as up). */
export type ReportedHealth = InstanceHealth | "unknown";

/** Where one decision sends the pod's packets on its node. */
export type Path =
  | {
      kind: "gateway";
      instance: string;
      /** The instance's address on the nodes' network (the tunnel's remote end). */
      address: string;
      /** The policy's egress IPs on that instance: one, or a pool new connections spread over. */
      egressIPs: string[];
      healthOnNode: ReportedHealth;
      /** The instance's health in the EgressGateway's status (every node's view), null when not written. */
      gatewayStatus: string | null;
      drain: boolean;
      mark: number;
      table: number;
    }
  | { kind: "dropped"; reason: string; mark: number; instance: string | null }
  | { kind: "node-ip"; reason: string }
  | { kind: "unscheduled"; reason: string };

export interface Decision {
  policy: string;
  valid: boolean;
  /** The destinations this policy decides for the pod (after every earlier policy took its own). */
  destinations: string[];
  gateway: string | null;
  failurePolicy: "Drop" | "FallbackToNodeIP" | null;
  path: Path;
}

/** Destinations a policy would have taken but an earlier one did, and the rule that made it earlier. */
export interface Loss {
  to: string;
  destinations: string[];
  rule: PrecedenceRule;
  message: string;
}

/** A policy that selects the pod: what it decides, what it lost and why. */
export interface SelectingPolicy {
  policy: string;
  valid: boolean;
  /** Why it is Invalid (the verdict the controller writes into its status). */
  errors: FieldError[];
  priority: number;
  decides: string[];
  lost: Loss[];
  note?: string;
}

export type Verdict =
  | "diverted"
  | "fail-closed"
  | "fallback-node-ip"
  | "mixed"
  | "not-selected"
  | "never-diverted"
  | "no-address"
  | "host-network";

/** One row of the node's divert decision for this pod (its class's map), as planned with the node's reported view of health. */
export interface PlannedEntry {
  podIP: string;
  dst: string;
  mark: number;
  policy: string;
  instance: string;
  /** The routing table the mark selects, and what it holds: a route through the instance's tunnel or a blackhole. */
  table: number | null;
  route: "via" | "blackhole" | null;
}

export interface NodeReportView {
  at: string;
  health: Readonly<Record<string, InstanceHealth>>;
  programmed: Readonly<Record<string, number>>;
}

export interface Explanation {
  pod: {
    namespace: string;
    name: string;
    node: string | null;
    ips: string[];
    phase: string | null;
    hostNetwork: boolean;
  };
  /** The one destination asked about (`--to`), or null for every destination. */
  destination: string | null;
  verdict: Verdict;
  /** One line per decision, and one for what no policy decides. */
  summary: string[];
  decisions: Decision[];
  /** Every policy that selects the pod, deciding ones included, valid ones in precedence order first. */
  policies: SelectingPolicy[];
  node: {
    name: string;
    /** The node agent's last report (null: none): the health view the entries are planned with. */
    report: { at: string; programmed: Record<string, number> } | null;
    entries: PlannedEntry[];
  } | null;
}

const EVERYTHING: Range = { from: 0, to: 0xffff_ffff };

const texts = (ranges: readonly Range[]): string[] => normalize(ranges).map(formatCidrOrRange);

/** Why `winner` comes before `loser` (both valid): the first rule of `comparePolicies` that tells them apart. */
export function precedenceReason(winner: ValidPolicy, loser: ValidPolicy): { rule: PrecedenceRule; message: string } {
  if (winner.outranksClusterPolicies !== loser.outranksClusterPolicies)
    return {
      rule: "tenancy",
      message:
        `${loser.resource} comes after every ClusterEgressPolicy: its namespace's grant on EgressGateway ` +
        `${loser.gateway} does not say outrankClusterPolicies`,
    };
  if (winner.priority !== loser.priority)
    return { rule: "priority", message: `priority ${winner.priority} before ${loser.priority} (lower wins)` };
  if (winner.object.kind !== loser.object.kind)
    return {
      rule: "scope",
      message: `both priority ${winner.priority}: a namespaced EgressPolicy comes before a ClusterEgressPolicy`,
    };
  const tw = winner.object.metadata.creationTimestamp;
  const tl = loser.object.metadata.creationTimestamp;
  if ((tw ?? "") !== (tl ?? ""))
    return {
      rule: "age",
      message: `both priority ${winner.priority} and ${kindWord(winner.object)}: the older wins (created ${tw ?? "unknown"}, the other ${tl ?? "unknown"})`,
    };
  return {
    rule: "name",
    message: `same priority, kind and creation time: by name, ${winner.resource} before ${loser.resource}`,
  };
}

function kindWord(p: PolicyObject): string {
  return p.kind === "EgressPolicy" ? "namespaced" : "cluster-wide";
}

/** Whether `policy` selects `pod`; a selector that cannot be evaluated selects nothing (as for the planner). */
function selects(policy: PolicyObject, pod: PodInfo, nsLabels: ReadonlyMap<string, Record<string, string>>): boolean {
  if (selectsNodes(policy)) return false;
  try {
    return policySelects(policy, pod, nsLabels);
  } catch {
    return false;
  }
}

/**
 * Explains one pod. `report` is its node's last report (its view of instance health, what it
 * programmed); without one the node is planned as seeing every instance up. `destination` narrows
 * the answer to one address.
 */
export function explainPod(
  planner: Planner,
  pod: { namespace: string; name: string },
  opts: { report?: NodeReportView; destination?: string } = {},
): Explanation {
  const { snapshot, resolution: res } = planner;
  const info = snapshot.pods.find((p) => p.namespace === pod.namespace && p.name === pod.name);
  if (!info) throw new ExplainError(`pod ${pod.namespace}/${pod.name} not found`);
  let only: Range[] = [EVERYTHING];
  if (opts.destination !== undefined) {
    let address: number;
    try {
      address = parseIPv4(opts.destination);
    } catch {
      throw new ExplainError(`destination: not an IPv4 address: ${JSON.stringify(opts.destination)}`);
    }
    only = [{ from: address, to: address }];
  }
  const clip = (ranges: readonly Range[]) => intersect(ranges, only);
  const podKey = `${info.namespace}/${info.name}`;
  const ipv4 = info.ips.filter((ip) => !ip.includes(":"));
  const base = {
    pod: {
      namespace: info.namespace,
      name: info.name,
      node: info.nodeName ?? null,
      ips: [...info.ips],
      phase: info.phase ?? null,
      hostNetwork: info.hostNetwork === true,
    },
    destination: opts.destination ?? null,
  };
  const health: HealthView = new Map(Object.entries(opts.report?.health ?? {}));
  const plan = info.nodeName !== undefined ? planner.planNode(info.nodeName, health) : undefined;
  const instances = new Map((plan?.instances ?? []).map((i) => [i.key, i]));
  const gatewayStatus = new Map<string, string>();
  for (const g of snapshot.gateways)
    for (const i of g.status?.instances ?? []) gatewayStatus.set(`${g.metadata.name}/${i.name}`, i.health);
  const validByResource = new Map(res.policies.map((p) => [p.resource, p]));

  /** The path of a planned entry: the instance's tunnel, or a drop. */
  const pathOf = (entry: { mark: number; instance: string }, policy: ValidPolicy | undefined): Path => {
    if (entry.instance === "" || entry.mark === NO_INSTANCE_MARK)
      return {
        kind: "dropped",
        mark: entry.mark,
        instance: null,
        reason: policy
          ? `no instance of EgressGateway ${policy.gateway} carries the policy's egress IPs yet`
          : "the policy is Invalid: its pods are dropped, never sent with another address",
      };
    const planned = instances.get(entry.instance) as PlannedInstance;
    const seen: ReportedHealth = health.get(entry.instance) ?? "unknown";
    if (planned.route === "blackhole")
      return {
        kind: "dropped",
        mark: entry.mark,
        instance: entry.instance,
        reason:
          seen === "down"
            ? `no instance is up as ${info.nodeName} sees it (${entry.instance} down); failurePolicy Drop`
            : `${info.nodeName} has no tunnel end (no IPv4 InternalIP): no gateway accepts its traffic`,
      };
    return {
      kind: "gateway",
      instance: entry.instance,
      address: planned.address,
      egressIPs: [...(policy?.egressIPsByInstance.get(entry.instance) ?? [])],
      healthOnNode: seen,
      gatewayStatus: gatewayStatus.get(entry.instance) ?? null,
      drain: res.instances.get(entry.instance)?.drain === true,
      mark: entry.mark,
      table: planned.table,
    };
  };

  const entries: PlannedEntry[] = [];
  const plannedEntry = (e: { podIP?: string; dst: Range; mark: number; policy: string; instance: string }) => {
    const inst = instances.get(e.instance);
    entries.push({
      podIP: e.podIP ?? "",
      dst: formatCidrOrRange(e.dst),
      mark: e.mark,
      policy: e.policy,
      instance: e.instance,
      table: inst?.table ?? null,
      route: inst?.route ?? null,
    });
  };
  const nodeSection = () =>
    info.nodeName === undefined
      ? null
      : {
          name: info.nodeName,
          report: opts.report ? { at: opts.report.at, programmed: { ...opts.report.programmed } } : null,
          entries,
        };

  // The node's own traffic: a hostNetwork pod's packets are the node's (ClusterEgressPolicy nodeSelector).
  if (info.hostNetwork) {
    // One decision per policy and path; the planner splits a policy's destinations around the cluster's ranges.
    const groups = new Map<string, { entry: NodeDivertEntry; dst: Range[] }>();
    for (const e of plan?.nodeEntries ?? []) {
      const dst = clip([e.dst]);
      if (dst.length === 0) continue;
      plannedEntry(e);
      const key = `${e.policy}|${e.instance}|${e.mark}`;
      const g = groups.get(key) ?? { entry: e, dst: [] };
      g.dst.push(...dst);
      groups.set(key, g);
    }
    const decisions: Decision[] = [...groups.values()].map(({ entry, dst }) => {
      const policy = validByResource.get(entry.policy);
      return {
        policy: entry.policy,
        valid: policy !== undefined,
        destinations: texts(dst),
        gateway: policy?.gateway ?? null,
        failurePolicy: policy?.failurePolicy ?? null,
        path: pathOf(entry, policy),
      };
    });
    return {
      ...base,
      verdict: "host-network",
      summary: [
        `hostNetwork pod: its traffic is node ${info.nodeName ?? "(unscheduled)"}'s own`,
        ...summaryLines(decisions, only, "the node's IP"),
      ],
      decisions,
      policies: [],
      node: nodeSection(),
    };
  }

  if (!isEligiblePod(info) || ipv4.length === 0) {
    return {
      ...base,
      verdict: "no-address",
      summary: [
        `the pod has no IPv4 address of its own (phase ${info.phase ?? "unknown"}): there is no traffic to divert`,
      ],
      decisions: [],
      policies: [],
      node: nodeSection(),
    };
  }

  if (opts.destination !== undefined && contains(res.neverDivert, only[0]!.from)) {
    return {
      ...base,
      verdict: "never-diverted",
      summary: [
        `${opts.destination} is one of the cluster's own ranges or a gateway's address: never diverted, whatever a policy says`,
      ],
      decisions: [],
      policies: [],
      node: nodeSection(),
    };
  }

  const nsLabels = new Map(snapshot.namespaces.map((n) => [n.name, { ...n.labels }]));
  const selection = selectPods(snapshot, res, info.nodeName);
  const mine = selection.selections.filter((s) => s.podKey === podKey);
  const mineFailClosed = selection.failClosed.filter((s) => s.podKey === podKey);
  const conflicts = selection.conflicts.filter((c) => c.pod === podKey);
  const podEntries = (plan?.entries ?? []).filter((e) => ipv4.includes(e.podIP));

  const decisions: Decision[] = [];
  for (const s of mine) {
    const dst = clip(s.destinations);
    if (dst.length === 0) continue;
    const own = podEntries.filter((e) => e.policy === s.policy.resource && intersect([e.dst], dst).length > 0);
    own.forEach(plannedEntry);
    let path: Path;
    if (info.nodeName === undefined)
      path = { kind: "unscheduled", reason: "the pod is on no node yet: no node has planned it" };
    else if (own.length === 0)
      path = {
        kind: "node-ip",
        reason: `no instance is up as ${info.nodeName} sees it; failurePolicy FallbackToNodeIP`,
      };
    else path = pathOf(own[0]!, s.policy);
    decisions.push({
      policy: s.policy.resource,
      valid: true,
      destinations: texts(dst),
      gateway: s.policy.gateway,
      failurePolicy: s.policy.failurePolicy,
      path,
    });
  }
  for (const s of mineFailClosed) {
    const dst = clip(s.destinations);
    if (dst.length === 0) continue;
    podEntries
      .filter((e) => e.policy === s.policy.resource && intersect([e.dst], dst).length > 0)
      .forEach(plannedEntry);
    decisions.push({
      policy: s.policy.resource,
      valid: false,
      destinations: texts(dst),
      gateway: null,
      failurePolicy: null,
      path:
        info.nodeName === undefined
          ? { kind: "unscheduled", reason: "the pod is on no node yet: no node has planned it" }
          : {
              kind: "dropped",
              mark: NO_INSTANCE_MARK,
              instance: null,
              reason:
                "the policy is Invalid: fail-closed, its pods' traffic is dropped, never sent with another address",
            },
    });
  }

  // Every policy that selects the pod, and why each lost what it lost.
  const verdicts = new Map(res.verdicts.map((v) => [v.resource, v]));
  const decidedBy = new Map<string, Range[]>();
  for (const s of mine) decidedBy.set(s.policy.resource, s.destinations);
  const policies: SelectingPolicy[] = [];
  for (const p of res.policies) {
    if (!selects(p.object, info, nsLabels)) continue;
    const lost = new Map<string, Range[]>();
    for (const c of conflicts) {
      if (c.loser !== p.resource) continue;
      lost.set(c.winner, [...(lost.get(c.winner) ?? []), ...clip(c.destinations)]);
    }
    policies.push({
      policy: p.resource,
      valid: true,
      errors: [],
      priority: p.priority,
      decides: texts(clip(decidedBy.get(p.resource) ?? [])),
      lost: [...lost]
        .filter(([, d]) => d.length > 0)
        .map(([winner, d]) => ({
          to: winner,
          destinations: texts(d),
          ...precedenceReason(validByResource.get(winner)!, p),
        })),
    });
  }
  for (const object of snapshot.policies) {
    const resource = policyResource(object);
    const verdict = verdicts.get(resource);
    if (!verdict || verdict.valid || !selects(object, info, nsLabels)) continue;
    const fc = res.failClosed.find((f) => f.resource === resource);
    const decides = mineFailClosed.find((s) => s.policy.resource === resource)?.destinations ?? [];
    const lost: Loss[] = [];
    if (fc)
      for (const s of mine) {
        const overlap = clip(intersect(fc.destinations, s.destinations));
        if (overlap.length > 0)
          lost.push({
            to: s.policy.resource,
            destinations: texts(overlap),
            rule: "invalid",
            message: "an Invalid policy comes after every valid one: it only drops what no valid policy decides",
          });
      }
    policies.push({
      policy: resource,
      valid: false,
      errors: verdict.errors,
      priority: (object.spec as { priority?: unknown }).priority === undefined ? 100 : Number(object.spec.priority),
      decides: texts(clip(decides)),
      lost,
      ...(fc
        ? {}
        : {
            note:
              object.spec.failurePolicy === "FallbackToNodeIP"
                ? "Invalid with failurePolicy FallbackToNodeIP: it drops nothing, its pods leave with the node's IP"
                : "Invalid, and its destinations leave nothing to drop",
          }),
    });
  }

  const verdict: Verdict =
    decisions.length === 0
      ? "not-selected"
      : decisions.every((d) => d.path.kind === "gateway")
        ? "diverted"
        : decisions.every((d) => d.path.kind === "dropped")
          ? "fail-closed"
          : decisions.every((d) => d.path.kind === "node-ip")
            ? "fallback-node-ip"
            : "mixed";
  const summary =
    decisions.length === 0 && policies.length === 0
      ? [`not selected by any policy: leaves with the node's IP${opts.destination ? ` for ${opts.destination}` : ""}`]
      : summaryLines(decisions, only, "the node's IP");
  return { ...base, verdict, summary, decisions, policies, node: nodeSection() };
}

function listed(destinations: readonly string[]): string {
  return destinations.length <= 3
    ? destinations.join(", ")
    : `${destinations.slice(0, 3).join(", ")} and ${destinations.length - 3} more`;
}

function summaryLines(decisions: readonly Decision[], only: readonly Range[], rest: string): string[] {
  const lines = decisions.map((d) => {
    const to = `to ${listed(d.destinations)}`;
    switch (d.path.kind) {
      case "gateway":
        return `${to}: leaves with ${d.path.egressIPs.join(" or ")} through ${d.path.instance} (${d.policy})`;
      case "dropped":
        return `${to}: dropped, fail-closed: ${d.path.reason} (${d.policy})`;
      case "node-ip":
        return `${to}: leaves with the node's IP: ${d.path.reason} (${d.policy})`;
      case "unscheduled":
        return `${to}: decided by ${d.policy}; ${d.path.reason}`;
    }
  });
  const covered = decisions.flatMap((d) => d.destinations.map(parseCidrOrRange));
  const left = subtract(only, covered);
  if (left.length > 0)
    lines.push(
      decisions.length === 0
        ? `leaves with ${rest}: no policy decides ${only[0] === EVERYTHING ? "its traffic" : "this destination"}`
        : `${only[0] === EVERYTHING ? "every other destination" : "this destination"}: leaves with ${rest}`,
    );
  return lines;
}

/** A row of the node's divert decision (the pod's class map) as read back from its kernel (`--local`). */
export interface KernelEntry {
  dst: string;
  mark: number;
}

/** Planned and kernel entries for the pod, compared by destination and mark (the policy's path on the node). */
export function compareWithKernel(
  planned: readonly PlannedEntry[],
  kernel: readonly KernelEntry[],
): { matches: boolean; missing: KernelEntry[]; unexpected: KernelEntry[] } {
  const key = (e: KernelEntry) => {
    const r = parseCidrOrRange(e.dst);
    return `${r.from}-${r.to}|${e.mark >>> 0}`;
  };
  const have = new Set(kernel.map(key));
  const want = new Set(planned.map(key));
  const missing = planned.filter((e) => !have.has(key(e))).map((e) => ({ dst: e.dst, mark: e.mark }));
  const unexpected = kernel.filter((e) => !want.has(key(e))).map((e) => ({ dst: e.dst, mark: e.mark }));
  return { matches: missing.length === 0 && unexpected.length === 0, missing, unexpected };
}
