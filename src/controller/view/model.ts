import type { KubeObject } from "../../api/objects.js";
import type { Condition } from "../../api/v1alpha1/common.js";
import type { EgressGatewayStatus } from "../../api/v1alpha1/egress-gateway.js";
import type { EgressPolicyStatus } from "../../api/v1alpha1/egress-policy.js";
import type { HealthView, PolicyObject } from "../../planner/model.js";
import { selectPods, type Planner } from "../../planner/plan.js";
import { policyResource } from "../../planner/resolve.js";
import { parseReport, type NodeReport } from "../status.js";
import type { HealthChange, TrafficSeries } from "./history.js";

/*
 * What the live view shows (docs/view.md), built from the informers' objects and the planner's
 * output alone: pure, so that a test can build it from objects it writes. Only chosen fields
 * leave: names, addresses, health, conditions, counts, never a whole object (no spec of a cloud
 * source, no annotation but the node report it reads).
 */

/** Pods listed at most; the page stays legible and the build stays cheap in a large cluster. */
const VIEW_MAX_PODS = 200;

export interface ViewCondition {
  status: string;
  reason: string;
  message: string;
}

export interface ViewInstance {
  /** `<gateway>/<instance>` */
  key: string;
  name: string;
  address: string;
  egressIPs: string[];
  /** As the controller wrote it to status: Up, Down, PartiallyDown, Unknown, Draining, Provisioning. */
  health: string;
  since: string | null;
  /** Nodes whose latest report sees the instance down. */
  seenDownBy: string[];
}

export interface ViewGateway {
  name: string;
  ready: ViewCondition | null;
  /** The planner's errors when the gateway is Invalid. */
  invalid: string | null;
  instances: ViewInstance[];
}

export interface ViewPolicy {
  /** `EgressPolicy/<ns>/<name>` or `ClusterEgressPolicy/<name>` */
  resource: string;
  gateway: string;
  egressIPs: string[];
  failurePolicy: string;
  ready: ViewCondition | null;
  invalid: string | null;
  selectedPods: number | null;
  programmedPods: number | null;
  bytesPerSecond: number | null;
}

/** How a selected pod's traffic leaves: through an instance, dropped (fail-closed), or with its node's IP. */
export type PodPath = "gateway" | "dropped" | "node-ip";

export interface ViewPod {
  /** `<namespace>/<name>` */
  pod: string;
  node: string;
  ip: string;
  policy: string;
  /** The instance its node chose (empty when none). */
  instance: string;
  /** The policy's egress IPs on that instance (several: a pool); empty unless path is `gateway`. */
  egressIPs: string[];
  path: PodPath;
  /** False when the node has no fresh report: its view of gateway health is not known, all are taken as up. */
  nodeReporting: boolean;
}

export interface ViewState {
  generatedAt: string;
  gateways: ViewGateway[];
  policies: ViewPolicy[];
  /** Selected pods with their policy and egress IP, by node then name; at most `VIEW_MAX_PODS`. */
  pods: ViewPod[];
  podsTruncated: boolean;
  /** Instance health changes, newest first. */
  failovers: HealthChange[];
  traffic: { windowSeconds: number; series: TrafficSeries[] };
}

