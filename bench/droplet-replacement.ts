/**
 * Droplet replacement benchmark, in the lab with a `digitalocean` gateway (examples/
 * lab-digitalocean.yaml): a selected pod sends one UDP datagram per millisecond while the gateway
 * droplet its flow uses is deleted through the DigitalOcean API (the stand-in). Per run:
 *
 * - that the flow resumed through the other droplet's reserved IP within 4 s (else a failed
 *   failover, counted), the gap from the last delivery to the first through it, and how many
 *   datagrams arrived after it (bench/lib/failover.ts); nodes fail over on BFD alone, the cloud
 *   is not involved;
 * - the longest time with no delivery around the delete (the earlier metric, kept for comparison);
 * - datagrams that left with a source other than the policy's reserved IPs (must be 0);
 * - from the delete until the controller lists a replacement droplet under the same name, until
 *   nodes report it Up, and until the pod's new connections leave through it again (its reserved
 *   IP moved to the replacement).
 *
 * The stand-in boots a droplet in 1.5 s and runs an IP action in 0.5 s; the lab's controller
 * converges fleets every 3 s (--cloud-resync-seconds 3; the default is 60 s). On DigitalOcean a
 * droplet boots and runs cloud-init for about a minute: the replacement times scale with that,
 * the failover gap does not.
 *
 *   sudo npx tsx bench/droplet-replacement.ts [--runs 5] [--out bench/results/droplet-replacement.json]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { requireRoot } from "./lib/env.js";
import { startRun } from "./lib/record.js";
import { guarded } from "./lib/guard.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { roundSummary, summarize } from "./lib/stats.js";
import { LAB_CLOUD } from "../src/lab/cloud.js";
import { parseLabConfig } from "../src/lab/config.js";
import { labClient } from "../src/lab/kube-lab.js";
import { Lab, waitFor } from "../src/lab/lab.js";
import { newRunPrefix } from "../src/lab/netns.js";
import { packageRoot } from "../src/lab/paths.js";
import { LAB_NETWORK } from "../src/lab/topology.js";
import { startUdpStream } from "../src/lab/traffic.js";
import { failoverOutcome, streamDatagrams, type FailoverOutcome } from "./lib/failover.js";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const RUNS = Math.min(Number(arg("runs", "5")), 20);
const OUT = arg("out", defaultResultPath("droplet-replacement"));
const POD = "payments/pay-1";
const RESERVED = ["192.0.2.30", "192.0.2.40"];
/** The flow must have resumed through the other droplet, and kept arriving, this long after the delete. */
const OBSERVE_MS = 4_000;
/**
 * The window plus up to 10 s for the stream to arrive (a loaded machine starts processes slowly);
 * a slower start is an instrument error, not a result. The replacement wait overlaps the rest.
 */
const STREAM_MS = 10_000 + OBSERVE_MS;

interface Instance {
  name: string;
  id: string;
  health: string;
}

interface Sample {
  /** The failover: resumed through the other droplet, the gap, what arrived after it (bench/lib/failover.ts). */
  failover: FailoverOutcome;
  longestGapMs: number;
  wrongSource: number;
  /** The first few wrong datagrams (source, sequence number), for diagnosis. */
  wrongExamples: { src: string; seq: number }[];
  toReplacementListedMs: number;
  toReplacementUpMs: number;
  toTrafficBackMs: number;
}

async function instances(lab: Lab): Promise<Instance[]> {
  const gw = (await labClient(lab).custom.getClusterCustomObject({
    group: "staticegress.io",
    version: "v1alpha1",
    plural: "egressgateways",
    name: "cloud",
  })) as { status?: { instances?: Instance[] } };
  return gw.status?.instances ?? [];
}

const log = (line: string) => process.stderr.write(`${line}\n`);

