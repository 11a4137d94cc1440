import { DigitalOceanClient, DigitalOceanProvider, type FetchLike } from "../../cloud/digitalocean/index.js";
import { silentLogger, type Logger } from "../../util/log.js";
import { GatewayFleetPlugin, type GatewayFleetPluginOptions } from "./gateway-fleet.js";
import { ReservedIPFollower, type ReservedIPFollowerOptions } from "./reserved-ip.js";
import type { UserDataValues } from "./user-data.js";

export { GatewayFleetPlugin, type GatewayFleetPluginOptions } from "./gateway-fleet.js";
export { ReservedIPFollower, type ReservedIPAssignment, type ReservedIPFollowerOptions } from "./reserved-ip.js";
export { type UserDataValues } from "./user-data.js";

export interface DigitalOceanPluginsOptions {
  clusterId: string;
  /** The API token, or a function returning it (a mounted Secret re-read on rotation). */
  token: string | (() => Promise<string>);
  /** API root; the stand-in's URL in tests (default https://api.digitalocean.com). */
  apiUrl?: string;
  /** Underlying fetch (tests: the stand-in's in-process fetch). */
  fetch?: FetchLike;
  userDataTemplate?: string;
  /** The template's values besides the names (image, agent config, gateway kubeconfig); see user-data.ts. */
  userDataValues?: UserDataValues;
  logger?: Logger;
  /** Poll interval of fleet waits (droplet boot, IP actions) (default 2000 ms). */
  fleetPollMs?: number;
  /** Poll interval while a reserved IP moves (default 500 ms): the follower learns it is done this late at most. */
  followerPollMs?: number;
  /** Passed to the plugins (intervals, retries; tests shorten them). */
  fleet?: Partial<Omit<GatewayFleetPluginOptions, "provider" | "clusterId">>;
  follower?: Partial<Omit<ReservedIPFollowerOptions, "provider">>;
  /** Client options for tests (fast retries). */
  retry?: { baseDelayMs?: number; maxDelayMs?: number };
}

export interface DigitalOceanPlugins {
  fleet: GatewayFleetPlugin;
  follower: ReservedIPFollower;
  /** Both, for ControllerDeps.plugins. */
  plugins: [GatewayFleetPlugin, ReservedIPFollower];
  /**
   * The reserved IPs a gateway's fleet allocated, once the gateway is gone (the App controller's
   * DigitalOcean mode, docs/apps.md): those still recorded under its name, and their release.
   */
  gatewayReservedIPs: { allocated(gateway: string): Promise<string[]>; release(gateway: string): Promise<void> };
  /** Waits until no cloud work runs. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The DigitalOcean plugins over one API client (one rate limit): the gateway fleet and the
 * reserved-IP follower, each with its own provider so that they poll at their own pace.
 */
export function digitalOceanPlugins(opts: DigitalOceanPluginsOptions): DigitalOceanPlugins {
  const logger = opts.logger ?? silentLogger;
  const client = new DigitalOceanClient({
    token: opts.token,
    ...(opts.apiUrl ? { baseUrl: opts.apiUrl } : {}),
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
    ...(opts.retry ? { retry: opts.retry } : {}),
    logger,
  });
  const fleetProvider = new DigitalOceanProvider({ client, logger, pollIntervalMs: opts.fleetPollMs ?? 2_000 });
  const followerProvider = new DigitalOceanProvider({ client, logger, pollIntervalMs: opts.followerPollMs ?? 500 });
  const fleet = new GatewayFleetPlugin({
    ...opts.fleet,
    provider: fleetProvider,
    clusterId: opts.clusterId,
    ...(opts.userDataTemplate !== undefined ? { userDataTemplate: opts.userDataTemplate } : {}),
    ...(opts.userDataValues ? { userDataValues: opts.userDataValues } : {}),
    logger,
  });
  const follower = new ReservedIPFollower({
    ...opts.follower,
    provider: followerProvider,
    clusterId: opts.clusterId,
    logger,
  });
  return {
    fleet,
    follower,
    plugins: [fleet, follower],
    gatewayReservedIPs: {
      allocated: (gateway) => fleetProvider.allocatedReservedIPs(gateway, opts.clusterId),
      // Deleting the fleet of a gateway that is gone deletes what is left of it: its recorded IPs.
      release: (gateway) => fleetProvider.deleteGatewayFleet(gateway, opts.clusterId),
    },
    idle: async () => {
      await Promise.all([fleet.idle(), follower.idle()]);
    },
    stop: async () => {
      await Promise.all([fleet.stop(), follower.stop()]);
    },
  };
}
