/**
 * Reserved IP reassignment benchmark: how long from the moment the Kubernetes API shows that the
 * pod holding a reserved IP can no longer serve (its node deleted or NotReady, the pod deleted or
 * not Ready) until the IP is on the droplet of the other ready pod's node (the assign action
 * completed in the DigitalOcean stand-in), and until the controller knows it is done.
 *
 * Everything runs on loopback: a real kube-apiserver and etcd (test/support/kube.ts, started as
 * child processes; the controller uses its own service-account token), the DigitalOcean API
 * stand-in in this process (with a per-request latency and an action duration, stated in the
 * results), and the controller with the reserved-IP follower at its production settings
 * (event-driven, no resync inside the measurement: resync 30 s). After each move the IP must be on
 * the target droplet as the public API shows it (GET /v2/reserved_ips/{ip}). No root needed, nothing leaves
 * the machine.
 *
 *   npx tsx bench/reserved-ip.ts [--runs 20] [--peer-runs 10] [--latency-ms 50] [--action-ms 2000]
 *                                [--out bench/results/reserved-ip.json]
 */
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { roundSummary, summarize } from "./lib/stats.js";
import { startCloudHarness, type CloudHarness } from "../test/support/cloud-harness.js";
import type { ReservedIPAssignment } from "../src/controller/cloud/index.js";
import { DigitalOceanClient } from "../src/cloud/digitalocean/client.js";
import { waitFor } from "../src/lab/lab.js";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
const RUNS = Math.min(Number(arg("runs", "20")), 200);
const PEER_RUNS = Math.min(Number(arg("peer-runs", "10")), 200);
const LATENCY_MS = Number(arg("latency-ms", "50"));
const ACTION_MS = Number(arg("action-ms", "2000"));
const OUT = arg("out", defaultResultPath("reserved-ip"));
const LABEL = "staticegress.io/reserved-ip";
/** haimgel/do-floating-ip-k8s sleeps 5 s between reads of its assign action. */
const PEER_POLL_MS = 5_000;

type Kill = "node-deleted" | "node-not-ready" | "pod-deleted" | "pod-not-ready";
const KILLS: Kill[] = ["node-deleted", "node-not-ready", "pod-deleted", "pod-not-ready"];

interface Sample {
  kill: Kill;
  /** From the kill (the API call) to the assign request reaching DigitalOcean. */
  toActionStartMs: number;
  /** The action itself (the stand-in's action duration plus nothing else). */
  actionMs: number;
  /** From the kill to the action completed: the IP is on the new droplet. */
  toReassignedMs: number;
  /** From the kill to the controller having read the action back as completed. */
  toConfirmedMs: number;
}

