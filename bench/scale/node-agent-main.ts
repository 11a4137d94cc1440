/**
 * Benchmark child: one node agent as `static-egress agent node --source kubernetes` composes it
 * (KubeSource with the `spec.nodeName` pod selector, NodeDataplane with its kernel watch, NodeReporter), without BFD.
 * The process stays in the root namespace, so it reaches the stand-in on 127.0.0.1; only its
 * `ip`/`nft`/`conntrack`/`sysctl` commands run in the scratch namespace (`ip netns exec`), so
 * no network path between the namespaces is needed or created.
 *
 *   node --import ./bench/scale/from-dist.ts bench/scale/node-agent-main.ts --kubeconfig <file> --node <name> --netns <ns>
 *
 * Every apply is reported as an `applied` line with the pod addresses it programmed.
 */
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { NodeAgent } from "../../src/agents/node/node-agent.js";
import { NodeReporter } from "../../src/agents/node/report.js";
import { BIND_TABLE, NODE_TABLE, NodeDataplane } from "../../src/dataplane/node.js";
import { commandKernel } from "../../src/dataplane/kernel.js";
import { KernelWatch, localStreams, ownNftCommand } from "../../src/dataplane/kernel-watch.js";
import { KubeClient } from "../../src/kube/client.js";
import { KubeSource } from "../../src/kube/source.js";
import { inNamespace } from "../../src/util/exec.js";
import { createLogger } from "../../src/util/log.js";
import { TimingRunner } from "../lib/timing.js";
import {
  answerOnStdin,
  countByKind,
  cpuMs,
  emit,
  heapLimitMiB,
  memorySample,
  peakRssMiB,
  sampleMemory,
  stopOnSignal,
} from "./child-io.js";
import { NETWORK } from "./fixture.js";

async function main(): Promise<void> {
  emit("loaded", { ...memorySample(), cpuMs: cpuMs(), heapLimitMiB: heapLimitMiB() });
  const { values } = parseArgs({
    options: { kubeconfig: { type: "string" }, node: { type: "string" }, netns: { type: "string" } },
  });
  if (!values.kubeconfig || !values.node || !values.netns)
    throw new Error("--kubeconfig, --node and --netns are required");
  if (!values.netns.startsWith("se-")) throw new Error(`--netns ${values.netns}: benchmark namespaces start with se-`);
  sampleMemory(500);
  const logger = createLogger("node-agent", process.env.STATIC_EGRESS_LOG_LEVEL ?? "info").child({ node: values.node });
  const kc = new KubeConfig();
  kc.loadFromFile(values.kubeconfig);
  const client = new KubeClient(kc);
  const runner = new TimingRunner(inNamespace(values.netns), 60_000);
  // As the agent runs it: its monitors in the node's namespace (they are idle while nothing changes).
  const netns = values.netns;
  const nft = ownNftCommand();
  const watch = new KernelWatch((cmd, args, on) => localStreams("ip", ["netns", "exec", netns, cmd, ...args], on), {
    tables: [`ip ${NODE_TABLE}`, `bridge ${BIND_TABLE}`],
  });
  watch.start();
  const reporter = new NodeReporter(client, values.node, logger);
  const source = new KubeSource(client, logger, { podsOnNode: values.node });
  let applies = 0;
  const agent = new NodeAgent({
    nodeName: values.node,
    config: { clusterNetwork: NETWORK, resyncSeconds: 30 },
    source,
    dataplane: new NodeDataplane(commandKernel(runner, { nft }), { watch, nft }),
    logger,
    onApplied: (plan) => {
      applies++;
      const calls = runner.take();
      emit("applied", {
        n: applies,
        entries: plan.entries.length,
        instances: plan.instances.length,
        podIPs: [...new Set(plan.entries.map((e) => e.podIP))].sort(),
        commands: calls.length,
        commandsMs: Math.round(calls.reduce((sum, c) => sum + c.ms, 0) * 10) / 10,
        // Which commands (first arguments) and how many of each: what an apply costs in processes.
        commandKinds: calls.reduce<Record<string, number>>((m, c) => ((m[c.what] = (m[c.what] ?? 0) + 1), m), {}),
        cpuMs: cpuMs(),
      });
      reporter.update(plan, new Map());
    },
  });
  stopOnSignal(async () => {
    reporter.stop();
    await agent.stop();
    watch.stop();
  });
  answerOnStdin();
  emit("starting");
  await agent.start();
  emit("started", {
    ...memorySample(),
    cpuMs: cpuMs(),
    peakRssMiB: peakRssMiB(),
    cached: countByKind(source.objects()),
  });
}

main().catch((e: unknown) => {
  emit("failed", { error: (e as Error).stack ?? String(e) });
  process.exit(1);
});
