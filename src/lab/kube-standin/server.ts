/**
 * HTTP: routing of kube-apiserver paths to the service, request decoding, response encoding
 * (JSON, Table, PartialObjectMetadata), streaming of large lists and of watches, discovery,
 * OpenAPI, bearer-token auth, fault injection and the /_standin admin endpoints.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import YAML from "yaml";
import { negotiateOutput, partialObject, table, tableRow, type OutputFormat } from "./encoding.js";
import { badRequest, internalError, methodNotSupported, StatusError, type Status } from "./errors.js";
import { FaultInjector, FaultSpecError, type RequestInfo, type Verb } from "./faults.js";
import { decodeKubeProtobuf, ProtobufError } from "./protobuf.js";
import { apiVersionOf, groupResource } from "./resource.js";
import { ApiService, type FieldValidation, type PatchType, type Scope, type WriteOptions } from "./service.js";
import { isPlainObject, type KubeObject } from "./types.js";
import { WatchStream } from "./watch-stream.js";
import type { WatchEventType } from "./watch.js";

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const LIST_CHUNK_BYTES = 256 * 1024;

export interface HttpServerOptions {
  host: string;
  port: number;
  logger: Logger;
  service: ApiService;
  now: () => number;
  bookmarkIntervalMs: number;
  requireAuth: boolean;
  /** Reported by /version. */
  gitVersion: string;
}

interface ResourcePath {
  group: string;
  version: string;
  namespace?: string;
  resource?: string;
  name?: string;
  subresource?: string;
  watchPrefix: boolean;
}

/** Go's strconv.ParseBool, which the apiserver uses for boolean query parameters. */
function parseBool(v: string | null): boolean {
  return v !== null && ["1", "t", "T", "true", "TRUE", "True"].includes(v);
}

export function parseResourcePath(pathname: string): ResourcePath | undefined {
  const segs = pathname.split("/").filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === "api" && segs.length >= 2) {
    group = "";
    version = segs[1] as string;
    rest = segs.slice(2);
  } else if (segs[0] === "apis" && segs.length >= 3) {
    group = segs[1] as string;
    version = segs[2] as string;
    rest = segs.slice(3);
  } else {
    return undefined;
  }
  let watchPrefix = false;
  if (rest[0] === "watch") {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  const out: ResourcePath = { group, version, watchPrefix };
  if (rest.length === 0) return out;
  if (rest[0] === "namespaces" && rest.length >= 3 && rest[2] !== "status" && rest[2] !== "finalize") {
    out.namespace = rest[1] as string;
    rest = rest.slice(2);
  }
  if (rest.length > 3) return undefined;
  out.resource = rest[0] as string;
  if (rest[1] !== undefined) out.name = rest[1];
  if (rest[2] !== undefined) out.subresource = rest[2];
  return out;
}

export class KubeHttpServer {
  readonly server: Server;
  readonly faults: FaultInjector;
  private readonly watches = new Set<WatchStream>();
  private readonly sockets = new Set<import("node:net").Socket>();
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly service: ApiService;
  private address = "";

