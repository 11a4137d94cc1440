import { request } from "node:http";
import type { Socket } from "node:net";
import type { VerificationReport } from "../../api/node-report.js";
import type { NodeProbe } from "../../planner/model.js";
import type { Logger } from "../../util/log.js";

/*
 * Continuous verification (docs/policies.md "Verification"): for each probe of the plan, an HTTP
 * request from this process, on the policy's source port, to the policy's echo service. The
 * node's nft table sends exactly those packets (this user's socket, that port, that address)
 * through the instance the plan chose, whose gateway SNATs them to the policy's egress IP; the
 * echo service answers with the source it saw.
 */

/** The largest answer read: an echo service says one address. */
const MAX_ANSWER_BYTES = 4096;

/** What one probe asks, and from where. */
export interface ProbeRequest {
  address: string;
  port: number;
  /** The HTTP Host header (the url's host). */
  host: string;
  path: string;
  sourcePort: number;
  /** The node's own address to send from (its InternalIP, the address its gateways accept). */
  localAddress?: string;
  timeoutMs: number;
}

/** The source the far side reported, or why there is none. */
export type ProbeAnswer = { seen: string } | { error: string };

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The address an echo service's answer names: JSON with a string `source`, `ip` or `origin`
 * field, or the bare address as text. Anything else is an error that says what came back.
 */
export function parseEchoAnswer(status: number, body: string): ProbeAnswer {
  if (status < 200 || status > 299) return { error: `the echo service answered HTTP ${status}` };
  const text = body.trim();
  let named: unknown = text;
  if (text.startsWith("{")) {
    try {
      const json = JSON.parse(text) as Record<string, unknown>;
      named = json.source ?? json.ip ?? json.origin;
    } catch {
      return { error: `the answer is not valid JSON: ${JSON.stringify(text.slice(0, 80))}` };
    }
  }
  if (typeof named === "string" && IPV4.test(named.trim())) return { seen: named.trim() };
  return {
    error:
      `the answer names no IPv4 address (JSON with "source", "ip" or "origin", or the bare address): ` +
      JSON.stringify(text.slice(0, 80)),
  };
}

function describeError(e: NodeJS.ErrnoException, r: ProbeRequest): string {
  switch (e.code) {
    case "ECONNREFUSED":
      return `connection to ${r.address}:${r.port} refused`;
    case "ECONNRESET":
      return `connection to ${r.address}:${r.port} reset`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `no route to ${r.address}`;
    case "EADDRINUSE":
    case "EADDRNOTAVAIL":
      return `source port ${r.sourcePort} is taken on this node (${e.code})`;
    default:
      return e.message;
  }
}

/**
 * One HTTP GET, answered within `timeoutMs` or failed. The connection is closed with a reset:
 * a normal close would leave this side in TIME_WAIT for a minute, and the next probe, from the
 * same source port to the same service, could not connect until it ends.
 */
export function probeOnce(r: ProbeRequest): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    let socket: Socket | undefined;
    let done = false;
    const finish = (answer: ProbeAnswer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // Still connecting: nothing to reset (and resetAndDestroy would wait for the connection).
      if (socket && !socket.destroyed && !socket.connecting) socket.resetAndDestroy();
      else {
        socket?.destroy();
        req.destroy();
      }
      resolve(answer);
    };
    const req = request({
      host: r.address,
      port: r.port,
      path: r.path,
      method: "GET",
      setHost: false,
      headers: {
        host: r.port === 80 ? r.host : `${r.host}:${r.port}`,
        accept: "application/json, text/plain",
        "user-agent": "static-egress-verification",
        connection: "close",
      },
      agent: false,
      localPort: r.sourcePort,
      ...(r.localAddress ? { localAddress: r.localAddress } : {}),
    });
    const timer = setTimeout(
      () => finish({ error: `no answer from ${r.address}:${r.port} within ${r.timeoutMs / 1000} s` }),
      r.timeoutMs,
    );
    req.on("socket", (s) => {
      socket = s;
      s.on("error", () => undefined); // reported through the request
    });
    req.on("error", (e) => finish({ error: describeError(e, r) }));
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) finish({ error: `the answer is over ${MAX_ANSWER_BYTES} bytes` });
        else chunks.push(c);
      });
      res.on("end", () => finish(parseEchoAnswer(res.statusCode ?? 0, Buffer.concat(chunks).toString("utf8"))));
      res.on("error", (e) => finish({ error: describeError(e, r) }));
    });
    req.end();
  });
}

