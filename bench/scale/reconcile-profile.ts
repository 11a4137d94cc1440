/**
 * Benchmark child: where a reconcile's CPU goes at scale, without HTTP or the kernel. It times
 * the same calls, in the same order, that Controller.reconcileAll and NodeAgent.reconcile make
 * (src/controller/controller.ts, src/agents/node/node-agent.ts) on the fixture's objects, with
 * every node carrying a report annotation (as once all node agents run). Prints one `profile`
 * event with the median of each step over the repetitions.
 *
 *   node --import ./bench/scale/from-dist.ts bench/scale/reconcile-profile.ts [--nodes ...] [--pods ...] [--reps 3]
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { snapshotFromObjects, type KubeObject } from "../../src/api/objects.js";
import { SpecValidator } from "../../src/api/v1alpha1/validate.js";
import { parseReport, policyStatus, REPORT_ANNOTATION, type NodeReport } from "../../src/controller/status.js";
import { Planner, selectPods } from "../../src/planner/plan.js";
import { median, round } from "../lib/stats.js";
import { emit, memorySample } from "./child-io.js";
import {
  gatewayObject,
  namespaceObject,
  NETWORK,
  nodeName,
  nodeObject,
  podObject,
  podParams,
  podsOnNode,
  podStatus,
  policyObject,
  SHAPE_OPTIONS,
  shapeFromOptions,
  type Json,
  type ScaleShape,
} from "./fixture.js";

function clusterObjects(s: ScaleShape, onlyNode?: number): KubeObject[] {
  const health = Object.fromEntries(
    Array.from({ length: s.gateways * s.instancesPerGateway }, (_, i) => [
      `gw-${Math.floor(i / s.instancesPerGateway)}/i-${i % s.instancesPerGateway}`,
      "up",
    ]),
  );
  const at = new Date().toISOString();
  const objects: Json[] = [];
  const pods = onlyNode === undefined ? Array.from({ length: s.pods }, (_, i) => i) : podsOnNode(s, onlyNode);
  for (const i of pods) objects.push({ ...podObject(s, i), status: podStatus(podParams(s, i)) });
  for (let i = 0; i < s.nodes; i++) {
    const node = nodeObject(i) as { metadata: Json };
    node.metadata.annotations = {
      [REPORT_ANNOTATION]: JSON.stringify({ programmed: {}, health, unavailable: {}, at }),
    };
    objects.push(node);
  }
  for (let i = 0; i < s.namespaces; i++) objects.push(namespaceObject(s, i));
  for (let g = 0; g < s.gateways; g++) objects.push(gatewayObject(s, g));
  for (let p = 0; p < s.policies; p++) {
    const o = policyObject(s, p) as { metadata: Json };
    o.metadata.creationTimestamp = "2025-01-01T00:00:00Z";
    o.metadata.generation = 1;
    objects.push(o);
  }
  return objects as KubeObject[];
}

function time<T>(into: Map<string, number[]>, step: string, f: () => T): T {
  const t0 = performance.now();
  const v = f();
  into.set(step, [...(into.get(step) ?? []), performance.now() - t0]);
  return v;
}

function compiledValidator(): SpecValidator {
  const v = new SpecValidator();
  v.compile();
  return v;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      ...SHAPE_OPTIONS,
      "agent-node": { type: "string", default: "42" },
      reps: { type: "string", default: "3" },
    },
  });
  const s = shapeFromOptions(values);
  const reps = Number(values.reps);
  const controller = new Map<string, number[]>();
  const agent = new Map<string, number[]>();
  const all = clusterObjects(s);
  const agentNode = Number(values["agent-node"]) % s.nodes;
  const agentView = clusterObjects(s, agentNode);
  for (let rep = 0; rep < reps; rep++) {
    const t0 = performance.now();
    // Controller.reconcileAll, step by step.
    const objects = time(controller, "sourceObjects", () =>
      all.map((o) => ({ ...o, kind: o.kind, apiVersion: o.apiVersion })),
    );
    const snapshot = time(controller, "snapshotFromObjects", () => snapshotFromObjects(objects, NETWORK));
    // The controller calls `new Planner(snapshot)`: it compiles the CRD schemas, then validates and resolves.
    // Compiled per kind at first use since 2026-12-05: compile() does them all here, as before.
    const validator = time(controller, "specValidatorCompile", () => compiledValidator());
    time(controller, "resolveOnly", () => new Planner(snapshot, { validator }));
    const planner = time(controller, "newPlanner", () => new Planner(snapshot));
    const res = planner.resolution;
    const selection = time(controller, "selectPods", () => selectPods(snapshot, res));
    const verdicts = new Map(res.verdicts.map((v) => [v.resource, v]));
    const reports = time(controller, "parseReports", () => {
      const out: NodeReport[] = [];
      for (const n of all)
        if (n.kind === "Node") {
          const r = parseReport(n.metadata?.name ?? "", n.metadata?.annotations, Date.now());
          if (r) out.push(r);
        }
      return out;
    });
    time(controller, "policyStatuses", () => {
      const now = new Date().toISOString();
      for (const p of snapshot.policies) {
        const resource =
          p.kind === "EgressPolicy"
            ? `EgressPolicy/${p.metadata.namespace}/${p.metadata.name}`
            : `ClusterEgressPolicy/${p.metadata.name}`;
        const valid = res.policies.find((x) => x.resource === resource);
        policyStatus(
          {
            resource,
            generation: 1,
            verdict: verdicts.get(resource),
            egressIPs: valid ? [...valid.egressIPsByInstance.values()].flat().sort() : [],
            selectedPods: selection.podsByPolicy.get(resource) ?? 0,
            gatewayInstances: valid ? (res.gatewayInstances.get(valid.gateway) ?? []) : [],
            reports,
          },
          undefined,
          now,
        );
      }
    });
    // specValidatorCompile and resolveOnly are a breakdown of newPlanner, not part of the reconcile.
    const breakdown =
      (controller.get("specValidatorCompile")?.at(-1) ?? 0) + (controller.get("resolveOnly")?.at(-1) ?? 0);
    controller.set("total", [...(controller.get("total") ?? []), performance.now() - t0 - breakdown]);
    // NodeAgent.reconcile without the kernel: a fresh Planner (it compiles its own validator) and planNode.
    const t1 = performance.now();
    const agentSnapshot = time(agent, "snapshotFromObjects", () =>
      snapshotFromObjects(
        agentView.map((o) => ({ ...o })),
        NETWORK,
      ),
    );
    time(agent, "specValidatorCompile", () => compiledValidator());
    const agentPlanner = time(agent, "newPlanner", () => new Planner(agentSnapshot));
    time(agent, "planNode", () => agentPlanner.planNode(nodeName(agentNode), new Map()));
    agent.set("total", [
      ...(agent.get("total") ?? []),
      performance.now() - t1 - (agent.get("specValidatorCompile")?.at(-1) ?? 0),
    ]);
  }
  const medians = (m: Map<string, number[]>) => Object.fromEntries([...m].map(([k, v]) => [k, round(median(v))]));
  emit("profile", { reps, controllerMs: medians(controller), nodeAgentMs: medians(agent), ...memorySample() });
}

try {
  main();
} catch (e) {
  emit("failed", { error: (e as Error).stack ?? String(e) });
  process.exit(1);
}
