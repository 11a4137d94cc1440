import type { MeterReading } from "../../dataplane/meter.js";
import type { KubeClient } from "../../kube/client.js";
import type { Logger } from "../../util/log.js";

export interface PolicyTotals {
  bytes: number;
  packets: number;
}

/** Per policy: every egress IP's and direction's counts together. */
export function totalsByPolicy(readings: readonly MeterReading[]): Map<string, PolicyTotals> {
  const totals = new Map<string, PolicyTotals>();
  for (const r of readings) {
    const t = totals.get(r.policy) ?? { bytes: 0, packets: 0 };
    totals.set(r.policy, { bytes: t.bytes + r.bytes, packets: t.packets + r.packets });
  }
  return totals;
}

/**
 * Rates between two readings, per policy present in both. A count that went down (a counter
 * created anew: host reboot, IP moved) gives no rate this round rather than a wrong one.
 */
export function ratesBetween(
  before: ReadonlyMap<string, PolicyTotals>,
  after: ReadonlyMap<string, PolicyTotals>,
  seconds: number,
): Map<string, { bytesPerSecond: number; packetsPerSecond: number }> {
  const rates = new Map<string, { bytesPerSecond: number; packetsPerSecond: number }>();
  if (seconds <= 0) return rates;
  for (const [policy, b] of after) {
    const a = before.get(policy);
    if (!a || b.bytes < a.bytes || b.packets < a.packets) continue;
    rates.set(policy, {
      bytesPerSecond: Math.round((b.bytes - a.bytes) / seconds),
      packetsPerSecond: Math.round((b.packets - a.packets) / seconds),
    });
  }
  return rates;
}

/** What left (direction out) through one egress IP of the instance since its kernel counter was created. */
export interface IPCounter {
  egressIP: string;
  bytes: number;
  packets: number;
  /** When the counter was created (absent: not known, a counter older than the comment). */
  since?: string;
}

/** A policy's counters as they are (absolute values: whoever reads them twice never adds twice). */
export function countersOf(readings: readonly MeterReading[], policy: string): IPCounter[] {
  return readings
    .filter((r) => r.policy === policy && r.direction === "out")
    .map((r) => ({ egressIP: r.egressIP, bytes: r.bytes, packets: r.packets, ...(r.since ? { since: r.since } : {}) }))
    .sort((a, b) => (a.egressIP < b.egressIP ? -1 : a.egressIP > b.egressIP ? 1 : 0));
}

/** `EgressPolicy/<ns>/<name>` or `ClusterEgressPolicy/<name>` as the API's coordinates. */
export function policyRef(
  resource: string,
): { kind: "EgressPolicy" | "ClusterEgressPolicy"; namespace: string | undefined; name: string } | undefined {
  const parts = resource.split("/");
  if (parts[0] === "EgressPolicy" && parts.length === 3)
    return { kind: "EgressPolicy", namespace: parts[1], name: parts[2]! };
  if (parts[0] === "ClusterEgressPolicy" && parts.length === 2)
    return { kind: "ClusterEgressPolicy", namespace: undefined, name: parts[1]! };
  return undefined;
}

/**
 * Writes this instance's recent traffic into each policy's status (`status.traffic.instances`,
 * its own entry): the rate, and each egress IP's counter as it is (what left through it since the
 * counter was created; an App's usage is read from these, docs/apps.md#usage). Once per interval,
 * and only for a policy whose rate changed, or an App's policy whose counts changed (its usage
 * stays within one interval), or every `refreshIntervals` intervals (so that the controller can
 * tell a fresh zero from a silent instance). At most one write per policy and interval: bounded
 * by the number of policies.
 */
export class TrafficReporter {
  private last: { at: number; totals: Map<string, PolicyTotals> } | undefined;
  private readonly written = new Map<string, { rate: string; round: number }>();
  private round = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      client: Pick<KubeClient, "applyInstanceTraffic">;
      instance: string;
      read: () => Promise<MeterReading[]>;
      logger: Logger;
      intervalMs: number;
      refreshIntervals?: number;
      now?: () => number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(
      () =>
        void this.tick().catch((e: unknown) =>
          this.deps.logger.warn({ err: (e as Error).message }, "traffic report failed"),
        ),
      this.deps.intervalMs,
    );
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async tick(): Promise<void> {
    const now = (this.deps.now ?? Date.now)();
    const readings = await this.deps.read();
    const totals = totalsByPolicy(readings);
    const before = this.last;
    this.last = { at: now, totals };
    if (!before) return;
    this.round++;
    const at = new Date(now).toISOString();
    for (const [policy, rate] of ratesBetween(before.totals, totals, (now - before.at) / 1000)) {
      const ref = policyRef(policy);
      if (!ref) continue;
      const counters = countersOf(readings, policy);
      const app = readings.some((r) => r.policy === policy && r.app !== undefined);
      const key = `${rate.bytesPerSecond}/${rate.packetsPerSecond}${app ? JSON.stringify(counters) : ""}`;
      const prev = this.written.get(policy);
      if (prev && prev.rate === key && this.round - prev.round < (this.deps.refreshIntervals ?? 5)) continue;
      try {
        await this.deps.client.applyInstanceTraffic(ref.kind, ref.namespace, ref.name, {
          instance: this.deps.instance,
          ...rate,
          at,
          counters,
        });
        this.written.set(policy, { rate: key, round: this.round });
      } catch (e) {
        // A policy deleted meanwhile, or the API away: the next interval tries again.
        this.deps.logger.debug({ policy, err: (e as Error).message }, "could not write traffic");
      }
    }
  }
}
