import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import type { Registry } from "prom-client";

export interface MetricsServerOptions {
  port: number;
  /** Address to listen on (default all: `0.0.0.0`). */
  host?: string;
  /** Refreshes gauges that are read on demand, before each scrape. */
  before?: () => Promise<void>;
  /** `/readyz` answers 200 while this is true (default: always). */
  ready?: () => boolean;
  /**
   * Further paths served beside the metrics (e.g. the controller's `/egress-ips`): called with
   * the path (no query) for every request but the server's own; returns true when it answered.
   */
  routes?: (path: string, req: IncomingMessage, res: ServerResponse) => boolean;
}

/** Where agents on hosts (nodes, gateways) listen without `--metrics-address`: loopback only. */
export const AGENT_METRICS_DEFAULT_HOST = "127.0.0.1";

/**
 * Where a long-running command serves metrics, from its `--metrics-port` and `--metrics-address`
 * flags (undefined: nowhere). Checked before anything starts; errors name the flag. Agents pass
 * `defaultHost` loopback: a host-network agent on every address would be open to every pod.
 */
export function metricsListen(
  flags: { metricsPort?: string; metricsAddress?: string },
  defaultHost = "0.0.0.0",
): { port: number; host: string } | undefined {
  return listenFlags("--metrics", flags.metricsPort, flags.metricsAddress, defaultHost);
}

/**
 * A `<prefix>-port` and `<prefix>-address` pair of flags (e.g. `--view-port`, `--view-address`):
 * where to listen, or undefined without a port. Errors name the flag.
 */
export function listenFlags(
  prefix: string,
  port: string | undefined,
  address: string | undefined,
  defaultHost: string,
): { port: number; host: string } | undefined {
  if (port === undefined) {
    if (address !== undefined) throw new Error(`${prefix}-address needs ${prefix}-port`);
    return undefined;
  }
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65_535)
    throw new Error(`${prefix}-port: must be a port number (1-65535), not ${JSON.stringify(port)}`);
  const host = address ?? defaultHost;
  if (isIP(host) === 0) throw new Error(`${prefix}-address: must be an IP address, not ${JSON.stringify(address)}`);
  return { port: n, host };
}

/**
 * Serves `/metrics` (Prometheus text format), `/healthz` (the process answers) and `/readyz`
 * (200 once `ready()` says so, 503 before), the paths kubelet probes and Prometheus expect.
 */
export function serveMetrics(registry: Registry, opts: MetricsServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path === "/readyz") {
      const ready = opts.ready?.() ?? true;
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ok\n" : "not ready\n");
      return;
    }
    if (path !== "/metrics") {
      if (opts.routes?.(path ?? "", req, res)) return;
      res.writeHead(404).end();
      return;
    }
    void (async () => {
      try {
        await opts.before?.();
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(await registry.metrics());
      } catch (e) {
        res.writeHead(500).end(String(e));
      }
    })();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => resolve(server));
  });
}
