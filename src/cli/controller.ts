import { hostname } from "node:os";
import { loadAgentConfig } from "../agents/config.js";
import { Controller } from "../controller/controller.js";
import { LeaderElector } from "../controller/runtime/leader.js";
import { KubeClient } from "../kube/client.js";
import { KubeSource } from "../kube/source.js";
import { createLogger } from "../util/log.js";
import { loadKubeconfig } from "./agents.js";

export interface ControllerFlags {
  kubeconfig?: string;
  config: string;
  namespace: string;
  identity?: string;
  leaseSeconds: string;
}

/** The controller: informers everywhere, reconcilers only on the Lease holder. */
export async function runController(flags: ControllerFlags): Promise<void> {
  const identity = flags.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const logger = createLogger("controller").child({ identity });
  const client = new KubeClient(loadKubeconfig(flags.kubeconfig));
  const controller = new Controller({
    client,
    source: new KubeSource(client, logger),
    network: loadAgentConfig(flags.config).clusterNetwork,
    logger,
    eventNamespace: flags.namespace,
  });
  await controller.startInformers();
  const elector = new LeaderElector(client, { namespace: flags.namespace, name: "static-egress-controller", identity, leaseDurationSeconds: Number(flags.leaseSeconds), retryPeriodMs: 1_000 }, logger, {
    onStartedLeading: () => controller.activate(),
    onStoppedLeading: () => controller.deactivate(),
  });
  elector.start();
  const stop = async () => {
    await elector.stop();
    await controller.stop();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
}
