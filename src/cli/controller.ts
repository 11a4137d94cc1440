import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { hostname } from "node:os";
import { loadAgentConfig } from "../agents/config.js";
import { loadToken, tokenSource } from "../cloud/digitalocean/index.js";
import { digitalOceanPlugins, type DigitalOceanPlugins } from "../controller/cloud/index.js";
import { AppController, type AppControllerOptions } from "../controller/apps/reconciler.js";
import { Controller } from "../controller/controller.js";
import { ControllerMetrics } from "../controller/metrics.js";
import { LeaderElector } from "../controller/runtime/leader.js";
import { AppsClient, AppSource } from "../kube/apps.js";
import { parseGatewayPool, type GatewayPool } from "../planner/app-egress.js";
import { parseAppsDigitalOcean, type AppsDigitalOcean } from "../api/v1alpha1/apps-digitalocean.js";
import { KubeClient } from "../kube/client.js";
import { controllerSourceOptions, KubeSource } from "../kube/source.js";
import { createLogger, type Logger } from "../util/log.js";
import { listenFlags, metricsListen, serveMetrics } from "../util/metrics-server.js";
import { serveLiveView, VIEW_DEFAULT_HOST } from "../controller/view/server.js";
import { egressIPsRoute } from "../controller/feed/http.js";
import { loadKubeconfig } from "./agents.js";

export interface ControllerFlags {
  kubeconfig?: string;
  config: string;
  namespace: string;
  identity?: string;
  leaseSeconds: string;
  /** `digitalocean` enables the gateway fleet and reserved-IP plugins (docs/digitalocean.md). */
  cloud?: string;
  clusterId?: string;
  digitaloceanTokenFile?: string;
  digitaloceanApiUrl?: string;
  gatewayUserDataFile?: string;
  gatewayImage?: string;
  gatewayKubeconfigFile?: string;
  cloudResyncSeconds?: string;
  cloudPollMs?: string;
  gatewayDrainSeconds?: string;
  reservedIpsAnyNamespace?: boolean;
  metricsPort?: string;
  metricsAddress?: string;
  /** The live view (docs/view.md): off without a port; loopback unless --view-address. */
  viewPort?: string;
  viewAddress?: string;
  /** commander's `--no-apps`: false turns the App reconciler off. */
  apps?: boolean;
  appsIngressLabel?: string;
  appsDocrRegistry?: string;
  appsGatewayPool?: string;
  appsDigitalocean?: string;
}

/** The file of --apps-digitalocean (YAML: region, size, image, vpcUUID, nodeTag, onRemoval), or an error naming the flag and field. */
function loadAppsDigitalOcean(file: string | undefined): AppsDigitalOcean | undefined {
  if (file === undefined) return undefined;
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`--apps-digitalocean: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const { config, errors } = parseAppsDigitalOcean(doc);
  if (!config)
    throw new Error(`--apps-digitalocean: ${file}: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  return config;
}

/** The gateway pool file of --apps-gateway-pool (YAML `hosts: [{name, address, egressIP}]`), or an error naming the flag and field. */
function loadGatewayPool(file: string | undefined): GatewayPool | undefined {
  if (file === undefined) return undefined;
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`--apps-gateway-pool: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const { pool, errors } = parseGatewayPool(doc);
  if (!pool)
    throw new Error(`--apps-gateway-pool: ${file}: ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}`);
  return pool;
}

/** `key=value` of --apps-ingress-label, or an error naming the flag. */
function parseIngressLabel(text: string | undefined): { key: string; value: string } | undefined {
  if (text === undefined) return undefined;
  const m = /^([A-Za-z0-9./_-]+)=([A-Za-z0-9._-]*)$/.exec(text);
  if (!m) throw new Error(`--apps-ingress-label: must be key=value, not ${JSON.stringify(text)}`);
  return { key: m[1]!, value: m[2]! };
}

/** A positive number from a flag, or an error naming the flag. */
function positive(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: must be a positive number, not ${JSON.stringify(text)}`);
  return n;
}

