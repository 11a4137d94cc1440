import { MARK_MASK, NO_INSTANCE_MARK } from "../api/datapath.js";
import { downMarks, failoverMarks, withHealth, type FailoverPlan } from "../planner/failover.js";
import type { HealthView, NodePlan } from "../planner/model.js";
import type { Kernel } from "./kernel.js";
import { hex, renderRewrite, type TableModel } from "./nft.js";
import { diffRouting, runBatch, type RouteSpec } from "./routing.js";
import { GATEWAY_INNER, nodeTunnelDevice } from "./tunnel.js";

/**
 * The node table's sets that depend on gateway health alone: `remap` and `down_instances` (instances
 * judged down, and "no instance yet": their packets are dropped and counted, fail-closed). Both
 * small and rewritten whole on a change, by an apply or by a failover.
 */
export function healthSets(plan: FailoverPlan): TableModel["sets"] {
  return [
    {
      kind: "map",
      name: "remap",
      spec: "type mark : mark;",
      elements: failoverMarks(plan).map(([value, mark]) => `${hex(value)} : ${hex(mark)}`),
      replace: true,
    },
    {
      kind: "set",
      name: "down_instances",
      spec: "type mark;",
      elements: [hex(NO_INSTANCE_MARK), ...downMarks(plan).map(hex)],
      replace: true,
    },
  ];
}

/** Each instance's routing table: into the tunnel to it, or a blackhole when it is down (or the node has no tunnel end). */
export function instanceRoutes(plan: Pick<NodePlan, "instances" | "tunnel">): RouteSpec[] {
  return plan.instances.map((i) =>
    i.route === "via" && plan.tunnel
      ? { table: i.table, dst: "default", kind: "via", via: GATEWAY_INNER.address, onlinkDev: nodeTunnelDevice(i.vni) }
      : { table: i.table, dst: "default", kind: "blackhole" },
  );
}

/** One apply's write of the node table, as the failover writer runs it. */
export interface ApplyCommit {
  /** The applied plan's failover part, with the health it was rendered with (`failoverPlan`). */
  plan: FailoverPlan;
  /**
   * The apply's route and rule additions (`ip -batch` lines), run before the nft write. They are
   * rendered with the apply's health: the writer sets an instance whose health changed since right
   * at once (a route written from an older view must not wait for the commit to be corrected).
   */
  routes?: string[];
  /**
   * New chains and maps a delta makes (a divert class appearing), committed on their own before
   * `script`: a new interval map is filled only as its transaction ends (`structureDelta`).
   */
  prelude?: string;
  /** The nft transaction (both node tables); empty when nothing changed. */
  script: string;
  /** A full replacement's handover table: created before `script`, removed after it (also when it fails). */
  handover?: { create: string; remove: string };
}

/**
 * Where failovers are written from, and the one path of the node table's writes: the node's
 * health thread (`src/agents/health/thread.ts`), or `FailoverWriter` on the agent's own thread.
 */
export interface HealthPort {
  /** The latest gateway health (none given yet: undefined, the plan's own stands). */
  latest(): HealthView | undefined;
  /** Runs an apply's nft write, then brings the health sets and routes up to the latest health. */
  commitApply(req: ApplyCommit): Promise<void>;
}

export interface FailoverWriterOptions {
  /** The node's nft table (family ip). */
  table: string;
  /** The command our nft transactions run as (`ownNftCommand`), on any thread. */
  nft?: string;
}

/**
 * Writes gateway health into the node's kernel, ahead of any replan: the last applied plan with
 * the new health (`withHealth`), as the small change it is. In order: `remap` and `down_instances`
 * rewritten in one nft transaction (new packets of a dead instance's pods take their failover
 * instance, or are dropped); the changed instances' routes; then the flows pinned to an instance
 * now down are forgotten (their next packet takes the new mark).
 *
 * It also runs every apply's nft write (`commitApply`), so that it knows when one commits: an
 * apply renders the health of its start, and when health changed meanwhile, the apply's commit
 * would bring the older view back; the writer re-asserts the latest as soon as the commit ends
 * (fail-closed throughout: a dead instance's pods are moved or blocked, never sent with the
 * node's address). While an apply is in flight, a failover writes `remap` for the values of both
 * the applied and the coming plan, so neither's pods find their value missing.
 *
 * Runs on the node agent's health thread (its event loop is never held by a reconcile), or on the
 * agent's own thread where there is none (tests, no `--address`).
 */
