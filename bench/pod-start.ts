/**
 * Pod-start benchmark: what our chained CNI plugin adds to a pod's CNI ADD, beside Debian's ptp
 * plugin, in the same run. A lab node (one gateway, one policy) runs a node agent serving the
 * CNI socket; a minimal runtime (src/cni/testing/runtime.ts) runs the plugins in the node's
 * namespace, as libcni does, each call a fresh process. Every cycle gets fresh pod namespaces
 * and runs, in alternating order:
 *   ptp        the list [ptp] alone: ADD, then DEL
 *   shim       the list [ptp, static-egress] (the Go shim; the agent runs the plugin): ADD, then DEL
 *   nodejs     every 4th cycle, [ptp, static-egress-nodejs] (the TypeScript plugin as a process,
 *              the path before the shim): ADD, then DEL
 * Then, with the agent stopped, a few shim ADDs: the fallback path (the TypeScript plugin
 * quarantines the pod).
 *
 * Added latency = our plugin's process in the chain's ADD, as the runtime sees it. Each shim
 * ADD is checked: it printed ptp's result, the agent took the call (no fallback), the pod is not
 * quarantined, and a selected pod's address is in the node's divert map before ADD returned.
 * Each fallback ADD is checked to have quarantined the pod.
 *
 *   npx tsx bench/pod-start.ts [--cycles 200] [--fallback 20] [--out bench/results/pod-start.json] [--max-seconds 900] [--agent-log FILE]
 */
import { CNI_LAB_YAML, startCniNodeAgent } from "../test/support/cni-lab.js";
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import type { KubeObject } from "../src/api/objects.js";
import { AgentClient } from "../src/cni/client.js";
import { FALLBACK_PLUGIN, installPlugin, PLUGIN_TYPE } from "../src/cni/install.js";
import { QuarantineTable } from "../src/cni/quarantine.js";
import { CniRuntime, type ConfList, type PluginRun, type Sandbox } from "../test/support/cni-runtime.js";
import { alive } from "../src/lab/control-plane/processes.js";
import { parseLabConfig } from "../src/lab/config.js";
import { Lab, LAB_CLUSTER_NETWORK, waitFor } from "../src/lab/lab.js";
import { addNamespace, deleteNamespace, execIn, newRunPrefix } from "../src/lab/netns.js";
import { cliEntry, packageRoot } from "../src/lab/paths.js";
import { inNamespace } from "../src/util/exec.js";
import { requireRoot } from "./lib/env.js";
import { currentLoad, startRun } from "./lib/record.js";
import { guarded } from "./lib/guard.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { median, percentile, round } from "./lib/stats.js";

const { values: opts } = parseArgs({
  options: {
    cycles: { type: "string", default: "200" },
    fallback: { type: "string", default: "20" },
    out: { type: "string", default: defaultResultPath("pod-start") },
    "max-seconds": { type: "string", default: "900" },
    "agent-log": { type: "string" },
  },
});
// Bounded: every cycle costs a few hundred ms and two namespaces.
const CYCLES = Math.min(Math.max(Number(opts.cycles), 10), 500);
const FALLBACKS = Math.min(Math.max(Number(opts.fallback), 0), 50);

type Variant = "ptp" | "shim" | "nodejs" | "fallback";

interface Pod {
  namespace: string;
  name: string;
  selected: boolean;
}

interface Sample {
  variant: Variant;
  selected: boolean;
  /** ADD of the whole list, as the runtime waits for it. */
  addMs: number;
  /** ADD of ptp alone inside it. */
  ptpMs: number;
  /** ADD of our plugin inside it (undefined for ptp alone): the added latency. */
  oursMs?: number;
  delMs: number;
}

function stats(xs: readonly number[]) {
  return {
    n: xs.length,
    p50: round(median(xs)),
    p95: round(percentile(xs, 95)),
    p99: round(percentile(xs, 99)),
    max: round(Math.max(...xs)),
  };
}

