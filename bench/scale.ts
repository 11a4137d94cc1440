/**
 * Control-plane scale benchmark: the controller and one node agent against a real kube-apiserver
 * (etcd + kube-apiserver from src/lab/control-plane, TLS, RBAC, deploy/ installed) holding a
 * large cluster (default 100,000 pods, 5,000 nodes, 200 namespaces, 1,000 policies over 4
 * gateways), loaded through its HTTP API. The controller and the agent run as child processes
 * with their own service-account tokens, so their memory and CPU time are their own.
 *
 *   sudo npx tsx bench/scale.ts [--nodes 5000] [--pods 100000] [--namespaces 200] [--policies 1000]
 *        [--cluster-policies 50] [--new-pods 20] [--churn-seconds 15] [--churn-rate <writes/s>] [--concurrency 48]
 *        [--controller-only] [--controller-cpu-prof <dir>] [--out file] [--max-seconds 2400]
 *
 * Measured:
 *   loading      how long the creates and status patches took (and a list confirming them)
 *   controller   process start -> informers synced -> every policy has a status (polled by
 *                listing the policies) and its finalizer; peak RSS (VmHWM), peak heap (sampled),
 *                CPU time; status latency after a spec change; CPU under node-report churn
 *   node agent   process start -> first programmed datapath (in a scratch network namespace);
 *                peak RSS; pod created + status patched -> its address programmed (median, p95);
 *                the same and its CPU under node-report churn
 * Every result is checked: each policy's selectedPods must equal what the fixture selects, and
 * the kernel's divert map must hold exactly what the agent planned, new pods included.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { COMPONENT_ACCOUNTS, startControlPlane, type ControlPlane } from "../src/lab/control-plane/index.js";
import { deleteNamespacesWithPrefix, newRunPrefix } from "../src/lab/netns.js";
import { packageRoot } from "../src/lab/paths.js";
import { inNamespace } from "../src/util/exec.js";
import { requireRoot } from "./lib/env.js";
import { startRun } from "./lib/record.js";
import { guarded } from "./lib/guard.js";
import { countDivert, createNodeNamespace } from "./lib/netns.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { round, roundSummary, summarize } from "./lib/stats.js";
import {
  ApiHttp,
  countRunningPods,
  fillCluster,
  gatewaysWithStatus,
  listPolicies,
  policyProgress,
  range,
  selectedPodMismatches,
} from "./scale/api.js";
import { startNodeAgent } from "./scale/agent.js";
import { BenchChild, procStats, type ProcStats } from "./scale/child.js";
import { wallClockMs, type ChildEvent } from "./scale/child-io.js";
import { NodeReportChurn, REPORT_REFRESH_SECONDS } from "./scale/churn.js";
import {
  checkShape,
  expectedSelectedPods,
  FIRST_EXTRA_POD_HOST,
  instanceAddress,
  nodeAddress,
  nodeName,
  podAddress,
  podManifest,
  podParams,
  podsOnNode,
  podStatus,
  policyRef,
  selectedPodIPsOnNode,
  SHAPE_OPTIONS,
  shapeFromOptions,
  VPC_PREFIX_LENGTH,
  type ScaleShape,
} from "./scale/fixture.js";

const TABLE = "static_egress";

class ScaleCheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ScaleCheckError";
  }
}

const log = (line: string): void => console.error(`[scale ${new Date().toISOString().slice(11, 19)}] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pollUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  everyMs = 50,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return wallClockMs();
    if (Date.now() > deadline) throw new ScaleCheckError(`${what}: not reached within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

function event(child: BenchChild, ev: string): ChildEvent {
  const e = child.events.find((x) => x.ev === ev);
  if (!e) throw new ScaleCheckError(`${child.name}: no ${ev} event`);
  return e;
}

/** RSS now and peak (VmHWM) and CPU time of the control plane's etcd and kube-apiserver (its PIDs from owner.json, named by /proc/<pid>/comm). */
function serverStats(cp: ControlPlane): Record<string, ProcStats | undefined> {
  const out: Record<string, ProcStats | undefined> = {};
  let pids: number[];
  try {
    pids = (JSON.parse(readFileSync(join(cp.dir, "owner.json"), "utf8")) as { pids?: number[] }).pids ?? [];
  } catch {
    pids = [];
  }
  for (const pid of pids) {
    let comm: string;
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    out[comm] = procStats(pid);
  }
  return out;
}

