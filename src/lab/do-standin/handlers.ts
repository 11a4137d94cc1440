import {
  StandinError,
  type ActionRecord,
  type DropletCreateInput,
  type FirewallInput,
  type StandinState,
} from "./state.js";

/** One validated request as the operation handlers see it. */
export interface HandlerContext {
  state: StandinState;
  /** Path and query parameters, coerced to their schema types. */
  params: Record<string, unknown>;
  query: URLSearchParams;
  body: unknown;
  baseUrl: string;
  /** Concrete request path (for pagination links). */
  path: string;
}

export interface HandlerResult {
  status: number;
  body?: unknown;
}

type Handler = (ctx: HandlerContext) => HandlerResult;

const DEFAULT_PER_PAGE = 20;

/** Pages `items` the way the DO API does: links.pages.{first,prev,next,last} and meta.total. */
function paginate<T>(ctx: HandlerContext, key: string, items: T[], render: (item: T) => unknown): HandlerResult {
  const perPage = typeof ctx.params["per_page"] === "number" ? ctx.params["per_page"] : DEFAULT_PER_PAGE;
  const page = typeof ctx.params["page"] === "number" ? ctx.params["page"] : 1;
  const lastPage = Math.max(1, Math.ceil(items.length / perPage));
  const slice = items.slice((page - 1) * perPage, page * perPage);
  const link = (p: number): string => {
    const q = new URLSearchParams(ctx.query);
    q.set("page", String(p));
    q.set("per_page", String(perPage));
    return `${ctx.baseUrl}${ctx.path}?${q.toString()}`;
  };
  const pages: Record<string, string> = {};
  if (page > 1) {
    pages["first"] = link(1);
    pages["prev"] = link(Math.min(page - 1, lastPage));
  }
  if (page < lastPage) {
    pages["next"] = link(page + 1);
    pages["last"] = link(lastPage);
  }
  return {
    status: 200,
    body: {
      [key]: slice.map(render),
      links: Object.keys(pages).length ? { pages } : {},
      meta: { total: items.length },
    },
  };
}

const num = (ctx: HandlerContext, name: string): number => ctx.params[name] as number;
const str = (ctx: HandlerContext, name: string): string => ctx.params[name] as string;
const body = <T>(ctx: HandlerContext): T => (ctx.body ?? {}) as T;

function actionLinks(ctx: HandlerContext, actions: ActionRecord[], rel: string): Array<Record<string, unknown>> {
  return actions.map((a) => ({ id: a.id, rel, href: ctx.state.actionHref(a.id) }));
}

function ipHandlers(kind: "reserved_ip" | "floating_ip"): Record<string, Handler> {
  const key = kind;
  const param = kind;
  const plural = `${kind}s`;
  const actionBody = (ctx: HandlerContext, a: ActionRecord): HandlerResult => ({
    status: 201,
    body: { action: { ...ctx.state.renderAction(a), project_id: ctx.state.getIp(a.ip as string).projectId } },
  });
  return {
    list: (ctx) => paginate(ctx, plural, ctx.state.listIps(), (ip) => ctx.state.renderIp(ip)),
    create: (ctx) => {
      const input = body<{ region?: string; droplet_id?: number; project_id?: string }>(ctx);
      const { ip, action } = ctx.state.createIp(input, kind);
      const links: Record<string, unknown> = {};
      if (action && input.droplet_id !== undefined) {
        links["droplets"] = [
          { id: input.droplet_id, rel: "droplet", href: `${ctx.baseUrl}/v2/droplets/${input.droplet_id}` },
        ];
        links["actions"] = actionLinks(ctx, [action], "assign_ip");
      }
      return { status: 202, body: { [key]: ctx.state.renderIp(ip), links } };
    },
    get: (ctx) => ({ status: 200, body: { [key]: ctx.state.renderIp(ctx.state.getIp(str(ctx, param))) } }),
    delete: (ctx) => {
      ctx.state.deleteIp(str(ctx, param));
      return { status: 204 };
    },
    actionsList: (ctx) =>
      paginate(ctx, "actions", ctx.state.ipActions(str(ctx, param)), (a) => ctx.state.renderAction(a)),
    actionsPost: (ctx) => actionBody(ctx, ctx.state.ipAction(str(ctx, param), body(ctx), kind)),
    actionsGet: (ctx) => {
      const ip = str(ctx, param);
      const a = ctx.state.ipActions(ip).find((x) => x.id === num(ctx, "action_id"));
      if (!a) throw new StandinError(404, "not_found", `action ${num(ctx, "action_id")} of ${ip} not found`);
      return {
        status: 200,
        body: { action: { ...ctx.state.renderAction(a), project_id: ctx.state.getIp(ip).projectId } },
      };
    },
  };
}

