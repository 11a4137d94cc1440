import { GatewayAgent } from "../agents/gateway/gateway-agent.js";
import { TrafficReporter } from "../agents/gateway/traffic-report.js";
import { CniServer, CniService } from "../agents/node/cni-server.js";
import { NodeAgent, type HealthProvider } from "../agents/node/node-agent.js";
import { loadAgentConfig } from "../agents/config.js";
import { BfdAgent } from "../agents/health/bfd/agent.js";
import { HealthThread } from "../agents/health/thread.js";
import { responderSession } from "../agents/health/responder.js";
import { GatewayMetrics, NodeMetrics } from "../agents/metrics.js";
import { AGENT_METRICS_DEFAULT_HOST, metricsListen, serveMetrics } from "../util/metrics-server.js";
import { FileSource } from "../agents/source/file-source.js";
import { GATEWAY_TABLE, GatewayDataplane } from "../dataplane/gateway.js";
import { METADATA_URL, MetadataError, readAnchorIPv4 } from "../cloud/digitalocean/metadata.js";
import { commandKernel } from "../dataplane/kernel.js";
import { KernelWatch, localStreams, ownNftCommand } from "../dataplane/kernel-watch.js";
import { BIND_TABLE, NODE_TABLE, NodeDataplane } from "../dataplane/node.js";
import { StaticRouteWriter } from "../dataplane/static-routes.js";
import { StaticRouteStatusReporter } from "../agents/node/static-route-status.js";
import type { StaticRouteOutcome } from "../planner/static-routes.js";
import type { StaticRoute } from "../api/digitalocean-v1/static-route.js";
import { QuarantineTable } from "../cni/quarantine.js";
import { ConfDirKeeper, unchainConfDir } from "../cni/conf-dir.js";
import { chainEntryFor } from "../cni/conflist.js";
import type { NodePlan } from "../planner/model.js";
import { localRunner } from "../util/exec.js";
import { setPriority, tmpdir } from "node:os";
import { dirname } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeClient } from "../kube/client.js";
import { KubeSource } from "../kube/source.js";
import { NodeReporter } from "../agents/node/report.js";
import { Verifier } from "../agents/node/verifier.js";
import { ANCHOR_ANNOTATION, ANCHOR_SOURCES, AnchorPublisher } from "../agents/node/anchor.js";
import type { ClusterSource } from "../api/source.js";
import { createLogger, type Logger } from "../util/log.js";
import { backoffMs } from "../util/backoff.js";

export interface AgentFlags {
  /** A file of Kubernetes documents, or `kubernetes` (in-cluster or --kubeconfig). */
  source: string;
  kubeconfig?: string;
  config: string;
  cleanup?: boolean;
  metricsPort?: string;
  metricsAddress?: string;
}

export function loadKubeconfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault(); // in-cluster service account, or $KUBECONFIG
  return kc;
}

/** The agents' view of the cluster: the API server, or a file of documents (the lab, tests). */
function makeSource(flags: AgentFlags, logger: Logger, podsOnNode?: string, staticRoutes = false): ClusterSource {
  if (flags.source !== "kubernetes") return new FileSource(flags.source, logger);
  return new KubeSource(new KubeClient(loadKubeconfig(flags.kubeconfig)), logger, {
    ...(podsOnNode ? { podsOnNode } : {}),
    ...(staticRoutes ? { staticRoutes } : {}),
  });
}

/**
 * The API server's addresses as this agent reaches it (the kubeconfig's server, in-cluster the
 * `kubernetes` Service): a StaticRoute may never route them away.
 */
function apiServerAddresses(kc: KubeConfig | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const out = new Set<string>();
  const server = kc?.getCurrentCluster()?.server;
  if (server) {
    const host = new URL(server).hostname;
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) out.add(host);
  }
  const inCluster = env.KUBERNETES_SERVICE_HOST;
  if (inCluster && /^\d{1,3}(\.\d{1,3}){3}$/.test(inCluster)) out.add(inCluster);
  return [...out].sort();
}

/**
 * BFD runs in user space with 100 ms timers: a starved event loop would look like a dead
 * gateway. Agents that probe or answer probes ask the kernel for a higher scheduling
 * priority (needs CAP_SYS_NICE or root; without it they run at the default priority).
 */
