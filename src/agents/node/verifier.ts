import { connect } from "node:net";
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

/** A complete HTTP/1.x response in `buf`, "incomplete" (more to come), or what is wrong with it. `closed`: no more will come. */
export function readHttpResponse(
  buf: Buffer,
  closed: boolean,
): { status: number; body: string } | "incomplete" | string {
  const headEnd = buf.indexOf("\r\n\r\n");
  if (headEnd < 0) return closed ? "the connection closed before a complete HTTP answer" : "incomplete";
  const [statusLine = "", ...lines] = buf.subarray(0, headEnd).toString("latin1").split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1];
  if (!status) return `not an HTTP answer: ${JSON.stringify(statusLine.slice(0, 40))}`;
  const headers = new Map(
    lines.map((l) => [
      l
        .slice(0, Math.max(0, l.indexOf(":")))
        .trim()
        .toLowerCase(),
      l.slice(l.indexOf(":") + 1).trim(),
    ]),
  );
  let rest = buf.subarray(headEnd + 4);
  const done = (body: Buffer) => ({ status: Number(status), body: body.toString("utf8") });
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const chunks: Buffer[] = [];
    for (;;) {
      const eol = rest.indexOf("\r\n");
      if (eol < 0) break;
      const size = parseInt(rest.subarray(0, eol).toString("latin1"), 16);
      if (Number.isNaN(size)) return "a malformed chunked answer";
      if (size === 0) return done(Buffer.concat(chunks));
      if (rest.length < eol + 2 + size + 2) break;
      chunks.push(rest.subarray(eol + 2, eol + 2 + size));
      rest = rest.subarray(eol + 2 + size + 2);
    }
    return closed ? "the connection closed before the end of the answer" : "incomplete";
  }
  const length = headers.get("content-length");
  if (length !== undefined) {
    const n = Number(length);
    if (rest.length >= n) return done(rest.subarray(0, n));
    return closed ? "the connection closed before the end of the answer" : "incomplete";
  }
  return closed ? done(rest) : "incomplete";
}

/**
 * One HTTP GET, answered within `timeoutMs` or failed. Spoken over a plain socket, which this
 * side closes with a reset as soon as the answer is complete: a normal close would leave it in
 * TIME_WAIT for a minute, and the next probe, from the same source port to the same service,
 * could not connect until that ends.
 */
export function probeOnce(r: ProbeRequest): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    let done = false;
    let received = Buffer.alloc(0);
    const socket = connect({
      host: r.address,
      port: r.port,
      localPort: r.sourcePort,
      ...(r.localAddress ? { localAddress: r.localAddress } : {}),
    });
    const finish = (answer: ProbeAnswer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // Still connecting: nothing to reset (and resetAndDestroy would wait for the connection).
      if (!socket.destroyed && !socket.connecting) socket.resetAndDestroy();
      else socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(
      () => finish({ error: `no answer from ${r.address}:${r.port} within ${r.timeoutMs / 1000} s` }),
      r.timeoutMs,
    );
    const judge = (closed: boolean) => {
      if (received.length > MAX_ANSWER_BYTES) return finish({ error: `the answer is over ${MAX_ANSWER_BYTES} bytes` });
      const res = readHttpResponse(received, closed);
      if (res === "incomplete") return;
      finish(typeof res === "string" ? { error: res } : parseEchoAnswer(res.status, res.body));
    };
    socket.on("connect", () => {
      const host = r.port === 80 ? r.host : `${r.host}:${r.port}`;
      socket.write(
        `GET ${r.path} HTTP/1.1\r\nHost: ${host}\r\nAccept: application/json, text/plain\r\n` +
          `User-Agent: static-egress-verification\r\nConnection: close\r\n\r\n`,
      );
    });
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      judge(false);
    });
    socket.on("end", () => judge(true));
    socket.on("error", (e) => finish({ error: describeError(e, r) }));
    socket.on("close", () => judge(true));
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
  result?: VerificationReport;
}

/** Longest wait before the first probe of a new or changed policy. */
const FIRST_PROBE_SPREAD_MS = 3_000;

/** Runs the plan's probes, each every intervalSeconds, one at a time per policy. */
export class Verifier {
  private readonly scheduled = new Map<string, Scheduled>();
  /** Policies whose probe is under way (also one of a plan that changed meanwhile: they share the port). */
  private readonly busy = new Set<string>();
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
        ...(old?.result ? { result: old.result } : {}),
      };
      this.scheduled.set(probe.policy, s);
      this.schedule(
        s,
        (this.deps.random ?? Math.random)() * Math.min(FIRST_PROBE_SPREAD_MS, probe.intervalSeconds * 1000),
      );
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
    const p = s.probe;
    if (this.busy.has(p.policy)) return this.schedule(s, 1_000);
    this.busy.add(p.policy);
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
      this.busy.delete(p.policy);
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
