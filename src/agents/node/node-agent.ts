import { performance } from "node:perf_hooks";
import { snapshotFromObjects } from "../../api/objects.js";
import { NodeDataplane } from "../../dataplane/node.js";
import type { HealthView, NodePlan, Verdict } from "../../planner/model.js";
import type { ProbedInstance } from "../health/monitor.js";
import { Planner } from "../../planner/plan.js";
import type { Logger } from "../../util/log.js";
import type { AgentConfig } from "../config.js";
import { ReconcileLoop } from "../loop.js";
import type { ClusterSource } from "../source/source.js";

/** Gateway health as this node sees it (BFD sessions, or nothing yet). */
export interface HealthProvider {
  view(): HealthView;
  onChange(listener: () => void): void;
  /** Probe exactly these instances (called with every plan). */
  setInstances?(instances: readonly ProbedInstance[]): Promise<void>;
}

export const noHealthChecks: HealthProvider = { view: () => new Map(), onChange: () => undefined };

export interface NodeAgentDeps {
  nodeName: string;
  config: AgentConfig;
  source: ClusterSource;
  dataplane: NodeDataplane;
  health?: HealthProvider;
  logger: Logger;
  /** Called after each successful apply (metrics, status, tests). */
  onApplied?: (plan: NodePlan, verdicts: readonly Verdict[]) => void;
}

/**
 * Watches the cluster, plans this node's datapath and applies it. Stopping the agent leaves the
 * datapath as it is: a restart or an upgrade never interrupts forwarding, and a fresh agent
 * adopts what it finds (the same plan applies as a no-op on routes and one atomic table swap).
 */
export class NodeAgent {
  private readonly loop: ReconcileLoop;
  private resyncTimer: NodeJS.Timeout | undefined;
  private lastPlan: NodePlan | undefined;
  private lastVerdicts = "";

  constructor(private readonly deps: NodeAgentDeps) {
    this.loop = new ReconcileLoop((o) => this.reconcile(o), deps.logger);
  }

  async start(): Promise<void> {
    const health = this.deps.health ?? noHealthChecks;
    health.onChange(() => this.loop.trigger());
    await this.deps.source.start(() => this.loop.trigger());
    this.loop.trigger({ verify: true });
    this.resyncTimer = setInterval(() => this.loop.trigger({ verify: true }), this.deps.config.resyncSeconds * 1000);
  }

  private async reconcile({ verify }: { verify: boolean }): Promise<void> {
    const { nodeName, config, source, dataplane, logger } = this.deps;
    const started = performance.now();
    const snapshot = snapshotFromObjects(source.objects(), config.clusterNetwork);
    const planner = new Planner(snapshot);
    this.reportVerdicts(planner.resolution.verdicts);
    await this.deps.health?.setInstances?.(
      [...planner.resolution.instances.values()].map((i) => ({ key: i.key, address: i.address, ...i.health })),
    );
    const plan = planner.planNode(nodeName, (this.deps.health ?? noHealthChecks).view());
    const report = await dataplane.apply(plan, { verify });
    const forget = flowsToForget(this.lastPlan, plan);
    if (forget.podIPs.length > 0 || forget.marks.length > 0) await dataplane.forgetFlows(forget);
    this.lastPlan = plan;
    if (report.nftChanged || report.routingAdded || report.routingRemoved) {
      const durationMs = Math.round(performance.now() - started);
      logger.info({ entries: plan.entries.length, instances: plan.instances.length, unavailable: plan.unavailable, ...report, durationMs }, "datapath programmed");
    }
    this.deps.onApplied?.(plan, planner.resolution.verdicts);
  }

  private reportVerdicts(verdicts: readonly Verdict[]): void {
    const text = JSON.stringify(verdicts.filter((v) => !v.valid));
    if (text === this.lastVerdicts) return;
    this.lastVerdicts = text;
    for (const v of verdicts) if (!v.valid) this.deps.logger.warn({ resource: v.resource, errors: v.errors }, "invalid resource ignored");
  }

  idle(): Promise<void> {
    return this.loop.idle();
  }

  async stop(): Promise<void> {
    clearInterval(this.resyncTimer);
    this.loop.stop();
    await this.deps.source.stop();
  }
}

/**
 * Which established diverted flows must be re-planned: those of pods whose policy for a
 * destination changed or went away, and those pinned to an instance that just went down.
 * Flows pinned to a healthy instance stay (that is what lets a drained instance finish).
 */
export function flowsToForget(before: NodePlan | undefined, after: NodePlan): { podIPs: string[]; marks: number[] } {
  if (!before) return { podIPs: [], marks: [] };
  const now = new Map<string, string>();
  for (const e of after.entries) now.set(`${e.podIP}|${e.dst.from}|${e.dst.to}`, e.policy);
  const pods = new Set<string>();
  for (const e of before.entries) if (now.get(`${e.podIP}|${e.dst.from}|${e.dst.to}`) !== e.policy) pods.add(e.podIP);
  const wasDown = new Set(before.instances.filter((i) => i.route === "blackhole").map((i) => i.key));
  const marks = after.instances.filter((i) => i.route === "blackhole" && !wasDown.has(i.key)).map((i) => i.mark);
  return { podIPs: [...pods].sort(), marks };
}