  constructor(private readonly opts: HttpServerOptions) {
    this.log = opts.logger;
    this.service = opts.service;
    this.faults = new FaultInjector({
      dropWatches: (resource, mode, namespace) => this.dropWatches(resource, mode, namespace),
      expireHistory: (resource) => this.service.expireHistory(resource),
    });
    this.server = createServer((req, res) => {
      void this.handle(req, res);
    });
    this.server.requestTimeout = 0;
    this.server.keepAliveTimeout = 60_000;
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    this.address = `${host}:${addr.port}`;
    if (this.opts.bookmarkIntervalMs > 0) {
      this.bookmarkTimer = setInterval(() => this.sendBookmarks(), this.opts.bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
    return `http://${this.address}`;
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    for (const w of [...this.watches]) w.end();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  get openWatchCount(): number {
    return this.watches.size;
  }

  dropWatches(resource: string | undefined, mode: "close" | "reset", namespace?: string): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (resource && w.resource !== resource && w.plural !== resource.split("/")[0]) continue;
      if (namespace !== undefined && w.namespace !== namespace) continue;
      n++;
      if (mode === "reset") w.reset();
      else w.end();
    }
    return n;
  }

  private sendBookmarks(): void {
    const rv = String(this.service.currentRv());
    for (const w of this.watches) if (w.allowBookmarks && w.idle) w.send("BOOKMARK", { metadata: { resourceVersion: rv } });
  }

  // ------------------------------------------------------------ plumbing

  private writeJson(res: ServerResponse, code: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
    const data = JSON.stringify(body);
    res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data), ...headers });
    res.end(data);
  }

  private writeStatus(res: ServerResponse, status: Status, headers: Record<string, string | string[]> = {}): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.writeJson(res, status.code, status, headers);
  }

  private writeError(res: ServerResponse, e: unknown): void {
    if (e instanceof StatusError) {
      const headers: Record<string, string> = {};
      if (e.details?.retryAfterSeconds !== undefined) headers["Retry-After"] = String(e.details.retryAfterSeconds);
      this.writeStatus(res, e.toStatus(), headers);
      return;
    }
    this.log.error({ err: e }, "kube stand-in: request failed");
    this.writeStatus(res, internalError(e instanceof Error ? e.message : String(e), e).toStatus());
  }

  private async readBody(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const b = c as Buffer;
      size += b.length;
      if (size > MAX_BODY_BYTES) throw new StatusError(413, "RequestEntityTooLarge", `the request body exceeds ${MAX_BODY_BYTES} bytes`);
      chunks.push(b);
    }
    return Buffer.concat(chunks);
  }

  private parseBody(body: Buffer, contentType: string): unknown {
    if (contentType.includes("application/vnd.kubernetes.protobuf")) {
      try {
        return decodeKubeProtobuf(body);
      } catch (e) {
        if (e instanceof ProtobufError) throw new StatusError(415, "UnsupportedMediaType", e.message);
        throw e;
      }
    }
    if (contentType.includes("cbor")) {
      throw new StatusError(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got ${contentType})`);
    }
    const text = body.toString("utf8");
    if (text.trim() === "") return undefined;
    try {
      if (contentType.includes("yaml")) return YAML.parse(text);
      return JSON.parse(text);
    } catch (e) {
      throw badRequest(`couldn't decode the request body: ${(e as Error).message}`);
    }
  }

  private writeOptions(q: URLSearchParams): WriteOptions {
    const dryRun = q.getAll("dryRun");
    for (const d of dryRun) if (d !== "All") throw badRequest(`dryRun: Unsupported value: ${JSON.stringify(d)}: supported values: "All"`);
    const fv = q.get("fieldValidation");
    if (fv !== null && fv !== "" && !["Strict", "Warn", "Ignore"].includes(fv)) {
      throw badRequest(`fieldValidation: Unsupported value: ${JSON.stringify(fv)}: supported values: "Ignore", "Strict", "Warn"`);
    }
    return { dryRun: dryRun.length > 0, ...(fv ? { fieldValidation: fv as FieldValidation } : {}) };
  }

  private warningHeaders(warnings: string[]): Record<string, string[]> {
    return warnings.length ? { Warning: warnings.map((w) => `299 - ${JSON.stringify(w)}`) } : {};
  }

  // ------------------------------------------------------------ routing

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const url = new URL(req.url ?? "/", "http://standin");
    res.on("finish", () => this.log.debug({ method: req.method, url: req.url, status: res.statusCode, ms: Date.now() - started }, "request"));
    try {
      const path = url.pathname.replace(/\/+$/, "") || "/";
      if (path === "/healthz" || path === "/livez" || path === "/readyz") {
        res.writeHead(200, { "Content-Type": "text/plain" });
        res.end("ok");
        return;
      }
      // kubectl (client-go's clientcmd) sends kubeconfig credentials only over TLS, so tokenless
      // requests are accepted unless requireAuth is set; a credential that is sent must be a bearer token.
      const auth = req.headers.authorization;
      if ((auth !== undefined || this.opts.requireAuth) && !/^Bearer\s+\S+/i.test(auth ?? "")) {
        this.writeStatus(res, new StatusError(401, "Unauthorized", "Unauthorized").toStatus());
        return;
      }
      if (path.startsWith("/_standin/")) return await this.handleAdmin(req, res, path);
      if (path === "/version") return this.writeJson(res, 200, this.versionInfo());
      if (path === "/api") return this.writeJson(res, 200, this.service.registry.apiVersions(this.address));
      if (path === "/apis") return this.writeJson(res, 200, this.service.registry.apiGroupList());
      if (path === "/openapi/v3") return this.writeJson(res, 200, this.service.registry.openApiV3Root());
      if (path.startsWith("/openapi/v3/")) {
        const gv = path.slice("/openapi/v3/".length).split("/");
        const doc = gv[0] === "api" ? this.service.registry.openApiV3Document("", gv[1] ?? "") : gv[0] === "apis" ? this.service.registry.openApiV3Document(gv[1] ?? "", gv[2] ?? "") : undefined;
        if (!doc) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
        return this.writeJson(res, 200, doc);
      }
      const groupOnly = /^\/apis\/([^/]+)$/.exec(path);
      if (groupOnly) {
        const g = this.service.registry.apiGroup(decodeURIComponent(groupOnly[1] as string));
        if (!g) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
        return this.writeJson(res, 200, g);
      }
      const rp = parseResourcePath(path);
      if (!rp) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
      if (rp.resource === undefined) {
        const list = this.service.registry.apiResourceList(rp.group, rp.version);
        if (!list) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
        return this.writeJson(res, 200, list);
      }
      await this.handleResource(req, res, url, rp);
    } catch (e) {
      this.writeError(res, e);
    }
  }

  private versionInfo(): Record<string, string> {
    const m = /^v(\d+)\.(\d+)/.exec(this.opts.gitVersion);
    return {
      major: m?.[1] ?? "1",
      minor: m?.[2] ?? "32",
      gitVersion: this.opts.gitVersion,
      gitCommit: "0000000000000000000000000000000000000000",
      gitTreeState: "clean",
      buildDate: "2025-01-01T00:00:00Z",
      goVersion: "go1.23.0",
      compiler: "gc",
      platform: "linux/amd64",
    };
  }

  private async handleAdmin(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (path === "/_standin/faults") {
      if (req.method === "GET") return this.writeJson(res, 200, { faults: this.faults.active() });
      if (req.method === "DELETE") {
        this.faults.clear();
        return this.writeJson(res, 200, { faults: [] });
      }
      if (req.method === "POST") {
        const spec = this.parseBody(await this.readBody(req), "application/json");
        try {
          const results = this.faults.apply(spec);
          return this.writeJson(res, 200, { results, faults: this.faults.active() });
        } catch (e) {
          if (e instanceof FaultSpecError) throw badRequest(e.message);
          throw e;
        }
      }
    }
    if (path === "/_standin/stats" && req.method === "GET") {
      const tables = Object.fromEntries(this.service.store.allTables().map((t) => [t.name, { objects: t.size, watchers: t.watcherCount, history: t.history.length }]));
      return this.writeJson(res, 200, { resourceVersion: String(this.service.currentRv()), openWatches: this.watches.size, tables });
    }
    throw new StatusError(404, "NotFound", `no admin endpoint ${req.method ?? ""} ${path}`);
  }

  private verbOf(method: string, rp: ResourcePath, watch: boolean): Verb {
    switch (method) {
      case "GET":
        if (watch) return "watch";
        return rp.name === undefined ? "list" : "get";
      case "POST":
        return "create";
      case "PUT":
        return "update";
      case "PATCH":
        return "patch";
      case "DELETE":
        return rp.name === undefined ? "deletecollection" : "delete";
      default:
        throw new StatusError(405, "MethodNotAllowed", `method ${method} is not allowed`);
    }
  }

  private async handleResource(req: IncomingMessage, res: ServerResponse, url: URL, rp: ResourcePath): Promise<void> {
    const q = url.searchParams;
    const resolved = this.service.registry.resolve(rp.group, rp.version, rp.resource as string);
    if (!resolved) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    const { def, version } = resolved;
    if (rp.namespace !== undefined && !def.namespaced) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    const watch = rp.watchPrefix || parseBool(q.get("watch"));
    const method = req.method ?? "GET";
    const verb = this.verbOf(method, rp, watch);
    const info: RequestInfo = {
      verb,
      group: def.group,
      resource: def.plural,
      ...(rp.subresource ? { subresource: rp.subresource } : {}),
      ...(rp.namespace !== undefined ? { namespace: rp.namespace } : {}),
      ...(rp.name !== undefined ? { name: rp.name } : {}),
    };
    const decision = this.faults.decide(info);
    if (decision.delayMs > 0) await new Promise((r) => setTimeout(r, decision.delayMs));
    if (decision.failure) {
      const f = decision.failure;
      if (f.inWatch) {
        this.startWatchResponse(res);
        res.end(`${JSON.stringify({ type: "ERROR", object: f.status })}\n`);
        return;
      }
      this.writeStatus(res, f.status, f.retryAfterSeconds !== undefined ? { "Retry-After": String(f.retryAfterSeconds) } : {});
      return;
    }

    const scope: Scope = { def, version, namespace: def.namespaced ? rp.namespace : undefined };
    if (def.namespaced && rp.name !== undefined && rp.namespace === undefined) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    const sub = rp.subresource;
    if (sub !== undefined) {
      const allowed = (sub === "status" && version.statusSubresource) || def.extraSubresources.includes(sub);
      if (!allowed) throw new StatusError(404, "NotFound", "the server could not find the requested resource");
    }
    const format = negotiateOutput(req.headers.accept, q.get("includeObject") ?? undefined);
    if (!format) throw new StatusError(406, "NotAcceptable", `only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (got ${req.headers.accept ?? ""})`);

    switch (verb) {
      case "get":
        return this.respondObject(res, scope, 200, this.service.get(scope, rp.name as string), format);
      case "list":
        return this.respondList(res, scope, q, format);
      case "watch":
        return this.startWatch(res, scope, q, format, rp.name);
      case "create": {
        const body = this.parseBody(await this.readBody(req), req.headers["content-type"] ?? "application/json");
        const opts = this.writeOptions(q);
        if (sub === "binding") {
          const r = this.service.bind(scope, rp.name as string, body, opts);
          return this.writeJson(res, r.code, r.body);
        }
        if (rp.name !== undefined || sub !== undefined) throw methodNotSupported(def, "create");
        const r = this.service.create(scope, body, opts);
        return this.respondObject(res, scope, r.code, r.body as KubeObject, format, this.warningHeaders(r.warnings));
      }
      case "update": {
        const body = this.parseBody(await this.readBody(req), req.headers["content-type"] ?? "application/json");
        if (sub === "finalize") {
          const r = this.service.finalizeNamespace(scope, rp.name as string, body);
          return this.respondObject(res, scope, r.code, r.body as KubeObject, format);
        }
        if (sub !== undefined && sub !== "status") throw methodNotSupported(def, "update");
        const r = this.service.update(scope, rp.name as string, body, sub, this.writeOptions(q));
        return this.respondObject(res, scope, r.code, r.body as KubeObject, format, this.warningHeaders(r.warnings));
      }
      case "patch": {
        const ct = (req.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
        const type: PatchType | undefined =
          ct === "application/merge-patch+json"
            ? "merge"
            : ct === "application/json-patch+json"
              ? "json"
              : ct === "application/strategic-merge-patch+json"
                ? "strategic"
                : ct === "application/apply-patch+yaml" || ct === "application/apply-patch+cbor"
                  ? "apply"
                  : undefined;
        if (!type) {
          throw new StatusError(
            415,
            "UnsupportedMediaType",
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got ${JSON.stringify(ct)})`,
          );
        }
        if (sub !== undefined && sub !== "status") throw methodNotSupported(def, "patch");
        const patch = this.parseBody(await this.readBody(req), type === "apply" ? "yaml" : "json");
        const r = this.service.patch(scope, rp.name as string, type, patch, sub, this.writeOptions(q));
        return this.respondObject(res, scope, r.code, r.body as KubeObject, format, this.warningHeaders(r.warnings));
      }
      case "delete": {
        if (sub !== undefined) throw methodNotSupported(def, "delete");
        const body = this.parseBody(await this.readBody(req), "application/json");
        const r = this.service.delete(scope, rp.name as string, isPlainObject(body) ? body : {}, this.writeOptions(q));
        if (r.body.kind === "Status") return this.writeJson(res, r.code, r.body);
        return this.respondObject(res, scope, r.code, r.body as KubeObject, format);
      }
      case "deletecollection": {
        const body = this.parseBody(await this.readBody(req), "application/json");
        const result = this.service.deleteCollection(
          scope,
          { ...(q.get("labelSelector") ? { labelSelector: q.get("labelSelector") as string } : {}), ...(q.get("fieldSelector") ? { fieldSelector: q.get("fieldSelector") as string } : {}) },
          isPlainObject(body) ? body : {},
          this.writeOptions(q),
        );
        return this.writeJson(res, 200, {
          kind: def.listKind,
          apiVersion: apiVersionOf(def.group, version.name),
          metadata: { resourceVersion: result.resourceVersion },
          items: result.items,
        });
      }
    }
  }

  private respondObject(res: ServerResponse, scope: Scope, code: number, obj: KubeObject, format: OutputFormat, headers: Record<string, string | string[]> = {}): void {
    if (format.kind === "table") {
      const t = table(scope.version.table, [obj], this.opts.now(), format, { resourceVersion: obj.metadata.resourceVersion ?? "" });
      return this.writeJson(res, code, t, headers);
    }
    if (format.kind === "partial") return this.writeJson(res, code, partialObject(obj, format.apiVersion), headers);
    this.writeJson(res, code, obj, headers);
  }

  private listParams(q: URLSearchParams): { limit?: number; continue?: string; resourceVersion?: string; resourceVersionMatch?: string; labelSelector?: string; fieldSelector?: string } {
    const out: ReturnType<KubeHttpServer["listParams"]> = {};
    const limit = q.get("limit");
    if (limit !== null && limit !== "") {
      if (!/^\d+$/.test(limit)) throw badRequest(`limit: Invalid value: ${JSON.stringify(limit)}: must be a non-negative integer`);
      if (Number(limit) > 0) out.limit = Number(limit);
    }
    for (const k of ["continue", "resourceVersion", "resourceVersionMatch", "labelSelector", "fieldSelector"] as const) {
      const v = q.get(k);
      if (v !== null && v !== "") out[k] = v;
    }
    return out;
  }

  private async respondList(res: ServerResponse, scope: Scope, q: URLSearchParams, format: OutputFormat): Promise<void> {
    const result = this.service.list(scope, this.listParams(q));
    const listMeta: Record<string, unknown> = { resourceVersion: result.resourceVersion };
    if (result.continue !== undefined) listMeta.continue = result.continue;
    if (result.remainingItemCount !== undefined) listMeta.remainingItemCount = result.remainingItemCount;
    if (format.kind === "table") {
      const now = this.opts.now();
      const head = JSON.stringify({ kind: "Table", apiVersion: format.apiVersion, metadata: listMeta, columnDefinitions: scope.version.table.columns });
      return this.streamArray(res, `${head.slice(0, -1)},"rows":[`, result.items, (o) => JSON.stringify(tableRow(scope.version.table, o, now, format)));
    }
    const kind = format.kind === "partial" ? "PartialObjectMetadataList" : scope.def.listKind;
    const apiVersion = format.kind === "partial" ? format.apiVersion : apiVersionOf(scope.def.group, scope.version.name);
    const head = JSON.stringify({ kind, apiVersion, metadata: listMeta });
    const encode = format.kind === "partial" ? (o: KubeObject) => JSON.stringify(partialObject(o, format.apiVersion)) : (o: KubeObject) => JSON.stringify(o);
    return this.streamArray(res, `${head.slice(0, -1)},"items":[`, result.items, encode);
  }

  /** Writes `prefix item,item,... ]}` in chunks, waiting for the socket when it is full. */
  private async streamArray<T>(res: ServerResponse, prefix: string, items: readonly T[], encode: (item: T) => string): Promise<void> {
    res.writeHead(200, { "Content-Type": "application/json" });
    let buf = prefix;
    for (let i = 0; i < items.length; i++) {
      buf += (i ? "," : "") + encode(items[i] as T);
      if (buf.length >= LIST_CHUNK_BYTES) {
        const ok = res.write(buf);
        buf = "";
        if (!ok) {
          const closed = await new Promise<boolean>((resolve) => {
            const onDrain = (): void => {
              res.off("close", onClose);
              resolve(false);
            };
            const onClose = (): void => {
              res.off("drain", onDrain);
              resolve(true);
            };
            res.once("drain", onDrain);
            res.once("close", onClose);
          });
          if (closed) return;
        }
      }
    }
    res.end(`${buf}]}`);
  }

  private startWatchResponse(res: ServerResponse): void {
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache, private" });
    res.flushHeaders();
  }

  private startWatch(res: ServerResponse, scope: Scope, q: URLSearchParams, format: OutputFormat, name: string | undefined): void {
    const params = this.listParams(q);
    // A watch on one object (the legacy /watch/.../name path) is a watch with a name selector.
    const fieldSelector = name !== undefined ? [`metadata.name=${name}`, params.fieldSelector].filter(Boolean).join(",") : params.fieldSelector;
    const allowBookmarks = parseBool(q.get("allowWatchBookmarks"));
    const apiVersion = apiVersionOf(scope.def.group, scope.version.name);
    const now = this.opts.now;
    const encode = (type: WatchEventType, obj: KubeObject | Status, memo?: Map<string, unknown>): string => {
      if (type === "ERROR") return JSON.stringify({ type, object: obj });
      const o = obj as KubeObject;
      if (type === "BOOKMARK") {
        return JSON.stringify({ type, object: { kind: scope.def.kind, apiVersion, metadata: { ...o.metadata, resourceVersion: o.metadata.resourceVersion } } });
      }
      if (format.kind === "json") {
        const key = `${type}\u0000${apiVersion}`;
        const cached = memo?.get(key);
        if (typeof cached === "string") return cached;
        const line = JSON.stringify({ type, object: this.service.present(scope, o) });
        memo?.set(key, line);
        return line;
      }
      const presented = this.service.present(scope, o);
      if (format.kind === "partial") return JSON.stringify({ type, object: partialObject(presented, format.apiVersion) });
      return JSON.stringify({ type, object: table(scope.version.table, [presented], now(), format, { resourceVersion: presented.metadata.resourceVersion ?? "" }) });
    };
    let stop: () => void = () => undefined;
    const stream = new WatchStream(res, {
      encode,
      resource: groupResource(scope.def),
      plural: scope.def.plural,
      namespace: scope.namespace,
      allowBookmarks,
      onClose: () => {
        stop();
        this.watches.delete(stream);
        if (timer) clearTimeout(timer);
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = q.get("timeoutSeconds");
    this.watches.add(stream);
    try {
      stop = this.service.watch(
        scope,
        {
          ...(params.labelSelector ? { labelSelector: params.labelSelector } : {}),
          ...(fieldSelector ? { fieldSelector } : {}),
          ...(params.resourceVersion !== undefined ? { resourceVersion: params.resourceVersion } : {}),
          ...(params.resourceVersionMatch ? { resourceVersionMatch: params.resourceVersionMatch } : {}),
          sendInitialEvents: parseBool(q.get("sendInitialEvents")),
          allowWatchBookmarks: allowBookmarks,
        },
        stream,
      );
    } catch (e) {
      // Nothing was sent yet: a watch that cannot start is answered like any failed request.
      stream.abandon();
      throw e;
    }
    stream.start();
    if (stream.isClosed) stop();
    if (timeout && /^\d+$/.test(timeout) && Number(timeout) > 0) {
      timer = setTimeout(() => stream.end(), Number(timeout) * 1000);
      timer.unref();
    }
  }
}
