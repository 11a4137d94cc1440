import createClient, { type Client } from "openapi-fetch";
import { pino, type Logger } from "pino";
import { ActionErroredError, ActionTimeoutError, DigitalOceanApiError, isNotFound } from "./errors.js";
import type { paths } from "./generated/schema.js";
import type { RetryPolicy } from "./retry.js";
import { createRetryingFetch, LOG_REDACT_PATHS, realSleep, type FetchLike, type Sleep } from "./transport.js";
import type {
  Action,
  Droplet,
  DropletAction,
  DropletCreateRequest,
  DropletMultiCreateRequest,
  DropletSingleCreate,
  DropletMultiCreate,
  Firewall,
  FirewallWrite,
  IPActionBody,
  ReservedIP,
  ReservedIPCreate,
  Tag,
  TagResource,
  Vpc,
} from "./types.js";
import type { Clock } from "../../util/clock.js";

const DIGITALOCEAN_API_URL = "https://api.digitalocean.com";

export interface DigitalOceanClientOptions {
  /** The API token, or a function returning it (re-evaluated per request, for rotation). */
  token: string | (() => string | Promise<string>);
  /** API root (default https://api.digitalocean.com); the stand-in's URL in tests. */
  baseUrl?: string;
  logger?: Logger;
  /** Underlying fetch; tests wrap it to inject crashes. */
  fetch?: FetchLike;
  retry?: Partial<RetryPolicy>;
  sleep?: Sleep;
  now?: Clock["now"];
  random?: () => number;
  requestTimeoutMs?: number;
  /** Items per page for list operations (1..200, default 200). */
  pageSize?: number;
  /** Bound on pages followed by one list call (default 1000). */
  maxPages?: number;
  /** Defaults for waitForAction. */
  actionPollIntervalMs?: number;
  actionTimeoutMs?: number;
}

/** Which endpoint an action is read from; the global one when only an id is known. */
export type ActionRef = number | { id: number; reservedIP?: string; dropletId?: number };

export interface WaitOptions {
  intervalMs?: number;
  timeoutMs?: number;
}

type Result<T> = { data?: T; error?: unknown; response: Response };

interface Page<T> {
  items: T[] | undefined;
  links?: { pages?: unknown };
  meta?: { total?: number };
}

/**
 * Typed DigitalOcean API v2 client for the operations of the OpenAPI subset. Requests go through
 * openapi-fetch typed by the generated `paths`; retries and rate limits are handled by the
 * transport (see retry.ts for the rules). List calls follow `links.pages.next`; get/delete calls
 * of a missing resource return undefined/false instead of throwing.
 */
export class DigitalOceanClient {
  /** The raw typed client (authorization and retries included) for calls not wrapped here. */
  readonly api: Client<paths>;
  private readonly log: Logger;
  private readonly sleep: Sleep;
  private readonly now: Clock["now"];
  private readonly pageSize: number;
  private readonly maxPages: number;
  private readonly pollIntervalMs: number;
  private readonly actionTimeoutMs: number;

  constructor(opts: DigitalOceanClientOptions) {
    this.log = (opts.logger ?? pino({ level: "silent" })).child(
      { component: "digitalocean" },
      { redact: { paths: LOG_REDACT_PATHS, censor: "[Redacted]" } },
    );
    this.sleep = opts.sleep ?? realSleep;
    this.now = opts.now ?? Date.now;
    this.pageSize = Math.min(200, Math.max(1, opts.pageSize ?? 200));
    this.maxPages = opts.maxPages ?? 1000;
    this.pollIntervalMs = opts.actionPollIntervalMs ?? 2000;
    this.actionTimeoutMs = opts.actionTimeoutMs ?? 120_000;
    const token = opts.token;
    const resolveToken = typeof token === "string" ? () => token : token;
    this.api = createClient<paths>({
      baseUrl: (opts.baseUrl ?? DIGITALOCEAN_API_URL).replace(/\/+$/, ""),
      fetch: createRetryingFetch({
        fetch: opts.fetch,
        retry: opts.retry,
        sleep: this.sleep,
        now: this.now,
        random: opts.random,
        logger: this.log,
        requestTimeoutMs: opts.requestTimeoutMs,
      }),
    });
    this.api.use({
      async onRequest({ request }) {
        request.headers.set("Authorization", `Bearer ${await resolveToken()}`);
        request.headers.set("Accept", "application/json");
        return request;
      },
    });
  }

  // ------------------------------------------------------------------ actions