function raisePriority(logger: Logger): void {
  try {
    setPriority(0, -10);
  } catch (e) {
    logger.warn(
      { err: (e as Error).message },
      "cannot raise scheduling priority; BFD may see false timeouts under CPU pressure",
    );
  }
}

/** Stops on SIGTERM/SIGINT without touching the datapath: forwarding goes on while we are away. */
function runUntilSignal(logger: Logger, stop: () => Promise<void>): void {
  const onSignal = (signal: string) => {
    logger.info({ signal }, "stopping; the datapath stays programmed");
    void stop().then(() => process.exit(0));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

/** The `kubernetes` Endpoints' addresses; on failure none (the kubeconfig's address still counts), said in the log. */
async function readApiServerEndpoints(kube: KubeClient, logger: Logger): Promise<string[]> {
  try {
    return await kube.apiServerEndpoints();
  } catch (e) {
    logger.warn(
      { err: (e as Error).message },
      "cannot read the API server's endpoints; StaticRoutes and node policies know its kubeconfig address only",
    );
    return [];
  }
}

export interface NodeAgentFlags extends AgentFlags {
  node: string;
  address?: string;
  cniSocket?: string;
  /** The runtime's CNI config directory: keep our plugin chained into its config list. */
  cniConfDir?: string;
  procSysNet?: string;
  /** Program DigitalOcean's StaticRoutes (docs/static-routes.md). */
  staticRoutes?: boolean;
  /** `digitalocean-metadata`: publish the node's anchor IPv4 as a Node annotation (docs/digitalocean.md). */
  anchorIpFrom?: string;
  metadataUrl?: string;
}

/** The anchor publisher the flags ask for (none without --anchor-ip-from). Errors name the flag. */
function anchorPublisher(
  flags: NodeAgentFlags,
  client: KubeClient | undefined,
  source: Pick<ClusterSource, "objects"> | undefined,
  logger: Logger,
): AnchorPublisher | undefined {
  if (flags.anchorIpFrom === undefined) {
    if (flags.metadataUrl !== undefined) throw new Error("--metadata-url needs --anchor-ip-from digitalocean-metadata");
    return undefined;
  }
  if (!(ANCHOR_SOURCES as readonly string[]).includes(flags.anchorIpFrom)) {
    throw new Error(
      `--anchor-ip-from: unknown source ${JSON.stringify(flags.anchorIpFrom)} (known: ${ANCHOR_SOURCES.join(", ")})`,
    );
  }
  if (!client) throw new Error("--anchor-ip-from needs --source kubernetes (the anchor IP is published on the Node)");
  const nodeAnnotation = () =>
    source?.objects().find((o) => o.kind === "Node" && o.metadata?.name === flags.node)?.metadata?.annotations?.[
      ANCHOR_ANNOTATION
    ];
  return new AnchorPublisher({
    client,
    node: flags.node,
    read: () => readAnchorIPv4(flags.metadataUrl !== undefined ? { baseUrl: flags.metadataUrl } : {}),
    ...(source ? { current: nodeAnnotation } : {}),
    logger,
  });
}

export async function runNodeAgent(flags: NodeAgentFlags): Promise<void> {
  const listen = metricsListen(flags, AGENT_METRICS_DEFAULT_HOST);
  const logger = createLogger("node-agent").child({ node: flags.node });
  if (flags.cleanup) {
    const dataplane = new NodeDataplane(commandKernel(localRunner));
    // First out of the runtime's chain, so that no new pod asks for an agent that is going.
    if (flags.cniConfDir) {
      const r = await unchainConfDir(flags.cniConfDir);
      logger.info({ file: r.file, changed: r.changed }, "CNI plugin unchained");
    }
    await dataplane.cleanup();
    await new StaticRouteWriter(commandKernel(localRunner)).cleanup();
    await new QuarantineTable(localRunner).remove();
    logger.info("removed everything the node agent owns");
    return;
  }
  // Our nft transactions under a name of their own, and monitors that tell what else changed the
  // kernel: a verify reads back only that (src/dataplane/kernel-watch.ts).
  // (The root file system may be read-only: the CNI socket's directory is the agent's own.)
  const nft = ownNftCommand({ dirs: [...(flags.cniSocket ? [dirname(flags.cniSocket)] : []), tmpdir()] });
  if (nft === "nft") logger.warn("no directory for the nft symlink: every verify reads the tables back");
  const watch = new KernelWatch(localStreams, {
    tables: [`ip ${NODE_TABLE}`, `bridge ${BIND_TABLE}`],
    onTrouble: (why) => logger.warn({ why }, "kernel watch lost its view; verifies read everything until it is back"),
  });
  watch.start();
  const dataplane = new NodeDataplane(commandKernel(localRunner, { nft }), { watch, nft });
  if (flags.cniConfDir && !flags.cniSocket)
    throw new Error("--cni-conf-dir needs --cni-socket: the chained plugin asks the agent on that socket");
  const config = loadAgentConfig(flags.config);
  const metrics = new NodeMetrics();
  const kube = flags.source === "kubernetes" ? new KubeClient(loadKubeconfig(flags.kubeconfig)) : undefined;
  const reporter = kube ? new NodeReporter(kube, flags.node, logger) : undefined;
  // Before anything starts: a wrong flag stops the agent at once, naming it.
  const anchor = anchorPublisher(flags, kube, { objects: () => source.objects() }, logger);
  let bfd: HealthThread | undefined;
  let health: HealthProvider | undefined;
  if (flags.address) {
    raisePriority(logger);
    // Probes leave from the node's own address (in Kubernetes: status.hostIP), on a thread of
    // their own, which also judges the instances and fails over: a long reconcile never delays
    // them (src/agents/health/thread.ts).
    bfd = new HealthThread(
      {
        localAddress: flags.address,
        log: { name: "node-agent", level: logger.level, bindings: logger.bindings() },
        failover: dataplane.failoverOptions,
      },
      logger,
    );
    await bfd.start();
    bfd.onVerdict((c) => metrics.onVerdict(c));
    health = bfd;
  } else {
    logger.warn("no --address: gateway instances are not probed (no failover)");
  }
  const source = makeSource(flags, logger, flags.node, flags.staticRoutes === true);
  const routeStatus =
    flags.staticRoutes && kube
      ? new StaticRouteStatusReporter(kube, flags.node, logger.child({ part: "static-routes" }))
      : undefined;
  // The API server's addresses: never routed away by a StaticRoute, nor diverted from the node by a nodeSelector policy.
  const apiServers = [
    ...new Set([...apiServerAddresses(kube?.kubeconfig), ...(kube ? await readApiServerEndpoints(kube, logger) : [])]),
  ].sort();
  const staticRoutes = flags.staticRoutes
    ? {
        writer: new StaticRouteWriter(commandKernel(localRunner)),
        apiServers,
        ...(routeStatus
          ? {
              onOutcomes: (outcomes: readonly StaticRouteOutcome[], objects: readonly StaticRoute[]) =>
                routeStatus.update(outcomes, objects),
            }
          : {}),
      }
    : undefined;
  // Continuous verification: the plan's probes, after each apply (their path is programmed by then).
  const verifier = new Verifier({
    logger: logger.child({ part: "verification" }),
    onResult: (policy, report) => metrics.onVerification(policy, report),
    onRemoved: (policy) => metrics.onVerificationRemoved(policy),
    onChange: (results) => reporter?.updateVerification(results),
  });
  // The CNI plugin's side in the agent (--cni-socket): told of every plan, to keep the quarantine in step.
  const cniPlans: ((plan: NodePlan) => void)[] = [];
  const agent = new NodeAgent({
    nodeName: flags.node,
    config,
    source,
    dataplane,
    logger,
    ...(health ? { health } : {}),
    ...(staticRoutes ? { staticRoutes } : {}),
    apiServers,
    onApplied: (plan) => {
      metrics.onPlan(plan);
      for (const f of cniPlans) f(plan);
      reporter?.update(plan, health?.view() ?? new Map());
      verifier.update(plan.probes ?? [], plan.tunnel?.address);
    },
  });
  const cni = flags.cniSocket
    ? new CniService({
        nodeName: flags.node,
        agent,
        objects: () => source.objects(),
        quarantine: new QuarantineTable(localRunner),
        logger: logger.child({ part: "cni" }),
      })
    : undefined;
  if (cni) cniPlans.push((plan) => cni.onPlan(plan));
  await agent.start();
  // After the informers synced, so that an unchanged anchor is not written again on restart.
  anchor?.start();
  const cniServer = cni && flags.cniSocket ? await CniServer.listen(flags.cniSocket, cni, logger) : undefined;
  cni?.start();
  if (cniServer) logger.info({ socket: cniServer.path }, "serving the CNI plugin");
  // Chained only once the socket answers: the first pod that runs our plugin finds the agent.
  const confKeeper =
    cniServer && flags.cniConfDir
      ? new ConfDirKeeper(flags.cniConfDir, chainEntryFor(cniServer.path, config), logger.child({ part: "cni-conf" }))
      : undefined;
  await confKeeper?.start();
  if (listen) {
    await serveMetrics(metrics.registry, {
      ...listen,
      before: async () => {
        const drops = await dataplane.drops();
        metrics.failClosedDrops.set(drops.failClosed);
        metrics.spoofedDrops.set(drops.spoofed);
        metrics.forgedHealthDrops.set(drops.forgedHealth);
        metrics.foreignTunnelDrops.set(drops.foreignTunnel);
        for (const s of (await bfd?.statuses()) ?? [])
          if (s.lastRttMs !== null && s.lastRttMs !== undefined)
            metrics.probeRtt.set({ instance: s.peer }, s.lastRttMs / 1000);
      },
    });
  }
  logger.info("node agent started");
  // BFD is stopped without AdminDown on purpose: peers keep their view until they time out.
  runUntilSignal(logger, async () => {
    anchor?.stop();
    confKeeper?.stop();
    cni?.stop();
    routeStatus?.stop();
    verifier.stop();
    await cniServer?.close();
    await agent.stop();
    watch.stop();
  });
}

/**
 * The droplet's anchor IP and gateway from the metadata service, retried until it answers (at
 * boot the service can be late). A droplet without an anchor cannot egress via a reserved IP.
 */
async function anchorForEgress(metadataUrl: string, logger: Logger): Promise<{ address: string; gateway: string }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const anchor = await readAnchorIPv4({ baseUrl: metadataUrl });
      if (!anchor) throw new Error("--egress-via-anchor: this droplet has no anchor IP (no public networking?)");
      if (!anchor.gateway)
        throw new Error(`--egress-via-anchor: the metadata service gives no anchor gateway for ${anchor.address}`);
      logger.info({ anchor: anchor.address, gateway: anchor.gateway }, "egress leaves via the anchor IP");
      return { address: anchor.address, gateway: anchor.gateway };
    } catch (err) {
      if (err instanceof MetadataError) {
        logger.warn({ err: err.message, attempt }, "metadata service not answering; retrying");
        await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 500, maxMs: 5_000 })));
        continue;
      }
      throw err;
    }
  }
}

