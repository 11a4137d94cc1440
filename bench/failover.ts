/**
 * Failover benchmark: a selected pod sends one UDP datagram per millisecond to the lab's
 * Internet while the gateway instance its flow uses is killed, again and again, in three
 * ways (agent killed, link down, host silent). For each kill: the longest time with no
 * delivery. Over everything: datagrams that arrived with a source other than the policy's
 * egress IPs (must be 0), also across node-agent restarts and policy changes.
 *
 *   sudo npx tsx bench/failover.ts [--kills 20] [--out bench/results/failover.json]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { exampleLabConfig } from "../test/lab/support.js";
import { Lab, waitFor, HOST_DEATHS, type GatewayDeath } from "../src/lab/lab.js";
import { newRunPrefix } from "../src/lab/netns.js";
import { analyzeStream, startUdpStream } from "../src/lab/traffic.js";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const KILLS = Math.min(Number(arg("kills", "20")), 100);
const OUT = arg("out", "bench/results/failover.json");
const POD = "payments/pay-1";
const ALLOWED = ["192.0.2.10", "192.0.2.20"];
const HOLD_DOWN_MS = 500;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function summary(gaps: number[]) {
  const s = [...gaps].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.health = { intervalMs: 100, multiplier: 3, holdDownMs: HOLD_DOWN_MS };
  const lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false });
  process.once("SIGINT", () => void lab.down().then(() => process.exit(130)));
  const results: Record<string, unknown> = {};
  let wrongTotal = 0;
  try {
    await waitFor(async () => (await lab.status()).every((r) => r.ok), 30_000, "lab did not converge", 500);
    const hostOf = (ip: string) => lab.topology.gatewayHosts.find((g) => g.egressIPs.includes(ip))!.name;

    for (const kind of HOST_DEATHS) {
      const tag = `bench-${kind}`;
      lab.clearUdpRecords(); // each phase reads only its own records
      const from = Date.now();
      // One long flow per kind; each kill takes down the instance it currently uses.
      const stream = startUdpStream(lab, POD, tag, KILLS * 6_000 + 5_000);
      await sleep(1_500);
      const gaps: number[] = [];
      for (let i = 0; i < KILLS; i++) {
        const current = analyzeStream(lab, tag, ALLOWED).lastSource;
        if (!current) throw new Error("the stream is not arriving");
        const victim = hostOf(current);
        const killedAt = Date.now();
        await lab.killGateway(victim, kind as GatewayDeath);
        await sleep(2_000);
        const r = analyzeStream(lab, tag, ALLOWED, { from: killedAt - 50, to: killedAt + 2_000 });
        gaps.push(r.longestGapMs);
        await lab.reviveGateway(victim);
        // Back in service: BFD set-up (1/s until Up) plus the hold-down.
        await sleep(3_500);
        process.stdout.write(`${kind} kill ${i + 1}/${KILLS}: ${r.longestGapMs} ms\n`);
      }
      await stream.catch(() => undefined);
      const all = analyzeStream(lab, tag, ALLOWED, { from, to: Date.now() });
      wrongTotal += all.wrongSource.length;
      results[kind] = { ...summary(gaps), gaps, wrongSource: all.wrongSource.length, received: all.received };
      process.stdout.write(`${kind}: ${JSON.stringify(results[kind])}\n`);
    }

    // Node-agent restarts and policy changes under traffic: no interruption, no leak.
    for (const phase of ["agent-restart", "policy-change"] as const) {
      const tag = `bench-${phase}`;
      lab.clearUdpRecords();
      const from = Date.now();
      const stream = startUdpStream(lab, POD, tag, KILLS * 1_000 + 3_000);
      await sleep(1_000);
      const unrelated = { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "churn", namespace: "web" }, spec: { podSelector: { matchLabels: { app: "frontend" } }, gatewayName: "shared", egressIPs: ["192.0.2.21"], destinationCIDRs: ["198.51.100.200/32"] } };
      for (let i = 0; i < KILLS; i++) {
        if (phase === "agent-restart") {
          lab.killProcess("agent-node1");
          await sleep(100);
          lab.restartAgent("node1");
        } else if (i % 2 === 0) await lab.applyPolicies([unrelated]);
        else await lab.deletePolicies([unrelated]);
        await sleep(900);
      }
      await stream.catch(() => undefined);
      const all = analyzeStream(lab, tag, ALLOWED, { from, to: Date.now() });
      wrongTotal += all.wrongSource.length;
      results[phase] = { events: KILLS, longestGapMs: all.longestGapMs, wrongSource: all.wrongSource.length, received: all.received };
      process.stdout.write(`${phase}: ${JSON.stringify(results[phase])}\n`);
    }
  } finally {
    await lab.down();
  }
  const out = { date: new Date().toISOString(), kills: KILLS, health: "BFD 100 ms x 3", holdDownMs: HOLD_DOWN_MS, results, wrongSourceTotal: wrongTotal };
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(out, null, 2));
  process.stdout.write(`\nwrote ${OUT}\n`);
  if (wrongTotal > 0) process.exitCode = 2;
}

void main();