  async getAction(id: number): Promise<Action> {
    const data = await this.data(
      "GET",
      "/v2/actions/{action_id}",
      this.api.GET("/v2/actions/{action_id}", { params: { path: { action_id: id } } }),
    );
    return required(data.action, "action");
  }

  /**
   * Polls an action until it is `completed` (returned) or `errored` (ActionErroredError), or
   * the timeout passes (ActionTimeoutError). Reads it from the resource's action endpoint when
   * the ref names the resource, else from /v2/actions/{id}.
   */
  async waitForAction(ref: ActionRef, opts: WaitOptions = {}): Promise<Action> {
    const interval = opts.intervalMs ?? this.pollIntervalMs;
    const timeout = opts.timeoutMs ?? this.actionTimeoutMs;
    const id = typeof ref === "number" ? ref : ref.id;
    const started = this.now();
    for (;;) {
      const action = await this.readAction(ref);
      if (action.status === "completed") return action;
      if (action.status === "errored") throw new ActionErroredError(action);
      const waited = this.now() - started;
      if (waited >= timeout) throw new ActionTimeoutError(id, action.status, waited);
      await this.sleep(Math.min(interval, Math.max(1, timeout - waited)));
    }
  }

  private readAction(ref: ActionRef): Promise<Action> {
    if (typeof ref === "number") return this.getAction(ref);
    if (ref.reservedIP !== undefined) return this.getReservedIPAction(ref.reservedIP, ref.id);
    if (ref.dropletId !== undefined) return this.getDropletAction(ref.dropletId, ref.id);
    return this.getAction(ref.id);
  }

  // ------------------------------------------------------------------ droplets

  listDroplets(filter: { tagName?: string; name?: string } = {}): Promise<Droplet[]> {
    return this.listAll(
      "GET /v2/droplets",
      (page, per_page) =>
        this.data(
          "GET",
          "/v2/droplets",
          this.api.GET("/v2/droplets", {
            params: { query: { page, per_page, tag_name: filter.tagName, name: filter.name } },
          }),
        ).then((d) => ({ items: d.droplets, links: d.links, meta: d.meta })),
      (d) => String(d.id),
    );
  }

  async createDroplet(body: DropletCreateRequest): Promise<{ droplet: Droplet; actionIds: number[] }> {
    // Defaulted properties may be left out (see DropletCreateRequest).
    const data = await this.data(
      "POST",
      "/v2/droplets",
      this.api.POST("/v2/droplets", { body: body as DropletSingleCreate }),
    );
    if (!("droplet" in data) || !data.droplet) throw new Error("droplets_create answered without a droplet");
    return { droplet: data.droplet, actionIds: actionIds(data.links?.actions) };
  }

  async createDroplets(body: DropletMultiCreateRequest): Promise<{ droplets: Droplet[]; actionIds: number[] }> {
    const data = await this.data(
      "POST",
      "/v2/droplets",
      this.api.POST("/v2/droplets", { body: body as DropletMultiCreate }),
    );
    if (!("droplets" in data) || !data.droplets) throw new Error("droplets_create answered without droplets");
    return { droplets: data.droplets, actionIds: actionIds(data.links?.actions) };
  }

  async deleteDropletsByTag(tagName: string): Promise<void> {
    await this.noContent(
      "DELETE",
      "/v2/droplets",
      this.api.DELETE("/v2/droplets", { params: { query: { tag_name: tagName } } }),
    );
  }

  async getDroplet(id: number): Promise<Droplet | undefined> {
    const data = await this.optional(
      this.data(
        "GET",
        "/v2/droplets/{droplet_id}",
        this.api.GET("/v2/droplets/{droplet_id}", { params: { path: { droplet_id: id } } }),
      ),
    );
    return data?.droplet;
  }

  /** Deletes a droplet; false when it did not exist. */
  deleteDroplet(id: number): Promise<boolean> {
    return this.deleted(
      this.noContent(
        "DELETE",
        "/v2/droplets/{droplet_id}",
        this.api.DELETE("/v2/droplets/{droplet_id}", { params: { path: { droplet_id: id } } }),
      ),
    );
  }

  listDropletActions(dropletId: number): Promise<Action[]> {
    return this.listAll(
      "GET /v2/droplets/{droplet_id}/actions",
      (page, per_page) =>
        this.data(
          "GET",
          "/v2/droplets/{droplet_id}/actions",
          this.api.GET("/v2/droplets/{droplet_id}/actions", {
            params: { path: { droplet_id: dropletId }, query: { page, per_page } },
          }),
        ).then((d) => ({ items: d.actions, links: d.links, meta: d.meta })),
      (a) => String(a.id),
    );
  }

