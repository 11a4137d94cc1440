/**
 * A node agent at rest in a large cluster (issue #16, goal 5), against the same real
 * kube-apiserver and fixture as bench/scale.ts (see bench/README.md, "Control plane at scale"),
 * without the controller:
 *
 *   npm run build && sudo npx tsx bench/node-at-rest.ts [--nodes 5000] [--pods 20000] [--namespaces 200]
 *        [--policies 1000] [--cluster-policies 50] [--starts 3] [--rest-seconds 40] [--report-rate <nodes/120>] [--cpu-prof]
 *        [--compile-cache]
 *        [--agent-node 42] [--concurrency 48] [--out file] [--max-seconds 2400]
 *
 * Measured:
 *   start      process start -> first complete datapath (the kernel's divert map holds exactly the
 *              plan's elements, and the plan exactly the fixture's selected pods on the node), `--starts`
 *              times, each agent a fresh process (from dist/) on a fresh network namespace
 *   at rest    the last agent, untouched: first `--rest-seconds` with no write at all (timers only),
 *              then as long with other nodes' `staticegress.io/report` annotations rewritten at
 *              nodes / 120 writes/s (every node agent refreshing its report every 2 minutes), no pod or
 *              policy change. Its CPU (user + system over wall time, % of one core), its reconciles
 *              (every successful one reports `applied`; "datapath programmed" log lines: those that
 *              changed the kernel), RSS. With `--cpu-prof`: where that CPU went (self time by function).
 *              With `--compile-cache`: the agents read Node's compile cache written as the image writes
 *              its own (the bundled child run once, loading only, before the first start).
 * The node agent needs 5,000 nodes and 1,000 policies to be measured, not 100,000 pods: it lists
 * only its own node's pods (the default here is 20,000 pods, 4 per node; `--pods 100000` is the
 * full size).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { COMPONENT_ACCOUNTS, startControlPlane, type ControlPlane } from "../src/lab/control-plane/index.js";
import { deleteNamespace, deleteNamespacesWithPrefix, newRunPrefix } from "../src/lab/netns.js";
import { packageRoot } from "../src/lab/paths.js";
import { inNamespace } from "../src/util/exec.js";
import { summarizeProfile } from "./lib/cpu-profile.js";
import { requireRoot } from "./lib/env.js";
import { guarded } from "./lib/guard.js";
import { addPodRoutes, countDivert, createNodeNamespace } from "./lib/netns.js";
import { startRun } from "./lib/record.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { round, roundSummary, summarize } from "./lib/stats.js";
import { startNodeAgent, type AgentStart } from "./scale/agent.js";
import { bundledEntry } from "./scale/bundled-entry.js";
import { ApiHttp, countRunningPods, fillCluster } from "./scale/api.js";
import type { BenchChild, ProcStats } from "./scale/child.js";
import { wallClockMs } from "./scale/child-io.js";
import { NodeReportChurn, REPORT_REFRESH_SECONDS } from "./scale/churn.js";
import {
  checkShape,
  DEFAULT_SHAPE,
  nodeAddress,
  nodeName,
  podParams,
  podsOnNode,
  selectedPodIPsOnNode,
  SHAPE_OPTIONS,
  shapeFromOptions,
  VPC_PREFIX_LENGTH,
} from "./scale/fixture.js";

class AtRestCheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AtRestCheckError";
  }
}

const log = (line: string): void => console.error(`[at-rest ${new Date().toISOString().slice(11, 19)}] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuPercent(before: ProcStats | undefined, after: ProcStats | undefined, wallMs: number): number {
  if (!before || !after) return Number.NaN;
  return round(((after.cpuMs - before.cpuMs) / wallMs) * 100);
}

interface Window {
  seconds: number;
  cpuPercentOfOneCore: number;
  cpuMs: number;
  /** CPU of the commands it ran meanwhile (`ip netns exec` and what it runs), % of one core: not in the above. */
  commandsCpuPercentOfOneCore: number;
  /** Successful reconciles (each reports `applied`). */
  reconciles: number;
  /** "datapath programmed" log lines: reconciles that changed the kernel. */
  programmed: number;
  /** Kernel commands (ip, nft, ... through `ip netns exec`) those reconciles ran, and their time. */
  commands: number;
  commandsMs: number;
  /** Every log line the agent wrote meanwhile. */
  logLines: number;
  rssMiBAtEnd: number | undefined;
  /** Marks of the window on the child's monotonic clock (for its CPU profile). */
  fromUs: number;
  toUs: number;
  /** The child's monotonic clock (us) less its wall clock (us). */
  clockOffsetUs: number;
}