function cpuPercent(before: ProcStats | undefined, after: ProcStats | undefined, wallMs: number): number {
  if (!before || !after) return Number.NaN;
  return round(((after.cpuMs - before.cpuMs) / wallMs) * 100);
}

/**
 * A spec change on a policy (its priority) and the time until the controller reports that
 * generation, polled with a GET every 20 ms. The status must say the new generation and keep
 * the policy's selected-pod count.
 */
async function specChangeToStatus(
  http: ApiHttp,
  s: ScaleShape,
  p: number,
  priority: number,
  controller: BenchChild,
  expected: Map<string, number>,
  timeoutMs = 60_000,
): Promise<number> {
  const ref = policyRef(s, p);
  const t0 = wallClockMs();
  const patched = await http.patchPolicySpec(ref, { priority });
  const generation = (patched.metadata as { generation: number }).generation;
  const cpuBefore = controller.readProc();
  try {
    let last: Awaited<ReturnType<ApiHttp["getPolicy"]>> | undefined;
    const at = await pollUntil(
      async () => (last = await http.getPolicy(ref)).status?.observedGeneration === generation,
      timeoutMs,
      `status of ${ref.name} generation ${generation}`,
      20,
    );
    const key =
      ref.kind === "EgressPolicy" ? `EgressPolicy/${ref.namespace}/${ref.name}` : `ClusterEgressPolicy/${ref.name}`;
    if (last?.status?.selectedPods !== expected.get(key))
      throw new ScaleCheckError(
        `${key} generation ${generation}: selectedPods ${last?.status?.selectedPods}, expected ${expected.get(key)}`,
      );
    if (
      !last?.status?.conditions?.every((c) => (c as { observedGeneration?: number }).observedGeneration === generation)
    )
      throw new ScaleCheckError(`${key}: conditions not all for generation ${generation}`);
    return at - t0;
  } catch (e) {
    if (e instanceof ScaleCheckError && !e.message.includes("not reached")) throw e;
    // A stall is a result too: record what the controller was doing, go on.
    const now = controller.readProc();
    log(
      `no status for ${ref.name} within ${timeoutMs} ms: controller ${controller.running ? "running" : "exited"}, ` +
        `CPU ${cpuPercent(cpuBefore, now, timeoutMs)} % meanwhile, ` +
        `RSS ${now?.rssMiB} MiB, last memory ` +
        `samples ${JSON.stringify(controller.recentMemory.slice(-5))}: ${(e as Error).message}`,
    );
    return Number.NaN;
  }
}

/**
 * The controller's passes (its `pass` events: scope full or keyed, duration) in all and within a
 * window (the node-report churn): how many, and how long they took.
 */
function passSummary(passes: readonly ChildEvent[], fromMs: number, toMs: number): Record<string, unknown> {
  const of = (list: readonly ChildEvent[]) => {
    const out: Record<string, unknown> = {};
    for (const scope of ["full", "keyed"]) {
      const d = list.filter((e) => e.scope === scope).map((e) => Number(e.durationMs));
      out[scope] = { count: d.length, durationMs: d.length ? roundSummary(summarize(d)) : null };
    }
    return out;
  };
  return { all: of(passes), duringChurn: of(passes.filter((e) => e.t >= fromMs && e.t <= toMs)) };
}

interface PodSample {
  ip: string;
  /** Status patch (the address reaches the API) -> the agent's apply with it done. */
  fromStatusPatchMs: number;
  /** Pod create -> programmed. */
  fromCreateMs: number;
  /** Kernel commands of that apply (ip, nft through `ip netns exec`), ms. */
  commandsMs: number;
}

