import { snapshotFromObjects } from "../../api/objects.js";
import { NodeDataplane } from "../../dataplane/node.js";
import type { HealthView, NodePlan, Verdict } from "../../planner/model.js";
import { Planner } from "../../planner/plan.js";
import type { Logger } from "../../util/log.js";
import type { AgentConfig } from "../config.js";
import { ReconcileLoop } from "../loop.js";
import type { ClusterSource } from "../source/source.js";

/** Gateway health as this node sees it (BFD sessions, or nothing yet). */
export interface HealthProvider {
  view(): HealthView;
  onChange(listener: () => void): void;
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
    const snapshot = snapshotFromObjects(source.objects(), config.clusterNetwork);
    const planner = new Planner(snapshot);
    this.reportVerdicts(planner.resolution.verdicts);
    const plan = planner.planNode(nodeName, (this.deps.health ?? noHealthChecks).view());
    const report = await dataplane.apply(plan, { verify });
    const moved = changedPods(this.lastPlan, plan);
    if (moved.length > 0) await dataplane.forgetFlows(moved);
    this.lastPlan = plan;
    if (report.nftChanged || report.routingAdded || report.routingRemoved) {
      logger.info({ entries: plan.entries.length, instances: plan.instances.length, unavailable: plan.unavailable, ...report }, "datapath programmed");
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

/** Pod addresses whose diversion was removed or moved to another instance since the last plan. */
export function changedPods(before: NodePlan | undefined, after: NodePlan): string[] {
  if (!before) return [];
  const now = new Map<string, number>();
  for (const e of after.entries) now.set(`${e.podIP}|${e.dst.from}|${e.dst.to}`, e.mark);
  const out = new Set<string>();
  for (const e of before.entries) if (now.get(`${e.podIP}|${e.dst.from}|${e.dst.to}`) !== e.mark) out.add(e.podIP);
  return [...out].sort();
}