export class FailoverWriter implements HealthPort {
  private health: HealthView | undefined;
  /** The plan whose health sets and routes the kernel holds, as far as this writer knows. */
  private held: FailoverPlan | undefined;
  /** The plan of an apply whose nft write is on its way. */
  private pending: FailoverPlan | undefined;
  /** A failover wrote while the pending apply's write was on its way: which landed last is unknown. */
  private raced = false;
  private writing = 0;
  /** Writes run one after another, in the order health changed. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly kernel: Kernel,
    private readonly opts: FailoverWriterOptions,
  ) {}

  latest(): HealthView | undefined {
    return this.health;
  }

  /**
   * New health: written ahead of any apply. Resolves with the instances whose route changed (none
   * before the first apply) and how long each step took.
   */
  setHealth(health: HealthView): Promise<FailoverWrite> {
    this.health = health;
    return this.enqueue(false);
  }

  async commitApply(req: ApplyCommit): Promise<void> {
    this.pending = req.plan;
    this.raced = this.writing > 0;
    try {
      if (req.routes?.length) {
        await runBatch(this.kernel, req.routes);
        if (this.health) {
          const { add } = diffRouting(
            { rules: [], routes: instanceRoutes(withHealth(req.plan, this.health)) },
            { rules: [], routes: instanceRoutes(req.plan) },
          );
          await runBatch(this.kernel, add);
        }
      }
      if (req.prelude) await this.kernel.nft(req.prelude);
      if (req.handover) {
        await this.kernel.nft(req.handover.create);
        try {
          await this.kernel.nft(req.script);
        } finally {
          await this.kernel.nft(req.handover.remove);
        }
      } else if (req.script !== "") await this.kernel.nft(req.script);
    } finally {
      this.pending = undefined;
    }
    this.held = req.plan;
    // Health changed while the apply was on its way: what it wrote may be the older view.
    await this.enqueue(this.raced);
  }

  /** Forgets what the kernel holds (its table was removed). */
  reset(): void {
    this.held = undefined;
  }

  private enqueue(force: boolean): Promise<FailoverWrite> {
    const run = this.queue.then(() => this.write(force));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async write(force: boolean): Promise<FailoverWrite> {
    const started = performance.now();
    const steps: FailoverWrite["steps"] = {};
    // Before the first apply there is no table to write to: that apply renders the latest health.
    const before = this.held && this.pending ? merged(this.held, this.pending) : this.held;
    if (!before || !this.health) return { changed: [], steps };
    const after = withHealth(before, this.health);
    const now = healthSets(after);
    if (force || JSON.stringify(now) !== JSON.stringify(healthSets(before))) {
      if (this.pending) this.raced = true;
      this.writing++;
      try {
        await this.kernel.nft(now.map((x) => renderRewrite("ip", this.opts.table, x)).join(""));
      } finally {
        this.writing--;
      }
      steps.setsMs = Math.round(performance.now() - started);
    }
    this.held = after;
    const changed = after.instances.filter((i, n) => i.route !== before.instances[n]?.route);
    const { add } = diffRouting(
      { rules: [], routes: instanceRoutes(after) },
      { rules: [], routes: force ? [] : instanceRoutes(before) },
    );
    if (add.length > 0) {
      await runBatch(this.kernel, add);
      steps.routesMs = Math.round(performance.now() - started);
    }
    // Forgotten after the remap: a flow's next packet takes the new mark.
    const down = new Set(downMarks(before));
    const newlyDown = downMarks(after).filter((m) => !down.has(m));
    if (newlyDown.length > 0) {
      await this.kernel.deleteFlows(newlyDown.map((m) => ["--mark", `${hex(m)}/${hex(MARK_MASK)}`]));
      steps.flowsMs = Math.round(performance.now() - started);
    }
    return { changed: changed.map((i) => i.key), steps };
  }
}

/** What one failover write did: the instances whose route changed, and when each step ended (ms from its start). */
export interface FailoverWrite {
  changed: string[];
  steps: { setsMs?: number; routesMs?: number; flowsMs?: number };
}

/** The applied plan and the coming one together: every divert value of both, each instance once (as the kernel holds it). */
function merged(held: FailoverPlan, pending: FailoverPlan): FailoverPlan {
  const keys = new Set(held.instances.map((i) => i.key));
  const tunnel = pending.tunnel ?? held.tunnel;
  return {
    instances: [...held.instances, ...pending.instances.filter((i) => !keys.has(i.key))],
    ...(tunnel ? { tunnel } : {}),
    entries: [...held.entries, ...pending.entries],
  };
}