export interface VerifierDeps {
  logger: Logger;
  /** After every probe (metrics). */
  onResult?: (policy: string, report: VerificationReport) => void;
  /** When a policy's result changes or goes away (the node report). */
  onChange?: (results: Record<string, VerificationReport>) => void;
  /** A policy's probes stopped (its metrics go). */
  onRemoved?: (policy: string) => void;
  probe?: (r: ProbeRequest) => Promise<ProbeAnswer>;
  now?: () => Date;
  /** 0..1: spreads the first probes of many nodes and policies over a few seconds. */
  random?: () => number;
}

interface Scheduled {
  probe: NodeProbe;
  localAddress: string | undefined;
  key: string;
  timer: NodeJS.Timeout | undefined;
  running: boolean;
  result?: VerificationReport;
}

/** Longest wait before the first probe of a new or changed policy. */
const FIRST_PROBE_SPREAD_MS = 3_000;

/** Runs the plan's probes, each every intervalSeconds, one at a time per policy. */
export class Verifier {
  private readonly scheduled = new Map<string, Scheduled>();
  private stopped = false;

  constructor(private readonly deps: VerifierDeps) {}

  /** The probes of the latest plan; unchanged ones keep their rhythm, changed ones start over soon. */
  update(probes: readonly NodeProbe[], localAddress: string | undefined): void {
    if (this.stopped) return;
    let changed = false;
    const wanted = new Set(probes.map((p) => p.policy));
    for (const [policy, s] of this.scheduled) {
      if (wanted.has(policy)) continue;
      clearTimeout(s.timer);
      this.scheduled.delete(policy);
      this.deps.onRemoved?.(policy);
      changed ||= s.result !== undefined;
    }
    for (const probe of probes) {
      const key = JSON.stringify([probe, localAddress]);
      const old = this.scheduled.get(probe.policy);
      if (old?.key === key) continue;
      clearTimeout(old?.timer);
      const s: Scheduled = {
        probe,
        localAddress,
        key,
        timer: undefined,
        running: old?.running ?? false,
        ...(old?.result ? { result: old.result } : {}),
      };
      this.scheduled.set(probe.policy, s);
      this.schedule(s, (this.deps.random ?? Math.random)() * Math.min(FIRST_PROBE_SPREAD_MS, probe.intervalSeconds * 1000));
    }
    if (changed) this.deps.onChange?.(this.results());
  }

  /** The last result of every probed policy. */
  results(): Record<string, VerificationReport> {
    const out: Record<string, VerificationReport> = {};
    for (const [policy, s] of [...this.scheduled].sort(([a], [b]) => (a < b ? -1 : 1)))
      if (s.result) out[policy] = s.result;
    return out;
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.scheduled.values()) clearTimeout(s.timer);
    this.scheduled.clear();
  }

  private schedule(s: Scheduled, afterMs: number): void {
    s.timer = setTimeout(() => void this.run(s), afterMs);
    s.timer.unref();
  }

  /** One probe; the next is scheduled when it ends (never two at once from one port). */
  private async run(s: Scheduled): Promise<void> {
    if (this.stopped || this.scheduled.get(s.probe.policy) !== s) return;
    if (s.running) return this.schedule(s, 1_000);
    s.running = true;
    const p = s.probe;
    let answer: ProbeAnswer;
    try {
      answer = await (this.deps.probe ?? probeOnce)({
        address: p.address,
        port: p.port,
        host: p.host,
        path: p.path,
        sourcePort: p.sourcePort,
        ...(s.localAddress ? { localAddress: s.localAddress } : {}),
        timeoutMs: p.timeoutSeconds * 1000,
      });
    } catch (e) {
      answer = { error: (e as Error).message };
    } finally {
      s.running = false;
    }
    if (this.stopped || this.scheduled.get(p.policy) !== s) return;
    const report = this.judge(p, answer, s.result);
    const changed = report.since !== s.result?.since;
    s.result = report;
    this.deps.onResult?.(p.policy, report);
    if (changed) {
      const log = report.result === "ok" ? this.deps.logger.info : this.deps.logger.warn;
      log.call(this.deps.logger, { policy: p.policy, ...report }, `verification: ${report.result}`);
      this.deps.onChange?.(this.results());
    }
    this.schedule(s, p.intervalSeconds * 1000);
  }

  private judge(p: NodeProbe, answer: ProbeAnswer, previous: VerificationReport | undefined): VerificationReport {
    const base = { expected: [...p.expected], instance: p.instance };
    const body: Omit<VerificationReport, "since"> =
      "error" in answer
        ? { result: "error", error: answer.error, ...base }
        : { result: p.expected.includes(answer.seen) ? "ok" : "mismatch", seen: answer.seen, ...base };
    const same =
      previous &&
      previous.result === body.result &&
      previous.seen === body.seen &&
      previous.error === body.error &&
      previous.instance === body.instance &&
      previous.expected.join() === body.expected.join();
    return { ...body, since: same ? previous.since : (this.deps.now ?? (() => new Date()))().toISOString() };
  }
}
