/**
 * What a kill did to a flow, from the lab Internet host's record of it: did the flow come back,
 * through which instance, after how long, and did it keep arriving. A failover benchmark that only
 * measures the longest gap in a window cannot tell "failed over in 30 ms" from "never came back"
 * (no datagram at all after the kill is no gap at all); this can.
 */

/** One received datagram of a `<tag> <seq> <sent-ms>` stream (src/lab/traffic.ts). */
export interface Datagram {
  src: string;
  seq: number;
  /** Sender's clock, ms. */
  sent: number;
}

export function streamDatagrams(records: readonly { src: string; payload: string }[], tag: string): Datagram[] {
  return records
    .filter((d) => d.payload.startsWith(`${tag} `))
    .map((d) => {
      const [, seq, sent] = d.payload.split(" ");
      return { src: d.src, seq: Number(seq), sent: Number(sent) };
    })
    .sort((a, b) => a.seq - b.seq);
}

export interface FailoverWindow {
  /** When the instance was killed (ms, same clock as the sender: one machine). */
  killedAt: number;
  /** End of the observation: the flow must have resumed before it. */
  until: number;
  /** Egress IPs of the killed instance, and of the instances that may take over. */
  victim: readonly string[];
  survivors: readonly string[];
}

export interface FailoverOutcome {
  /** A datagram sent after the kill arrived through a surviving instance, and the flow stayed there. */
  resumed: boolean;
  /** Why not, when it did not. */
  failure?: string;
  /** Source of the first datagram through a survivor after the kill. */
  resumedVia?: string;
  /**
   * From the last datagram delivered before the flow resumed to the first one through the
   * survivor (sender's clock). When it did not resume: from the last delivered one to `until`,
   * a lower bound.
   */
  gapMs: number;
  /** Datagrams sent from the resumption to `until` that arrived, and by which source. */
  afterGap: number;
  afterGapBySource: Record<string, number>;
  /** Datagrams missing between the first and the last delivered after the gap (by sequence number). */
  lostAfterGap: number;
  /** The old metric, for comparison: the longest gap between consecutive deliveries in [killedAt - 50, until]. */
  longestGapInWindowMs: number;
  /** Every delivered datagram of the stream whose source is neither the victim's nor a survivor's. */
  wrongSource: number;
  /** The first few of them, with their send time relative to the kill, for diagnosis. */
  wrongExamples: { src: string; seq: number; msAfterKill: number }[];
}

/** A flow whose last delivery is older than this at the end of the window has stopped again. */
const STOPPED_MS = 500;

export function failoverOutcome(datagrams: readonly Datagram[], w: FailoverWindow): FailoverOutcome {
  const rows = [...datagrams].sort((a, b) => a.seq - b.seq);
  const allowed = new Set([...w.victim, ...w.survivors]);
  const survivors = new Set(w.survivors);
  const wrong = rows.filter((r) => !allowed.has(r.src));
  const wrongSource = wrong.length;
  const wrongExamples = wrong.slice(0, 5).map((r) => ({ src: r.src, seq: r.seq, msAfterKill: r.sent - w.killedAt }));
  const inWindow = rows.filter((r) => r.sent >= w.killedAt - 50 && r.sent <= w.until);
  let longestGapInWindowMs = 0;
  for (let i = 1; i < inWindow.length; i++)
    longestGapInWindowMs = Math.max(longestGapInWindowMs, inWindow[i]!.sent - inWindow[i - 1]!.sent);

  const first = rows.findIndex((r) => r.sent > w.killedAt && r.sent <= w.until && survivors.has(r.src));
  const base = { longestGapInWindowMs, wrongSource, wrongExamples };
  if (first < 0) {
    const last = [...rows].reverse().find((r) => r.sent <= w.until);
    return {
      ...base,
      resumed: false,
      failure: `no datagram sent after the kill arrived through a surviving instance (${[...survivors].join(", ")}) within ${w.until - w.killedAt} ms`,
      gapMs: w.until - (last?.sent ?? w.killedAt),
      afterGap: 0,
      afterGapBySource: {},
      lostAfterGap: 0,
    };
  }
  const resumedAt = rows[first]!;
  const before = first > 0 ? rows[first - 1]! : undefined;
  const after = rows.slice(first).filter((r) => r.sent <= w.until);
  const afterGapBySource: Record<string, number> = {};
  for (const r of after) afterGapBySource[r.src] = (afterGapBySource[r.src] ?? 0) + 1;
  const lostAfterGap = after.at(-1)!.seq - resumedAt.seq + 1 - new Set(after.map((r) => r.seq)).size;
  const outcome: FailoverOutcome = {
    ...base,
    resumed: true,
    resumedVia: resumedAt.src,
    gapMs: resumedAt.sent - (before?.sent ?? w.killedAt),
    afterGap: after.length,
    afterGapBySource,
    lostAfterGap,
  };
  // Resumed means it stayed resumed: the last datagram of the window came through a survivor too.
  const last = after.at(-1)!;
  if (!survivors.has(last.src))
    return {
      ...outcome,
      resumed: false,
      failure: `the flow went back to ${last.src} after resuming through ${resumedAt.src}`,
    };
  // ... and kept arriving to the end of the window (a sender on a busy machine may pause briefly).
  if (w.until - last.sent > STOPPED_MS)
    return {
      ...outcome,
      resumed: false,
      failure: `the flow stopped again ${w.until - last.sent} ms before the end of the window`,
    };
  return outcome;
}
