/**
 * Failover under load (issue #16 goal 4): node1's agent programs 10,000 synthetic pods on node1
 * and is made to reprogram all of them about once a second (its source alternates between two
 * disjoint pod sets, so every reconcile removes 10,000 pods and adds 10,000 others), while a
 * selected pod on node1 streams UDP at 1 kHz and the gateway instance its flow uses is killed
 * (its software dies: agent and health responder). Per kill: did the flow resume through the
 * other instance, the gap (sender's clock) from the last delivery to the first through the
 * survivor, and datagrams with a source other than the policy's egress IPs (must be 0). Run at
 * BFD 100 ms × 3 and 50 ms × 3 (node1's health timing, from its source). Health checking runs on
 * the agent's BFD thread (src/agents/health/bfd/thread.ts); the churn keeps its main thread busy.
 *
 * Only node1's agent reads the big source (its own file); the other agents read the lab's file.
 *
 *   sudo npx tsx bench/failover-under-load.ts [--kills 10] [--pods 10000] [--churn-ms 1000] [--death agent]
 *     [--out file] [--max-seconds 900] [--agent-log file]
 */
import { parseArgs } from "node:util";
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { exampleLabConfig } from "../test/lab/support.js";
import { Lab, waitFor, LAB_METRICS_PORT, HOST_DEATHS, type GatewayDeath } from "../src/lab/lab.js";
import { newRunPrefix } from "../src/lab/netns.js";
import { startUdpStream } from "../src/lab/traffic.js";
import type { KubeObject } from "../src/api/objects.js";
import { formatIPv4, parseIPv4 } from "../src/util/ipv4.js";
import { requireRoot } from "./lib/env.js";
import { streamDatagrams, type FailoverOutcome } from "./lib/failover.js";
import { guarded } from "./lib/guard.js";
import { killInstanceInUse } from "./lib/kill.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { percentile, roundSummary, summarize } from "./lib/stats.js";

const { values } = parseArgs({
  options: {
    kills: { type: "string", default: "10" },
    pods: { type: "string", default: "10000" },
    out: { type: "string", default: defaultResultPath("failover-under-load") },
    "max-seconds": { type: "string", default: "900" },
    "churn-ms": { type: "string", default: "1000" },
    death: { type: "string", default: "agent" },
    "agent-log": { type: "string" },
  },
});
const KILLS = Number(values.kills);
const PODS = Number(values.pods);
const MAX_SECONDS = Number(values["max-seconds"]);
if (!Number.isInteger(KILLS) || KILLS < 1 || KILLS > 50) throw new Error("--kills must be an integer from 1 to 50");
if (!Number.isInteger(PODS) || PODS < 0 || PODS > 16_000) throw new Error("--pods must be an integer from 0 to 16000");
if (!Number.isFinite(MAX_SECONDS) || MAX_SECONDS < 60) throw new Error("--max-seconds must be at least 60");
const OUT = values.out;
/** Where to copy node1's agent log before the lab goes (its timestamps explain a slow failover). */
const AGENT_LOG = values["agent-log"];
/** How the instance dies (src/lab/lab.ts): "agent" (software killed; the kernel still forwards), "link", "silent". */
const DEATH = values.death as GatewayDeath;
if (!HOST_DEATHS.includes(DEATH)) throw new Error(`--death must be one of ${HOST_DEATHS.join(", ")}`);
/** How often node1's source flips between the two sets (0: never; the pods stay, unbound, and are re-checked every second). */
const CHURN_MS = Number(values["churn-ms"]);
if (!Number.isInteger(CHURN_MS) || (CHURN_MS !== 0 && CHURN_MS < 200))
  throw new Error("--churn-ms must be 0 or at least 200");

const POD = "payments/pay-1";
const NODE = "node1";
const ALLOWED = ["192.0.2.10", "192.0.2.20"];
const HOLD_DOWN_MS = 500;
/** Two disjoint synthetic pod sets, inside the cluster's pod CIDR and clear of the lab nodes' /24s. */
const SET_BASES = ["10.244.128.0", "10.244.192.0"];
/** After a revive: BFD set-up plus the hold-down, before the next kill (reconciles are slow here). */
const SETTLE_MS = 4_000;
const ARRIVE_MS = 3_000;
const OBSERVE_MS = 3_000;
const TIMINGS = [
  { intervalMs: 100, multiplier: 3, goalP99Ms: 400 },
  { intervalMs: 50, multiplier: 3, goalP99Ms: 200 },
] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => process.stderr.write(`${line}\n`);

