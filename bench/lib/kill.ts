import type { GatewayDeath, Lab } from "../../src/lab/lab.js";
import { failoverOutcome, streamDatagrams, type FailoverOutcome } from "./failover.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Kills the gateway instance a running stream (`tag`) arrives through, waits out the observation
 * window and the stream, and judges the failover from the Internet's record: whether the flow
 * resumed through a survivor, the gap, and datagrams with a source outside `allowed`.
 */
export async function killInstanceInUse(
  lab: Lab,
  opts: { tag: string; stream: Promise<unknown>; kind: GatewayDeath; allowed: readonly string[]; observeMs: number },
): Promise<{ victim: string; killedAt: number; outcome: FailoverOutcome }> {
  const current = streamDatagrams(lab.udpRecords(), opts.tag).at(-1)!.src;
  const victim = lab.topology.gatewayHosts.find((g) => g.egressIPs.includes(current));
  if (!victim) throw new Error(`${opts.tag}: the flow arrives from ${current}, which no gateway instance holds`);
  const victimIPs = opts.allowed.filter((ip) => victim.egressIPs.includes(ip));
  const survivors = opts.allowed.filter((ip) => !victimIPs.includes(ip));
  const killedAt = Date.now();
  await lab.killGateway(victim.name, opts.kind);
  await sleep(Math.max(0, killedAt + opts.observeMs - Date.now()));
  await opts.stream;
  const outcome = failoverOutcome(streamDatagrams(lab.udpRecords(), opts.tag), {
    killedAt,
    until: killedAt + opts.observeMs,
    victim: victimIPs,
    survivors,
  });
  return { victim: victim.name, killedAt, outcome };
}
