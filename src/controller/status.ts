import type { Condition } from "../api/v1alpha1/common.js";
import type { EgressGatewayStatus } from "../api/v1alpha1/egress-gateway.js";
import type { EgressPolicyStatus } from "../api/v1alpha1/egress-policy.js";
import type { Resolution } from "../planner/resolve.js";
import type { Verdict } from "../planner/model.js";
import type { NodeReport } from "../api/node-report.js";
import { FINALIZER, REPORT_ANNOTATION } from "../api/keys.js";

export type { NodeReport };

export { FINALIZER, REPORT_ANNOTATION };

/** Reports older than this are from nodes that stopped talking; they neither block nor count. */
const REPORT_TTL_MS = 5 * 60_000;

export function parseReport(
  node: string,
  annotations: Record<string, string> | undefined,
  now: number,
): NodeReport | undefined {
  const raw = annotations?.[REPORT_ANNOTATION];
  if (!raw) return undefined;
  try {
    const r = JSON.parse(raw) as Omit<NodeReport, "node">;
    if (now - Date.parse(r.at) > REPORT_TTL_MS) return undefined;
    return {
      node,
      programmed: r.programmed ?? {},
      health: r.health ?? {},
      unavailable: r.unavailable ?? {},
      ...(r.verification && typeof r.verification === "object" ? { verification: r.verification } : {}),
      at: r.at,
    };
  } catch {
    return undefined;
  }
}

/** `spec.destinationCIDRs[0]` -> `InvalidSpecDestinationCIDRs`: a condition reason that names the field. */
export function reasonForField(field: string): string {
  const words = field
    .replace(/\[\d+\]/g, "")
    .split(/[.\s]+/)
    .filter(Boolean);
  return `Invalid${words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join("")}`.replace(/[^A-Za-z0-9]/g, "");
}

type Cond = Omit<Condition, "lastTransitionTime">;

/** Keeps lastTransitionTime when a condition's status did not change (no write churn). */
export function withTransitions(next: Cond[], previous: readonly Condition[] | undefined, now: string): Condition[] {
  return next.map((c) => {
    const old = previous?.find((p) => p.type === c.type);
    return { ...c, lastTransitionTime: old && old.status === c.status ? old.lastTransitionTime : now };
  });
}

export interface PolicyFacts {
  resource: string;
  generation: number | undefined;
  verdict: Verdict | undefined;
  egressIPs: string[];
  selectedPods: number;
  gatewayInstances: string[];
  reports: readonly NodeReport[];
  /** The policy asks for verification (spec.verification, valid): it gets a Verified condition. */
  verifies?: boolean;
}

/** Nodes named in a condition's message: the rest are counted (a message stays readable with many nodes). */
const MAX_NODES_NAMED = 5;

function listed(items: readonly string[]): string {
  const named = items.slice(0, MAX_NODES_NAMED).join("; ");
  return items.length > MAX_NODES_NAMED ? `${named}; and ${items.length - MAX_NODES_NAMED} more` : named;
}

/**
 * Verified (docs/policies.md "Verification"), from the nodes' last probes: False with
 * SourceMismatch when any node's echo service saw another source (naming the node and what it
 * saw), else False with ProbeFailed when any probe got no usable answer, else True once a node
 * saw the policy's IP; Unknown while no node has probed.
 */
function verifiedCondition(f: PolicyFacts, gen: { observedGeneration?: number }): Cond {
  // A node's report is its own word: strings are cut short so that no report can bloat the status.
  const short = (v: unknown, n = 200) => String(v ?? "").slice(0, n);
  const results = f.reports.flatMap((r) => {
    const v = r.verification?.[f.resource];
    if (!v || typeof v !== "object") return [];
    return [
      {
        node: r.node,
        result: v.result,
        seen: short(v.seen, 64),
        instance: short(v.instance, 128),
        error: short(v.error),
        expected: Array.isArray(v.expected) ? v.expected.slice(0, 8).map((e) => short(e, 64)) : [],
      },
    ];
  });
  const mismatches = results.filter((r) => r.result === "mismatch");
  if (mismatches.length > 0)
    return {
      type: "Verified",
      status: "False",
      reason: "SourceMismatch",
      message: listed(
        mismatches.map(
          (m) => `${m.node} saw source ${m.seen} through ${m.instance} (expected ${m.expected.join(" or ")})`,
        ),
      ),
      ...gen,
    };
  const failed = results.filter((r) => r.result === "error");
  if (failed.length > 0)
    return {
      type: "Verified",
      status: "False",
      reason: "ProbeFailed",
      message: listed(failed.map((e) => `${e.node} through ${e.instance}: ${e.error || "failed"}`)),
      ...gen,
    };
  if (results.length > 0) {
    const seen = [...new Set(results.map((r) => r.seen))].sort().join(", ");
    return {
      type: "Verified",
      status: "True",
      reason: "SourceMatches",
      message: `the echo service saw ${seen} from ${results.length} node(s): ${listed(results.map((r) => r.node).sort())}`,
      ...gen,
    };
  }
  return {
    type: "Verified",
    status: "Unknown",
    reason: "NotYetProbed",
    message: "no node has probed yet (nodes probe where the policy's traffic leaves through a healthy instance)",
    ...gen,
  };
}