/** The cloud plugins the flags ask for (none without --cloud). Errors name the flag. */
export function cloudPlugins(flags: ControllerFlags, logger: Logger): DigitalOceanPlugins | undefined {
  if (flags.cloud === undefined) return undefined;
  if (flags.cloud !== "digitalocean")
    throw new Error(`--cloud: unknown cloud ${JSON.stringify(flags.cloud)} (known: digitalocean)`);
  if (!flags.clusterId)
    throw new Error("--cluster-id is required with --cloud digitalocean (e.g. the DOKS cluster UUID)");
  // The Secret file (re-read on rotation) wins over DIGITALOCEAN_TOKEN; read once now to fail early.
  const tokenOpts = flags.digitaloceanTokenFile !== undefined ? { file: flags.digitaloceanTokenFile } : {};
  loadToken(tokenOpts);
  const token = tokenSource(tokenOpts);
  let userDataTemplate: string | undefined;
  if (flags.gatewayUserDataFile !== undefined) {
    try {
      userDataTemplate = readFileSync(flags.gatewayUserDataFile, "utf8");
    } catch (err) {
      throw new Error(`--gateway-user-data-file: cannot read ${flags.gatewayUserDataFile}`, { cause: err });
    }
  }
  // Read when a template uses them, anew each time (a rotated Secret is used); the kubeconfig goes
  // into user data only, never into a log or an error message.
  const reader = (flag: string, file: string) => (): string => {
    try {
      return readFileSync(file, "utf8");
    } catch {
      throw new Error(`${flag}: cannot read ${file}`);
    }
  };
  const kubeconfig =
    flags.gatewayKubeconfigFile === undefined
      ? undefined
      : reader("--gateway-kubeconfig-file", flags.gatewayKubeconfigFile);
  kubeconfig?.(); // fail at start, not at the first droplet
  return digitalOceanPlugins({
    clusterId: flags.clusterId,
    token,
    ...(flags.digitaloceanApiUrl ? { apiUrl: flags.digitaloceanApiUrl } : {}),
    ...(userDataTemplate !== undefined ? { userDataTemplate } : {}),
    userDataValues: {
      agentConfig: reader("--config", flags.config),
      ...(flags.gatewayImage ? { image: flags.gatewayImage } : {}),
      ...(kubeconfig ? { kubeconfig } : {}),
    },
    fleet: {
      minIntervalMs: positive("--cloud-resync-seconds", flags.cloudResyncSeconds, 60) * 1000,
      rollDrainMs: positive("--gateway-drain-seconds", flags.gatewayDrainSeconds, 60) * 1000,
    },
    fleetPollMs: positive("--cloud-poll-ms", flags.cloudPollMs, 2000),
    follower: { requireNamespaceGrant: flags.reservedIpsAnyNamespace !== true },
    logger,
  });
}

/** An address as the host of a URL (IPv6 in brackets). */
function viewUrlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/**
 * Where DEDICATED_IP apps get their gateways (docs/apps.md): a pool (--apps-gateway-pool) or
 * DigitalOcean droplets (--apps-digitalocean, which needs the cloud plugins). Errors name the flag.
 */
export function dedicatedEgressOptions(
  flags: ControllerFlags,
  cloud: DigitalOceanPlugins | undefined,
): Pick<AppControllerOptions, "gatewayPool" | "digitalocean"> {
  const gatewayPool = loadGatewayPool(flags.appsGatewayPool);
  const config = loadAppsDigitalOcean(flags.appsDigitalocean);
  if (config && gatewayPool)
    throw new Error(
      "--apps-digitalocean and --apps-gateway-pool: give one (where DEDICATED_IP apps get their gateways)",
    );
  if (config && !cloud)
    throw new Error("--apps-digitalocean needs --cloud digitalocean (the fleet plugin makes the apps' droplets)");
  return {
    ...(gatewayPool ? { gatewayPool } : {}),
    ...(config && cloud ? { digitalocean: { config, reservedIPs: cloud.gatewayReservedIPs } } : {}),
  };
}

