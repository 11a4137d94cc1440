import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { pino, type Logger } from "pino";
import { StandinFaults, type FaultRequest } from "./faults.js";
import { HANDLERS } from "./handlers.js";
import { OpenApiDocument, type OperationSpec } from "./openapi.js";
import { serveMetadata } from "./metadata.js";
import {
  StandinError,
  StandinState,
  type DropletCreateInput,
  type FirewallInput,
  type StandinAddressing,
} from "./state.js";
import type { Clock } from "../../util/clock.js";

export interface StandinOptions {
  /** Latency added to every request, in ms (default 0). */
  latencyMs?: number;
  /** How long actions (IP assign/unassign, droplet actions) stay in progress, in ms (default 50). */
  actionDurationMs?: number;
  /** How long a new droplet stays `new` before it is `active`, in ms (default 100). */
  dropletBootMs?: number;
  logger?: Logger;
  /** Bearer token the stand-in accepts; a random one when omitted. */
  token?: string;
  /** Path of the OpenAPI subset; found under reference/ (or shared/reference/) when omitted. */
  openapiPath?: string;
  /** An already loaded document (compiling the validators takes a moment; tests share one). */
  openapi?: OpenApiDocument;
  /** Clock of the simulated cloud (default Date.now). */
  now?: Clock["now"];
  /** Address plan (default: see StandinAddressing). */
  addressing?: StandinAddressing;
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
}

/** A response of the stand-in that does not match the OpenAPI document: a stand-in bug. */
export interface Violation {
  operationId: string;
  method: string;
  path: string;
  status: number;
  errors: string[];
  body: unknown;
}

/** A request the stand-in refused because it does not match the OpenAPI document (answered 422). */
export interface RejectedRequest {
  operationId: string;
  method: string;
  path: string;
  errors: string[];
}

export interface RequestLogEntry {
  operationId: string | undefined;
  method: string;
  path: string;
  status: number | "dropped";
}

/** Read access to the simulated account plus shortcuts tests use to change it behind the API's back. */
export interface StandinStateView {
  readonly raw: StandinState;
  droplets(): Array<Record<string, unknown>>;
  reservedIPs(): Array<Record<string, unknown>>;
  firewalls(): Array<Record<string, unknown>>;
  tags(): string[];
  vpcs(): Array<Record<string, unknown>>;
  actions(): Array<Record<string, unknown>>;
  /**
   * Creates a droplet directly (e.g. a cluster node or a foreign droplet); active at once unless
   * `boot` is set; `addresses` pins its private and public IPv4 instead of taking them from the pools.
   */
  createDroplet(
    input: DropletCreateInput & { boot?: boolean; addresses?: { privateIp: string; publicIp?: string } },
  ): Record<string, unknown>;
  /** Destroys a droplet as if someone deleted it in the control panel. */
  destroyDroplet(id: number): void;
  /** Powers a droplet off at once. */
  powerOff(id: number): void;
  /** Creates a reserved IP directly, optionally assigned at once. */
  createReservedIP(input: { region: string; dropletId?: number }): string;
  createFirewall(input: FirewallInput): Record<string, unknown>;
  createTag(name: string): string;
}

type Outcome = { status: number; headers: Record<string, string>; body: unknown } | { drop: true };

export interface DigitalOceanStandin {
  url: string;
  token: string;
  /**
   * The same request pipeline (auth, faults, validation, state) called in-process instead of over
   * the socket; for tests that send many requests. Pass it as the client's `fetch`.
   */
  fetch: (request: Request) => Promise<Response>;
  faults: StandinFaults;
  state: StandinStateView;
  violations(): Violation[];
  rejectedRequests(): RejectedRequest[];
  requests(): RequestLogEntry[];
  /** Waits until every action that will ever finish has finished (bounded by timeoutMs). */
  settle(timeoutMs?: number): Promise<void>;
  /** Empties the account (droplets, IPs, firewalls, tags, actions), faults and logs. */
  reset(): void;
  close(): Promise<void>;
}