/** The status a policy should have. Pure: the controller compares it with what is there. */
/** An instance's traffic entry older than this no longer counts (its agent writes at least every 5 minutes). */
export const TRAFFIC_FRESH_MS = 6 * 60_000;

/**
 * The policy's recent traffic for `kubectl get`: the sum of the fresh entries the gateway agents
 * wrote (status.traffic.instances); undefined when no agent reported.
 */
export function trafficTotals(
  previous: EgressPolicyStatus | undefined,
  now: Date,
): { bytesPerSecond: number; packetsPerSecond: number } | undefined {
  const entries = previous?.traffic?.instances ?? [];
  if (entries.length === 0) return undefined;
  const fresh = entries.filter((e) => now.getTime() - Date.parse(e.at) <= TRAFFIC_FRESH_MS);
  return {
    bytesPerSecond: fresh.reduce((n, e) => n + e.bytesPerSecond, 0),
    packetsPerSecond: fresh.reduce((n, e) => n + e.packetsPerSecond, 0),
  };
}

/** A status as the controller writes it: the agents' own traffic entries are theirs, not compared. */
export function withoutInstanceTraffic<T extends { traffic?: { instances?: unknown } }>(
  status: T | undefined,
): T | undefined {
  if (!status?.traffic?.instances) return status;
  const { instances: _, ...traffic } = status.traffic;
  return { ...status, traffic };
}

/**
 * When the policy's egress IPs last changed: kept from the previous status while the set is the
 * same, so the egress-IP feed's lastChange survives a controller restart (it is in the API).
 */
function egressIPsChangedAt(
  egressIPs: readonly string[],
  previous: EgressPolicyStatus | undefined,
  now: string,
): string {
  const before = [...(previous?.egressIPs ?? [])].sort().join(",");
  const after = [...egressIPs].sort().join(",");
  return previous?.egressIPsChangedAt && before === after ? previous.egressIPsChangedAt : now;
}

export function policyStatus(
  f: PolicyFacts,
  previous: EgressPolicyStatus | undefined,
  now: string,
): EgressPolicyStatus {
  const conditions: Cond[] = [];
  const gen = f.generation !== undefined ? { observedGeneration: f.generation } : {};
  if (!f.verdict || !f.verdict.valid) {
    const first = f.verdict?.errors[0];
    const message = f.verdict?.errors.map((e) => `${e.field}: ${e.message}`).join("; ") ?? "not planned";
    conditions.push({ type: "Ready", status: "False", reason: "Invalid", message, ...gen });
    conditions.push({
      type: "Invalid",
      status: "True",
      reason: first ? reasonForField(first.field) : "Invalid",
      message,
      ...gen,
    });
    return {
      egressIPs: [],
      egressIPsChangedAt: egressIPsChangedAt([], previous, now),
      selectedPods: 0,
      programmedPods: 0,
      ...gen,
      conditions: withTransitions(conditions, previous?.conditions, now),
    };
  }
  const programmedPods = f.reports.reduce((n, r) => n + (r.programmed[f.resource] ?? 0), 0);
  const downSeen = new Map<string, string[]>();
  for (const r of f.reports) {
    for (const key of f.gatewayInstances)
      if (r.health[key] === "down") downSeen.set(key, [...(downSeen.get(key) ?? []), r.node]);
  }
  const failing = f.reports.filter((r) => r.unavailable[f.resource]);
  if (failing.length > 0) {
    const mode =
      failing[0]!.unavailable[f.resource] === "Drop" ? "dropped (fail-closed)" : "leaving with the node IP (fallback)";
    conditions.push({
      type: "Ready",
      status: "False",
      reason: "NoHealthyInstance",
      message: `no healthy gateway instance on ${failing.map((r) => r.node).join(", ")}: traffic is ${mode}`,
      ...gen,
    });
  } else {
    conditions.push({
      type: "Ready",
      status: "True",
      reason: "Programmed",
      message: `${programmedPods} of ${f.selectedPods} selected pods programmed`,
      ...gen,
    });
  }
  conditions.push({ type: "Invalid", status: "False", reason: "Valid", message: "", ...gen });
  if (downSeen.size > 0) {
    const message = [...downSeen].map(([k, nodes]) => `${k} down as seen by ${nodes.join(", ")}`).join("; ");
    conditions.push({ type: "Degraded", status: "True", reason: "InstanceDown", message, ...gen });
  } else {
    conditions.push({ type: "Degraded", status: "False", reason: "AllInstancesUp", message: "", ...gen });
  }
  if (f.verifies) conditions.push(verifiedCondition(f, gen));
  return {
    egressIPs: f.egressIPs,
    egressIPsChangedAt: egressIPsChangedAt(f.egressIPs, previous, now),
    selectedPods: f.selectedPods,
    programmedPods,
    ...gen,
    conditions: withTransitions(conditions, previous?.conditions, now),
  };
}

