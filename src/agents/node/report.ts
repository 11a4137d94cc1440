import type { KubeClient } from "../../kube/client.js";
import type { HealthView, NodePlan } from "../../planner/model.js";
import { REPORT_ANNOTATION } from "../../api/keys.js";
import type { NodeReport, VerificationReport } from "../../api/node-report.js";
import type { Logger } from "../../util/log.js";

/**
 * Tells the controller what this node programmed and how it sees the gateways, through one
 * annotation on its own Node. Written only when the content changes (and refreshed every few
 * minutes so the controller knows the node is alive), never more than once per `minGapMs`.
 */
export class NodeReporter {
  private last = "";
  private lastAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private pending: Omit<NodeReport, "node" | "at" | "verification"> | undefined;
  private verification: Record<string, VerificationReport> = {};

  constructor(
    private readonly client: KubeClient,
    private readonly node: string,
    private readonly logger: Logger,
    private readonly minGapMs = 500,
    private readonly refreshMs = 120_000,
  ) {}

  update(plan: NodePlan, health: HealthView): void {
    const unavailable: NodeReport["unavailable"] = {};
    for (const u of plan.unavailable) unavailable[u.policy] = u.failurePolicy;
    this.pending = { programmed: plan.podsByPolicy, health: Object.fromEntries(health), unavailable };
    this.schedule();
  }

  /** The verification probes' latest results (only on a change of result: src/agents/node/verifier.ts). */
  updateVerification(results: Record<string, VerificationReport>): void {
    this.verification = results;
    this.schedule();
  }

  private schedule(): void {
    if (!this.timer)
      this.timer = setTimeout(() => void this.flush(), Math.max(0, this.lastAt + this.minGapMs - Date.now()));
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    if (!this.pending) return;
    const body =
      Object.keys(this.verification).length > 0 ? { ...this.pending, verification: this.verification } : this.pending;
    const text = JSON.stringify(body);
    if (text === this.last && Date.now() - this.lastAt < this.refreshMs) return;
    try {
      await this.client.patchNodeAnnotations(this.node, {
        [REPORT_ANNOTATION]: JSON.stringify({ ...body, at: new Date().toISOString() }),
      });
      this.last = text;
      this.lastAt = Date.now();
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, "could not report to the API server; will retry");
      this.timer = setTimeout(() => void this.flush(), 2_000);
    }
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
