/**
 * Benchmark child: the controller as `static-egress controller` composes it (KubeClient +
 * KubeSource + Controller), without leader election: it activates as soon as its informers
 * are synced. Reports milestones as JSON lines on stdout (see child-io.ts).
 *
 *   node --import ./bench/scale/from-dist.ts bench/scale/controller-main.ts --kubeconfig <file> [--resync-ms 30000]
 */
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { Controller } from "../../src/controller/controller.js";
import { KubeClient } from "../../src/kube/client.js";
import { KubeSource } from "../../src/kube/source.js";
import { createLogger } from "../../src/util/log.js";
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
    options: { kubeconfig: { type: "string" }, "resync-ms": { type: "string", default: "30000" } },
  });
  if (!values.kubeconfig) throw new Error("--kubeconfig is required");
  sampleMemory(500);
  const logger = createLogger("controller", process.env.STATIC_EGRESS_LOG_LEVEL ?? "warn");
  const kc = new KubeConfig();
  kc.loadFromFile(values.kubeconfig);
  const client = new KubeClient(kc);
  const source = new KubeSource(client, logger, { nodeHealth: true });
  const controller = new Controller({
    client,
    source,
    network: NETWORK,
    logger,
    resyncMs: Number(values["resync-ms"]),
    // Every pass, full or keyed, and how long it took (the benchmark counts them under churn).
    onPass: (p) =>
      emit("pass", {
        scope: p.scope,
        objects: p.objects,
        durationMs: Math.round(p.durationMs * 10) / 10,
        failedSteps: p.failedSteps,
      }),
  });
  stopOnSignal(() => controller.stop());
  answerOnStdin();
  emit("informers-starting");
  await controller.startInformers();
  emit("synced", {
    ...memorySample(),
    cpuMs: cpuMs(),
    peakRssMiB: peakRssMiB(),
    cached: countByKind(source.objects()),
  });
  controller.activate();
  await controller.idle();
  emit("first-idle", { ...memorySample(), cpuMs: cpuMs(), peakRssMiB: peakRssMiB() });
}

main().catch((e: unknown) => {
  emit("failed", { error: (e as Error).stack ?? String(e) });
  process.exit(1);
});
