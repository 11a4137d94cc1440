/**
 * Failover benchmark: a selected pod sends one UDP datagram per millisecond to the lab's
 * Internet while the gateway instance its flow uses is killed, again and again, in each way the
 * lab knows (agent killed, link down, host silent, reboot). For each kill it checks that the flow
 * resumed through the surviving instance (the source the Internet host saw), measures the gap
 * from the last delivery to the first through the survivor and counts the datagrams after it; a
 * flow that did not resume within the window is a failed failover, counted as such. Over
 * everything: datagrams that arrived with a source other than the policy's egress IPs (must be
 * 0), also across node-agent restarts and policy changes.
 *
 *   sudo npx tsx bench/failover.ts [--kills 20] [--out bench/results/failover.json]
 */
import { exampleLabConfig } from "../test/lab/support.js";
import { Lab, waitFor, HOST_DEATHS, type GatewayDeath } from "../src/lab/lab.js";
import { newRunPrefix } from "../src/lab/netns.js";
import { startUdpStream } from "../src/lab/traffic.js";
import { requireRoot } from "./lib/env.js";
import { streamDatagrams, type FailoverOutcome } from "./lib/failover.js";
import { guarded } from "./lib/guard.js";
import { killInstanceInUse } from "./lib/kill.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { percentile, roundSummary, summarize } from "./lib/stats.js";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const KILLS = Math.min(Number(arg("kills", "20")), 100);
const OUT = arg("out", defaultResultPath("failover"));
const POD = "payments/pay-1";
const ALLOWED = ["192.0.2.10", "192.0.2.20"];
const HOLD_DOWN_MS = 500;
/** After a revive: BFD set-up (1/s until Up) plus the hold-down, before the next kill. */
const SETTLE_MS = 3_500;
/** The flow must have resumed, and kept arriving, this long after the kill. */
const OBSERVE_MS = 3_000;
/** After the settling, how long the flow may still take to arrive before the kill (both instances up). */
const ARRIVE_MS = 1_500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => process.stderr.write(`${line}\n`);

interface KillSample extends FailoverOutcome {
  victim: string;
}

/** Both instances were up (revived, settled), yet the flow did not arrive: no kill, counted. */
interface NotArriving {
  kill: number;
  waitedMs: number;
  /** What the stream did after all (read when it ended): a slow sender start or a flow that was dropped. */
  received: number;
  firstArrivalAfterSpawnMs: number | undefined;
  sources: Record<string, number>;
}

async function killOnce(
  lab: Lab,
  kind: GatewayDeath,
  i: number,
  revivePrevious: () => Promise<void>,
): Promise<{ sample: KillSample | NotArriving; revive: () => Promise<void> }> {
  const tag = `bench-${kind}-${i}`;
  lab.clearUdpRecords(); // the previous stream has ended: each kill reads only its own records
  // The stream covers the settling, the kill and the whole window by construction (its clock
  // starts after the spawn), so a flow missing at the end of the window is the failover's fault.
  await revivePrevious();
  const spawnedAt = Date.now();
  const stream = startUdpStream(lab, POD, tag, SETTLE_MS + ARRIVE_MS + OBSERVE_MS);
  await sleep(SETTLE_MS);
  const waitStart = Date.now();
  const arriving = await waitFor(
    () => streamDatagrams(lab.udpRecords(), tag).length > 100,
    Math.max(1, spawnedAt + SETTLE_MS + ARRIVE_MS - Date.now()),
    "",
    50,
  ).then(
    () => true,
    () => false,
  );
  if (!arriving) {
    // With every instance up the flow should arrive; on a starved machine the nodes can judge both down (fail-closed).
    log(
      `${kind} kill ${i + 1}/${KILLS}: NOT KILLED: the flow did not arrive within ${SETTLE_MS + ARRIVE_MS} ms of its start with both instances up`,
    );
    const waitedMs = Date.now() - waitStart;
    await stream;
    const rows = streamDatagrams(lab.udpRecords(), tag);
    const sources: Record<string, number> = {};
    for (const r of rows) sources[r.src] = (sources[r.src] ?? 0) + 1;
    return {
      sample: {
        kill: i,
        waitedMs,
        received: rows.length,
        firstArrivalAfterSpawnMs: rows[0] ? rows[0].sent - spawnedAt : undefined,
        sources,
      },
      revive: async () => undefined,
    };
  }
  const { victim, outcome } = await killInstanceInUse(lab, {
    tag,
    stream,
    kind: kind,
    allowed: ALLOWED,
    observeMs: OBSERVE_MS,
  });
  const sample = { victim, ...outcome };
  const verdict = outcome.resumed
    ? `resumed via ${outcome.resumedVia} after ${outcome.gapMs} ms, ${outcome.afterGap} datagrams after`
    : `FAILED: ${outcome.failure}`;
  log(`${kind} kill ${i + 1}/${KILLS} (${victim}): ${verdict}`);
  return { sample, revive: () => lab.reviveGateway(victim) };
}

