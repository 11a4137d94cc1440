import type { Logger } from "pino";
import type { ApplyCommit, HealthPort } from "../../dataplane/node-health.js";
import type { HealthView, InstanceHealth } from "../../planner/model.js";
import { BfdThread, type BfdThreadMessage, type BfdThreadOptions } from "./bfd/thread.js";
import type { ProbedInstance, VerdictChange } from "./monitor.js";

/**
 * The node agent's gateway health, all on the BFD thread: sessions, verdicts (HealthMonitor) and
 * the failover they cause, written to the node's table from that thread (FailoverWriter). The
 * agent's own thread may be held for seconds by a reconcile (planning 10,000 pods, parsing their
 * source): a failover made there waited for it, step by step (each nft, ip and conntrack run
 * ended only when that thread was free again: 5-10 s under churn, bench/README.md). Here it
 * does not. The agent keeps a copy of the view (each verdict brings it) for planning, and writes
 * its table through `commitApply`, so the thread knows when an apply that rendered an older view
 * commits and re-asserts the latest at once.
 */
export class HealthThread extends BfdThread implements HealthPort {
  private current: HealthView = new Map();
  private readonly changeListeners: (() => void)[] = [];
  private readonly verdictListeners: ((c: VerdictChange) => void)[] = [];

  constructor(opts: BfdThreadOptions & { failover: NonNullable<BfdThreadOptions["failover"]> }, logger?: Logger) {
    super(opts, logger);
  }

  /** The thread's view as of its last verdict (or `setInstances`). */
  view(): HealthView {
    return this.current;
  }

  latest(): HealthView {
    return this.current;
  }

  /** The failover is this thread's: the node agent hands it its table writes. */
  get failover(): HealthPort {
    return this;
  }

  onChange(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  onVerdict(listener: (c: VerdictChange) => void): void {
    this.verdictListeners.push(listener);
  }

  async setInstances(instances: readonly ProbedInstance[]): Promise<void> {
    const view = (await this.request({ op: "setInstances", instances })) as [string, InstanceHealth][];
    this.current = new Map(view);
  }

  async commitApply(req: ApplyCommit): Promise<void> {
    await this.request({ op: "commitApply", req });
  }

  protected override received(m: Extract<BfdThreadMessage, { kind: "verdict" }>): void {
    this.current = new Map(m.view);
    for (const l of this.verdictListeners) l(m.change);
    for (const l of this.changeListeners) l();
  }
}
