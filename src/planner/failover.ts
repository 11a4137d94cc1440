import type { DivertEntry, HealthView, NodePlan } from "./model.js";

/**
 * Failing over ahead of a full reconcile. A node plan is made with one view of gateway health;
 * when that view changes, the node first applies this small change (no pod replanned) and
 * replans afterwards:
 *
 * - `withHealth`: the plan with each instance's route as `health` says (a dead instance's table
 *   becomes a blackhole, a revived one's a route again). Entries are left as planned.
 * - `failoverMarks`: for each divert value the node programs (`divertValue`: an entry's mark and,
 *   in the low 16 bits, the id of its failover instance), the mark its packets take: the entry's
 *   own while its instance is up; else its failover instance's while that one is up; else its
 *   own again, which the node drops (its mark is in `down_instances`, its table a blackhole).
 *   Fail-closed: a pod never falls to the node's IP here; a FallbackToNodeIP policy's pods wait
 *   for the replan.
 */

/**
 * What failing over needs of a node plan: its instances, its tunnel end, and its entries' marks
 * (one per divert value is enough). Small: the node's health thread keeps the last applied one.
 */
export interface FailoverPlan {
  instances: NodePlan["instances"];
  tunnel?: NodePlan["tunnel"];
  entries: readonly Pick<DivertEntry, "mark" | "failoverMark">[];
}

/** The plan's failover part, one entry per divert value (a plan of 10,000 pods has a few). */
export function failoverPlan(plan: FailoverPlan): FailoverPlan {
  const entries = new Map<number, Pick<DivertEntry, "mark" | "failoverMark">>();
  for (const e of plan.entries)
    if (!entries.has(divertValue(e)))
      entries.set(
        divertValue(e),
        e.failoverMark === undefined ? { mark: e.mark } : { mark: e.mark, failoverMark: e.failoverMark },
      );
  return {
    instances: plan.instances,
    ...(plan.tunnel ? { tunnel: plan.tunnel } : {}),
    entries: [...entries.values()],
  };
}

/** Marks keep bits 16-28 (MARK_MASK); the low 16 bits carry the failover instance's id. */
const ID_SHIFT = 16;
const LOW_BITS = 0xffff;

export function divertValue(e: { mark: number; failoverMark?: number }): number {
  const next = e.failoverMark === undefined ? 0 : (e.failoverMark >>> ID_SHIFT) & 0xfff;
  return (e.mark | next) >>> 0;
}

export function withHealth<P extends FailoverPlan>(plan: P, health: HealthView): P {
  const instances = plan.instances.map((i) => {
    const route = health.get(i.key) === "down" || !plan.tunnel ? ("blackhole" as const) : ("via" as const);
    return route === i.route ? i : { ...i, route };
  });
  return instances.every((i, n) => i === plan.instances[n]) ? plan : { ...plan, instances };
}

/** Divert value -> the mark its packets take now, for every value the plan's entries program (sorted by value). */
export function failoverMarks(plan: FailoverPlan): [number, number][] {
  const up = new Set(plan.instances.filter((i) => i.route === "via").map((i) => i.mark));
  const known = new Set(plan.instances.map((i) => i.mark));
  const out = new Map<number, number>();
  for (const e of plan.entries) {
    const value = divertValue(e);
    if (out.has(value)) continue;
    const own = (value & ~LOW_BITS) >>> 0;
    const next = e.failoverMark;
    const failover = !up.has(own) && known.has(own) && next !== undefined && up.has(next);
    out.set(value, failover ? next : own);
  }
  return [...out].sort((a, b) => a[0] - b[0]);
}

/** Marks of the plan's instances that are down (their packets are dropped, fail-closed). */
export function downMarks(plan: FailoverPlan): number[] {
  return plan.instances.filter((i) => i.route === "blackhole").map((i) => i.mark);
}