async function createAndWait(
  http: ApiHttp,
  agent: BenchChild,
  node: number,
  k: number,
  namespace: string,
): Promise<PodSample> {
  const ip = podAddress(node, FIRST_EXTRA_POD_HOST + k);
  const params = {
    namespace,
    name: `new-${k}`,
    app: `app-${k % 2}`,
    node: nodeName(node),
    hostIP: nodeAddress(node),
    podIP: ip,
  };
  const from = agent.events.length;
  const tCreate = wallClockMs();
  await http.createPod(podManifest(params));
  const tStatus = wallClockMs();
  await http.patchPodStatus(
    namespace,
    params.name,
    podStatus(params, new Date().toISOString().replace(/\.\d+Z$/, "Z")),
  );
  const applied = await agent.waitForEvent(
    (e) => e.ev === "applied" && (e.podIPs as string[]).includes(ip),
    60_000,
    `programming of ${ip}`,
    from,
  );
  return {
    ip,
    fromStatusPatchMs: round(applied.t - tStatus),
    fromCreateMs: round(applied.t - tCreate),
    commandsMs: Number(applied.commandsMs),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ...SHAPE_OPTIONS,
      "new-pods": { type: "string", default: "20" },
      "churn-seconds": { type: "string", default: "15" },
      // Node-report writes per second; default: what the cluster's nodes write (nodes / 120 s).
      "churn-rate": { type: "string" },
      // Stop after the controller's part (the node agent's and the reconcile profile are skipped).
      "controller-only": { type: "boolean", default: false },
      // Run the controller child with `node --cpu-prof` into this directory.
      "controller-cpu-prof": { type: "string" },
      "agent-node": { type: "string", default: "42" },
      concurrency: { type: "string", default: "48" },
      out: { type: "string" },
      "max-seconds": { type: "string", default: "2400" },
    },
  });
  requireRoot();
  const shape = shapeFromOptions(values);
  checkShape(shape);
  const newPods = Number(values["new-pods"]);
  const churnSeconds = Number(values["churn-seconds"]);
  const agentNode = Number(values["agent-node"]) % shape.nodes;
  const out = values.out ?? defaultResultPath("scale");
  const root = packageRoot();
  const run = await startRun("scale", {
    ...shape,
    newPods,
    churnSeconds,
    agentNode,
    concurrency: values.concurrency,
    churnRate: values["churn-rate"] ?? null,
    controllerOnly: values["controller-only"],
    out,
    maxSeconds: Number(values["max-seconds"]),
  });
  log(`load average at start ${run.loadAtStart.join(" ")}`);

  const prefix = newRunPrefix();
  const netns = `${prefix}-scale-node`;
  const work = mkdtempSync(join(tmpdir(), "se-scale-"));
  const children: BenchChild[] = [];
  let cp: ControlPlane | undefined;
  let http: ApiHttp | undefined;
  let failed = true;
  // What was measured so far: written with the failure when a step fails or the time runs out,
  // so a run that stalls still leaves its figures (and which step it stalled in).
  const partial: Record<string, unknown> = {
    command: `sudo npx tsx bench/scale.ts ${process.argv.slice(2).join(" ")}`.trim(),
    shape,
  };
  let failure = "interrupted or out of time";
  const cleanup = async () => {
    for (const c of children) c.kill();
    if (failed) {
      try {
        writeResults(out, run, { ...partial, failed: failure });
        log(`partial results (the run failed) in ${out}`);
      } catch (e) {
        log(`could not write the partial results: ${(e as Error).message}`);
      }
    }
    await deleteNamespacesWithPrefix(prefix);
    http?.close();
    if (failed && cp) writeFileSync(join(work, "kube-apiserver.log"), cp.logTail("kube-apiserver", 200));
    await cp?.stop();
    for (const f of ["controller.kubeconfig", "node-agent.kubeconfig"]) rmSync(join(work, f), { force: true });
    if (failed) log(`child logs kept in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  };

  await guarded(
    cleanup,
    () =>
      body().catch((e: unknown) => {
        failure = e instanceof Error ? e.message : String(e);
        throw e;
      }),
    { maxSeconds: Number(values["max-seconds"]), log },
  );

  async function body(): Promise<void> {
    const started = wallClockMs();
    // --- the cluster -------------------------------------------------------------------
    // No controller manager: nothing here needs it (our nodes have no kubelet), and its
    // garbage collector and ServiceAccount controllers would spend the same two cores.
    cp = await startControlPlane({ controllerManager: false, log });
    const c = cp;
    const cpStarted = wallClockMs();
    http = new ApiHttp(c, Number(values.concurrency) + 16);
    const h = http;
    const load = await fillCluster(h, shape, { concurrency: Number(values.concurrency), log });
    const loaded = await countRunningPods(h, shape);
    if (loaded.runningWithAddress !== shape.pods)
      throw new ScaleCheckError(
        `after loading: ${loaded.runningWithAddress} of ${shape.pods} pods Running with their address (${JSON.stringify(loaded)})`,
      );
    const samplePod = podParams(shape, 0);
    const podJsonBytes = JSON.stringify(
      await h.call("GET", `/api/v1/namespaces/${samplePod.namespace}/pods/${samplePod.name}`),
    ).length;
    const serverProcs = serverStats(c);
    const controllerKubeconfig = join(work, "controller.kubeconfig");
    writeFileSync(controllerKubeconfig, await c.serviceAccountKubeconfig(COMPONENT_ACCOUNTS.controller), {
      mode: 0o600,
    });
    partial.load = { ...load, podsListedRunningWithAddress: loaded.runningWithAddress };
    partial.fixture = { podJsonBytes };
    partial.apiServer = { kubernetes: c.version, afterLoad: serverProcs };
    log(
      `cluster loaded in ${round((wallClockMs() - cpStarted) / 1000)} ` +
        `s: ${JSON.stringify(load)}; pod JSON ${podJsonBytes} B (managedFields ` +
        `included); API server / etcd RSS ${JSON.stringify(serverProcs)}`,
    );

    // --- controller ----------------------------------------------------------------------
    const ctlSpawn = wallClockMs();
    const ctl = new BenchChild(
      "controller",
      join(root, "bench", "scale", "controller-main.ts"),
      ["--kubeconfig", controllerKubeconfig],
      {
        cwd: root,
        logPath: join(work, "controller.log"),
        ...(values["controller-cpu-prof"]
          ? { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", values["controller-cpu-prof"]] }
          : {}),
      },
    );
    children.push(ctl);
    // Filled as each figure is measured (partial results keep what a failed run got to).
    const controller: Record<string, unknown> = {};
    partial.controller = controller;
    const ctlLoaded = await ctl.waitForEvent((e) => e.ev === "loaded", 120_000, "loaded");
    const synced = await ctl.waitForEvent((e) => e.ev === "synced", 300_000, "informers synced");
    Object.assign(controller, {
      processStartToLoadedMs: round(ctlLoaded.t - ctlSpawn),
      processStartToSyncedMs: round(synced.t - ctlSpawn),
      informersSyncMs: round(synced.t - event(ctl, "informers-starting").t),
      cachedAtSync: synced.cached,
    });
    log(`controller synced ${round((synced.t - ctlSpawn) / 1000)} s after start; RSS ${String(synced.rssMiB)} MiB`);
    // Polled by listing all policies (2 lists of 500-item pages) every 250 ms.
    let allStatusAt = 0;
    let policies = await listPolicies(h);
    let progress = policyProgress(policies, shape);
    const allConvergedAt = await pollUntil(
      async () => {
        policies = await listPolicies(h);
        progress = policyProgress(policies, shape);
        if (!allStatusAt && progress.withStatus === shape.policies) allStatusAt = wallClockMs();
        return (
          progress.withStatus === shape.policies &&
          progress.withFinalizer === shape.policies &&
          (await gatewaysWithStatus(h)) === shape.gateways
        );
      },
      600_000,
      "every policy with a status and a finalizer",
      250,
    );
    const firstIdle = await ctl.waitForEvent((e) => e.ev === "first-idle", 300_000, "first idle");
    const converged = await ctl.stats("converged");
    const convergedProc = ctl.readProc();
    Object.assign(controller, {
      syncedToAllStatusesMs: round(allStatusAt - synced.t),
      syncedToAllStatusesAndFinalizersMs: round(allConvergedAt - synced.t),
      processStartToAllStatusesMs: round(allStatusAt - ctlSpawn),
      syncedToFirstIdleMs: round(firstIdle.t - synced.t),
      rssMiB: { afterLoad: ctlLoaded.rssMiB, afterSync: synced.rssMiB, converged: converged.rssMiB },
      convergedPeakRssMiB: convergedProc?.peakRssMiB,
    });
    log(
      `controller: every status written ${round((allStatusAt - synced.t) / 1000)} s after sync; peak RSS ${convergedProc?.peakRssMiB} MiB`,
    );
    const mismatches = selectedPodMismatches(policies, shape);
    if (mismatches.length > 0)
      throw new ScaleCheckError(
        `${mismatches.length} policies report a wrong selectedPods, e.g. ${JSON.stringify(mismatches.slice(0, 3))}`,
      );
    const notReady = shape.policies - progress.ready;
    if (notReady > 0) throw new ScaleCheckError(`${notReady} policies are not Ready`);

    // One reconcile at scale: a spec change until its status (observedGeneration) is written.
    await sleep(1_000);
    const beforeSpec = ctl.readProc();
    const expected = expectedSelectedPods(shape);
    const specSamples: number[] = [];
    for (const k of range(5)) {
      specSamples.push(await specChangeToStatus(h, shape, (k * 97) % shape.policies, 101 + k, ctl, expected));
      await sleep(300);
    }
    const afterSpec = ctl.readProc();
    log(`controller: spec change -> status ${JSON.stringify(specSamples.map(round))} ms`);
    Object.assign(controller, {
      specChangeToStatusMs: roundSummary(summarize(specSamples.filter(Number.isFinite))),
      specChangeSamplesMs: specSamples.map((x) => (Number.isFinite(x) ? round(x) : null)),
      specChangeTimeouts: specSamples.filter((x) => !Number.isFinite(x)).length,
    });

    // Node-report churn at the rate of the whole cluster; status latency measured meanwhile.
    const churnRate = values["churn-rate"] ? Number(values["churn-rate"]) : shape.nodes / REPORT_REFRESH_SECONDS;
    const churnResult: Record<string, unknown> = { targetPerSecond: round(churnRate), specChangeToStatusMs: [] };
    controller.nodeReportChurn = churnResult;
    const ctlBeforeChurn = ctl.readProc();
    const ctlChurn = new NodeReportChurn(h, shape, churnRate, agentNode);
    const churnBefore = ctl.readProc();
    const churnT0 = wallClockMs();
    ctlChurn.start();
    const churnSpecSamples: number[] = [];
    await sleep(2_000);
    for (const k of range(3)) {
      churnSpecSamples.push(
        await specChangeToStatus(h, shape, (shape.policies / 2 + k * 13) % shape.policies, 110 + k, ctl, expected),
      );
      churnResult.specChangeToStatusMs = churnSpecSamples.map((x) => (Number.isFinite(x) ? round(x) : null));
      await sleep(1_000);
    }
    while (wallClockMs() - churnT0 < churnSeconds * 1000) await sleep(100);
    const churnAfter = ctl.readProc();
    const churnWallMs = wallClockMs() - churnT0;
    const churnDone = await ctlChurn.stop();
    log(
      `controller under ${churnDone.writesPerSecond}/s node reports: ` +
        `CPU ${cpuPercent(churnBefore, churnAfter, churnWallMs)} %, spec -> ` +
        `status ${JSON.stringify(churnSpecSamples.map(round))} ms`,
    );
    Object.assign(churnResult, { ...churnDone, cpuPercentOfOneCore: cpuPercent(churnBefore, churnAfter, churnWallMs) });
    // A controller that does not answer is a result, not the end of the run: its /proc figures stand in.
    const ctlFinal = await ctl.stats("final").catch((e: unknown) => {
      log(`controller: ${(e as Error).message.split("\n")[0]}`);
      controller.finalStatsUnanswered = true;
      return undefined;
    });
    const ctlFinalProc = ctl.readProc();
    const passes = ctl.events.filter((e) => e.ev === "pass");
    await ctl.stop();

    Object.assign(controller, {
      rssMiB: {
        afterLoad: ctlLoaded.rssMiB,
        afterSync: synced.rssMiB,
        converged: converged.rssMiB,
        peakBeforeChurn: ctlBeforeChurn?.peakRssMiB,
        peak: ctlFinalProc?.peakRssMiB ?? ctlFinal?.peakRssMiB,
      },
      heapUsedMiB: {
        afterLoad: ctlLoaded.heapUsedMiB,
        afterSync: synced.heapUsedMiB,
        converged: converged.heapUsedMiB,
        peakSampled: ctl.peakHeapUsedMiB,
        limit: ctlLoaded.heapLimitMiB,
      },
      cpuMs: {
        toLoaded: ctlLoaded.cpuMs,
        toSynced: synced.cpuMs,
        toConverged: converged.cpuMs,
        total: ctlFinalProc?.cpuMs ?? ctlFinal?.cpuMs,
      },
      selectedPodsChecked: shape.policies,
      specChangeCpuMsPerSample:
        beforeSpec && afterSpec ? round((afterSpec.cpuMs - beforeSpec.cpuMs) / specSamples.length) : null,
      passes: passSummary(passes, churnT0, churnT0 + churnWallMs),
    });
    if (values["controller-only"]) {
      writeResults(out, run, { ...partial, apiServer: { ...(partial.apiServer as object), atEnd: serverStats(c) } });
      log(`results (controller only) in ${out}`);
      console.log(JSON.stringify({ controller }, null, 2));
      failed = false;
      return;
    }

    // --- node agent ----------------------------------------------------------------------
    const expectedIPs = selectedPodIPsOnNode(shape, agentNode);
    await createNodeNamespace(netns, nodeAddress(agentNode), VPC_PREFIX_LENGTH);
    const runner = inNamespace(netns);
    const agentKubeconfig = join(work, "node-agent.kubeconfig");
    writeFileSync(
      agentKubeconfig,
      await c.serviceAccountKubeconfig(COMPONENT_ACCOUNTS.nodeAgent, { node: nodeName(agentNode) }),
      { mode: 0o600 },
    );
    const {
      agent,
      spawnedAt: agentSpawn,
      loaded: aLoaded,
      started: aStarted,
      firstApplied,
      premature,
      firstReconcileStartedMsBeforeSynced,
      kernelElements: kernelFirst,
    } = await startNodeAgent({
      root,
      kubeconfig: agentKubeconfig,
      node: nodeName(agentNode),
      netns,
      runner,
      expectedIPs,
      logPath: join(work, "node-agent.log"),
      onSpawn: (child) => children.push(child),
    });
    log(`node agent synced; its cache: ${JSON.stringify(aStarted.cached)}`);
    if (premature.length > 0)
      log(
        `node agent applied ${premature.length} incomplete plan(s) before its informers were synced: ${JSON.stringify(premature)}`,
      );
    const aConverged = await agent.stats("converged");
    log(
      `node agent: first datapath ${round((firstApplied.t - agentSpawn) / 1000)} ` +
        `s after start (${kernelFirst} map elements ` +
        `for ${expectedIPs.length} pods); RSS ${String(aConverged.rssMiB)} MiB`,
    );

    // Pods created on this node, one at a time, as a kubelet would (create, then status with the address).
    await sleep(1_000);
    const quiet: PodSample[] = [];
    for (const k of range(newPods)) {
      quiet.push(await createAndWait(h, agent, agentNode, k, "ns-000"));
      await sleep(250);
    }
    log(
      `pod -> programmed (quiet): ${JSON.stringify(roundSummary(summarize(quiet.map((q) => q.fromStatusPatchMs))))} ms`,
    );

    // The same under node-report churn; the agent reconciles on every Node change it sees.
    const agentBeforeChurn = agent.readProc();
    const agentChurn = new NodeReportChurn(h, shape, churnRate, agentNode);
    const appliesBefore = agent.events.filter((e) => e.ev === "applied").length;
    const aChurnBefore = agent.readProc();
    const aChurnT0 = wallClockMs();
    agentChurn.start();
    const churned: PodSample[] = [];
    await sleep(1_000);
    for (const k of range(5)) {
      churned.push(await createAndWait(h, agent, agentNode, newPods + k, "ns-001"));
      await sleep(1_500);
    }
    while (wallClockMs() - aChurnT0 < churnSeconds * 1000) await sleep(100);
    const aChurnAfter = agent.readProc();
    const aChurnWallMs = wallClockMs() - aChurnT0;
    const appliesDuring = agent.events.filter((e) => e.ev === "applied").length - appliesBefore;
    const aChurnDone = await agentChurn.stop();
    log(
      `node agent under ${aChurnDone.writesPerSecond}/s node reports: ${appliesDuring} ` +
        `reconciles, CPU ${cpuPercent(aChurnBefore, aChurnAfter, aChurnWallMs)} %`,
    );

    // The kernel must hold every new pod, and exactly what the last plan says.
    await sleep(1_000);
    const lastApplied = [...agent.events].reverse().find((e) => e.ev === "applied")!;
    const { stdout: mapText } = await runner.run("nft", ["list", "map", "ip", TABLE, "pod_class"]);
    const missing = [...quiet, ...churned]
      .map((q) => q.ip)
      .filter((ip) => !new RegExp(`\\b${ip.replace(/\./g, "\\.")}\\b`).test(mapText));
    if (missing.length > 0) throw new ScaleCheckError(`kernel divert map lacks new pods ${missing.join(", ")}`);
    const kernelLast = await countDivert(runner, TABLE);
    if (kernelLast !== lastApplied.entries)
      throw new ScaleCheckError(
        `kernel divert map holds ${kernelLast} elements, the last plan ${String(lastApplied.entries)}`,
      );
    const aFinal = await agent.stats("final");
    const aFinalProc = agent.readProc();
    await agent.stop();

    const reconcileLogs = agent.logs.filter((l) => l.msg === "datapath programmed" && typeof l.durationMs === "number");
    const nodeAgent = {
      node: nodeName(agentNode),
      seededPodsOnNode: podsOnNode(shape, agentNode).length,
      selectedPodsOnNode: expectedIPs.length,
      gatewayInstances: shape.gateways * shape.instancesPerGateway,
      processStartToLoadedMs: round(aLoaded.t - agentSpawn),
      processStartToSyncedMs: round(aStarted.t - agentSpawn),
      informersSyncMs: round(aStarted.t - event(agent, "starting").t),
      processStartToFirstProgrammedMs: round(firstApplied.t - agentSpawn),
      syncedToFirstProgrammedMs: round(firstApplied.t - aStarted.t),
      firstApplyCommandsMs: firstApplied.commandsMs,
      /** Applies of plans made from a partly listed cache, before the complete one (see README). */
      prematureApplies: premature,
      /** Positive: the agent's first reconcile began while its informers were still listing. */
      firstReconcileStartedMsBeforeSynced,
      cachedAtSync: aStarted.cached,
      firstMapElements: kernelFirst,
      rssMiB: {
        afterLoad: aLoaded.rssMiB,
        afterSync: aStarted.rssMiB,
        converged: aConverged.rssMiB,
        peakBeforeChurn: agentBeforeChurn?.peakRssMiB,
        peak: aFinalProc?.peakRssMiB ?? aFinal.peakRssMiB,
      },
      heapUsedMiB: {
        afterLoad: aLoaded.heapUsedMiB,
        afterSync: aStarted.heapUsedMiB,
        peakSampled: agent.peakHeapUsedMiB,
      },
      cpuMs: {
        toSynced: aStarted.cpuMs,
        toFirstProgrammed: firstApplied.cpuMs,
        total: aFinalProc?.cpuMs ?? aFinal.cpuMs,
      },
      /** "datapath programmed" log lines: plan + apply of reconciles that changed the kernel. */
      reconcileDurationMs: roundSummary(summarize(reconcileLogs.map((l) => l.durationMs as number))),
    };
    const podToProgrammed = {
      pods: quiet.length,
      fromStatusPatchMs: roundSummary(summarize(quiet.map((q) => q.fromStatusPatchMs))),
      fromCreateMs: roundSummary(summarize(quiet.map((q) => q.fromCreateMs))),
      applyCommandsMs: roundSummary(summarize(quiet.map((q) => q.commandsMs))),
      samples: quiet,
      underNodeReportChurn: {
        ...aChurnDone,
        targetPerSecond: round(churnRate),
        agentReconciles: appliesDuring,
        agentCpuPercentOfOneCore: cpuPercent(aChurnBefore, aChurnAfter, aChurnWallMs),
        fromStatusPatchMs: roundSummary(summarize(churned.map((q) => q.fromStatusPatchMs))),
        samples: churned,
      },
      finalMapElements: kernelLast,
    };

    // Where a reconcile's CPU goes (same calls as the controller and the agent, no HTTP, no kernel).
    log("profiling one reconcile's steps (child process)");
    const profiler = new BenchChild(
      "reconcile-profile",
      join(root, "bench", "scale", "reconcile-profile.ts"),
      [
        "--nodes",
        String(shape.nodes),
        "--pods",
        String(shape.pods),
        "--namespaces",
        String(shape.namespaces),
        "--policies",
        String(shape.policies),
        "--cluster-policies",
        String(shape.clusterPolicies),
        "--agent-node",
        String(agentNode),
      ],
      { cwd: root, logPath: join(work, "reconcile-profile.log") },
    );
    children.push(profiler);
    const profile = await profiler.waitForEvent((e) => e.ev === "profile", 180_000, "profile");
    await profiler.stop();
    const reconcileProfile = {
      reps: profile.reps,
      controllerMs: profile.controllerMs,
      nodeAgentMs: profile.nodeAgentMs,
    };
    log(`reconcile profile: ${JSON.stringify(reconcileProfile)}`);

    const serverEnd = serverStats(c);
    const results = {
      command: `sudo npx tsx bench/scale.ts ${process.argv.slice(2).join(" ")}`.trim(),
      totalSeconds: round((wallClockMs() - started) / 1000),
      shape,
      network: {
        nodes: "10.0.0.0/16",
        gatewayInstances: `${instanceAddress(shape, 0, 0)}-${instanceAddress(shape, shape.gateways - 1, shape.instancesPerGateway - 1)}`,
        podCIDRs: "10.64.0.0/11 (one /24 per node)",
        services: "10.96.0.0/12",
        egressIPs: "10.200.0.0/16",
      },
      fixture: {
        podJsonBytes,
        selectedPodsTotal: [...expectedSelectedPods(shape).values()].reduce((x, y) => x + y, 0),
      },
      apiServer: {
        kubernetes: c.version,
        controllerManager: false,
        watchCache: true,
        afterLoad: serverProcs,
        atEnd: serverEnd,
      },
      load: { ...load, podsListedRunningWithAddress: loaded.runningWithAddress },
      controller,
      nodeAgent,
      podToProgrammed,
      reconcileProfile,
    };
    writeResults(out, run, results);
    log(`results in ${out}`);
    console.log(
      JSON.stringify({ controller, nodeAgent, podToProgrammed: { ...podToProgrammed, samples: undefined } }, null, 2),
    );
    failed = false;
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