  async postDropletAction(dropletId: number, body: DropletAction): Promise<Action> {
    const data = await this.data(
      "POST",
      "/v2/droplets/{droplet_id}/actions",
      this.api.POST("/v2/droplets/{droplet_id}/actions", { params: { path: { droplet_id: dropletId } }, body }),
    );
    return required(data.action, "action");
  }

  async postDropletActionByTag(tagName: string, body: DropletAction): Promise<Action[]> {
    const data = await this.data(
      "POST",
      "/v2/droplets/actions",
      this.api.POST("/v2/droplets/actions", { params: { query: { tag_name: tagName } }, body }),
    );
    return data.actions ?? [];
  }

  async getDropletAction(dropletId: number, actionId: number): Promise<Action> {
    const data = await this.data(
      "GET",
      "/v2/droplets/{droplet_id}/actions/{action_id}",
      this.api.GET("/v2/droplets/{droplet_id}/actions/{action_id}", {
        params: { path: { droplet_id: dropletId, action_id: actionId } },
      }),
    );
    return required(data.action, "action");
  }

  // ------------------------------------------------------------------ reserved IPs

  listReservedIPs(): Promise<ReservedIP[]> {
    return this.listAll(
      "GET /v2/reserved_ips",
      (page, per_page) =>
        this.data(
          "GET",
          "/v2/reserved_ips",
          this.api.GET("/v2/reserved_ips", { params: { query: { page, per_page } } }),
        ).then((d) => ({
          items: d.reserved_ips,
          links: d.links,
          meta: d.meta,
        })),
      (ip) => String(ip.ip),
    );
  }

  /** Creates a reserved IP; with `droplet_id` the answer carries the id of the assign action. */
  async createReservedIP(body: ReservedIPCreate): Promise<{ reservedIP: ReservedIP; actionIds: number[] }> {
    const data = await this.data("POST", "/v2/reserved_ips", this.api.POST("/v2/reserved_ips", { body }));
    return { reservedIP: required(data.reserved_ip, "reserved_ip"), actionIds: actionIds(data.links?.actions) };
  }

  async getReservedIP(ip: string): Promise<ReservedIP | undefined> {
    const data = await this.optional(
      this.data(
        "GET",
        "/v2/reserved_ips/{reserved_ip}",
        this.api.GET("/v2/reserved_ips/{reserved_ip}", { params: { path: { reserved_ip: ip } } }),
      ),
    );
    return data?.reserved_ip;
  }

  deleteReservedIP(ip: string): Promise<boolean> {
    return this.deleted(
      this.noContent(
        "DELETE",
        "/v2/reserved_ips/{reserved_ip}",
        this.api.DELETE("/v2/reserved_ips/{reserved_ip}", { params: { path: { reserved_ip: ip } } }),
      ),
    );
  }

  listReservedIPActions(ip: string): Promise<Action[]> {
    return this.listAll(
      "GET /v2/reserved_ips/{reserved_ip}/actions",
      () =>
        this.data(
          "GET",
          "/v2/reserved_ips/{reserved_ip}/actions",
          this.api.GET("/v2/reserved_ips/{reserved_ip}/actions", { params: { path: { reserved_ip: ip } } }),
        ).then((d) => ({ items: d.actions, links: d.links, meta: d.meta })),
      (a) => String(a.id),
    );
  }

  async postReservedIPAction(ip: string, body: IPActionBody): Promise<Action> {
    const data = await this.data(
      "POST",
      "/v2/reserved_ips/{reserved_ip}/actions",
      this.api.POST("/v2/reserved_ips/{reserved_ip}/actions", {
        params: { path: { reserved_ip: ip } },
        body: ipActionBody(body),
      }),
    );
    return required(data.action, "action");
  }

  async getReservedIPAction(ip: string, actionId: number): Promise<Action> {
    const data = await this.data(
      "GET",
      "/v2/reserved_ips/{reserved_ip}/actions/{action_id}",
      this.api.GET("/v2/reserved_ips/{reserved_ip}/actions/{action_id}", {
        params: { path: { reserved_ip: ip, action_id: actionId } },
      }),
    );
    return required(data.action, "action");
  }

  // ------------------------------------------------------------------ firewalls

  listFirewalls(): Promise<Firewall[]> {
    return this.listAll(
      "GET /v2/firewalls",
      (page, per_page) =>
        this.data(
          "GET",
          "/v2/firewalls",
          this.api.GET("/v2/firewalls", { params: { query: { page, per_page } } }),
        ).then((d) => ({
          items: d.firewalls,
          links: d.links,
          meta: d.meta,
        })),
      (fw) => String(fw.id),
    );
  }