/** `--snat-port-range <from>-<to>`; errors name the flag. */
function parseSnatPortRange(text: string | undefined): { from: number; to: number } | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(text);
  const [from, to] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(from >= 1 && to <= 65_535 && from <= to))
    throw new Error(`--snat-port-range: must be <from>-<to> within 1-65535, from <= to, not ${JSON.stringify(text)}`);
  return { from, to };
}

/**
 * conntrack is dumped at most every 5 s however often Prometheus scrapes, and never more than 5 %
 * of the time: its cost grows with the table (20,000 SNATed entries: 0.3 s for the dump, 0.6 s
 * with parsing, measured on a busy 2-core machine; docs/metrics.md).
 */
const SNAT_USAGE_MIN_INTERVAL_MS = 5_000;
const SNAT_USAGE_MAX_SHARE = 0.05;

export async function runGatewayAgent(
  flags: AgentFlags & {
    instance: string;
    egressViaAnchor?: boolean;
    metadataUrl?: string;
    snatPortRange?: string;
    trafficReportSeconds?: string;
  },
): Promise<void> {
  const listen = metricsListen(flags, AGENT_METRICS_DEFAULT_HOST);
  const snatPorts = parseSnatPortRange(flags.snatPortRange);
  const reportSeconds = Number(flags.trafficReportSeconds ?? 60);
  if (!Number.isFinite(reportSeconds) || reportSeconds < 0)
    throw new Error(
      `--traffic-report-seconds: must be a number of seconds (0: off), not ${JSON.stringify(flags.trafficReportSeconds)}`,
    );
  const logger = createLogger("gateway-agent").child({ instance: flags.instance });
  const anchor =
    flags.egressViaAnchor && !flags.cleanup
      ? await anchorForEgress(flags.metadataUrl ?? METADATA_URL, logger)
      : undefined;
  const dataplane = new GatewayDataplane(commandKernel(localRunner), { anchor, snatPorts, metering: localRunner });
  if (flags.cleanup) {
    await dataplane.cleanup();
    logger.info("removed everything the gateway agent owns");
    return;
  }
  const metrics = new GatewayMetrics();
  const agent = new GatewayAgent({
    instance: flags.instance,
    config: loadAgentConfig(flags.config),
    source: makeSource(flags, logger),
    dataplane,
    logger,
    onApplied: (plan) => {
      metrics.applies.inc();
      metrics.snatEntries.set(plan.snat.length);
    },
  });
  await agent.start();
  // Recent traffic into the policies' status (kubectl get egresspolicies), with the API server as source only.
  const traffic =
    flags.source === "kubernetes" && reportSeconds > 0
      ? new TrafficReporter({
          client: new KubeClient(loadKubeconfig(flags.kubeconfig)),
          instance: flags.instance,
          read: () => dataplane.traffic(),
          logger,
          intervalMs: reportSeconds * 1000,
        })
      : undefined;
  traffic?.start();
  if (listen) {
    let usageDueAt = 0;
    await serveMetrics(metrics.registry, {
      ...listen,
      before: async () => {
        const drops = await dataplane.foreignDrops();
        metrics.foreignDrops.set({ check: "tunnel" }, drops.tunnel);
        metrics.foreignDrops.set({ check: "pod_source" }, drops.source);
        metrics.onTraffic(flags.instance, await dataplane.traffic());
        if (Date.now() >= usageDueAt) {
          const started = Date.now();
          metrics.onSnatUsage(flags.instance, dataplane.snatPortsLimit, await dataplane.snatUsage());
          usageDueAt = started + Math.max(SNAT_USAGE_MIN_INTERVAL_MS, (Date.now() - started) / SNAT_USAGE_MAX_SHARE);
        }
      },
    });
  }
  logger.info("gateway agent started");
  runUntilSignal(logger, () => {
    traffic?.stop();
    return agent.stop();
  });
}

