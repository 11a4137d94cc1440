import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { appForSpec } from "../api/v1alpha1/app-view.js";
import { AppsClient } from "../kube/apps.js";
import { KubeClient, statusOf } from "../kube/client.js";
import { readAppSpecFile } from "./config.js";
import type { LabHost } from "./record.js";

/**
 * The lab file's apps (docs/lab.md, "Apps in the lab"): the gateway pool the controller is given,
 * the process that runs the pool hosts' agents for the gateways the controller assigns them to
 * (./gateway-pool.ts), and the apps created from their spec files.
 */

/** `--apps-gateway-pool <file>` for the controller: the pool hosts with their VPC addresses. */
export function gatewayPoolFlags(lab: LabHost): string[] {
  const hosts = lab.topology.poolHosts ?? [];
  if (hosts.length === 0) return [];
  const file = join(lab.dir, "apps-gateway-pool.yaml");
  writeFileSync(
    file,
    stringify({ hosts: hosts.map((h) => ({ name: h.name, address: h.vpcIP, egressIP: h.egressIPs[0] })) }),
  );
  return ["--apps-gateway-pool", file];
}

/** The pool process (`lab gateway-pool`), when the lab file declares a pool. */
export function startGatewayPool(lab: LabHost): void {
  if ((lab.topology.poolHosts ?? []).length === 0) return;
  lab.startProcess("gateway-pool", "", ["lab", "gateway-pool", "--name", lab.record.prefix]);
}

/** Creates the lab file's apps through the API, as `apps create --spec` does (one that exists is left as it is). */
export async function createLabApps(lab: LabHost, log: (line: string) => void): Promise<void> {
  const files = lab.record.config.apps?.specs ?? [];
  if (files.length === 0) return;
  const kc = new KubeConfig();
  kc.loadFromFile(lab.kubeconfigPath);
  const client = new AppsClient(new KubeClient(kc));
  for (const file of files) {
    const spec = readAppSpecFile(file);
    try {
      await client.createApp(appForSpec(spec));
    } catch (e) {
      if (statusOf(e) !== 409) throw new Error(`creating the app of ${file}: ${(e as Error).message}`, { cause: e });
    }
  }
  log(`created ${files.length} apps from their spec files (static-egress apps list)`);
}