  async createFirewall(body: FirewallWrite): Promise<Firewall> {
    const data = await this.data("POST", "/v2/firewalls", this.api.POST("/v2/firewalls", { body }));
    return required(data.firewall, "firewall");
  }

  async getFirewall(id: string): Promise<Firewall | undefined> {
    const data = await this.optional(
      this.data(
        "GET",
        "/v2/firewalls/{firewall_id}",
        this.api.GET("/v2/firewalls/{firewall_id}", { params: { path: { firewall_id: id } } }),
      ),
    );
    return data?.firewall;
  }

  /** Replaces the whole firewall (attributes left out are reset by the API). */
  async updateFirewall(id: string, body: FirewallWrite): Promise<Firewall> {
    const data = await this.data(
      "PUT",
      "/v2/firewalls/{firewall_id}",
      this.api.PUT("/v2/firewalls/{firewall_id}", { params: { path: { firewall_id: id } }, body }),
    );
    return required(data.firewall, "firewall");
  }

  deleteFirewall(id: string): Promise<boolean> {
    return this.deleted(
      this.noContent(
        "DELETE",
        "/v2/firewalls/{firewall_id}",
        this.api.DELETE("/v2/firewalls/{firewall_id}", { params: { path: { firewall_id: id } } }),
      ),
    );
  }

  async addFirewallDroplets(id: string, dropletIds: number[]): Promise<void> {
    await this.noContent(
      "POST",
      "/v2/firewalls/{firewall_id}/droplets",
      this.api.POST("/v2/firewalls/{firewall_id}/droplets", {
        params: { path: { firewall_id: id } },
        body: { droplet_ids: dropletIds },
      }),
    );
  }

  async removeFirewallDroplets(id: string, dropletIds: number[]): Promise<void> {
    await this.noContent(
      "DELETE",
      "/v2/firewalls/{firewall_id}/droplets",
      this.api.DELETE("/v2/firewalls/{firewall_id}/droplets", {
        params: { path: { firewall_id: id } },
        body: { droplet_ids: dropletIds },
      }),
    );
  }

  async addFirewallTags(id: string, tags: string[]): Promise<void> {
    await this.noContent(
      "POST",
      "/v2/firewalls/{firewall_id}/tags",
      this.api.POST("/v2/firewalls/{firewall_id}/tags", { params: { path: { firewall_id: id } }, body: { tags } }),
    );
  }

  async removeFirewallTags(id: string, tags: string[]): Promise<void> {
    await this.noContent(
      "DELETE",
      "/v2/firewalls/{firewall_id}/tags",
      this.api.DELETE("/v2/firewalls/{firewall_id}/tags", { params: { path: { firewall_id: id } }, body: { tags } }),
    );
  }

  // ------------------------------------------------------------------ tags

  listTags(): Promise<Tag[]> {
    return this.listAll(
      "GET /v2/tags",
      (page, per_page) =>
        this.data("GET", "/v2/tags", this.api.GET("/v2/tags", { params: { query: { page, per_page } } })).then((d) => ({
          items: d.tags,
          links: d.links,
          meta: d.meta,
        })),
      (t) => String(t.name),
    );
  }

  /** Creates a tag; an existing tag is fine (the answer, or a lookup, returns it). */
  async createTag(name: string): Promise<Tag> {
    try {
      const data = await this.data("POST", "/v2/tags", this.api.POST("/v2/tags", { body: { name } }));
      return required(data.tag, "tag");
    } catch (err) {
      // Should the API ever refuse a duplicate, the tag exists and that is all we wanted.
      if (err instanceof DigitalOceanApiError && (err.status === 409 || err.status === 422)) {
        const existing = await this.getTag(name);
        if (existing) return existing;
      }
      throw err;
    }
  }

  async getTag(name: string): Promise<Tag | undefined> {
    const data = await this.optional(
      this.data("GET", "/v2/tags/{tag_id}", this.api.GET("/v2/tags/{tag_id}", { params: { path: { tag_id: name } } })),
    );
    return data?.tag;
  }

  deleteTag(name: string): Promise<boolean> {
    return this.deleted(
      this.noContent(
        "DELETE",
        "/v2/tags/{tag_id}",
        this.api.DELETE("/v2/tags/{tag_id}", { params: { path: { tag_id: name } } }),
      ),
    );
  }