function syntheticPods(count: number, base: string, set: number): KubeObject[] {
  const b = parseIPv4(base);
  return Array.from({ length: count }, (_, i) => {
    const ip = formatIPv4(b + i);
    return {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: `load-${set}-${i}`, namespace: "payments", labels: { app: "checkout" } },
      spec: { nodeName: NODE },
      status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
    };
  });
}

/** node1's source: the lab's objects with node1's health timing, plus one synthetic pod set. */
function sourceText(lab: Lab, policies: KubeObject[], timing: (typeof TIMINGS)[number], set: number): string {
  const objects = lab.objects(policies).map((o) =>
    o.kind === "EgressGateway"
      ? {
          ...o,
          spec: {
            ...(o.spec as object),
            health: { intervalMs: timing.intervalMs, multiplier: timing.multiplier, holdDownMs: HOLD_DOWN_MS },
          },
        }
      : o,
  );
  return [...objects, ...syntheticPods(PODS, SET_BASES[set]!, set)].map((o) => stringify(o)).join("---\n");
}

function atomicWrite(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

/** node1's agent, restarted on its own source file (same arguments as the lab's, other `--source`). */
function startLoadedNodeAgent(lab: Lab, file: string): void {
  const n = lab.topology.nodes.find((x) => x.name === NODE)!;
  lab.killProcess(`agent-${NODE}`);
  lab.startProcess(`agent-${NODE}`, n.netns, [
    "agent",
    "node",
    "--node",
    n.name,
    "--address",
    n.vpcIP,
    "--metrics-port",
    String(LAB_METRICS_PORT),
    "--static-routes",
    "--source",
    file,
    "--config",
    join(lab.dir, "agent-config.yaml"),
  ]);
}

interface Programmed {
  at: number;
  entries: number;
  durationMs: number;
}

/** node1's agent's "datapath programmed" lines (JSON log) since `since`. */
function programmedSince(lab: Lab, since: number): Programmed[] {
  const text = readFileSync(join(lab.dir, "logs", `agent-${NODE}.log`), "utf8");
  const out: Programmed[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes("datapath programmed")) continue;
    try {
      const j = JSON.parse(line) as { time?: number; entries?: number; durationMs?: number };
      if ((j.time ?? 0) >= since) out.push({ at: j.time ?? 0, entries: j.entries ?? 0, durationMs: j.durationMs ?? 0 });
    } catch {
      // a partly written line
    }
  }
  return out;
}

/** Whether node1's agent judges every gateway instance up now (its last verdict per instance, from its log). */
function allUpOnNode(lab: Lab): boolean {
  const text = readFileSync(join(lab.dir, "logs", `agent-${NODE}.log`), "utf8");
  const last = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (!line.includes("gateway instance")) continue;
    try {
      const j = JSON.parse(line) as { msg?: string; key?: string; to?: string };
      if (j.key && (j.msg === "gateway instance up" || j.msg === "gateway instance down")) last.set(j.key, j.to ?? "");
    } catch {
      // a partly written line
    }
  }
  return last.size > 0 && [...last.values()].every((v) => v === "up");
}

interface KillSample extends FailoverOutcome {
  victim: string;
  /** When the instance was killed (ms since the epoch): to find the failover in node1's log. */
  killedAt: number;
}

