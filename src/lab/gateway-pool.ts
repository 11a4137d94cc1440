import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import { APP_LABEL } from "../api/keys.js";
import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import type { KubeClient } from "../kube/client.js";
import { wipeGatewayHost } from "./netns.js";
import { spawnCli } from "./paths.js";
import type { LabGatewayHost } from "./topology.js";

/**
 * The apps' gateway pool in the lab (lab file `apps.gatewayPool`, docs/lab.md): hosts the
 * controller is given with --apps-gateway-pool. The controller puts a free host into an app's
 * EgressGateway (a `spec.static` instance with the host's VPC address); this process watches the
 * gateways and runs, on each host, what an operator's provisioning would: the gateway agent for
 * that instance (`--instance app-web/pool-a`) and the BFD health responder, answering only once
 * the agent's datapath is loaded. When the host leaves the gateway (the app switched to
 * AUTOASSIGN or was deleted) both stop and the host is wiped back to its boot state for the next
 * app. The assignment is read from the API, never decided here.
 */

/** What the pool process tells the rest of the lab (file `pool.json` in the lab's folder). */
export interface LabPoolRecord {
  /** Host name -> the gateway it serves now and the processes serving it (hosts in no gateway are absent). */
  hosts: Record<string, { gateway: string; pids: { agent: number; health: number } }>;
}

export function readPoolRecord(dir: string): LabPoolRecord | undefined {
  const file = join(dir, "pool.json");
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8")) as LabPoolRecord;
}

type GatewayObject = KubernetesObject & {
  spec?: { static?: { instances?: { name?: string; address?: string }[] } };
};

/**
 * Which app gateway each pool host is an instance of (by name and address, as the controller
 * writes it from the pool file); only gateways the App controller made count. A host two
 * gateways name (never meant to be) serves the older one, as a host cannot serve two.
 */
export function poolAssignments(
  hosts: readonly Pick<LabGatewayHost, "name" | "vpcIP">[],
  gateways: readonly GatewayObject[],
): Map<string, string> {
  const out = new Map<string, string>();
  const born = (g: GatewayObject) => new Date(g.metadata?.creationTimestamp ?? 0).getTime();
  const older = (a: GatewayObject, b: GatewayObject) =>
    born(a) - born(b) || ((a.metadata?.name ?? "") < (b.metadata?.name ?? "") ? -1 : 1);
  for (const g of [...gateways].sort(older)) {
    if (!g.metadata?.labels?.[APP_LABEL] || !g.metadata.name) continue;
    for (const i of g.spec?.static?.instances ?? []) {
      const host = hosts.find((h) => h.name === i.name && h.vpcIP === i.address);
      if (host && !out.has(host.name)) out.set(host.name, g.metadata.name);
    }
  }
  return out;
}

interface Serving {
  gateway: string;
  children: ChildProcess[];
}

export interface LabGatewayPoolOptions {
  dir: string;
  hosts: readonly LabGatewayHost[];
  client: KubeClient;
  /** The gateway agent's arguments besides --instance (source, config, metrics, traffic pace). */
  agentArgs: readonly string[];
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

export class LabGatewayPool {
  private informer: ListWatch<GatewayObject> | undefined;
  private readonly serving = new Map<string, Serving>();
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly opts: LabGatewayPoolOptions) {}

  async start(): Promise<void> {
    this.save();
    const path = `/apis/${GROUP}/${VERSION}/egressgateways`;
    const informer = new ListWatch<GatewayObject>(
      path,
      new Watch(this.opts.client.kubeconfig),
      () =>
        this.opts.client.custom.listClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: "egressgateways",
        }) as Promise<KubernetesListObject<GatewayObject>>,
      false,
    );
    for (const event of ["add", "update", "delete"] as const) informer.on(event, () => this.kick());
    informer.on("error", () => setTimeout(() => void informer.start().catch(() => undefined), 1_000));
    this.informer = informer;
    await informer.start();
    this.kick();
  }

  /** One pass at a time, in order: a change seen during a pass gets a pass of its own. */
  private kick(): void {
    this.running = this.running
      .then(() => this.reconcile())
      .catch((e: Error) => this.opts.log("pass failed", { err: e.message }));
  }

  private async reconcile(): Promise<void> {
    if (this.stopped || !this.informer) return;
    const want = poolAssignments(this.opts.hosts, this.informer.list());
    let changed = false;
    for (const host of this.opts.hosts) {
      const now = this.serving.get(host.name);
      const gateway = want.get(host.name);
      if (now?.gateway === gateway) continue;
      if (now) {
        await this.release(host, now);
        changed = true;
      }
      if (gateway) {
        this.serve(host, gateway);
        changed = true;
      }
    }
    if (changed) this.save();
  }

  private serve(host: LabGatewayHost, gateway: string): void {
    const log = (name: string) => join(this.opts.dir, "logs", `${name}-${host.name}.log`);
    const health = spawnCli(
      host.netns,
      [
        "agent",
        "health-responder",
        "--listen",
        host.vpcIP,
        "--metrics-port",
        "9465",
        "--metrics-address",
        host.vpcIP,
        // A freshly assigned host is up for the nodes only once it can SNAT the app's traffic.
        "--wait-for-datapath",
      ],
      log("health"),
      false,
    );
    const agent = spawnCli(
      host.netns,
      ["agent", "gateway", "--instance", `${gateway}/${host.name}`, ...this.opts.agentArgs],
      log("agent"),
      false,
    );
    this.serving.set(host.name, { gateway, children: [agent, health] });
    this.opts.log("pool host serves an app's gateway", { host: host.name, gateway });
  }

  /** Stops the host's agents and wipes it back to its boot state (no tables, routes or tunnels of the app's). */
  private async release(host: LabGatewayHost, s: Serving): Promise<void> {
    for (const c of s.children) c.kill("SIGKILL");
    this.serving.delete(host.name);
    await wipeGatewayHost(host.netns);
    this.opts.log("pool host is free again", { host: host.name, gateway: s.gateway });
  }

  private save(): void {
    const record: LabPoolRecord = {
      hosts: Object.fromEntries(
        [...this.serving].map(([name, s]) => [
          name,
          { gateway: s.gateway, pids: { agent: s.children[0]!.pid ?? -1, health: s.children[1]!.pid ?? -1 } },
        ]),
      ),
    };
    const file = join(this.opts.dir, "pool.json");
    writeFileSync(`${file}.tmp`, JSON.stringify(record, null, 2));
    renameSync(`${file}.tmp`, file);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
    for (const s of this.serving.values()) for (const c of s.children) c.kill("SIGKILL");
  }
}