/** Waits until the gateway agent has programmed its table (it drops what it must not forward). */
async function waitForGatewayDatapath(logger: Logger): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const ok = await localRunner.run("nft", ["list", "table", "ip", GATEWAY_TABLE]).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (attempt % 50 === 0) logger.info("waiting for the gateway agent's datapath before answering probes");
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * The gateway's BFD responder, a process of its own: restarting or upgrading the gateway agent
 * (config reloads included) never touches health, so nodes never fail over because of it.
 * It answers any node that starts a session; the gateway's nft table admits BFD from cluster
 * nodes only.
 */
export async function runHealthResponder(flags: {
  listen: string;
  metricsPort?: string;
  metricsAddress?: string;
  waitForDatapath?: boolean;
}): Promise<void> {
  const listen = metricsListen(flags, AGENT_METRICS_DEFAULT_HOST);
  const logger = createLogger("health-responder").child({ listen: flags.listen });
  raisePriority(logger);
  // Nodes send traffic to an instance as soon as its probes answer: a host that boots must not
  // answer before its gateway agent is ready to SNAT (and to drop everything else).
  if (flags.waitForDatapath) await waitForGatewayDatapath(logger);
  const metrics = new GatewayMetrics();
  const bfd = new BfdAgent({
    localAddress: flags.listen,
    logger,
    acceptPeer: () => responderSession(),
  });
  // Sessions of nodes that went away are dropped after a while, so the table does not grow.
  bfd.on("change", (c) => {
    if (c.to !== "Down") return;
    setTimeout(() => {
      if (bfd.statuses().find((s) => s.peer === c.peer)?.state === "Down") void bfd.removePeer(c.peer);
    }, 60_000).unref();
  });
  await bfd.start();
  if (listen) {
    await serveMetrics(metrics.registry, {
      ...listen,
      before: async () => {
        metrics.bfdSessionsUp.set(bfd.statuses().filter((s) => s.state === "Up").length);
      },
    });
  }
  logger.info("health responder started");
  runUntilSignal(logger, () => bfd.stop());
}
