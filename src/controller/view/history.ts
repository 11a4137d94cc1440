import type { KubeObject } from "../../api/objects.js";
import type { EgressGatewayStatus } from "../../api/v1alpha1/egress-gateway.js";
import type { EgressPolicyStatus } from "../../api/v1alpha1/egress-policy.js";
import type { PolicyObject } from "../../planner/model.js";
import { policyResource } from "../../planner/resolve.js";
import { TRAFFIC_FRESH_MS } from "../status.js";

/** One change of an instance's health in its EgressGateway's status. */
export interface HealthChange {
  /** When it changed: the status's `since`, or when the sampler first saw it. */
  at: string;
  /** `<gateway>/<instance>` */
  instance: string;
  /** null: the first time this process saw the instance (listed only when it was not Up then). */
  from: string | null;
  to: string;
}

/** The traffic of one policy's egress IP(s) on one instance, over time. */
export interface TrafficSeries {
  /** The policy's egress IPs on the instance (several: a pool that shares the numbers). */
  egressIPs: string[];
  policy: string;
  instance: string;
  /** `[unix ms, bytes per second]`, oldest first. */
  points: [number, number][];
}

export interface HistoryLimits {
  /** Health changes kept (the oldest go first). */
  maxChanges: number;
  /** How far back the traffic series reach. */
  windowMs: number;
  /** Series kept; beyond it a new series replaces the quietest. */
  maxSeries: number;
  /** Points kept per series. */
  maxPoints: number;
}

const DEFAULT_LIMITS: HistoryLimits = { maxChanges: 50, windowMs: 15 * 60_000, maxSeries: 32, maxPoints: 500 };

/**
 * What the live view remembers between requests, in memory and bounded: instance health changes
 * as seen in the gateways' status, and each (policy, instance)'s traffic rate from the policies'
 * `status.traffic.instances` (written by the gateway agents), sampled. Pure: the caller passes
 * the objects and the time. A restarted controller starts with an empty history.
 */
export class ViewHistory {
  private readonly limits: HistoryLimits;
  private readonly health = new Map<string, string>();
  private readonly changes: HealthChange[] = [];
  private readonly traffic = new Map<string, TrafficSeries>();

  constructor(limits: Partial<HistoryLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  observe(input: { gateways: readonly KubeObject[]; policies: readonly KubeObject[] }, now: number): void {
    const seen = new Map<string, { health: string; egressIPs: readonly string[] }>();
    for (const g of input.gateways) {
      const gateway = g.metadata?.name ?? "";
      for (const i of (g.status as EgressGatewayStatus | undefined)?.instances ?? []) {
        const key = `${gateway}/${i.name}`;
        seen.set(key, { health: i.health, egressIPs: i.egressIPs });
        const before = this.health.get(key);
        this.health.set(key, i.health);
        if (before === i.health) continue;
        // At start only what is wrong is news; after that every change but a first judgement
        // (Unknown: no node had reported on the instance yet).
        if ((before === undefined || before === "Unknown") && (i.health === "Up" || i.health === "Unknown")) continue;
        const since = i.since ? Date.parse(i.since) : NaN;
        this.changes.push({
          at: new Date(Number.isFinite(since) ? since : now).toISOString(),
          instance: key,
          from: before ?? null,
          to: i.health,
        });
      }
    }
    for (const key of [...this.health.keys()]) if (!seen.has(key)) this.health.delete(key);
    this.changes.splice(0, Math.max(0, this.changes.length - this.limits.maxChanges));
    this.sampleTraffic(input.policies, seen, now);
  }

  /** Health changes, the latest seen first. */
  failovers(): HealthChange[] {
    return [...this.changes].reverse();
  }

  series(): { windowSeconds: number; series: TrafficSeries[] } {
    return {
      windowSeconds: this.limits.windowMs / 1000,
      series: [...this.traffic.values()]
        .map((s) => ({
          ...s,
          egressIPs: [...s.egressIPs],
          points: s.points.map((p) => [p[0], p[1]] as [number, number]),
        }))
        .sort((a, b) => (a.egressIPs.join() < b.egressIPs.join() ? -1 : 1)),
    };
  }

  /**
   * One point per (policy, instance) entry: its rate while the entry is fresh (as the controller
   * counts it for `status.traffic.bytesPerSecond`), 0 once stale or while every node sees the
   * instance Down (no node sends through it; its last entry would otherwise stand for minutes).
   */
  private sampleTraffic(
    policies: readonly KubeObject[],
    instances: ReadonlyMap<string, { health: string; egressIPs: readonly string[] }>,
    now: number,
  ): void {
    const { windowMs, maxSeries, maxPoints } = this.limits;
    for (const p of policies) {
      const entries = (p.status as EgressPolicyStatus | undefined)?.traffic?.instances ?? [];
      if (entries.length === 0) continue;
      const policy = policyResource({
        ...p,
        metadata: { ...p.metadata, name: p.metadata?.name ?? "" },
      } as PolicyObject);
      const own = (p.spec as { egressIPs?: unknown } | undefined)?.egressIPs;
      const ips = new Set(Array.isArray(own) ? own : []);
      for (const e of entries) {
        const inst = instances.get(e.instance);
        const fresh = now - Date.parse(e.at) <= TRAFFIC_FRESH_MS;
        const value = fresh && inst?.health !== "Down" ? e.bytesPerSecond : 0;
        const key = `${policy}|${e.instance}`;
        let s = this.traffic.get(key);
        if (!s) {
          if (this.traffic.size >= maxSeries && !this.evictQuieterThan(value)) continue;
          s = { egressIPs: [], policy, instance: e.instance, points: [] };
          this.traffic.set(key, s);
        }
        s.egressIPs = (inst?.egressIPs ?? []).filter((ip) => ips.has(ip)).sort();
        s.points.push([now, value]);
        const from = s.points.findIndex((pt) => pt[0] >= now - windowMs);
        s.points.splice(0, Math.max(from === -1 ? s.points.length : from, s.points.length - maxPoints));
      }
    }
    // A policy or instance gone: its series ends, and leaves once its last point is out of the window.
    for (const [key, s] of this.traffic)
      if (s.points.length === 0 || s.points[s.points.length - 1]![0] < now - windowMs) this.traffic.delete(key);
  }

  /** Removes the series whose highest point is lowest, if below `value`; false when none is. */
  private evictQuieterThan(value: number): boolean {
    let quietest: { key: string; peak: number } | undefined;
    for (const [key, s] of this.traffic) {
      const peak = Math.max(0, ...s.points.map((p) => p[1]));
      if (!quietest || peak < quietest.peak) quietest = { key, peak };
    }
    if (!quietest || quietest.peak >= value) return false;
    this.traffic.delete(quietest.key);
    return true;
  }
}
