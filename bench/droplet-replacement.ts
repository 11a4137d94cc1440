/**
 * Droplet replacement benchmark, in the lab with a `digitalocean` gateway (examples/
 * lab-digitalocean.yaml): a selected pod sends one UDP datagram per millisecond while the gateway
 * droplet its flow uses is deleted through the DigitalOcean API (the stand-in). Per run:
 *
 * - the longest time with no delivery (nodes fail over on BFD alone, the cloud is not involved);
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
import { currentLoad, machineInfo, requireRoot } from "./lib/env.js";
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
import { analyzeStream, startUdpStream } from "../src/lab/traffic.js";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const RUNS = Math.min(Number(arg("runs", "5")), 20);
const OUT = arg("out", defaultResultPath("droplet-replacement"));
const POD = "payments/pay-1";
const RESERVED = ["192.0.2.30", "192.0.2.40"];
const STREAM_MS = 6_000;

interface Instance {
  name: string;
  id: string;
  health: string;
}

interface Sample {
  longestGapMs: number;
  wrongSource: number;
  /** The first few wrong datagrams (source, sequence number, ms after the delete), for diagnosis. */
  wrongExamples: { src: string; seq: number }[];
  toReplacementListedMs: number;
  toReplacementUpMs: number;
  toTrafficBackMs: number;
}

async function instances(lab: Lab): Promise<Instance[]> {
  const gw = (await labClient(lab).custom.getClusterCustomObject({ group: "staticegress.io", version: "v1alpha1", plural: "egressgateways", name: "cloud" })) as { status?: { instances?: Instance[] } };
  return gw.status?.instances ?? [];
}

const log = (line: string) => process.stderr.write(`${line}\n`);

async function run(lab: Lab, i: number): Promise<Sample> {
  await waitFor(async () => (await instances(lab)).filter((x) => x.health === "Up").length === 2, 60_000, "both droplets are not Up", 200);
  const tag = `replace-${i}`;
  const stream = startUdpStream(lab, POD, tag, STREAM_MS);
  await waitFor(() => analyzeStream(lab, tag, RESERVED).received > 300, 10_000, "the stream does not arrive");
  const ip = analyzeStream(lab, tag, RESERVED).lastSource!;
  const victim = lab.gatewayInstances().find((g) => g.egressIPs.includes(ip));
  if (!victim) throw new Error(`no gateway droplet holds ${ip} (droplets: ${JSON.stringify(lab.gatewayInstances().map((g) => [g.name, g.egressIPs]))})`);
  const oldId = (await instances(lab)).find((x) => x.name === victim.name)!.id;
  const t0 = Date.now();
  await lab.killGateway(victim.name, "destroy");
  let listed = 0;
  let up = 0;
  await waitFor(async () => {
    const x = (await instances(lab)).find((e) => e.name === victim.name);
    if (x && x.id !== oldId && !listed) listed = Date.now() - t0;
    if (x && x.id !== oldId && x.health === "Up") up = Date.now() - t0;
    return up > 0;
  }, 120_000, "no replacement", 50);
  await stream;
  const r = analyzeStream(lab, tag, RESERVED, { from: t0 - 500, to: t0 + STREAM_MS });
  // New connections of the pod hash to the same instance name: back through the replacement.
  let back = 0;
  await waitFor(async () => {
    const p = await lab.probe(lab.findPod(POD), `http://${LAB_NETWORK.echoService}/`);
    if (p.source === ip) back = Date.now() - t0;
    return back > 0;
  }, 60_000, "traffic did not return to the replacement", 100);
  const s = { longestGapMs: r.longestGapMs, wrongSource: r.wrongSource.length, wrongExamples: r.wrongSource.slice(0, 5), toReplacementListedMs: listed, toReplacementUpMs: up, toTrafficBackMs: back };
  log(`run ${i + 1}/${RUNS}: ${JSON.stringify(s)}`);
  return s;
}

async function main(): Promise<void> {
  requireRoot();
  const machine = await machineInfo();
  const loadAtStart = currentLoad();
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
  const pick = (k: Exclude<keyof Sample, "wrongExamples">) => roundSummary(summarize(samples.map((s) => s[k])));
  const results = {
    benchmark: "droplet-replacement",
    date: new Date().toISOString(),
    machine,
    loadAtStart,
    loadAtEnd: currentLoad(),
    settings: { runs: RUNS, dropletBootMs: LAB_CLOUD.dropletBootMs, ipActionMs: LAB_CLOUD.actionDurationMs, fleetResyncSeconds: 3, bfd: "100 ms x 3" },
    summary: {
      longestGapMs: pick("longestGapMs"),
      toReplacementListedMs: pick("toReplacementListedMs"),
      toReplacementUpMs: pick("toReplacementUpMs"),
      toTrafficBackMs: pick("toTrafficBackMs"),
      wrongSourceTotal: samples.reduce((n, s) => n + s.wrongSource, 0),
    },
    samples,
  };
  writeResults(OUT, results);
  const row = (label: string, k: Exclude<keyof Sample, "wrongExamples">) => `| ${label} | ${pick(k).median} | ${pick(k).p95} | ${pick(k).max} |`;
  process.stdout.write(
    [
      "| from the droplet's deletion (ms) | median | p95 | max |",
      "|---|---|---|---|",
      row("longest time with no delivery (failover on BFD)", "longestGapMs"),
      row("replacement droplet listed in status (same name)", "toReplacementListedMs"),
      row("replacement Up (nodes' BFD, reserved IP moved)", "toReplacementUpMs"),
      row("the pod's new connections leave through it again", "toTrafficBackMs"),
      `\nwrong-source datagrams: ${results.summary.wrongSourceTotal}; wrote ${OUT}`,
    ].join("\n") + "\n",
  );
  if (results.summary.wrongSourceTotal > 0) process.exitCode = 2;
}

void main();
