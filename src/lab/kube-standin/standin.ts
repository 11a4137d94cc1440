/**
 * Kubernetes API stand-in for tests and the lab: an HTTP server that speaks enough of the
 * kube-apiserver protocol (discovery, REST verbs, list/watch with resourceVersions, 410 Gone,
 * status subresources, patches, selectors, Tables, CRDs with schema validation) for kubectl
 * and @kubernetes/client-node to work against it unchanged, with fault injection.
 * Production code never uses this; it talks to a real API server.
 */

import { randomBytes } from "node:crypto";
import pino, { type Logger } from "pino";
import type { FaultInjector } from "./faults.js";
import { renderKubeconfig } from "./kubeconfig.js";
import { groupResource } from "./resource.js";
import { KubeHttpServer } from "./server.js";
import { ApiService } from "./service.js";
import { objectKey, type KubeObject } from "./types.js";


export interface KubeStandinOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  logger?: Logger;
  /** Change events kept per resource for watch resumption (default 10,000). */
  historyWindow?: number;
  /** How often watches that allow bookmarks get one (default 10 s; 0 disables). */
  bookmarkIntervalMs?: number;
  /** The bearer token the kubeconfig carries (default: random). Any bearer token is accepted. */
  token?: string;
  /**
   * Reject requests without a bearer token with 401 (default false: kubectl sends no credentials
   * to a plain-http server; client-node does). Credentials other than a bearer token always get 401.
   */
  requireAuth?: boolean;
  /** Clock in milliseconds since the epoch (timestamps, ages). */
  now?: () => number;
  /** What /version reports (default v1.32.0-standin). */
  gitVersion?: string;
}

/** Read access to what is stored, for test assertions. */
export interface StandinStoreView {
  resourceVersion(): string;
  /** `resource` is `pods`, `leases.coordination.k8s.io`, `egresspolicies.staticegress.io`. */
  get(resource: string, namespace: string | undefined, name: string): KubeObject | undefined;
  list(resource: string, namespace?: string): KubeObject[];
  count(resource: string): number;
  openWatches(): number;
}

export interface KubeStandin {
  /** http://127.0.0.1:PORT */
  url: string;
  token: string;
  /** YAML kubeconfig for kubectl and client-node. */
  kubeconfig(namespace?: string): string;
  faults: FaultInjector;
  store: StandinStoreView;
  /** Creates objects directly (no HTTP), with the same validation: for fixtures and benchmarks. */
  seed(objects: readonly KubeObject[]): KubeObject[];
  close(): Promise<void>;
}

export async function startKubeStandin(opts: KubeStandinOptions = {}): Promise<KubeStandin> {
  const logger = opts.logger ?? pino({ level: "silent" });
  const now = opts.now ?? Date.now;
  const service = new ApiService({ historyWindow: opts.historyWindow ?? 10_000, logger, now });
  const http = new KubeHttpServer({
    host: opts.host ?? "127.0.0.1",
    port: opts.port ?? 0,
    logger,
    service,
    now,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 10_000,
    requireAuth: opts.requireAuth ?? false,
    gitVersion: opts.gitVersion ?? "v1.32.0-standin",
  });
  const url = await http.listen();
  const token = opts.token ?? `standin-${randomBytes(12).toString("hex")}`;
  logger.info({ url }, "kube stand-in listening");
  const tableOf = (resource: string) => {
    const def = service.registry.byGroupResource(resource) ?? service.registry.all().find((d) => d.plural === resource);
    return def ? service.store.existingTable(groupResource(def)) : undefined;
  };
  const store: StandinStoreView = {
    resourceVersion: () => String(service.currentRv()),
    get: (resource, namespace, name) => tableOf(resource)?.get(objectKey(namespace, name)),
    list: (resource, namespace) => {
      const t = tableOf(resource);
      return t ? t.list(namespace !== undefined ? { namespace } : {}).items : [];
    },
    count: (resource) => tableOf(resource)?.size ?? 0,
    openWatches: () => http.openWatchCount,
  };
  return {
    url,
    token,
    kubeconfig: (namespace) => renderKubeconfig(url, token, namespace),
    faults: http.faults,
    store,
    seed: (objects) => service.seed(objects),
    close: () => http.close(),
  };
}