interface Pair {
  pod: string;
  node: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(
  h: CloudHarness,
  ip: string,
  kill: Kill,
  runs: number,
  assigned: ReservedIPAssignment[],
  log: (s: string) => void,
): Promise<Sample[]> {
  const api = new DigitalOceanClient({ token: h.cloud.token, baseUrl: h.cloud.url });
  let seq = 0;
  const newPair = async (): Promise<Pair> => {
    seq++;
    const node = `${kill}-n${seq}`;
    await h.addNode(node);
    const pod = `${kill}-p${seq}`;
    await h.createPod({ name: pod, node, labels: { [LABEL]: "" }, annotations: { [LABEL]: ip } });
    return { pod, node };
  };
  // Two ready pods on two fresh nodes; the IP settles on one of them.
  let holder = await newPair();
  await waitFor(() => h.holderOf(ip) === h.nodeDroplets.get(holder.node), 30_000, "first assignment did not happen");
  let standby = await newPair();
  await h.plugins.idle();
  const samples: Sample[] = [];
  for (let run = 0; run < runs; run++) {
    await sleep(200); // quiet before each kill
    const target = h.nodeDroplets.get(standby.node)!;
    const before = assigned.length;
    const t0 = Date.now();
    switch (kill) {
      case "node-deleted":
        await h.deleteNode(holder.node);
        break;
      case "node-not-ready":
        await h.setNodeReady(holder.node, "Unknown");
        break;
      case "pod-deleted":
        await h.deletePod("web", holder.pod);
        break;
      case "pod-not-ready":
        await h.setPodReady("web", holder.pod, false);
        break;
    }
    await waitFor(
      () => assigned.slice(before).some((a) => a.ip === ip && a.host === String(target)),
      60_000,
      `run ${run}: not reassigned`,
      2,
    );
    const done = assigned.slice(before).find((a) => a.ip === ip && a.host === String(target))!;
    const action = [...h.cloud.state.raw.actions.values()]
      .filter((a) => a.type === "assign_ip" && a.ip === ip && a.dropletId === target && a.startedAt >= t0)
      .sort((a, b) => a.startedAt - b.startedAt)
      .pop();
    if (!action || action.status !== "completed" || action.completedAt === undefined)
      throw new Error(`run ${run}: no completed assign action for ${ip}`);
    // Not only the action: the IP must really be on the target droplet, as the public API shows it (read after the timing).
    const droplet = (await api.getReservedIP(ip))?.droplet;
    const onDroplet = droplet && "id" in droplet ? droplet.id : undefined;
    if (onDroplet !== target)
      throw new Error(
        `run ${run}: the assign action completed, but the API shows ${ip} on droplet ${onDroplet}, not on ${target} (${standby.node})`,
      );
    const s: Sample = {
      kill,
      toActionStartMs: action.startedAt - t0,
      actionMs: action.completedAt - action.startedAt,
      toReassignedMs: action.completedAt - t0,
      toConfirmedMs: done.doneAt - t0,
    };
    samples.push(s);
    log(
      `${kill} #${run + 1}: action starts +${s.toActionStartMs} ms, reassigned +${s.toReassignedMs} ms, confirmed +${s.toConfirmedMs} ms`,
    );
    // The old holder's side comes back as the new standby (or a fresh pair for a deleted node).
    const old = holder;
    holder = standby;
    switch (kill) {
      case "node-deleted":
        standby = await newPair();
        break;
      case "node-not-ready":
        await h.setNodeReady(old.node, "True");
        standby = old;
        break;
      case "pod-deleted":
        seq++;
        standby = { pod: `${kill}-p${seq}`, node: old.node };
        await h.createPod({ name: standby.pod, node: old.node, labels: { [LABEL]: "" }, annotations: { [LABEL]: ip } });
        break;
      case "pod-not-ready":
        await h.setPodReady("web", old.pod, true);
        standby = old;
        break;
    }
    await h.plugins.idle();
  }
  return samples;
}

async function campaign(
  followerPollMs: number,
  kills: Kill[],
  runs: number,
  log: (s: string) => void,
): Promise<Sample[]> {
  const assigned: ReservedIPAssignment[] = [];
  const h = await startCloudHarness({
    nodes: 0,
    resyncMs: 30_000,
    cloud: { latencyMs: LATENCY_MS, actionDurationMs: ACTION_MS, dropletBootMs: 10 },
    plugins: {
      followerPollMs,
      // Production retry settings of the client; the follower's defaults otherwise.
      retry: {},
      follower: { onAssigned: (a) => assigned.push(a) },
      // The fleet plugin's sweep at its production interval, not the harness's test one.
      fleet: { sweepIntervalMs: 60_000 },
    },
  });
  try {
    const samples: Sample[] = [];
    for (const kill of kills) {
      const ip = await h.grantedReservedIP();
      samples.push(...(await measure(h, ip, kill, runs, assigned, log)));
    }
    await h.plugins.idle();
    await h.cloud.settle();
    if (h.cloud.violations().length > 0 || h.cloud.rejectedRequests().length > 0)
      throw new Error("the DigitalOcean stand-in saw invalid requests or answers");
    return samples;
  } finally {
    await h.close();
  }
}

function table(rows: { label: string; samples: Sample[] }[]): string {
  const cell = (xs: number[]) => {
    const s = roundSummary(summarize(xs));
    return `${s.median} / ${s.p95} (${s.min}–${s.max})`;
  };
  const lines = [
    "| kill | runs | kill → assign request | assign action | kill → IP reassigned | kill → controller confirms |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${r.samples.length} | ${cell(r.samples.map((s) => s.toActionStartMs))} ` +
        `| ${cell(r.samples.map((s) => s.actionMs))} ` +
        `| ${cell(r.samples.map((s) => s.toReassignedMs))} | ${cell(r.samples.map((s) => s.toConfirmedMs))} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const run = await startRun("reserved-ip", {
    runs: RUNS,
    peerRuns: PEER_RUNS,
    latencyMs: LATENCY_MS,
    actionMs: ACTION_MS,
    out: OUT,
  });
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const ours = await campaign(500, KILLS, RUNS, log);
  // Same controller, but reading the action back every 5 s like the peer controller does.
  const peerPolling = PEER_RUNS > 0 ? await campaign(PEER_POLL_MS, ["pod-not-ready"], PEER_RUNS, log) : [];
  const by = (samples: Sample[], kill: Kill) => samples.filter((s) => s.kill === kill);
  const summary = (samples: Sample[]) => ({
    toActionStartMs: roundSummary(summarize(samples.map((s) => s.toActionStartMs))),
    actionMs: roundSummary(summarize(samples.map((s) => s.actionMs))),
    toReassignedMs: roundSummary(summarize(samples.map((s) => s.toReassignedMs))),
    toConfirmedMs: roundSummary(summarize(samples.map((s) => s.toConfirmedMs))),
  });
  const rows = [
    ...KILLS.map((k) => ({ label: `${k} (poll 500 ms)`, samples: by(ours, k) })),
    ...(peerPolling.length ? [{ label: "pod-not-ready (poll 5 s, like the peer)", samples: peerPolling }] : []),
  ];
  writeResults(OUT, run, {
    settings: {
      standin: { latencyMsPerRequest: LATENCY_MS, actionDurationMs: ACTION_MS },
      controller: { resyncMs: 30_000, followerPollMs: 500, peerLikePollMs: PEER_POLL_MS },
      runsPerKill: RUNS,
      peerRuns: PEER_RUNS,
    },
    summaries: {
      ours: Object.fromEntries(KILLS.map((k) => [k, summary(by(ours, k))])),
      ...(peerPolling.length ? { peerLikePolling: { "pod-not-ready": summary(peerPolling) } } : {}),
    },
    samples: { ours, peerLikePolling: peerPolling },
  });
  process.stdout.write(
    `${table(rows)}\n\nms, median / p95 (min–max); stand-in latency ${LATENCY_MS} ms per request, assign action ${ACTION_MS} ms. Raw: ${OUT}\n`,
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`reserved-ip benchmark failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