async function main(): Promise<void> {
  requireRoot();
  const run = await startRun("failover", {
    kills: KILLS,
    deaths: HOST_DEATHS,
    health: "BFD 100 ms x 3",
    holdDownMs: HOLD_DOWN_MS,
    settleMs: SETTLE_MS,
    observeMs: OBSERVE_MS,
    out: OUT,
  });
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.health = { intervalMs: 100, multiplier: 3, holdDownMs: HOLD_DOWN_MS };
  let lab: Lab | undefined;
  const results = await guarded(
    async () => {
      await lab?.down();
    },
    async () => {
      lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false });
      const l = lab;
      await waitFor(async () => (await l.status()).every((r) => r.ok), 30_000, "lab did not converge", 500);
      const out: Record<string, unknown> = {};
      for (const kind of HOST_DEATHS) {
        const samples: KillSample[] = [];
        const notArriving: NotArriving[] = [];
        let revive = async () => undefined as void;
        for (let i = 0; i < KILLS; i++) {
          const r = await killOnce(l, kind, i, revive);
          if ("victim" in r.sample) samples.push(r.sample);
          else notArriving.push(r.sample);
          revive = r.revive;
        }
        await revive();
        await sleep(SETTLE_MS);
        const ok = samples.filter((s) => s.resumed);
        out[kind] = {
          kills: samples.length,
          resumed: ok.length,
          failed: samples.length - ok.length,
          gapMs: {
            ...roundSummary(summarize(ok.map((s) => s.gapMs))),
            p99: percentile(
              ok.map((s) => s.gapMs),
              99,
            ),
          },
          afterGap: roundSummary(summarize(ok.map((s) => s.afterGap))),
          lostAfterGap: ok.reduce((n, s) => n + s.lostAfterGap, 0),
          wrongSource: samples.reduce((n, s) => n + s.wrongSource, 0),
          notArrivingBeforeKill: notArriving,
          samples,
        };
        const o = out[kind] as { gapMs: { median: number; p99: number; max: number }; failed: number };
        log(
          `${kind}: ${ok.length}/${samples.length} resumed through the other instance; gap ` +
            `p50 ${o.gapMs.median} p99 ${o.gapMs.p99} max ${o.gapMs.max} ms; failed ${o.failed}`,
        );
      }

      // Node-agent restarts and policy changes under traffic: the flow must keep arriving, with no leak.
      for (const phase of ["agent-restart", "policy-change"] as const) {
        const tag = `bench-${phase}`;
        l.clearUdpRecords();
        const durationMs = KILLS * 1_000 + 3_000;
        const startedAt = Date.now();
        const stream = startUdpStream(l, POD, tag, durationMs);
        await sleep(1_000);
        const unrelated = {
          apiVersion: "staticegress.io/v1alpha1",
          kind: "EgressPolicy",
          metadata: { name: "churn", namespace: "web" },
          spec: {
            podSelector: { matchLabels: { app: "frontend" } },
            gatewayName: "shared",
            egressIPs: ["192.0.2.21"],
            destinationCIDRs: ["198.51.100.200/32"],
          },
        };
        for (let i = 0; i < KILLS; i++) {
          if (phase === "agent-restart") {
            l.killProcess("agent-node1");
            await sleep(100);
            l.restartAgent("node1");
          } else if (i % 2 === 0) await l.applyPolicies([unrelated]);
          else await l.deletePolicies([unrelated]);
          await sleep(900);
        }
        await stream;
        const rows = streamDatagrams(l.udpRecords(), tag);
        let longestGapMs = 0;
        for (let i = 1; i < rows.length; i++) longestGapMs = Math.max(longestGapMs, rows[i]!.sent - rows[i - 1]!.sent);
        const last = rows.at(-1);
        // Still arriving at the end (the stream's last datagrams were delivered), through an allowed source.
        const arrivingAtEnd = !!last && startedAt + durationMs - last.sent < 1_000 && ALLOWED.includes(last.src);
        const seqs = new Set(rows.map((r) => r.seq));
        out[phase] = {
          events: KILLS,
          received: rows.length,
          lost: last ? last.seq + 1 - seqs.size : 0,
          longestGapMs,
          arrivingAtEnd,
          lastSource: last?.src,
          wrongSource: rows.filter((r) => !ALLOWED.includes(r.src)).length,
        };
        log(`${phase}: ${JSON.stringify(out[phase])}`);
      }
      return out;
    },
    { maxSeconds: 300 + KILLS * HOST_DEATHS.length * 20, log },
  );
  const kinds = HOST_DEATHS.map((k) => results[k] as { failed: number; wrongSource: number });
  const phases = (["agent-restart", "policy-change"] as const).map(
    (p) => results[p] as { arrivingAtEnd: boolean; wrongSource: number },
  );
  const summary = {
    failedFailovers: kinds.reduce((n, k) => n + k.failed, 0),
    flowStoppedInPhases: phases.filter((p) => !p.arrivingAtEnd).length,
    wrongSourceTotal: [...kinds, ...phases].reduce((n, k) => n + k.wrongSource, 0),
  };
  writeResults(OUT, run, {
    settings: { lab: "examples/lab.yaml", pod: POD, egressIPs: ALLOWED, streamIntervalMs: 1 },
    summary,
    results,
  });
  process.stdout.write(`${table(results)}\n\n${JSON.stringify(summary)}\nwrote ${OUT}\n`);
  if (summary.failedFailovers > 0 || summary.flowStoppedInPhases > 0 || summary.wrongSourceTotal > 0)
    process.exitCode = 2;
}

function table(results: Record<string, unknown>): string {
  const lines = [
    "| death | kills | resumed through the other instance | failed | gap p50 | p99 | max | datagrams after the gap (median) | wrong source |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const kind of HOST_DEATHS) {
    const r = results[kind] as {
      kills: number;
      resumed: number;
      failed: number;
      gapMs: { median: number; p99: number; max: number };
      afterGap: { median: number };
      wrongSource: number;
    };
    lines.push(
      `| ${kind} | ${r.kills} | ${r.resumed} | ${r.failed} | ${r.gapMs.median} | ${r.gapMs.p99} | ${r.gapMs.max} | ${r.afterGap.median} | ${r.wrongSource} |`,
    );
  }
  return lines.join("\n");
}

main().catch((e: unknown) => {
  log(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