async function run(lab: Lab, i: number): Promise<Sample> {
  await waitFor(
    async () => (await instances(lab)).filter((x) => x.health === "Up").length === 2,
    60_000,
    "both droplets are not Up",
    200,
  );
  const tag = `replace-${i}`;
  lab.clearUdpRecords(); // the previous run's stream has ended: each run reads only its own records
  const spawnedAt = Date.now();
  const stream = startUdpStream(lab, POD, tag, STREAM_MS);
  await waitFor(() => streamDatagrams(lab.udpRecords(), tag).length > 300, 10_000, "the stream does not arrive");
  const ip = streamDatagrams(lab.udpRecords(), tag).at(-1)!.src;
  const victim = lab.gatewayInstances().find((g) => g.egressIPs.includes(ip));
  if (!victim)
    throw new Error(
      `no gateway droplet holds ${ip} (droplets: ${JSON.stringify(lab.gatewayInstances().map((g) => [g.name, g.egressIPs]))})`,
    );
  const oldId = (await instances(lab)).find((x) => x.name === victim.name)!.id;
  const t0 = Date.now();
  if (t0 + OBSERVE_MS > spawnedAt + STREAM_MS)
    throw new Error(`run ${i + 1}: the stream would end before the window (instrument error, not a failover result)`);
  await lab.killGateway(victim.name, "destroy");
  // Let the window pass before reading it (the replacement wait below can be shorter).
  const windowDone = new Promise((r) => setTimeout(r, Math.max(0, t0 + OBSERVE_MS - Date.now())));
  let listed = 0;
  let up = 0;
  await waitFor(
    async () => {
      const x = (await instances(lab)).find((e) => e.name === victim.name);
      if (x && x.id !== oldId && !listed) listed = Date.now() - t0;
      if (x && x.id !== oldId && x.health === "Up") up = Date.now() - t0;
      return up > 0;
    },
    120_000,
    "no replacement",
    50,
  );
  await windowDone;
  const rows = streamDatagrams(lab.udpRecords(), tag);
  const survivors = RESERVED.filter((x) => x !== ip);
  const failover = failoverOutcome(rows, { killedAt: t0, until: t0 + OBSERVE_MS, victim: [ip], survivors });
  const wrong = rows.filter((x) => !RESERVED.includes(x.src));
  let longestGapMs = 0;
  for (let k = 1; k < rows.length; k++)
    if (rows[k]!.sent >= t0 - 500) longestGapMs = Math.max(longestGapMs, rows[k]!.sent - rows[k - 1]!.sent);
  // New connections of the pod hash to the same instance name: back through the replacement.
  let back = 0;
  await waitFor(
    async () => {
      const p = await lab.probe(lab.findPod(POD), `http://${LAB_NETWORK.echoService}/`);
      if (p.source === ip) back = Date.now() - t0;
      return back > 0;
    },
    60_000,
    "traffic did not return to the replacement",
    100,
  );
  await stream;
  const s = {
    failover,
    longestGapMs,
    wrongSource: wrong.length,
    wrongExamples: wrong.slice(0, 5).map(({ src, seq }) => ({ src, seq })),
    toReplacementListedMs: listed,
    toReplacementUpMs: up,
    toTrafficBackMs: back,
  };
  const verdict = failover.resumed
    ? `resumed via ${failover.resumedVia} after ${failover.gapMs} ms, ${failover.afterGap} datagrams after`
    : `FAILOVER FAILED: ${failover.failure}`;
  log(`run ${i + 1}/${RUNS}: ${verdict}; ${JSON.stringify({ ...s, failover: undefined })}`);
  return s;
}

async function main(): Promise<void> {
  requireRoot();
  const recorder = await startRun("droplet-replacement", { runs: RUNS, out: OUT });
  const path = join(packageRoot(), "examples", "lab-digitalocean.yaml");
  const cfg = parseLabConfig(readFileSync(path, "utf8"), path);
  let lab: Lab | undefined;
  const samples = await guarded(
    async () => {
      await lab?.down();
    },
    async () => {
      lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes", log });
      const out: Sample[] = [];
      for (let i = 0; i < RUNS; i++) out.push(await run(lab, i));
      return out;
    },
    { maxSeconds: 120 + RUNS * 90, log },
  );
  type Timed = "longestGapMs" | "toReplacementListedMs" | "toReplacementUpMs" | "toTrafficBackMs";
  const pick = (k: Timed) => roundSummary(summarize(samples.map((s) => s[k])));
  const resumed = samples.filter((s) => s.failover.resumed);
  const gap = roundSummary(summarize(resumed.map((s) => s.failover.gapMs)));
  const results = {
    settings: {
      runs: RUNS,
      dropletBootMs: LAB_CLOUD.dropletBootMs,
      ipActionMs: LAB_CLOUD.actionDurationMs,
      fleetResyncSeconds: 3,
      bfd: "100 ms x 3",
    },
    summary: {
      failover: {
        runs: samples.length,
        resumedThroughTheOtherDroplet: resumed.length,
        failed: samples.length - resumed.length,
        gapMs: gap,
        afterGap: roundSummary(summarize(resumed.map((s) => s.failover.afterGap))),
      },
      longestGapMs: pick("longestGapMs"),
      toReplacementListedMs: pick("toReplacementListedMs"),
      toReplacementUpMs: pick("toReplacementUpMs"),
      toTrafficBackMs: pick("toTrafficBackMs"),
      wrongSourceTotal: samples.reduce((n, s) => n + s.wrongSource, 0),
    },
    samples,
  };
  writeResults(OUT, recorder, results);
  const row = (label: string, k: Timed) => `| ${label} | ${pick(k).median} | ${pick(k).p95} | ${pick(k).max} |`;
  process.stdout.write(
    [
      "| from the droplet's deletion (ms) | median | p95 | max |",
      "|---|---|---|---|",
      `| failover gap: last delivery to the first through the other droplet (${resumed.length} ` +
        `of ${samples.length} resumed) | ${gap.median} | ${gap.p95} | ${gap.max} |`,
      row("longest time with no delivery (failover on BFD)", "longestGapMs"),
      row("replacement droplet listed in status (same name)", "toReplacementListedMs"),
      row("replacement Up (nodes' BFD, reserved IP moved)", "toReplacementUpMs"),
      row("the pod's new connections leave through it again", "toTrafficBackMs"),
      `\nfailed failovers: ${samples.length - resumed.length}; wrong-source datagrams: ${results.summary.wrongSourceTotal}; wrote ${OUT}`,
    ].join("\n") + "\n",
  );
  if (results.summary.wrongSourceTotal > 0 || resumed.length < samples.length) process.exitCode = 2;
}

void main();