async function main(): Promise<void> {
  requireRoot();
  cliEntry(); // dist/ is built
  const run = await startRun("pod-start", { ...opts });
  const lab = await Lab.up(parseLabConfig(CNI_LAB_YAML, "pod-start"), { prefix: newRunPrefix(), persistent: false });
  const podNetns: string[] = [];
  let agentPid: number | undefined;
  const stopAgent = async () => {
    const pid = agentPid;
    agentPid = undefined;
    if (pid === undefined) return;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
    await waitFor(() => !alive(pid), 5_000, `node agent ${pid} did not exit`);
  };
  const cleanup = async () => {
    await stopAgent();
    for (const ns of podNetns) await deleteNamespace(ns).catch(() => undefined);
    // --agent-log: the agent's own timings ("pod programmed for CNI ADD", ms) outlive the lab.
    if (opts["agent-log"]) copyFileSync(join(lab.dir, "logs", "pod-start-node-agent.log"), opts["agent-log"]);
    await lab.down();
  };
  await guarded(
    cleanup,
    async () => {
      const nodeNetns = lab.topology.nodes[0]!.netns;
      const socket = join(lab.dir, "cni.sock");
      const binDir = join(lab.dir, "cni-bin");
      mkdirSync(binDir, { recursive: true });
      installPlugin(binDir, {
        entry: join(packageRoot(), "dist", "cni", "main.js"),
        shim: join(packageRoot(), "dist", "cni", "static-egress-shim"),
      });
      const runtime = new CniRuntime([binDir, "/usr/lib/cni"], nodeNetns);

      // Every pod the run will start is in the agent's view up front, without an address (the
      // kubelet writes it after ADD): the scheduler bound it before the runtime made its sandbox.
      const pods: Pod[] = [];
      const newPod = (i: number, tag: string): Pod =>
        i % 2 === 0
          ? { namespace: "payments", name: `${tag}-pay-${i}`, selected: true }
          : { namespace: "web", name: `${tag}-web-${i}`, selected: false };
      const byVariant: Record<Exclude<Variant, "ptp">, Pod[]> = { shim: [], nodejs: [], fallback: [] };
      for (let i = 0; i < CYCLES; i++) byVariant.shim.push(newPod(i, "s"));
      for (let i = 0; i < Math.ceil(CYCLES / 4); i++) byVariant.nodejs.push(newPod(i, "n"));
      for (let i = 0; i < FALLBACKS; i++) byVariant.fallback.push(newPod(i, "f"));
      pods.push(...byVariant.shim, ...byVariant.nodejs, ...byVariant.fallback);
      const podObject = (p: Pod): KubeObject => ({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: p.name, namespace: p.namespace, labels: { app: p.selected ? "checkout" : "frontend" } },
        spec: { nodeName: "node1" },
        status: { phase: "Pending" },
      });
      const view = join(lab.dir, "node-view.yaml");
      const viewText = [...lab.objects(await lab.currentPolicies()), ...pods.map(podObject)]
        .map((o) => stringify(o))
        .join("---\n");
      writeFileSync(`${view}.tmp`, viewText);
      renameSync(`${view}.tmp`, view);

      // The lab's own agent reads the gateway's view; ours serves the socket with the API's view.
      lab.killProcess("agent-node1");
      agentPid = startCniNodeAgent({
        labDir: lab.dir,
        netns: nodeNetns,
        view,
        socket,
        logName: "pod-start-node-agent.log",
      });
      await waitFor(
        async () => (await new AgentClient(socket, 1_000).health().catch(() => undefined))?.ok === true,
        30_000,
        "the node agent's CNI socket never answered",
        100,
      );

      const ptp = (dataDir: string) => ({
        type: "ptp",
        ipMasq: true,
        ipam: { type: "host-local", ranges: [[{ subnet: "10.244.1.0/24" }]], routes: [{ dst: "0.0.0.0/0" }], dataDir },
      });
      const ours = (type: string) => ({
        type,
        agentSocket: socket,
        timeoutMs: 5_000,
        clusterCIDRs: [
          ...LAB_CLUSTER_NETWORK.podCIDRs,
          ...LAB_CLUSTER_NETWORK.serviceCIDRs,
          ...LAB_CLUSTER_NETWORK.nodeCIDRs,
        ],
      });
      const ipam = join(lab.dir, "cni-ipam");
      const lists: Record<Variant, ConfList> = {
        ptp: { cniVersion: "1.0.0", name: "bench", plugins: [ptp(ipam)] },
        shim: { cniVersion: "1.0.0", name: "bench", plugins: [ptp(ipam), ours(PLUGIN_TYPE)] },
        nodejs: { cniVersion: "1.0.0", name: "bench", plugins: [ptp(ipam), ours(FALLBACK_PLUGIN)] },
        fallback: { cniVersion: "1.0.0", name: "bench", plugins: [ptp(ipam), ours(PLUGIN_TYPE)] },
      };
      const quarantine = new QuarantineTable(inNamespace(nodeNetns));
      let seq = 0;

      /** One pod: fresh namespace, ADD through the list, checks, DEL, namespace gone. */
      const cycle = async (variant: Variant, pod: Pod): Promise<Sample> => {
        const netns = `${lab.record.prefix}-p${seq++}`;
        await addNamespace(netns);
        podNetns.push(netns);
        const sandbox: Sandbox = {
          containerId: `${netns}-c`,
          netns: `/var/run/netns/${netns}`,
          ifname: "eth0",
          args: { IgnoreUnknown: "1", K8S_POD_NAMESPACE: pod.namespace, K8S_POD_NAME: pod.name },
        };
        const list = lists[variant];
        const started = performance.now();
        const { result, runs } = await runtime.add(list, sandbox);
        const addMs = performance.now() - started;
        const [ptpRun, oursRun] = runs as [PluginRun, PluginRun | undefined];
        const ip = ((result as { ips: { address: string }[] }).ips[0]?.address ?? "").split("/")[0]!;
        if (oursRun) await verify(variant, pod, ip, ptpRun, oursRun);
        const delStarted = performance.now();
        await runtime.del(list, sandbox, result);
        const delMs = performance.now() - delStarted;
        await deleteNamespace(netns);
        podNetns.splice(podNetns.indexOf(netns), 1);
        return {
          variant,
          selected: pod.selected,
          addMs,
          ptpMs: ptpRun.ms,
          ...(oursRun ? { oursMs: oursRun.ms } : {}),
          delMs,
        };
      };

      /** A fast answer that did not do the job is no result. */
      const verify = async (variant: Variant, pod: Pod, ip: string, ptpRun: PluginRun, oursRun: PluginRun) => {
        if (JSON.stringify(JSON.parse(oursRun.stdout)) !== JSON.stringify(JSON.parse(ptpRun.stdout)))
          throw new Error(`${variant} ${pod.name}: ADD did not print ptp's result`);
        const fellBack = oursRun.stderr.includes("the shim could not hand this call");
        const held = ((await quarantine.list()) ?? []).some((e) => e.ip === ip);
        if (variant === "fallback") {
          if (!fellBack || !held)
            throw new Error(
              `fallback ${pod.name}: expected the TypeScript plugin to quarantine ${ip} (fell back: ${fellBack}, held: ${held})`,
            );
          return;
        }
        if (fellBack)
          throw new Error(
            `${variant} ${pod.name}: the shim fell back although the agent runs: ${oursRun.stderr.trim()}`,
          );
        if (held) throw new Error(`${variant} ${pod.name}: ${ip} was quarantined although the agent knows the pod`);
        const divert = await execIn(nodeNetns, "nft", ["-j", "list", "map", "ip", "static_egress", "pod_class"]);
        if (divert.includes(`"${ip}"`) !== pod.selected)
          throw new Error(`${variant} ${pod.name}: ${ip} is ${pod.selected ? "not " : ""}in the divert map after ADD`);
      };

      /** One process run the way the runtime runs plugins here (`ip netns exec <node> ...`): the harness's own cost, and VERSION. */
      const timedRun = async (file: string, env: Record<string, string>, stdin: string): Promise<number> => {
        const started = performance.now();
        const { exitCode } = await new Promise<{ exitCode: number | null }>((resolve, reject) => {
          const c = spawn("ip", ["netns", "exec", nodeNetns, file], {
            env: { ...process.env, ...env },
            stdio: ["pipe", "ignore", "ignore"],
          });
          c.on("error", reject);
          c.on("close", (code) => resolve({ exitCode: code }));
          c.stdin.on("error", () => undefined); // /bin/true does not read its stdin
          c.stdin.end(stdin);
        });
        if (exitCode !== 0) throw new Error(`${file} exited ${exitCode}`);
        return performance.now() - started;
      };
      const versionOf = (type: string) =>
        timedRun(
          join(type === "ptp" ? "/usr/lib/cni" : binDir, type),
          { CNI_COMMAND: "VERSION" },
          JSON.stringify({ cniVersion: "1.0.0", agentSocket: socket }),
        );

      // Warm-up (first runs load binaries and the agent's code paths): not recorded.
      await cycle("ptp", { namespace: "web", name: "warm-up", selected: false });
      const samples: Sample[] = [];
      const loads: number[][] = [currentLoad()];
      const baseline = { netnsExecTrue: [] as number[], versionPtp: [] as number[], versionShim: [] as number[] };
      for (let i = 0; i < CYCLES; i++) {
        // Alternating order, so neither variant always runs right after the other.
        const order: Variant[] = i % 2 === 0 ? ["ptp", "shim"] : ["shim", "ptp"];
        if (i % 4 === 3) order.splice(1, 0, "nodejs");
        for (const v of order)
          samples.push(
            await cycle(
              v,
              v === "ptp"
                ? { namespace: "web", name: `ptp-${i}`, selected: false }
                : v === "shim"
                  ? byVariant.shim[i]!
                  : byVariant.nodejs[Math.floor(i / 4)]!,
            ),
          );
        baseline.netnsExecTrue.push(await timedRun("/bin/true", {}, ""));
        baseline.versionPtp.push(await versionOf("ptp"));
        baseline.versionShim.push(await versionOf(PLUGIN_TYPE));
        if ((i + 1) % 25 === 0) {
          loads.push(currentLoad());
          process.stderr.write(`cycle ${i + 1}/${CYCLES}, load ${currentLoad().join(" ")}\n`);
        }
      }
      // The agent away: the shim's fallback.
      await stopAgent();
      for (const pod of byVariant.fallback) samples.push(await cycle("fallback", pod));
      loads.push(currentLoad());

      const of = (v: Variant, f: (s: Sample) => number | undefined) =>
        samples
          .filter((s) => s.variant === v)
          .map(f)
          .filter((x): x is number => x !== undefined);
      const ptpAlone = of("ptp", (s) => s.addMs);
      const summary = {
        addedLatencyMs: {
          shim: stats(of("shim", (s) => s.oursMs)),
          shimSelected: stats(samples.filter((s) => s.variant === "shim" && s.selected).map((s) => s.oursMs!)),
          shimUnselected: stats(samples.filter((s) => s.variant === "shim" && !s.selected).map((s) => s.oursMs!)),
          nodejs: stats(of("nodejs", (s) => s.oursMs)),
          fallbackAgentAway: FALLBACKS > 0 ? stats(of("fallback", (s) => s.oursMs)) : undefined,
        },
        addMs: {
          ptpAlone: stats(ptpAlone),
          ptpPlusShim: stats(of("shim", (s) => s.addMs)),
          ptpPlusNodejs: stats(of("nodejs", (s) => s.addMs)),
        },
        ptpInsideChainMs: { shim: stats(of("shim", (s) => s.ptpMs)) },
        delMs: { ptpAlone: stats(of("ptp", (s) => s.delMs)), ptpPlusShim: stats(of("shim", (s) => s.delMs)) },
        /**
         * What every figure above includes: `ip netns exec <node>` starting a process; and VERSION
         * (the shim: start, socket round trip, the agent's runPlugin).
         */
        processMs: {
          netnsExecTrue: stats(baseline.netnsExecTrue),
          versionPtp: stats(baseline.versionPtp),
          versionShim: stats(baseline.versionShim),
        },
      };
      const record = {
        benchmark: "pod-start",
        loadDuring: loads,
        cycles: CYCLES,
        fallbacks: FALLBACKS,
        method:
          "Each plugin is a fresh process run by `ip netns exec <node> <plugin>` (that entry costs every " +
          "plugin alike). Added latency = our plugin's process in the chain's ADD. ptp uses " +
          "host-local; pods alternate between selected (payments/checkout) and unselected.",
        summary,
        samples: samples.map((s) => ({
          ...s,
          addMs: round(s.addMs),
          ptpMs: round(s.ptpMs),
          ...(s.oursMs !== undefined ? { oursMs: round(s.oursMs) } : {}),
          delMs: round(s.delMs),
        })),
      };
      writeResults(opts.out, run, record);
      process.stdout.write(`${JSON.stringify({ summary, loadDuring: loads }, null, 2)}\n`);
    },
    { maxSeconds: Number(opts["max-seconds"]) },
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