async function killOnce(
  lab: Lab,
  tag: string,
  label: string,
  revivePrevious: () => Promise<void>,
): Promise<{ sample?: KillSample; notArriving?: { received: number }; revive: () => Promise<void> }> {
  lab.clearUdpRecords();
  await revivePrevious();
  const spawnedAt = Date.now();
  const stream = startUdpStream(lab, POD, tag, SETTLE_MS + ARRIVE_MS + OBSERVE_MS);
  await sleep(SETTLE_MS);
  const arriving = await waitFor(
    () => streamDatagrams(lab.udpRecords(), tag).length > 100,
    Math.max(1, spawnedAt + SETTLE_MS + ARRIVE_MS - Date.now()),
    "",
    50,
  ).then(
    () => true,
    () => false,
  );
  // The survivor must be up on node1 (the revived instance's BFD and hold-down may take longer
  // than SETTLE_MS under load): a kill with the other instance still down measures that, not the failover.
  const bothUp =
    arriving &&
    (await waitFor(() => allUpOnNode(lab), Math.max(1, spawnedAt + SETTLE_MS + ARRIVE_MS - Date.now()), "", 50).then(
      () => true,
      () => false,
    ));
  if (!bothUp) {
    await stream;
    const received = streamDatagrams(lab.udpRecords(), tag).length;
    const why = arriving ? "an instance was not up on node1 yet" : "the flow did not arrive with both instances up";
    log(`${label}: NOT KILLED: ${why} (${received} datagrams in the end)`);
    return { notArriving: { received }, revive: async () => undefined };
  }
  const { victim, killedAt, outcome } = await killInstanceInUse(lab, {
    tag,
    stream,
    kind: DEATH,
    allowed: ALLOWED,
    observeMs: OBSERVE_MS,
  });
  const verdict = outcome.resumed
    ? `resumed via ${outcome.resumedVia} after ${outcome.gapMs} ms`
    : `FAILED: ${outcome.failure}`;
  log(`${label} (${victim}): ${verdict}; wrong source ${outcome.wrongSource}`);
  return { sample: { victim, killedAt, ...outcome }, revive: () => lab.reviveGateway(victim) };
}

