import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import type { Lab } from "./lab.js";
import { cliEntry } from "./paths.js";

/** What the sender of a stream saw: datagrams sent, and those the kernel refused to send. */
export interface StreamSent {
  sent: number;
  /** Sends that failed (e.g. no route): lost at the sender, not on the way. */
  sendErrors: { seq: number; code: string }[];
}

/** A bounded UDP stream from a pod to the lab's Internet (1 datagram per `intervalMs`). */
export function startUdpStream(
  lab: Lab,
  pod: string,
  tag: string,
  durationMs: number,
  intervalMs = 1,
): Promise<StreamSent | undefined> {
  return startUdpStreamIn(lab.findPod(pod).netns, tag, durationMs, intervalMs);
}

/** The same from any lab namespace, e.g. a node's (its own and its hostNetwork pods' traffic). */
export function startUdpStreamIn(
  netns: string,
  tag: string,
  durationMs: number,
  intervalMs = 1,
  host?: string,
): Promise<StreamSent | undefined> {
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      netns,
      process.execPath,
      cliEntry(),
      "lab",
      "udp-stream",
      "--tag",
      tag,
      "--interval-ms",
      String(intervalMs),
      "--duration-ms",
      String(durationMs),
      ...(host ? ["--host", host] : []),
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  // The sender's last line says what it sent (undefined if it died before saying so).
  return new Promise((resolve) =>
    child.on("close", () => {
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as StreamSent);
      } catch {
        resolve(undefined);
      }
    }),
  );
}

export interface StreamReport {
  received: number;
  /** Datagrams that reached the Internet with a source outside `allowed`. */
  wrongSource: { src: string; seq: number }[];
  /**
   * Datagrams missing between the first and the last one received (by sequence number): lost on
   * the way. Unlike the longest gap, a sender that stalls on a loaded machine does not count.
   */
  lost: number;
  /** The first missing sequence numbers (at most 20), each with the send time of the one before it. */
  lostSeqs: { seq: number; after: number }[];
  /** The longest time between two consecutive datagrams received (send-time based). */
  longestGapMs: number;
  /** When that gap started (sender's clock, ms). */
  gapStartedAt: number;
  sources: Record<string, number>;
  /** Source of the last datagram received (where the flow ended up). */
  lastSource: string | undefined;
}

/** Reads the Internet host's record of one stream: leaks and the longest interruption. */
export function analyzeStream(
  lab: Lab,
  tag: string,
  allowed: readonly string[],
  window?: { from: number; to: number },
): StreamReport {
  const rows = lab
    .udpRecords()
    .filter((d) => d.payload.startsWith(`${tag} `))
    .map((d) => {
      const [, seq, sent] = d.payload.split(" ");
      return { src: d.src, seq: Number(seq), sent: Number(sent), t: d.t };
    })
    .filter((r) => !window || (r.sent >= window.from && r.sent <= window.to))
    .sort((a, b) => a.seq - b.seq);
  const sources: Record<string, number> = {};
  for (const r of rows) sources[r.src] = (sources[r.src] ?? 0) + 1;
  let longestGapMs = 0;
  let gapStartedAt = 0;
  for (let i = 1; i < rows.length; i++) {
    const gap = rows[i]!.sent - rows[i - 1]!.sent;
    if (gap > longestGapMs) {
      longestGapMs = gap;
      gapStartedAt = rows[i - 1]!.sent;
    }
  }
  const distinct = new Set(rows.map((r) => r.seq)).size;
  const lost = rows.length === 0 ? 0 : rows[rows.length - 1]!.seq - rows[0]!.seq + 1 - distinct;
  const lostSeqs: { seq: number; after: number }[] = [];
  for (let i = 1; i < rows.length && lostSeqs.length < 20; i++)
    for (let seq = rows[i - 1]!.seq + 1; seq < rows[i]!.seq && lostSeqs.length < 20; seq++)
      lostSeqs.push({ seq, after: rows[i - 1]!.sent });
  return {
    received: rows.length,
    lost,
    lostSeqs,
    wrongSource: rows.filter((r) => !allowed.includes(r.src)).map((r) => ({ src: r.src, seq: r.seq })),
    longestGapMs,
    gapStartedAt,
    sources,
    lastSource: rows[rows.length - 1]?.src,
  };
}

/**
 * Sends one small UDP datagram every `intervalMs` for `durationMs` (bounded: it stops by
 * itself). Payload `<tag> <seq> <sent-ms>` lets the sink measure gaps and attribute sources.
 */
export async function udpStream(
  host: string,
  port: number,
  tag: string,
  intervalMs: number,
  durationMs: number,
): Promise<StreamSent> {
  const sock = createSocket("udp4");
  const start = Date.now();
  let seq = 0;
  const sendErrors: StreamSent["sendErrors"] = [];
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (Date.now() - start >= durationMs) {
        clearInterval(timer);
        resolve();
        return;
      }
      const n = seq++;
      sock.send(`${tag} ${n} ${Date.now()}`, port, host, (err) => {
        if (err) sendErrors.push({ seq: n, code: (err as NodeJS.ErrnoException).code ?? err.message });
      });
    }, intervalMs);
  });
  await new Promise((r) => setTimeout(r, 50));
  sock.close();
  return { sent: seq, sendErrors };
}
