import type { AppUsage, IPUsage } from "../../api/v1alpha1/app.js";

/** One gateway instance's entry in the app's policy status (written by its agent, src/agents/gateway/traffic-report.ts). */
export interface InstanceCounters {
  instance: string;
  counters?: readonly { egressIP: string; bytes: number; packets: number; since?: string }[];
}

/** Usage of at most this many IPs is kept apart; older ones (REMOVED long ago) still count in the app's totals. */
const MAX_IPS = 32;
/** Counters seen per IP: one per instance that carried it (an instance's new counter replaces its old one). */
const MAX_COUNTERS = 16;

/**
 * The app's usage after reading its gateways' counters once more (pure). Each counter's value is
 * absolute (what left through the IP since the kernel counter was created, `since`), so the
 * usage keeps the last value it saw of each counter and adds only what it grew by: reading the
 * same value again (an agent restarted and wrote its entry anew, a resync) adds nothing. A counter
 * with another `since` is a new one (host rebooted, droplet replaced, IP back on the instance)
 * and counts from 0; so does one that went down without saying so (a counter older than the
 * comment). What a counter counted after its last report and before it was replaced is not seen.
 */
export function nextUsage(
  previous: AppUsage | undefined,
  entries: readonly InstanceCounters[],
  current: readonly string[],
  now: string,
): AppUsage | undefined {
  // Counters of IPs the app has now, or whose usage is kept: an entry an agent wrote long ago for
  // an IP whose usage was let go (beyond MAX_IPS) must not count it again from 0.
  const known = new Set([...current, ...(previous?.ips ?? []).map((u) => u.ip)]);
  entries = entries.map((e) => ({ ...e, counters: (e.counters ?? []).filter((c) => known.has(c.egressIP)) }));
  if (!previous && !entries.some((e) => (e.counters?.length ?? 0) > 0)) return undefined;
  const ips: IPUsage[] = (previous?.ips ?? []).map((u) => ({ ...u, counters: [...(u.counters ?? [])] }));
  let bytes = previous?.bytes ?? 0;
  let packets = previous?.packets ?? 0;
  let grew = false;
  for (const e of entries) {
    for (const c of e.counters ?? []) {
      let ip = ips.find((u) => u.ip === c.egressIP);
      if (!ip) {
        ip = { ip: c.egressIP, bytes: 0, packets: 0, since: c.since ?? now, counters: [] };
        ips.push(ip);
      }
      const since = c.since ?? "";
      const seen = ip.counters!.find((s) => s.instance === e.instance);
      const goesOn = seen !== undefined && seen.since === since && c.bytes >= seen.bytes && c.packets >= seen.packets;
      const dBytes = goesOn ? c.bytes - seen.bytes : c.bytes;
      const dPackets = goesOn ? c.packets - seen.packets : c.packets;
      ip.bytes += dBytes;
      ip.packets += dPackets;
      bytes += dBytes;
      packets += dPackets;
      if (dBytes > 0 || dPackets > 0) grew = true;
      ip.counters = [
        { instance: e.instance, since, bytes: c.bytes, packets: c.packets },
        ...ip.counters!.filter((s) => s.instance !== e.instance),
      ].slice(0, MAX_COUNTERS);
    }
  }
  return {
    bytes,
    packets,
    since: previous?.since ?? now,
    updated_at: grew || !previous ? now : previous.updated_at,
    // The most recently begun IPs are kept apart; the totals include every IP's.
    ips: ips.length > MAX_IPS ? [...ips].sort((a, b) => (a.since < b.since ? 1 : -1)).slice(0, MAX_IPS) : ips,
  };
}