const CONTROL_PREFIX = "/_standin";

export async function startDigitalOceanStandin(opts: StandinOptions = {}): Promise<DigitalOceanStandin> {
  const logger = opts.logger ?? pino({ level: "silent" });
  const token = opts.token ?? `dop_v1_standin_${randomBytes(16).toString("hex")}`;
  const now = opts.now ?? Date.now;
  const doc = opts.openapi ?? OpenApiDocument.load(opts.openapiPath);
  for (const op of doc.operations) {
    if (!HANDLERS[op.operationId]) throw new Error(`stand-in has no handler for ${op.operationId}`);
  }
  const faults = new StandinFaults();
  let baseUrl = "";
  const state = new StandinState({
    now,
    dropletBootMs: opts.dropletBootMs ?? 100,
    actionDurationMs: opts.actionDurationMs ?? 50,
    actionTiming: (type, _resourceType, defaultMs) => faults.actionTiming(type, defaultMs),
    baseUrl: () => baseUrl,
    ...(opts.addressing ? { addressing: opts.addressing } : {}),
  });
  let violations: Violation[] = [];
  let rejected: RejectedRequest[] = [];
  let requestLog: RequestLogEntry[] = [];
  let requestCount = 0;

  const rateHeaders = (remaining?: number, resetInSec = 60): Record<string, string> => ({
    "ratelimit-limit": "5000",
    "ratelimit-remaining": String(remaining ?? Math.max(0, 5000 - (requestCount % 5000))),
    "ratelimit-reset": String(Math.floor(now() / 1000) + resetInSec),
  });

  const errorBody = (id: string, message: string, requestId: string): Record<string, string> => ({
    id,
    message,
    request_id: requestId,
  });

  /** Validates and records an answer about to leave the stand-in. */
  function answer(
    op: OperationSpec | undefined,
    method: string,
    path: string,
    status: number,
    body: unknown,
    headers: Record<string, string>,
  ): Outcome {
    if (op) {
      const errors = doc.validateResponse(op, status, headers, body);
      if (errors.length > 0) {
        violations.push({ operationId: op.operationId, method, path, status, errors, body });
        logger.error(
          { operationId: op.operationId, status, errors },
          "stand-in response violates the OpenAPI document",
        );
      }
    }
    requestLog.push({ operationId: op?.operationId, method, path, status });
    return { status, headers, body };
  }

  /** The whole request pipeline, independent of how the request arrived (socket or in-process). */
  async function dispatch(
    method: string,
    rawUrl: string,
    authorization: string | undefined,
    raw: Buffer,
  ): Promise<Outcome> {
    requestCount++;
    const url = new URL(rawUrl, baseUrl);
    const path = url.pathname;
    const requestId = randomUUID();
    const baseHeaders = { ...rateHeaders(), "x-request-id": requestId };

    if (authorization !== `Bearer ${token}`) {
      const match = doc.match(method, path);
      return answer(
        match?.op,
        method,
        path,
        401,
        errorBody("unauthorized", "Unable to authenticate you.", requestId),
        baseHeaders,
      );
    }
    if (path.startsWith(CONTROL_PREFIX)) return control(method, path, raw);
    const match = doc.match(method, path);
    if (!match) {
      const status = doc.pathExists(path) ? 405 : 404;
      return answer(
        undefined,
        method,
        path,
        status,
        errorBody(status === 404 ? "not_found" : "method_not_allowed", `no route for ${method} ${path}`, requestId),
        baseHeaders,
      );
    }
    const { op, pathParams } = match;
    const latency = (opts.latencyMs ?? 0) + faults.takeLatency(op.operationId);
    if (latency > 0) await delay(latency);
    state.tick();

    const fault = faults.takeHttp(op.operationId);
    if (fault?.kind === "rateLimit") {
      const headers: Record<string, string> = { ...rateHeaders(0, fault.resetInSec), "x-request-id": requestId };
      if (fault.retryAfterSec !== undefined) headers["retry-after"] = String(fault.retryAfterSec);
      return answer(
        op,
        method,
        path,
        429,
        errorBody("too_many_requests", "API Rate limit exceeded.", requestId),
        headers,
      );
    }
    const processFirst = fault !== undefined && fault.afterProcessing;
    if (fault && !processFirst) return faultOutcome(op, method, path, fault, requestId, baseHeaders);

    let body: unknown;
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        // 400 where the operation declares it in the plain error shape, else 422 (under "default").
        const parseError = errorBody("bad_request", "error parsing request body", requestId);
        const status =
          op.responses.has("400") && doc.validateResponse(op, 400, {}, parseError).length === 0 ? 400 : 422;
        rejected.push({ operationId: op.operationId, method, path, errors: ["request body is not JSON"] });
        return answer(op, method, path, status, parseError, baseHeaders);
      }
    }
    const check = doc.validateRequest(op, { pathParams, query: url.searchParams, body });
    if (check.errors.length > 0) {
      rejected.push({ operationId: op.operationId, method, path, errors: check.errors });
      logger.warn(
        { operationId: op.operationId, errors: check.errors },
        "stand-in rejected a request that violates the OpenAPI document",
      );
      return answer(
        op,
        method,
        path,
        422,
        errorBody("unprocessable_entity", `invalid request: ${check.errors.join("; ")}`, requestId),
        baseHeaders,
      );
    }

    let status: number;
    let out: unknown;
    try {
      const result = HANDLERS[op.operationId]!({
        state,
        params: check.params,
        query: url.searchParams,
        body,
        baseUrl,
        path,
      });
      status = result.status;
      out = result.body;
    } catch (err) {
      if (!(err instanceof StandinError)) throw err;
      status = err.status;
      out = errorBody(err.errorId, err.message, requestId);
    }
    if (fault && processFirst) return faultOutcome(op, method, path, fault, requestId, baseHeaders);
    const mutate = faults.takeCorruption(op.operationId);
    if (mutate) out = mutate(out);
    logger.debug({ operationId: op.operationId, status }, "stand-in request");
    return answer(op, method, path, status, out, baseHeaders);
  }

  function faultOutcome(
    op: OperationSpec,
    method: string,
    path: string,
    fault: Exclude<ReturnType<StandinFaults["takeHttp"]>, undefined>,
    requestId: string,
    headers: Record<string, string>,
  ): Outcome {
    if (fault.kind === "dropConnection") {
      requestLog.push({ operationId: op.operationId, method, path, status: "dropped" });
      return { drop: true };
    }
    const h = { ...headers };
    if (fault.retryAfterSec !== undefined) h["retry-after"] = String(fault.retryAfterSec);
    const status = fault.kind === "serverError" ? fault.status : 500;
    return answer(op, method, path, status, errorBody("server_error", "Server Error", requestId), h);
  }

  function control(method: string, path: string, raw: Buffer): Outcome {
    const reply = (status: number, body?: unknown): Outcome => ({ status, headers: {}, body });
    try {
      if (path === `${CONTROL_PREFIX}/faults` && method === "POST") {
        faults.add(JSON.parse(raw.toString("utf8")) as FaultRequest);
        return reply(204);
      }
      if (path === `${CONTROL_PREFIX}/faults` && method === "DELETE") {
        faults.clear();
        return reply(204);
      }
      if (path === `${CONTROL_PREFIX}/state` && method === "GET") {
        return reply(200, {
          droplets: view.droplets(),
          reserved_ips: view.reservedIPs(),
          firewalls: view.firewalls(),
          tags: view.tags(),
          vpcs: view.vpcs(),
          actions: view.actions(),
          faults: faults.pending(),
          violations: violations.length,
        });
      }
      if (path === `${CONTROL_PREFIX}/reset` && method === "POST") {
        reset();
        return reply(204);
      }
      return reply(404, { id: "not_found", message: `no control route ${method} ${path}` });
    } catch (err) {
      return reply(400, { id: "bad_request", message: err instanceof Error ? err.message : String(err) });
    }
  }

  const view: StandinStateView = {
    raw: state,
    droplets: () => {
      state.tick();
      return [...state.droplets.values()].sort((a, b) => a.id - b.id).map((d) => state.renderDroplet(d));
    },
    reservedIPs: () => {
      state.tick();
      return state.listIps().map((ip) => state.renderIp(ip));
    },
    firewalls: () => [...state.firewalls.values()].map((fw) => state.renderFirewall(fw)),
    tags: () => [...state.tags.values()].sort(),
    vpcs: () => [...state.vpcs.values()].map((v) => state.renderVpc(v)),
    actions: () => {
      state.tick();
      return [...state.actions.values()].map((a) => state.renderAction(a));
    },
    createDroplet: ({ boot, addresses, ...input }) => {
      const { droplet, action } = state.createDroplet(input, addresses);
      if (!boot) {
        action.completesAt = state.now();
        state.tick();
      }
      return state.renderDroplet(droplet);
    },
    destroyDroplet: (id) => state.destroyDroplet(id),
    powerOff: (id) => {
      state.getDroplet(id).power = "off";
    },
    createReservedIP: (input) => {
      const { ip } = state.createIp({ region: input.region }, "reserved_ip");
      if (input.dropletId !== undefined) {
        state.getDroplet(input.dropletId);
        ip.dropletId = input.dropletId;
      }
      return ip.ip;
    },
    createFirewall: (input) => state.renderFirewall(state.createFirewall(input)),
    createTag: (name) => state.createTag(name),
  };

  function reset(): void {
    state.reset();
    faults.clear();
    violations = [];
    rejected = [];
    requestLog = [];
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    const outcome = await dispatch((req.method ?? "GET").toUpperCase(), req.url ?? "/", req.headers.authorization, raw);
    if ("drop" in outcome) {
      res.socket?.destroy();
      return;
    }
    const headers: Record<string, string> = { ...outcome.headers };
    if (outcome.body !== undefined) headers["content-type"] = "application/json; charset=utf-8";
    res.writeHead(outcome.status, headers);
    res.end(outcome.body === undefined ? undefined : JSON.stringify(outcome.body));
  }

  /** Same pipeline without a socket; a dropped connection surfaces as fetch's TypeError. */
  async function inProcessFetch(request: Request): Promise<Response> {
    const raw = Buffer.from(await request.arrayBuffer());
    const outcome = await dispatch(
      request.method.toUpperCase(),
      request.url,
      request.headers.get("authorization") ?? undefined,
      raw,
    );
    if ("drop" in outcome) throw new TypeError("fetch failed", { cause: new Error("other side closed") });
    const headers = new Headers(outcome.headers);
    if (outcome.body !== undefined) headers.set("content-type", "application/json; charset=utf-8");
    return new Response(outcome.body === undefined ? null : JSON.stringify(outcome.body), {
      status: outcome.status,
      headers,
    });
  }

  const server = createServer((req, res) => {
    if (serveMetadata(state, req, res)) return; // droplet metadata: no token, plain text (metadata.ts)
    handle(req, res).catch((err: unknown) => {
      logger.error({ err }, "stand-in handler crashed");
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ id: "server_error", message: "stand-in crashed" }));
      } else {
        res.destroy();
      }
    });
  });
  // Keep-alive sockets would keep close() waiting.
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  baseUrl = `http://127.0.0.1:${port}`;
  logger.info({ url: baseUrl, operations: doc.operations.length }, "DigitalOcean stand-in listening");

  return {
    url: baseUrl,
    token,
    fetch: inProcessFetch,
    faults,
    state: view,
    violations: () => [...violations],
    rejectedRequests: () => [...rejected],
    requests: () => [...requestLog],
    settle: async (timeoutMs = 5000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        state.tick();
        const next = state.nextCompletion();
        if (next === undefined) return;
        if (Date.now() >= deadline) throw new Error(`stand-in actions still in progress after ${timeoutMs} ms`);
        await delay(Math.max(1, Math.min(next - now(), deadline - Date.now())));
      }
    },
    reset,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