/** The agent's CPU, reconciles and log lines over the next `seconds`. */
async function measureWindow(agent: BenchChild, seconds: number, tag: string): Promise<Window> {
  const applies = () => agent.events.filter((e) => e.ev === "applied");
  const applied = () => applies().length;
  const programmed = () => agent.logs.filter((l) => l.msg === "datapath programmed").length;
  const from = await agent.stats(`${tag}-from`);
  const before = agent.readProc();
  const [a0, p0, l0] = [applied(), programmed(), agent.logs.length];
  const t0 = wallClockMs();
  await sleep(seconds * 1000);
  const after = agent.readProc();
  const wallMs = wallClockMs() - t0;
  const [a1, p1, l1] = [applied(), programmed(), agent.logs.length];
  const to = await agent.stats(`${tag}-to`);
  const during = applies().slice(a0, a1);
  return {
    seconds: round(wallMs / 1000),
    cpuPercentOfOneCore: cpuPercent(before, after, wallMs),
    cpuMs: before && after ? after.cpuMs - before.cpuMs : Number.NaN,
    commandsCpuPercentOfOneCore:
      before && after ? round(((after.childrenCpuMs - before.childrenCpuMs) / wallMs) * 100) : Number.NaN,
    reconciles: a1 - a0,
    programmed: p1 - p0,
    commands: during.reduce((n, e) => n + Number(e.commands), 0),
    commandsMs: round(during.reduce((n, e) => n + Number(e.commandsMs), 0)),
    logLines: l1 - l0,
    rssMiBAtEnd: after?.rssMiB,
    fromUs: Number(from.monotonicUs),
    toUs: Number(to.monotonicUs),
    clockOffsetUs: Number(from.monotonicUs) - from.t * 1000,
  };
}

