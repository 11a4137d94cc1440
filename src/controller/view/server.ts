import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import { snapshotFromObjects, type KubeObject } from "../../api/objects.js";
import { SpecValidator } from "../../api/v1alpha1/validate.js";
import type { KubeSource } from "../../kube/source.js";
import type { ClusterNetwork } from "../../planner/model.js";
import { Planner } from "../../planner/plan.js";
import type { Logger } from "../../util/log.js";
import { ViewHistory } from "./history.js";
import { buildView } from "./model.js";
import { VIEW_CSS, VIEW_HTML, VIEW_JS } from "./page.js";

/** Where `--view-address` defaults to: loopback (kubectl port-forward reaches it; nothing else does). */
export const VIEW_DEFAULT_HOST = "127.0.0.1";

/**
 * Nothing but the page's own files and its own JSON: no inline script or style, no other origin,
 * no framing, no form. Sent with every answer.
 */
export const VIEW_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS = {
  "content-security-policy": VIEW_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};

const FILES: Record<string, { type: string; body: string }> = {
  "/": { type: "text/html; charset=utf-8", body: VIEW_HTML },
  "/view.css": { type: "text/css; charset=utf-8", body: VIEW_CSS },
  "/view.js": { type: "text/javascript; charset=utf-8", body: VIEW_JS },
};

export interface LiveViewOptions {
  port: number;
  host: string;
  /** The controller's informers (read on any replica; the view never writes). */
  source: Pick<KubeSource, "objects" | "raw">;
  network: ClusterNetwork;
  logger: Logger;
  /** False until the informers have listed everything: the state is then 503, not a partial cluster. */
  ready?: () => boolean;
  /** How often the history samples the gateways' and policies' status (default 2 s). */
  sampleMs?: number;
  history?: ViewHistory;
  now?: () => number;
}

export interface LiveView {
  readonly server: Server;
  close(): Promise<void>;
}

function isLoopback(host: string): boolean {
  return host === "::1" || host.startsWith("127.");
}

/** The host name of a Host header (`[::1]:80` -> `::1`). */
function hostName(header: string | undefined): string {
  const h = (header ?? "").trim().toLowerCase();
  if (h.startsWith("[")) return h.slice(1, h.indexOf("]"));
  return h.split(":")[0] ?? "";
}

/**
 * The live view (docs/view.md): a read-only page of gateways, instances, policies, each selected
 * pod's egress IP, recent failovers and per-IP traffic, on its own HTTP server apart from the
 * metrics one. GET only. The state is built from the informers on demand, at most once a second;
 * the history is sampled every `sampleMs`.
 */
export async function serveLiveView(opts: LiveViewOptions): Promise<LiveView> {
  const now = opts.now ?? Date.now;
  const history = opts.history ?? new ViewHistory();
  const validator = new SpecValidator();
  // List items carry no kind: the informer they came from says what they are.
  const raw = (kind: string) => opts.source.raw(kind).map((o) => ({ ...(o as KubeObject), kind }));
  const sample = () => {
    try {
      history.observe(
        { gateways: raw("EgressGateway"), policies: [...raw("EgressPolicy"), ...raw("ClusterEgressPolicy")] },
        now(),
      );
    } catch (e) {
      opts.logger.warn({ err: (e as Error).message }, "live view: sampling failed");
    }
  };
  let cached: { at: number; json: string } | undefined;
  const state = (): string => {
    const at = now();
    if (cached && at - cached.at < 1_000) return cached.json;
    const objects = opts.source.objects();
    const planner = new Planner(snapshotFromObjects(objects, opts.network), { validator });
    const view = buildView({
      objects,
      planner,
      history: { failovers: history.failovers(), traffic: history.series() },
      now: new Date(at),
    });
    cached = { at, json: JSON.stringify(view) };
    return cached.json;
  };
  // On loopback, a name other than an address or localhost is a page elsewhere that pointed its
  // own DNS name at 127.0.0.1 (DNS rebinding) to read the state from a browser on this host.
  const checkHost = isLoopback(opts.host);
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { ...SECURITY_HEADERS, "content-type": type, ...extra }).end(body);
    };
    if (req.method !== "GET") {
      send(405, "text/plain; charset=utf-8", "read-only: GET only\n", { allow: "GET" });
      return;
    }
    const name = hostName(req.headers.host);
    if (checkHost && name !== "localhost" && isIP(name) === 0) {
      send(403, "text/plain; charset=utf-8", "use an IP address or localhost in the URL\n");
      return;
    }
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path === "/favicon.ico") {
      res.writeHead(204, SECURITY_HEADERS).end(); // browsers ask; there is none
      return;
    }
    const file = FILES[path];
    if (file) {
      send(200, file.type, file.body);
      return;
    }
    if (path !== "/api/state") {
      send(404, "text/plain; charset=utf-8", "not found\n");
      return;
    }
    const json = "application/json; charset=utf-8";
    if (opts.ready && !opts.ready()) {
      send(503, json, JSON.stringify({ error: "the controller's informers have not listed the cluster yet" }));
      return;
    }
    try {
      send(200, json, state());
    } catch (e) {
      opts.logger.warn({ err: (e as Error).message }, "live view: state failed");
      send(500, json, JSON.stringify({ error: "could not build the state; see the controller's log" }));
    }
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  sample();
  const timer = setInterval(sample, opts.sampleMs ?? 2_000);
  timer.unref();
  return {
    server,
    close: () => {
      clearInterval(timer);
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
