import type { HealthView, NodePlan } from "./model.js";

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

/** Marks keep bits 16-28 (MARK_MASK); the low 16 bits carry the failover instance's id. */
const ID_SHIFT = 16;
const LOW_BITS = 0xffff;

export function divertValue(e: { mark: number; failoverMark?: number }): number {
  const next = e.failoverMark === undefined ? 0 : (e.failoverMark >>> ID_SHIFT) & 0xfff;
  return (e.mark | next) >>> 0;
}

export function withHealth(plan: NodePlan, health: HealthView): NodePlan {
  const instances = plan.instances.map((i) => {
    const route = health.get(i.key) === "down" || !plan.tunnel ? ("blackhole" as const) : ("via" as const);
    return route === i.route ? i : { ...i, route };
  });
  return instances.every((i, n) => i === plan.instances[n]) ? plan : { ...plan, instances };
}

/** Divert value -> the mark its packets take now, for every value the plan's entries program (sorted by value). */
export function failoverMarks(plan: NodePlan): [number, number][] {
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
export function downMarks(plan: NodePlan): number[] {
  return plan.instances.filter((i) => i.route === "blackhole").map((i) => i.mark);
}