function startFigures(s: AgentStart) {
  return {
    processStartToLoadedMs: round(s.loaded.t - s.spawnedAt),
    processStartToSyncedMs: round(s.started.t - s.spawnedAt),
    informersSyncMs: round(s.started.t - (s.agent.events.find((e) => e.ev === "starting")?.t ?? Number.NaN)),
    processStartToFirstProgrammedMs: round(s.firstApplied.t - s.spawnedAt),
    syncedToFirstProgrammedMs: round(s.firstApplied.t - s.started.t),
    firstApplyCommands: s.firstApplied.commands,
    firstApplyCommandsMs: s.firstApplied.commandsMs,
    firstApplyCommandKinds: s.firstApplied.commandKinds,
    cpuMs: { toLoaded: s.loaded.cpuMs, toSynced: s.started.cpuMs, toFirstProgrammed: s.firstApplied.cpuMs },
    rssMiBAfterSync: s.started.rssMiB,
    cachedAtSync: s.started.cached,
    premature: s.premature,
    firstReconcileStartedMsBeforeSynced: s.firstReconcileStartedMsBeforeSynced,
    mapElements: s.kernelElements,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...SHAPE_OPTIONS,
      pods: { type: "string", default: "20000" },
      starts: { type: "string", default: "3" },
      "rest-seconds": { type: "string", default: "40" },
      "settle-seconds": { type: "string", default: "5" },
      "cpu-prof": { type: "boolean", default: false },
      /** Node's compile cache (NODE_COMPILE_CACHE) for the agents: the first start fills it, the next ones use it. */
      "compile-cache": { type: "boolean", default: false },
      /** Node-report writes per second (default: nodes / 120, every node refreshing every 2 minutes). */
      "report-rate": { type: "string" },
      "agent-node": { type: "string", default: "42" },
      concurrency: { type: "string", default: "48" },
      out: { type: "string" },
      "max-seconds": { type: "string", default: "2400" },
    },
  });
  requireRoot();
  const shape = shapeFromOptions(values);
  checkShape(shape);
  const starts = Math.max(1, Number(values.starts));
  const restSeconds = Number(values["rest-seconds"]);
  if (!(restSeconds >= 30)) throw new AtRestCheckError(`--rest-seconds ${values["rest-seconds"]}: at least 30`);
  const agentNode = Number(values["agent-node"]) % shape.nodes;
  const out = values.out ?? defaultResultPath("node-at-rest");
  const root = packageRoot();
  const run = await startRun("node-at-rest", {
    ...shape,
    starts,
    restSeconds,
    settleSeconds: Number(values["settle-seconds"]),
    cpuProf: values["cpu-prof"],
    compileCache: values["compile-cache"],
    reportRate: values["report-rate"] ?? "nodes/120",
    agentNode,
    concurrency: values.concurrency,
    out,
    maxSeconds: Number(values["max-seconds"]),
  });
  log(`load average at start ${run.loadAtStart.join(" ")}`);

  const prefix = newRunPrefix();
  const work = mkdtempSync(join(tmpdir(), "se-at-rest-"));
  const profDir = join(work, "cpu-prof");
  const children: BenchChild[] = [];
  let cp: ControlPlane | undefined;
  let http: ApiHttp | undefined;
  let failed = true;
  const cleanup = async () => {
    for (const c of children) c.kill();
    await deleteNamespacesWithPrefix(prefix);
    http?.close();
    if (failed && cp) writeFileSync(join(work, "kube-apiserver.log"), cp.logTail("kube-apiserver", 200));
    await cp?.stop();
    rmSync(join(work, "node-agent.kubeconfig"), { force: true });
    if (failed || values["cpu-prof"]) log(`logs${values["cpu-prof"] ? " and CPU profiles" : ""} kept in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  };

  await guarded(
    cleanup,
    async () => {
      const started = wallClockMs();
      cp = await startControlPlane({ controllerManager: false, log });
      const c = cp;
      http = new ApiHttp(c, Number(values.concurrency) + 16);
      const h = http;
      const load = await fillCluster(h, shape, { concurrency: Number(values.concurrency), log });
      const loaded = await countRunningPods(h, shape);
      if (loaded.runningWithAddress !== shape.pods)
        throw new AtRestCheckError(
          `after loading: ${loaded.runningWithAddress} of ${shape.pods} pods Running with their address`,
        );
      log(`cluster loaded: ${JSON.stringify(load)}`);

      const node = nodeName(agentNode);
      const expectedIPs = selectedPodIPsOnNode(shape, agentNode);
      const podIPsOnNode = podsOnNode(shape, agentNode).map((i) => podParams(shape, i).podIP);
      const kubeconfig = join(work, "node-agent.kubeconfig");
      writeFileSync(kubeconfig, await c.serviceAccountKubeconfig(COMPONENT_ACCOUNTS.nodeAgent, { node }), {
        mode: 0o600,
      });

      // As the image writes its compile cache at build time (the CLI's --help, scripts/build-image.sh):
      // the bundled child once without arguments, which loads everything and exits, so every start
      // reads a cache of what loading compiles (not of what a previous start's listing compiled).
      if (values["compile-cache"]) {
        const entry = await bundledEntry(join(root, "bench", "scale", "node-agent-main.ts"), work);
        spawnSync(process.execPath, [entry], {
          env: { ...process.env, NODE_COMPILE_CACHE: join(work, "compile-cache") },
          stdio: "ignore",
        });
        if (readdirSync(join(work, "compile-cache")).length === 0)
          throw new AtRestCheckError("no compile cache written");
      }

      // --- process start -> first complete datapath, each time a fresh agent on a fresh node ---
      const startRuns: ReturnType<typeof startFigures>[] = [];
      let last: AgentStart | undefined;
      let netns = "";
      for (let k = 0; k < starts; k++) {
        if (last) {
          await last.agent.stop();
          await deleteNamespace(netns);
          await sleep(2_000);
        }
        netns = `${prefix}-rest-${k}`;
        await createNodeNamespace(netns, nodeAddress(agentNode), VPC_PREFIX_LENGTH);
        // Every seeded pod has its interface, as a CNI leaves it; without one a pod stays unbound.
        await addPodRoutes(netns, podIPsOnNode);
        const isLast = k === starts - 1;
        last = await startNodeAgent({
          root,
          name: `node-agent-${k}`,
          kubeconfig,
          node,
          netns,
          runner: inNamespace(netns),
          expectedIPs,
          logPath: join(work, `node-agent-${k}.log`),
          ...(isLast && values["cpu-prof"] ? { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", profDir] } : {}),
          ...(values["compile-cache"] ? { env: { NODE_COMPILE_CACHE: join(work, "compile-cache") } } : {}),
          onSpawn: (child) => children.push(child),
        });
        const f = startFigures(last);
        startRuns.push(f);
        log(
          `start ${k + 1}/${starts}: loaded ${f.processStartToLoadedMs} ms, synced ${f.processStartToSyncedMs} ms, ` +
            `first complete datapath ${f.processStartToFirstProgrammedMs} ms (${f.mapElements} map elements, ` +
            `${String(f.firstApplyCommands)} commands in ${String(f.firstApplyCommandsMs)} ms)`,
        );
      }
      const agent = last!.agent;
      const runner = inNamespace(netns);

      // --- at rest ---------------------------------------------------------------------------
      await sleep(Number(values["settle-seconds"]) * 1000);
      log(`at rest, no writes, ${restSeconds} s`);
      const quiet = await measureWindow(agent, restSeconds, "quiet");
      log(`  CPU ${quiet.cpuPercentOfOneCore} % of a core, ${quiet.reconciles} reconciles`);
      const rate = values["report-rate"] ? Number(values["report-rate"]) : shape.nodes / REPORT_REFRESH_SECONDS;
      log(`at rest, other nodes' reports at ${round(rate)} writes/s, ${restSeconds} s`);
      const churn = new NodeReportChurn(h, shape, rate, agentNode);
      churn.start();
      await sleep(1_000); // the writes at their rate before the window opens
      const reports = await measureWindow(agent, restSeconds, "reports");
      const written = await churn.stop();
      log(
        `  CPU ${reports.cpuPercentOfOneCore} % of a core, ${reports.reconciles} reconciles; ${JSON.stringify(written)}`,
      );

      // The datapath is still what the last plan says.
      const lastApplied = [...agent.events].reverse().find((e) => e.ev === "applied")!;
      const kernel = await countDivert(runner, "static_egress");
      if (kernel !== lastApplied.entries)
        throw new AtRestCheckError(
          `kernel divert map holds ${kernel} elements, the last plan ${String(lastApplied.entries)}`,
        );
      const final = agent.readProc();
      await agent.stop();

      let profile: Record<string, unknown> | undefined;
      if (values["cpu-prof"]) {
        const file = readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"));
        if (!file) throw new AtRestCheckError(`no CPU profile in ${profDir}`);
        profile = {
          file: join(profDir, file),
          // Process start -> first complete datapath (its wall time on the child's monotonic clock).
          start: summarizeProfile(join(profDir, file), 0, last!.firstApplied.t * 1000 + quiet.clockOffsetUs),
          quiet: summarizeProfile(join(profDir, file), quiet.fromUs, quiet.toUs),
          reports: summarizeProfile(join(profDir, file), reports.fromUs, reports.toUs),
        };
        log(
          `CPU profile under reports (self time): ${JSON.stringify((profile.reports as { top: unknown[] }).top.slice(0, 12))}`,
        );
      }

      const firstDatapath = startRuns.map((r) => r.processStartToFirstProgrammedMs);
      const results = {
        command: `sudo npx tsx bench/node-at-rest.ts ${process.argv.slice(2).join(" ")}`.trim(),
        totalSeconds: round((wallClockMs() - started) / 1000),
        shape,
        fullSize: shape.nodes === DEFAULT_SHAPE.nodes && shape.pods === DEFAULT_SHAPE.pods,
        apiServer: { kubernetes: c.version, controllerManager: false, watchCache: true },
        load: { ...load, podsListedRunningWithAddress: loaded.runningWithAddress },
        node,
        selectedPodsOnNode: expectedIPs.length,
        start: {
          processStartToFirstProgrammedMs: roundSummary(summarize(firstDatapath)),
          runs: startRuns,
        },
        atRest: {
          settleSeconds: Number(values["settle-seconds"]),
          quiet,
          nodeReports: { ...reports, ...written, targetPerSecond: round(rate) },
          rssMiB: final?.rssMiB,
          peakRssMiB: final?.peakRssMiB,
        },
        ...(profile ? { cpuProfile: profile } : {}),
      };
      writeResults(out, run, results);
      log(`results in ${out}`);
      console.log(JSON.stringify({ start: results.start, atRest: results.atRest }, null, 2));
      failed = false;
    },
    { maxSeconds: Number(values["max-seconds"]), log },
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
