import { readFileSync } from "node:fs";
import { Agent, createServer, request, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { FaultInjector, FaultSpecError, type RequestInfo, type Verb } from "./faults.js";

/**
 * A TLS proxy in front of the real API server that injects faults the server cannot be asked for
 * (a 500 on the next list of one resource, a slow patch, watches dropped mid-stream). Requests
 * pass through unchanged otherwise, with the client's own bearer token, so RBAC and admission are
 * the real server's. Its certificate is the API server's (valid for 127.0.0.1).
 */

export interface FaultProxyOptions {
  upstream: string;
  caPem: string;
  certFile: string;
  keyFile: string;
  /** The admin token: only it may change faults over HTTP. */
  adminToken?: string;
  /** Real causes the HTTP endpoint can trigger. */
  compactEtcd?: () => Promise<number>;
  restartApiServer?: () => Promise<void>;
  host?: string;
  port?: number;
}

export interface FaultProxy {
  readonly url: string;
  readonly port: number;
  readonly faults: FaultInjector;
  /** The last requests passed on (at most 10,000), with the server's status: what clients really did. */
  readonly requests: readonly { info: RequestInfo; status: number }[];
  close(): Promise<void>;
}

interface OpenWatch {
  info: RequestInfo;
  res: ServerResponse;
  abortUpstream: () => void;
}

/** Splits an API path as the API server's RequestInfoFactory does (enough for matching). */
function requestInfo(method: string, url: URL): RequestInfo | undefined {
  const parts = url.pathname.split("/").filter(Boolean);
  let rest: string[];
  let group = "";
  if (parts[0] === "api" && parts.length >= 2) rest = parts.slice(2);
  else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1]!;
    rest = parts.slice(3);
  } else return undefined;
  if (rest.length === 0) return undefined;
  let namespace: string | undefined;
  // namespaces/<ns>/<resource>/...; but namespaces/<name>[/status|/finalize] is the Namespace itself.
  if (rest[0] === "namespaces" && rest.length >= 3 && rest[2] !== "status" && rest[2] !== "finalize") {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, subresource] = rest;
  const m = method.toUpperCase();
  let verb: Verb;
  if (m === "GET")
    verb = name
      ? "get"
      : url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1"
        ? "watch"
        : "list";
  else if (m === "POST") verb = "create";
  else if (m === "PUT") verb = "update";
  else if (m === "PATCH") verb = "patch";
  else if (m === "DELETE") verb = name ? "delete" : "deletecollection";
  else return undefined;
  return {
    verb,
    group,
    resource: resource!,
    ...(subresource ? { subresource } : {}),
    ...(namespace ? { namespace } : {}),
    ...(name ? { name } : {}),
  };
}

function matchesWatch(w: OpenWatch, resource: string | undefined, namespace: string | undefined): boolean {
  if (namespace !== undefined && w.info.namespace !== namespace) return false;
  if (resource === undefined) return true;
  const qualified = w.info.group ? `${w.info.resource}.${w.info.group}` : w.info.resource;
  return resource === w.info.resource || resource === qualified;
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(opts.upstream);
  const agent = new Agent({ keepAlive: true, ca: opts.caPem, maxSockets: 256 });
  const watches = new Set<OpenWatch>();
  const requests: { info: RequestInfo; status: number }[] = [];
  const faults = new FaultInjector({
    dropWatches(resource, mode, namespace) {
      let n = 0;
      for (const w of [...watches]) {
        if (!matchesWatch(w, resource, namespace)) continue;
        watches.delete(w);
        n++;
        w.abortUpstream();
        if (mode === "reset") w.res.socket?.destroy();
        else w.res.end();
      }
      return n;
    },
    compactEtcd: opts.compactEtcd ?? (() => Promise.reject(new FaultSpecError("this proxy cannot compact etcd"))),
    restartApiServer:
      opts.restartApiServer ?? (() => Promise.reject(new FaultSpecError("this proxy cannot restart the API server"))),
  });

  const forward = (req: IncomingMessage, res: ServerResponse, info: RequestInfo | undefined) => {
    const headers = { ...req.headers, host: upstream.host };
    const up = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent },
      (upRes) => {
        if (info) {
          requests.push({ info, status: upRes.statusCode ?? 0 });
          if (requests.length > 10_000) requests.splice(0, requests.length - 10_000);
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        // A watch's headers come before its first event: pass them on now, as the server did.
        res.flushHeaders();
        upRes.pipe(res);
        // The server went away mid-response (a restart kills its watches): the client must see the
        // connection break as it would without the proxy, not a response that never ends.
        const broken = () => {
          if (!res.writableEnded) res.destroy();
        };
        upRes.once("aborted", broken);
        upRes.once("error", broken);
        upRes.once("close", () => {
          if (!upRes.complete) broken();
        });
        if (info?.verb === "watch") {
          const w: OpenWatch = { info, res, abortUpstream: () => up.destroy() };
          watches.add(w);
          const forget = () => watches.delete(w);
          res.once("close", forget);
          upRes.once("end", forget);
        }
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.destroy();
    });
    res.once("close", () => up.destroy());
    req.pipe(up);
  };

  const control = async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, body: unknown) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (!opts.adminToken || req.headers.authorization !== `Bearer ${opts.adminToken}`)
      return reply(401, { error: "the admin token is required to change faults" });
    if (req.method === "GET") return reply(200, { faults: faults.active(), openWatches: watches.size });
    if (req.method === "DELETE") {
      faults.clear();
      return reply(200, { cleared: true });
    }
    let body = "";
    for await (const chunk of req) body += String(chunk);
    try {
      return reply(200, { results: await faults.apply(JSON.parse(body)) });
    } catch (e) {
      return reply(e instanceof FaultSpecError || e instanceof SyntaxError ? 400 : 500, {
        error: (e as Error).message,
      });
    }
  };

  const server: Server = createServer(
    { cert: readFileSync(opts.certFile), key: readFileSync(opts.keyFile) },
    (req, res) => {
      const url = new URL(req.url ?? "/", "https://proxy");
      if (url.pathname === "/_faults") {
        void control(req, res).catch(() => res.destroy());
        return;
      }
      const info = requestInfo(req.method ?? "GET", url);
      const decision = info ? faults.decide(info) : { delayMs: 0 };
      const act = () => {
        const f = decision.failure;
        if (!f) return forward(req, res, info);
        req.resume();
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (f.retryAfterSeconds !== undefined) headers["retry-after"] = String(f.retryAfterSeconds);
        if (f.inWatch) {
          res.writeHead(200, headers);
          res.end(`${JSON.stringify({ type: "ERROR", object: f.status })}\n`);
          return;
        }
        res.writeHead(f.status.code, headers);
        res.end(JSON.stringify(f.status));
      };
      if (decision.delayMs > 0) setTimeout(act, decision.delayMs);
      else act();
    },
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://${opts.host ?? "127.0.0.1"}:${port}`,
    port,
    faults,
    requests,
    async close() {
      for (const w of watches) w.res.socket?.destroy();
      watches.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