  async tagResources(name: string, resources: TagResource["resources"]): Promise<void> {
    await this.noContent(
      "POST",
      "/v2/tags/{tag_id}/resources",
      this.api.POST("/v2/tags/{tag_id}/resources", { params: { path: { tag_id: name } }, body: { resources } }),
    );
  }

  async untagResources(name: string, resources: TagResource["resources"]): Promise<void> {
    await this.noContent(
      "DELETE",
      "/v2/tags/{tag_id}/resources",
      this.api.DELETE("/v2/tags/{tag_id}/resources", { params: { path: { tag_id: name } }, body: { resources } }),
    );
  }

  // ------------------------------------------------------------------ VPCs

  listVpcs(): Promise<Vpc[]> {
    return this.listAll(
      "GET /v2/vpcs",
      (page, per_page) =>
        this.data("GET", "/v2/vpcs", this.api.GET("/v2/vpcs", { params: { query: { page, per_page } } })).then((d) => ({
          items: d.vpcs,
          links: d.links,
          meta: d.meta,
        })),
      (v) => String(v.id),
    );
  }

  async getVpc(id: string): Promise<Vpc | undefined> {
    const data = await this.optional(
      this.data("GET", "/v2/vpcs/{vpc_id}", this.api.GET("/v2/vpcs/{vpc_id}", { params: { path: { vpc_id: id } } })),
    );
    return data?.vpc;
  }

  // ------------------------------------------------------------------ plumbing

  /**
   * Follows links.pages.next until the last page. Items are de-duplicated by key, since offset
   * pages shift when resources are created meanwhile.
   */
  private async listAll<T>(
    what: string,
    fetchPage: (page: number, perPage: number) => Promise<Page<T>>,
    key: (item: T) => string,
  ): Promise<T[]> {
    const out: T[] = [];
    const seen = new Set<string>();
    let page = 1;
    for (let n = 0; n < this.maxPages; n++) {
      const p = await fetchPage(page, this.pageSize);
      for (const item of p.items ?? []) {
        const k = key(item);
        if (!seen.has(k)) {
          seen.add(k);
          out.push(item);
        }
      }
      const next = nextPage(p.links?.pages);
      if (next === undefined || next <= page || (p.items ?? []).length === 0) return out;
      page = next;
    }
    throw new Error(`${what}: more than ${this.maxPages} pages`);
  }

  private async data<T>(method: string, path: string, call: Promise<Result<T>>): Promise<T> {
    const r = await call;
    if (!r.response.ok) throw apiError(method, path, r.response, r.error);
    if (r.data === undefined)
      throw new Error(`DigitalOcean API ${method} ${path} answered ${r.response.status} without a body`);
    return r.data;
  }

  private async noContent(method: string, path: string, call: Promise<Result<unknown>>): Promise<void> {
    const r = await call;
    if (!r.response.ok) throw apiError(method, path, r.response, r.error);
  }

  private async optional<T>(p: Promise<T>): Promise<T | undefined> {
    try {
      return await p;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async deleted(p: Promise<void>): Promise<boolean> {
    try {
      await p;
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }
}

function apiError(method: string, path: string, response: Response, body: unknown): DigitalOceanApiError {
  const b = body && typeof body === "object" ? (body as Record<string, unknown>) : {};
  const id = typeof b["id"] === "string" ? b["id"] : `http_${response.status}`;
  const message = typeof b["message"] === "string" ? b["message"] : response.statusText || "no message";
  const requestId =
    typeof b["request_id"] === "string" ? b["request_id"] : (response.headers.get("x-request-id") ?? undefined);
  return new DigitalOceanApiError(response.status, id, message, requestId, method, path);
}

/**
 * The generated type of the unassign body is unsatisfiable: openapi-typescript renders the
 * schema's property-less `{type: object}` branch as Record<string, never>. The JSON is the
 * documented one; only the static type needs the cast.
 */
function ipActionBody(body: IPActionBody): never {
  return body as never;
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined || value === null) throw new Error(`DigitalOcean API answer lacks ${what}`);
  return value;
}

function actionIds(links: Array<{ id?: number }> | undefined): number[] {
  return (links ?? []).map((l) => l.id).filter((id): id is number => typeof id === "number");
}

/** The page number of links.pages.next, if any. */
function nextPage(pages: unknown): number | undefined {
  if (!pages || typeof pages !== "object") return undefined;
  const next = (pages as { next?: unknown }).next;
  if (typeof next !== "string") return undefined;
  try {
    const n = Number(new URL(next).searchParams.get("page"));
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