/** The controller: informers everywhere, reconcilers only on the Lease holder. */
export async function runController(flags: ControllerFlags): Promise<void> {
  const identity = flags.identity ?? process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const logger = createLogger("controller").child({ identity });
  const listen = metricsListen(flags);
  const viewListen = listenFlags("--view", flags.viewPort, flags.viewAddress, VIEW_DEFAULT_HOST);
  const client = new KubeClient(loadKubeconfig(flags.kubeconfig));
  const cloud = cloudPlugins(flags, logger);
  const metrics = new ControllerMetrics();
  // Ready once the informers have listed everything: a standby is ready too (it serves nothing
  // but must be able to take over at once).
  let synced = false;
  const before = async () => {
    for (const p of cloud?.plugins ?? [])
      if (p.failingJobs) metrics.cloudFailing.set({ plugin: p.name }, p.failingJobs());
  };
  // The DigitalOcean follower keeps Services' externalIPs: only then are Services watched.
  const source = new KubeSource(client, logger, controllerSourceOptions(cloud !== undefined));
  const network = loadAgentConfig(flags.config).clusterNetwork;
  const appSource = flags.apps === false ? undefined : new AppSource(client, logger);
  let appsSynced = false;
  // The egress-IP feed (docs/explain.md) beside the metrics, from the same informers; answered
  // only once they have listed (a partial feed would withdraw IPs in use from partners' allowlists).
  const feed = egressIPsRoute({
    policies: () => source.objects().filter((o) => o.kind === "EgressPolicy" || o.kind === "ClusterEgressPolicy"),
    apps: () => appSource?.list("App") ?? [],
    ready: () => synced && (appSource === undefined || appsSynced),
  });
  if (listen) await serveMetrics(metrics.registry, { ...listen, ready: () => synced, before, routes: feed });
  const controller = new Controller({
    onPass: (p) => metrics.onPass(p),
    ...(cloud ? { plugins: cloud.plugins } : {}),
    client,
    source,
    network,
    logger,
  });
  // Read-only, from the same informers, on every replica (a standby shows the same cluster).
  const view = viewListen
    ? await serveLiveView({ ...viewListen, source, network, logger, ready: () => synced })
    : undefined;
  if (viewListen) logger.info({ url: `http://${viewUrlHost(viewListen.host)}:${viewListen.port}/` }, "live view");
  // Apps (docs/apps.md): a reconciler of its own, on the same Lease.
  const ingressLabel = parseIngressLabel(flags.appsIngressLabel);
  const egress = dedicatedEgressOptions(flags, cloud);
  const apps =
    appSource === undefined
      ? undefined
      : new AppController({
          client,
          apps: new AppsClient(client),
          source: appSource,
          logger,
          plan: { ...(ingressLabel ? { ingressLabel } : {}), docrRegistry: flags.appsDocrRegistry ?? "" },
          ...egress,
        });
  await controller.startInformers();
  // Apart from the core: a cluster whose App CRD is not installed yet must not hold up the rest.
  void apps?.startInformers().then(() => (appsSynced = true));
  synced = true;
  const elector = new LeaderElector(
    client,
    {
      namespace: flags.namespace,
      name: "static-egress-controller",
      identity,
      leaseDurationSeconds: Number(flags.leaseSeconds),
      retryPeriodMs: 1_000,
    },
    logger,
    {
      onStartedLeading: () => {
        metrics.leader.set(1);
        controller.activate();
        apps?.activate();
      },
      onStoppedLeading: () => {
        metrics.leader.set(0);
        controller.deactivate();
        apps?.deactivate();
      },
    },
  );
  elector.start();
  const stop = async () => {
    await elector.stop();
    await view?.close();
    await controller.stop();
    await apps?.stop();
    await cloud?.stop();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
}