function condition(conditions: readonly Condition[] | undefined, type: string): ViewCondition | null {
  const c = conditions?.find((x) => x.type === type);
  return c ? { status: c.status, reason: c.reason, message: c.message } : null;
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The live view's state. `history` is what the sampler kept (failovers, traffic over time). */
export function buildView(input: {
  objects: readonly KubeObject[];
  planner: Planner;
  history: { failovers: HealthChange[]; traffic: { windowSeconds: number; series: TrafficSeries[] } };
  now: Date;
  maxPods?: number;
}): ViewState {
  const { objects, planner, now } = input;
  const res = planner.resolution;
  const verdicts = new Map(res.verdicts.map((v) => [v.resource, v]));
  const invalidText = (resource: string) => {
    const v = verdicts.get(resource);
    return v && !v.valid ? v.errors.map((e) => `${e.field}: ${e.message}`).join("; ") : null;
  };
  const reports = new Map<string, NodeReport>();
  for (const o of objects) {
    if (o.kind !== "Node") continue;
    const r = parseReport(o.metadata?.name ?? "", o.metadata?.annotations, now.getTime());
    if (r) reports.set(r.node, r);
  }
  const seenDownBy = (key: string) =>
    [...reports.values()]
      .filter((r) => r.health[key] === "down")
      .map((r) => r.node)
      .sort(byText);

  const gateways: ViewGateway[] = objects
    .filter((o) => o.kind === "EgressGateway")
    .map((o) => {
      const name = o.metadata?.name ?? "";
      const status = o.status as EgressGatewayStatus | undefined;
      // The controller's status is the instance list (a cloud gateway's exists only there); before
      // its first write, the planner's.
      const listed = status?.instances ?? [];
      const instances: ViewInstance[] =
        listed.length > 0
          ? listed.map((i) => ({
              key: `${name}/${i.name}`,
              name: i.name,
              address: i.address,
              egressIPs: [...i.egressIPs],
              health: i.health,
              since: i.since ?? null,
              seenDownBy: seenDownBy(`${name}/${i.name}`),
            }))
          : (res.gatewayInstances.get(name) ?? []).map((key) => {
              const i = res.instances.get(key)!;
              return {
                key,
                name: i.name,
                address: i.address,
                egressIPs: [...i.egressIPs],
                health: "Unknown",
                since: null,
                seenDownBy: seenDownBy(key),
              };
            });
      return {
        name,
        ready: condition(status?.conditions, "Ready"),
        invalid: invalidText(`EgressGateway/${name}`),
        instances,
      };
    })
    .sort((a, b) => byText(a.name, b.name));

  const policies: ViewPolicy[] = objects
    .filter((o) => o.kind === "EgressPolicy" || o.kind === "ClusterEgressPolicy")
    .map((o) => {
      const resource = policyResource(o as unknown as PolicyObject);
      const spec = (o.spec ?? {}) as { gatewayName?: unknown; egressIPs?: unknown; failurePolicy?: unknown };
      const status = o.status as EgressPolicyStatus | undefined;
      return {
        resource,
        gateway: typeof spec.gatewayName === "string" ? spec.gatewayName : "",
        egressIPs: Array.isArray(spec.egressIPs) ? spec.egressIPs.filter((x) => typeof x === "string") : [],
        failurePolicy: spec.failurePolicy === "FallbackToNodeIP" ? "FallbackToNodeIP" : "Drop",
        ready: condition(status?.conditions, "Ready"),
        invalid: invalidText(resource),
        selectedPods: status?.selectedPods ?? null,
        programmedPods: status?.programmedPods ?? null,
        bytesPerSecond: status?.traffic?.bytesPerSecond ?? null,
      };
    })
    .sort((a, b) => byText(a.resource, b.resource));

  const { pods, truncated } = podRows(planner, reports, input.maxPods ?? VIEW_MAX_PODS);
  return {
    generatedAt: now.toISOString(),
    gateways,
    policies,
    pods,
    podsTruncated: truncated,
    failovers: input.history.failovers,
    traffic: input.history.traffic,
  };
}

/**
 * Each selected pod's egress as its own node plans it, with the gateway health that node last
 * reported: the planner's node plan (the same code the node agent runs) says which instance
 * it chose, or that no instance is usable. Nodes in name order until `max` rows.
 */
function podRows(
  planner: Planner,
  reports: ReadonlyMap<string, NodeReport>,
  max: number,
): { pods: ViewPod[]; truncated: boolean } {
  const res = planner.resolution;
  const snapshot = planner.snapshot;
  const nodes = [...new Set(snapshot.pods.map((p) => p.nodeName).filter((n): n is string => n !== undefined))].sort(
    byText,
  );
  const rows: ViewPod[] = [];
  for (const node of nodes) {
    const report = reports.get(node);
    const { selections, failClosed } = selectPods(snapshot, res, node);
    if (selections.length === 0 && failClosed.length === 0) continue;
    if (rows.length >= max) return { pods: rows, truncated: true };
    const health: HealthView = new Map(Object.entries(report?.health ?? {}));
    const plan = planner.planNode(node, health);
    const unavailable = new Map(plan.unavailable.map((u) => [u.policy, u.failurePolicy]));
    const chosen = new Map(plan.entries.map((e) => [`${e.podIP}|${e.policy}`, e.instance]));
    const nodeRows: ViewPod[] = [];
    const seen = new Set<string>();
    for (const s of selections) {
      const ip = s.pod.ips.find((a) => !a.includes(":")) ?? s.pod.ips[0] ?? "";
      const id = `${s.podKey}|${s.policy.resource}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const failure = unavailable.get(s.policy.resource);
      const instance = chosen.get(`${ip}|${s.policy.resource}`) ?? "";
      // With no usable instance a Drop policy keeps its pods pinned to a blackholed one: dropped.
      const path: PodPath =
        failure === "FallbackToNodeIP" ? "node-ip" : failure === "Drop" || instance === "" ? "dropped" : "gateway";
      nodeRows.push({
        pod: s.podKey,
        node,
        ip,
        policy: s.policy.resource,
        instance: path === "node-ip" ? "" : instance,
        egressIPs: path === "gateway" ? [...(s.policy.egressIPsByInstance.get(instance) ?? [])] : [],
        path,
        nodeReporting: report !== undefined,
      });
    }
    // An invalid policy's pods are dropped (fail-closed) for what no valid policy decides.
    for (const s of failClosed) {
      const id = `${s.podKey}|${s.policy.resource}`;
      if (seen.has(id)) continue;
      seen.add(id);
      nodeRows.push({
        pod: s.podKey,
        node,
        ip: s.pod.ips.find((a) => !a.includes(":")) ?? s.pod.ips[0] ?? "",
        policy: s.policy.resource,
        instance: "",
        egressIPs: [],
        path: "dropped",
        nodeReporting: report !== undefined,
      });
    }
    nodeRows.sort((a, b) => byText(a.pod, b.pod) || byText(a.policy, b.policy));
    if (rows.length + nodeRows.length > max)
      return { pods: [...rows, ...nodeRows.slice(0, max - rows.length)], truncated: true };
    rows.push(...nodeRows);
  }
  return { pods: rows, truncated: false };
}