/** Health a provisioning plugin writes for a host that is not active yet; the core leaves it alone. */
export const PROVISIONING = "Provisioning";
/**
 * Health a provisioning plugin writes for a host it is about to replace (rolling update): nodes
 * move new connections off it; the core leaves it alone, like PROVISIONING.
 */
export const DRAINING = "Draining";

type InstanceStatus = NonNullable<EgressGatewayStatus["instances"]>[number];

/** Health of an instance that no node has judged yet: saying Up would claim what nobody saw. */
export const UNJUDGED = "Unknown";

/** Unknown (no node has judged it), Up, Draining, Down (every judging node sees it down) or PartiallyDown. */
function instanceHealth(key: string, drain: boolean, reports: readonly NodeReport[]): string {
  const judging = reports.filter((r) => r.health[key] !== undefined);
  if (judging.length === 0) return UNJUDGED;
  const downOn = judging.filter((r) => r.health[key] === "down").length;
  return downOn === 0 ? (drain ? "Draining" : "Up") : downOn === judging.length ? "Down" : "PartiallyDown";
}

export function gatewayStatus(
  name: string,
  generation: number | undefined,
  verdict: Verdict | undefined,
  res: Resolution,
  reports: readonly NodeReport[],
  previous: EgressGatewayStatus | undefined,
  now: string,
  opts: { provisioned?: boolean; listed?: readonly InstanceStatus[] } = {},
): EgressGatewayStatus {
  const gen = generation !== undefined ? { observedGeneration: generation } : {};
  // A provisioned gateway's (spec.digitalocean) instance list comes from its cloud plugin
  // (`listed`; the status's own list until the plugin has seen the cloud, e.g. after a restart)
  // and is what the planner reads: here only the health of the listed instances is kept current.
  const provisioned = opts.provisioned === true;
  const base = opts.listed ?? previous?.instances ?? [];
  const since = (old: InstanceStatus | undefined, health: string) =>
    old && old.health === health && old.since ? old.since : now;
  if (!verdict || !verdict.valid) {
    const message = verdict?.errors.map((e) => `${e.field}: ${e.message}`).join("; ") ?? "not planned";
    const first = verdict?.errors[0];
    const conditions: Cond[] = [
      { type: "Ready", status: "False", reason: "Invalid", message, ...gen },
      { type: "Invalid", status: "True", reason: first ? reasonForField(first.field) : "Invalid", message, ...gen },
    ];
    return {
      instances: provisioned ? [...base] : [],
      readyInstances: 0,
      conditions: withTransitions(conditions, previous?.conditions, now),
    };
  }
  const keys = res.gatewayInstances.get(name) ?? [];
  const instances: InstanceStatus[] = provisioned
    ? base.map((old) => {
        if (old.health === PROVISIONING || old.health === DRAINING) return old;
        const health = instanceHealth(`${name}/${old.name}`, false, reports);
        return { ...old, health, since: since(old, health) };
      })
    : keys.map((key) => {
        const inst = res.instances.get(key)!;
        const health = instanceHealth(key, inst.drain, reports);
        const old = previous?.instances?.find((i) => i.name === inst.name);
        return {
          name: inst.name,
          address: inst.address,
          egressIPs: [...inst.egressIPs],
          health,
          since: since(old, health),
        };
      });
  const readyInstances = instances.filter((i) => i.health === "Up").length;
  // Unknown is no evidence either way: it neither makes the gateway Ready nor Degraded.
  const unjudged = instances.filter((i) => i.health === UNJUDGED).length;
  const notUp = instances.filter((i) => i.health !== "Up" && i.health !== UNJUDGED);
  const conditions: Cond[] = [
    readyInstances > 0
      ? {
          type: "Ready",
          status: "True",
          reason: "InstancesUp",
          message: `${readyInstances} of ${instances.length} instances up`,
          ...gen,
        }
      : unjudged > 0 && notUp.every((i) => i.health === PROVISIONING)
        ? {
            type: "Ready",
            status: "Unknown",
            reason: "NotYetProbed",
            message: `no node has reported on ${unjudged} of ${instances.length} instances yet`,
            ...gen,
          }
        : { type: "Ready", status: "False", reason: "NoHealthyInstance", message: "no instance is up", ...gen },
    { type: "Invalid", status: "False", reason: "Valid", message: "", ...gen },
    notUp.length > 0
      ? {
          type: "Degraded",
          status: "True",
          reason: "InstanceDown",
          message: notUp.map((i) => `${i.name}: ${i.health}`).join("; "),
          ...gen,
        }
      : { type: "Degraded", status: "False", reason: "AllInstancesUp", message: "", ...gen },
  ];
  return { instances, readyInstances, conditions: withTransitions(conditions, previous?.conditions, now) };
}