const reserved = ipHandlers("reserved_ip");
const floating = ipHandlers("floating_ip");

export const HANDLERS: Record<string, Handler> = {
  actions_get: (ctx) => {
    const a = ctx.state.actions.get(num(ctx, "action_id"));
    if (!a) throw new StandinError(404, "not_found", `action ${num(ctx, "action_id")} not found`);
    return { status: 200, body: { action: ctx.state.renderAction(a) } };
  },

  droplets_list: (ctx) => {
    const tagName = ctx.query.get("tag_name") ?? undefined;
    const name = ctx.query.get("name") ?? undefined;
    const type = ctx.query.get("type") ?? undefined;
    if (tagName !== undefined && (name !== undefined || type !== undefined)) {
      throw new StandinError(422, "unprocessable_entity", "tag_name can not be combined with name or type");
    }
    const items = type === "gpus" ? [] : ctx.state.listDroplets({ tagName, name });
    return paginate(ctx, "droplets", items, (d) => ctx.state.renderDroplet(d));
  },
  droplets_create: (ctx) => {
    const input = body<DropletCreateInput & { names?: string[] }>(ctx);
    if (input.names !== undefined) {
      if (input.names.length === 0 || input.names.length > 10) {
        throw new StandinError(422, "unprocessable_entity", "names must hold 1 to 10 names");
      }
      const created = input.names.map((name) => ctx.state.createDroplet({ ...input, name }));
      return {
        status: 202,
        body: {
          droplets: created.map((c) => ctx.state.renderDroplet(c.droplet)),
          links: {
            actions: actionLinks(
              ctx,
              created.map((c) => c.action),
              "create",
            ),
          },
        },
      };
    }
    const { droplet, action } = ctx.state.createDroplet(input);
    return {
      status: 202,
      body: { droplet: ctx.state.renderDroplet(droplet), links: { actions: actionLinks(ctx, [action], "create") } },
    };
  },
  droplets_destroy_byTag: (ctx) => {
    ctx.state.destroyDropletsByTag(str(ctx, "tag_name"));
    return { status: 204 };
  },
  droplets_get: (ctx) => ({
    status: 200,
    body: { droplet: ctx.state.renderDroplet(ctx.state.getDroplet(num(ctx, "droplet_id"))) },
  }),
  droplets_destroy: (ctx) => {
    ctx.state.destroyDroplet(num(ctx, "droplet_id"));
    return { status: 204 };
  },
  dropletActions_list: (ctx) => {
    const id = num(ctx, "droplet_id");
    ctx.state.getDroplet(id);
    const items = [...ctx.state.actions.values()].filter((a) => a.resourceType === "droplet" && a.resourceId === id);
    return paginate(ctx, "actions", items, (a) => ctx.state.renderAction(a));
  },
  dropletActions_post: (ctx) => {
    const a = ctx.state.dropletAction(num(ctx, "droplet_id"), body(ctx));
    return { status: 201, body: { action: ctx.state.renderAction(a) } };
  },
  dropletActions_post_byTag: (ctx) => {
    const tagName = ctx.query.get("tag_name");
    if (!tagName) throw new StandinError(422, "unprocessable_entity", "tag_name is required");
    const actions = ctx.state.dropletActionsByTag(tagName, body(ctx));
    return { status: 201, body: { actions: actions.map((a) => ctx.state.renderAction(a)) } };
  },
  dropletActions_get: (ctx) => {
    const id = num(ctx, "droplet_id");
    ctx.state.getDroplet(id);
    const a = ctx.state.actions.get(num(ctx, "action_id"));
    if (!a || a.resourceType !== "droplet" || a.resourceId !== id) {
      throw new StandinError(404, "not_found", `action ${num(ctx, "action_id")} of droplet ${id} not found`);
    }
    return { status: 200, body: { action: ctx.state.renderAction(a) } };
  },

  firewalls_list: (ctx) =>
    paginate(
      ctx,
      "firewalls",
      [...ctx.state.firewalls.values()].sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id)),
      (fw) => ctx.state.renderFirewall(fw),
    ),
  firewalls_create: (ctx) => ({
    status: 202,
    body: { firewall: ctx.state.renderFirewall(ctx.state.createFirewall(body<FirewallInput>(ctx))) },
  }),
  firewalls_get: (ctx) => ({
    status: 200,
    body: { firewall: ctx.state.renderFirewall(ctx.state.getFirewall(str(ctx, "firewall_id"))) },
  }),
  firewalls_update: (ctx) => ({
    status: 200,
    body: {
      firewall: ctx.state.renderFirewall(ctx.state.updateFirewall(str(ctx, "firewall_id"), body<FirewallInput>(ctx))),
    },
  }),
  firewalls_delete: (ctx) => {
    ctx.state.deleteFirewall(str(ctx, "firewall_id"));
    return { status: 204 };
  },
  firewalls_assign_droplets: (ctx) => {
    ctx.state.firewallDroplets(str(ctx, "firewall_id"), body<{ droplet_ids: number[] }>(ctx).droplet_ids, true);
    return { status: 204 };
  },
  firewalls_delete_droplets: (ctx) => {
    ctx.state.firewallDroplets(str(ctx, "firewall_id"), body<{ droplet_ids: number[] }>(ctx).droplet_ids, false);
    return { status: 204 };
  },
  firewalls_add_tags: (ctx) => {
    ctx.state.firewallTags(str(ctx, "firewall_id"), body<{ tags: string[] | null }>(ctx).tags ?? [], true);
    return { status: 204 };
  },
  firewalls_delete_tags: (ctx) => {
    ctx.state.firewallTags(str(ctx, "firewall_id"), body<{ tags: string[] | null }>(ctx).tags ?? [], false);
    return { status: 204 };
  },

  floatingIPs_list: floating.list!,
  floatingIPs_create: floating.create!,
  floatingIPs_get: floating.get!,
  floatingIPs_delete: floating.delete!,
  floatingIPsAction_list: floating.actionsList!,
  floatingIPsAction_post: floating.actionsPost!,
  floatingIPsAction_get: floating.actionsGet!,

  reservedIPs_list: reserved.list!,
  reservedIPs_create: reserved.create!,
  reservedIPs_get: reserved.get!,
  reservedIPs_delete: reserved.delete!,
  reservedIPsActions_list: reserved.actionsList!,
  reservedIPsActions_post: reserved.actionsPost!,
  reservedIPsActions_get: reserved.actionsGet!,

  tags_list: (ctx) => paginate(ctx, "tags", [...ctx.state.tags.values()].sort(), (name) => ctx.state.renderTag(name)),
  tags_create: (ctx) => {
    // Creating an existing tag answers that tag (tag creation is idempotent).
    const name = ctx.state.createTag(body<{ name: string }>(ctx).name);
    return { status: 201, body: { tag: ctx.state.renderTag(name) } };
  },
  tags_get: (ctx) => ({ status: 200, body: { tag: ctx.state.renderTag(ctx.state.getTag(str(ctx, "tag_id"))) } }),
  tags_delete: (ctx) => {
    ctx.state.deleteTag(str(ctx, "tag_id"));
    return { status: 204 };
  },
  tags_assign_resources: (ctx) => {
    ctx.state.tagResources(
      str(ctx, "tag_id"),
      body<{ resources: Array<{ resource_id?: string; resource_type?: string }> }>(ctx).resources,
      true,
    );
    return { status: 204 };
  },
  tags_unassign_resources: (ctx) => {
    ctx.state.tagResources(
      str(ctx, "tag_id"),
      body<{ resources: Array<{ resource_id?: string; resource_type?: string }> }>(ctx).resources,
      false,
    );
    return { status: 204 };
  },

  vpcs_list: (ctx) =>
    paginate(
      ctx,
      "vpcs",
      [...ctx.state.vpcs.values()].sort((a, b) => a.name.localeCompare(b.name)),
      (v) => ctx.state.renderVpc(v),
    ),
  vpcs_get: (ctx) => {
    const v = ctx.state.vpcs.get(str(ctx, "vpc_id"));
    if (!v) throw new StandinError(404, "not_found", `vpc ${str(ctx, "vpc_id")} not found`);
    return { status: 200, body: { vpc: ctx.state.renderVpc(v) } };
  },
};