async function main(): Promise<void> {
  requireRoot();
  const run = await startRun("failover-under-load", {
    kills: KILLS,
    pods: PODS,
    death: DEATH,
    timings: TIMINGS,
    holdDownMs: HOLD_DOWN_MS,
    churnMs: CHURN_MS,
    settleMs: SETTLE_MS,
    observeMs: OBSERVE_MS,
    maxSeconds: MAX_SECONDS,
    out: OUT,
  });
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.health = { intervalMs: 100, multiplier: 3, holdDownMs: HOLD_DOWN_MS };
  let lab: Lab | undefined;
  let churn: NodeJS.Timeout | undefined;
  const results = await guarded(
    async () => {
      if (churn) clearInterval(churn);
      await lab?.down();
    },
    async () => {
      lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false });
      const l = lab;
      await waitFor(async () => (await l.status()).every((r) => r.ok), 60_000, "lab did not converge", 500);
      const file = join(l.dir, `${NODE}-loaded.yaml`);
      const policies = await l.currentPolicies();
      const out: Record<string, unknown> = {};
      for (const timing of TIMINGS) {
        const name = `${timing.intervalMs}ms x ${timing.multiplier}`;
        const texts = [0, 1].map((s) => sourceText(l, policies, timing, s));
        atomicWrite(file, texts[0]!);
        startLoadedNodeAgent(l, file);
        // The agent has programmed the first set (and, with it, pay-1) before the kills start.
        const startedAt = Date.now();
        await waitFor(
          () => PODS === 0 || programmedSince(l, startedAt).some((p) => p.entries >= PODS),
          120_000,
          `node1's agent did not program the ${PODS} pods`,
          500,
        );
        log(`${name}: node1 programmed ${PODS} pods in ${Date.now() - startedAt} ms (start)`);
        let set = 0;
        let flips = 0;
        const maxFlips =
          CHURN_MS === 0 ? 0 : Math.ceil((KILLS * (SETTLE_MS + ARRIVE_MS + OBSERVE_MS + 5_000)) / CHURN_MS);
        const churnFrom = Date.now();
        churn = setInterval(() => {
          if (flips >= maxFlips) return;
          set = 1 - set;
          flips++;
          atomicWrite(file, texts[set]!);
        }, CHURN_MS || 1_000);
        const samples: KillSample[] = [];
        let notArriving = 0;
        let revive = async () => undefined as void;
        for (let i = 0; i < KILLS; i++) {
          const r = await killOnce(l, `load-${timing.intervalMs}-${i}`, `${name} kill ${i + 1}/${KILLS}`, revive);
          if (r.sample) samples.push(r.sample);
          else notArriving++;
          revive = r.revive;
        }
        clearInterval(churn);
        churn = undefined;
        const reconciles = programmedSince(l, churnFrom);
        await revive();
        await sleep(SETTLE_MS);
        const ok = samples.filter((s) => s.resumed);
        const gaps = ok.map((s) => s.gapMs);
        out[name] = {
          goalP99Ms: timing.goalP99Ms,
          kills: samples.length,
          resumed: ok.length,
          failed: samples.length - ok.length,
          notArrivingBeforeKill: notArriving,
          gapMs: { ...roundSummary(summarize(gaps)), p95: percentile(gaps, 95), p99: percentile(gaps, 99) },
          // A flow that did not resume: its gap is at least this (last delivery to the end of the window).
          failedGapLowerBoundMs: roundSummary(summarize(samples.filter((s) => !s.resumed).map((s) => s.gapMs))),
          wrongSource: samples.reduce((n, s) => n + s.wrongSource, 0),
          // What the churn made node1's agent do meanwhile (its "datapath programmed" log lines).
          load: {
            sourceFlips: flips,
            reconciles: reconciles.length,
            entries: roundSummary(summarize(reconciles.map((p) => p.entries))),
            reconcileMs: roundSummary(summarize(reconciles.map((p) => p.durationMs))),
          },
          samples,
        };
        const o = out[name] as { gapMs: { median: number; p95: number; p99: number; max: number } };
        log(
          `${name}: ${ok.length}/${samples.length} resumed; gap p50 ${o.gapMs.median} p95 ${o.gapMs.p95} ` +
            `p99 ${o.gapMs.p99} max ${o.gapMs.max} ms; ${reconciles.length} reconciles during the kills`,
        );
      }
      if (AGENT_LOG) copyFileSync(join(l.dir, "logs", `agent-${NODE}.log`), AGENT_LOG);
      return out;
    },
    { maxSeconds: MAX_SECONDS, log },
  );
  const all = Object.values(results) as { failed: number; wrongSource: number; notArrivingBeforeKill: number }[];
  const summary = {
    failedFailovers: all.reduce((n, r) => n + r.failed, 0),
    notArrivingBeforeKill: all.reduce((n, r) => n + r.notArrivingBeforeKill, 0),
    wrongSourceTotal: all.reduce((n, r) => n + r.wrongSource, 0),
  };
  writeResults(OUT, run, {
    settings: {
      lab: "examples/lab.yaml",
      pod: POD,
      egressIPs: ALLOWED,
      streamIntervalMs: 1,
      death: DEATH,
      load:
        `${PODS} synthetic checkout pods on ${NODE} in node1's source, ` +
        (CHURN_MS > 0
          ? `alternating every ${CHURN_MS} ms between two disjoint sets (${SET_BASES.join(", ")})`
          : `held at one set (${SET_BASES[0]}) during the kills`),
    },
    summary,
    results,
  });
  process.stdout.write(`${table(results)}\n\n${JSON.stringify(summary)}\nwrote ${OUT}\n`);
  if (summary.failedFailovers > 0 || summary.wrongSourceTotal > 0) process.exitCode = 2;
}

function table(results: Record<string, unknown>): string {
  const lines = [
    "| BFD | kills | resumed | gap p50 | p95 | p99 | max | goal p99 | wrong source | reconciles during kills (median ms) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const [name, v] of Object.entries(results)) {
    const r = v as {
      goalP99Ms: number;
      kills: number;
      resumed: number;
      gapMs: { median: number; p95: number; p99: number; max: number };
      wrongSource: number;
      load: { reconciles: number; reconcileMs: { median: number } };
    };
    const gap = `${r.gapMs.median} | ${r.gapMs.p95} | ${r.gapMs.p99} | ${r.gapMs.max}`;
    const load = `${r.load.reconciles} (${r.load.reconcileMs.median})`;
    lines.push(`| ${name} | ${r.kills} | ${r.resumed} | ${gap} | < ${r.goalP99Ms} | ${r.wrongSource} | ${load} |`);
  }
  return lines.join("\n");
}

main().catch((e: unknown) => {
  log(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
