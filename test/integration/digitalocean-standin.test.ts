import { readFileSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { DigitalOceanClient } from "../../src/cloud/digitalocean/index.js";
import {
  locateOpenApiDocument,
  OpenApiDocument,
  startDigitalOceanStandin,
  type DigitalOceanStandin,
} from "../../src/lab/do-standin/index.js";

let standin: DigitalOceanStandin;
let doc: OpenApiDocument;

beforeAll(async () => {
  // Compiling the validators takes a moment: one document for every stand-in of this file.
  doc = OpenApiDocument.load();
  standin = await startDigitalOceanStandin({ dropletBootMs: 0, actionDurationMs: 0, openapi: doc });
});
afterAll(async () => {
  await standin.close();
});
afterEach(() => {
  const violations = standin.violations();
  standin.reset();
  expect(violations).toEqual([]);
});

const auth = (): Record<string, string> => ({
  authorization: `Bearer ${standin.token}`,
  "content-type": "application/json",
});

async function raw(
  method: string,
  path: string,
  body?: unknown,
  headers = auth(),
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${standin.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

describe("OpenAPI validation in the stand-in", () => {
  it("compiles all 41 operations of the subset", () => {
    expect(doc.operations).toHaveLength(41);
  });

  it("accepts the document's own response examples (the validator is not too strict)", () => {
    // Loose JSON walking over the YAML document; the shapes are checked by the validator itself.
    type Node = { [key: string]: Node } & { $ref?: string; value?: unknown; example?: unknown };
    const yaml = parseYaml(readFileSync(locateOpenApiDocument(), "utf8")) as Node;
    const deref = (o: Node | undefined): Node | undefined => {
      let cur = o;
      while (cur && typeof cur.$ref === "string") {
        cur = cur.$ref
          .slice(2)
          .split("/")
          .reduce<Node | undefined>((acc, k) => acc?.[k], yaml);
      }
      return cur;
    };
    let checked = 0;
    const failures: string[] = [];
    for (const op of doc.operations) {
      const opYaml = yaml["paths"]?.[op.pathTemplate]?.[op.method];
      for (const [code, respRef] of Object.entries(opYaml?.["responses"] ?? {})) {
        const media = deref(respRef as Node)?.["content"]?.["application/json"];
        if (!media) continue;
        const examples = [
          media.example,
          ...Object.values(media["examples"] ?? {}).map((e) => deref(e as Node)?.value),
        ].filter((e) => e !== undefined);
        for (const example of examples) {
          checked++;
          const status = code === "default" ? 418 : Number(code);
          const errors = doc.validateResponse(op, status, {}, example);
          if (errors.length) failures.push(`${op.operationId} ${code}: ${errors.join("; ")}`);
        }
      }
    }
    expect(checked).toBeGreaterThan(40);
    expect(failures).toEqual([]);
  });

  it("records a malformed response of its own as a violation", async () => {
    const own = await startDigitalOceanStandin({ dropletBootMs: 0, openapi: doc });
    try {
      const d = own.state.createDroplet({
        name: "web-1",
        region: "nyc3",
        size: "s-1vcpu-1gb",
        image: "ubuntu-24-04-x64",
      });
      own.faults.corruptResponse({
        operationId: "droplets_get",
        mutate: (body) => ({
          droplet: { ...(body as { droplet: object }).droplet, status: "exploded", memory: "lots" },
        }),
      });
      const res = await fetch(`${own.url}/v2/droplets/${String(d["id"])}`, {
        headers: { authorization: `Bearer ${own.token}` },
      });
      expect(res.status).toBe(200);
      const v = own.violations();
      expect(v).toHaveLength(1);
      expect(v[0]?.operationId).toBe("droplets_get");
      expect(v[0]?.errors.join("\n")).toMatch(/status must be equal to one of the allowed values/);
      expect(v[0]?.errors.join("\n")).toMatch(/memory must be integer/);
    } finally {
      await own.close();
    }
  });

  it("answers 422 in the DO error shape to a request that violates the document", async () => {
    const bad = await raw("POST", "/v2/reserved_ips", { region: 5 });
    expect(bad.status).toBe(422);
    expect(bad.body).toMatchObject({ id: "unprocessable_entity", message: expect.stringMatching(/request body/) });
    expect((bad.body as { request_id: string }).request_id).toMatch(/^[0-9a-f-]{36}$/);
    const badParam = await raw("GET", "/v2/droplets?per_page=500");
    expect(badParam.status).toBe(422);
    const badPath = await raw("GET", "/v2/droplets/not-a-number");
    expect(badPath.status).toBe(422);
    // The discriminator picks the branch: an assign needs its droplet_id.
    const assign = await raw("POST", "/v2/reserved_ips/203.0.113.9/actions", { type: "assign" });
    expect(assign.status).toBe(422);
    const notJson = await fetch(`${standin.url}/v2/firewalls`, { method: "POST", headers: auth(), body: "{nope" });
    expect(notJson.status).toBe(400);
    // tags_create declares 400 with another body shape, so its parse error is a 422.
    const notJsonTag = await fetch(`${standin.url}/v2/tags`, { method: "POST", headers: auth(), body: "{nope" });
    expect(notJsonTag.status).toBe(422);
    expect(standin.rejectedRequests().map((r) => r.operationId)).toEqual([
      "reservedIPs_create",
      "droplets_list",
      "droplets_get",
      "reservedIPsActions_post",
      "firewalls_create",
      "tags_create",
    ]);
  });

  it("requires the bearer token", async () => {
    const res = await raw("GET", "/v2/droplets", undefined, {});
    expect(res.status).toBe(401);
    expect(res.body).toMatchObject({ id: "unauthorized" });
    const wrong = await raw("GET", "/v2/droplets", undefined, { authorization: "Bearer nope" });
    expect(wrong.status).toBe(401);
  });

  it("takes faults over HTTP", async () => {
    expect(
      (await raw("POST", "/_standin/faults", { kind: "serverError", status: 503, count: 1, operationId: "vpcs_list" }))
        .status,
    ).toBe(204);
    expect(
      (
        await raw("POST", "/_standin/faults", {
          kind: "rateLimit",
          count: 1,
          retryAfterSec: 2,
          operationId: "tags_list",
        })
      ).status,
    ).toBe(204);
    expect((await raw("GET", "/v2/vpcs")).status).toBe(503);
    expect((await raw("GET", "/v2/vpcs")).status).toBe(200);
    const limited = await fetch(`${standin.url}/v2/tags`, { headers: auth() });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("2");
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
    const state = await raw("GET", "/_standin/state");
    expect(state.body).toMatchObject({ faults: { http: 0 } });
    expect((await raw("POST", "/_standin/faults", { kind: "bogus" })).status).toBe(400);
  });
});

describe("stand-in behaviour", () => {
  it("serves all 41 operations to the typed client", async () => {
    const c = new DigitalOceanClient({
      token: standin.token,
      baseUrl: standin.url,
      actionPollIntervalMs: 1,
      pageSize: 2,
    });
    const vpcs = await c.listVpcs();
    const vpc = vpcs.find((v) => v.region === "nyc3");
    expect(vpc?.id && (await c.getVpc(vpc.id))?.ip_range).toBe(vpc?.ip_range);
    const { droplet } = await c.createDroplet({
      name: "a-1",
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
      tags: ["t1"],
      vpc_uuid: vpc?.id,
    });
    const { droplets } = await c.createDroplets({
      names: ["b-1", "b-2"],
      region: "nyc3",
      size: "s-1vcpu-1gb",
      image: "ubuntu-24-04-x64",
      tags: ["t2"],
    });
    expect(await c.getDroplet(droplet.id)).toMatchObject({ name: "a-1", tags: ["t1"], vpc_uuid: vpc?.id });
    expect((await c.listDroplets({ tagName: "t2" })).map((d) => d.name).sort()).toEqual(["b-1", "b-2"]);
    const cycle = await c.postDropletAction(droplet.id, { type: "power_cycle" });
    expect((await c.getDropletAction(droplet.id, cycle.id ?? 0)).status).toBe("completed");
    expect((await c.listDropletActions(droplet.id)).map((a) => a.type)).toEqual(["create", "power_cycle"]);
    const byTag = await c.postDropletActionByTag("t2", { type: "power_off" });
    expect(byTag).toHaveLength(2);
    expect((await c.getAction(byTag[0]?.id ?? 0)).status).toBe("completed");

    await c.createTag("t3");
    await c.tagResources("t3", [{ resource_id: String(droplet.id), resource_type: "droplet" }]);
    expect((await c.getTag("t3"))?.resources).toMatchObject({ count: 1, droplets: { count: 1 } });
    await c.untagResources("t3", [{ resource_id: String(droplet.id), resource_type: "droplet" }]);
    expect((await c.listTags()).map((t) => t.name).sort()).toEqual(["t1", "t2", "t3"]);

    const fw = await c.createFirewall({
      name: "fw-1",
      inbound_rules: [{ protocol: "udp", ports: "3784", sources: { tags: ["t1"] } }],
      outbound_rules: [{ protocol: "tcp", ports: "0", destinations: { addresses: ["0.0.0.0/0"] } }],
      tags: ["t1"],
      droplet_ids: [],
    });
    const fwId = fw.id ?? "";
    await c.addFirewallDroplets(fwId, [droplet.id]);
    await c.addFirewallTags(fwId, ["t2"]);
    expect(await c.getFirewall(fwId)).toMatchObject({ droplet_ids: [droplet.id], tags: ["t1", "t2"] });
    await c.removeFirewallDroplets(fwId, [droplet.id]);
    await c.removeFirewallTags(fwId, ["t2"]);
    await c.updateFirewall(fwId, {
      name: "fw-1b",
      inbound_rules: [{ protocol: "icmp", ports: "0", sources: { addresses: ["10.0.0.0/8"] } }],
      tags: [],
      droplet_ids: [],
    });
    expect((await c.listFirewalls()).map((f) => f.name)).toEqual(["fw-1b"]);

    const { reservedIP, actionIds } = await c.createReservedIP({ droplet_id: droplet.id });
    const ip = reservedIP.ip ?? "";
    await c.waitForAction({ id: actionIds[0] ?? 0, reservedIP: ip });
    expect((await c.getReservedIP(ip))?.droplet).toMatchObject({ id: droplet.id });
    const un = await c.postReservedIPAction(ip, { type: "unassign" });
    expect((await c.getReservedIPAction(ip, un.id ?? 0)).status).toBe("completed");
    expect((await c.listReservedIPActions(ip)).map((a) => a.type)).toEqual(["assign_ip", "unassign_ip"]);

    // The legacy floating-IP names of the same pool: the product never calls them (the client has
    // no methods for them), but the stand-in serves them as the document says.
    const legacy = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
      const r = await raw(method, path, body);
      expect(r.status, `${method} ${path}`).toBeLessThan(300);
      return (r.body ?? {}) as Record<string, unknown>;
    };
    const fip = String(
      ((await legacy("POST", "/v2/floating_ips", { region: "nyc3" })).floating_ip as { ip: string }).ip,
    );
    const assign = (
      await legacy("POST", `/v2/floating_ips/${fip}/actions`, { type: "assign", droplet_id: droplets[0]?.id ?? 0 })
    ).action as { id: number; status: string };
    expect(assign.status).toBe("completed");
    expect(
      ((await legacy("GET", `/v2/floating_ips/${fip}/actions/${assign.id}`)).action as { type: string }).type,
    ).toBe("assign_ip");
    expect((await legacy("GET", `/v2/floating_ips/${fip}/actions`)).actions).toHaveLength(1);
    // One pool behind both names.
    expect(
      ((await legacy("GET", "/v2/floating_ips")).floating_ips as { ip: string }[]).map((x) => x.ip).sort(),
    ).toEqual((await c.listReservedIPs()).map((x) => x.ip).sort());
    expect(
      ((await legacy("GET", `/v2/floating_ips/${fip}`)).floating_ip as { droplet?: unknown }).droplet,
    ).toMatchObject({ id: droplets[0]?.id });
    await legacy("POST", `/v2/floating_ips/${fip}/actions`, { type: "unassign" });
    await legacy("DELETE", `/v2/floating_ips/${fip}`);
    expect(await c.deleteReservedIP(ip)).toBe(true);

    expect(await c.deleteFirewall(fwId)).toBe(true);
    expect(await c.deleteTag("t3")).toBe(true);
    expect(await c.deleteDroplet(droplet.id)).toBe(true);
    await c.deleteDropletsByTag("t2");
    expect(await c.listDroplets()).toEqual([]);

    const seen = new Set(standin.requests().map((r) => r.operationId));
    const all = doc.operations.map((o) => o.operationId);
    expect(all.filter((id) => !seen.has(id))).toEqual([]);
    expect(standin.rejectedRequests()).toEqual([]);
  });

  it("keeps droplets new and locked while they boot, and IPs locked while an action runs", async () => {
    const slow = await startDigitalOceanStandin({ dropletBootMs: 80, actionDurationMs: 60, openapi: doc });
    try {
      const c = new DigitalOceanClient({ token: slow.token, baseUrl: slow.url, actionPollIntervalMs: 5 });
      const { droplet } = await c.createDroplet({
        name: "gw-0",
        region: "nyc3",
        size: "s-1vcpu-1gb",
        image: "ubuntu-24-04-x64",
      });
      expect(droplet).toMatchObject({ status: "new", locked: true });
      const early = await c.createReservedIP({ droplet_id: droplet.id }).catch((e: unknown) => e);
      expect(early).toMatchObject({ status: 422, apiMessage: "Droplet already has a pending event." });
      await slow.settle();
      expect(await c.getDroplet(droplet.id)).toMatchObject({ status: "active", locked: false });

      const { reservedIP } = await c.createReservedIP({ droplet_id: droplet.id });
      expect(reservedIP).toMatchObject({ locked: true, droplet: null });
      const ip = reservedIP.ip ?? "";
      expect(await c.deleteReservedIP(ip).catch((e: unknown) => e)).toMatchObject({ status: 422 });
      await slow.settle();
      expect(await c.getReservedIP(ip)).toMatchObject({ locked: false, droplet: { id: droplet.id } });
      // An assigned IP cannot be released, a droplet holds one IP.
      expect(await c.deleteReservedIP(ip).catch((e: unknown) => e)).toMatchObject({ status: 422 });
      const second = slow.state.createReservedIP({ region: "nyc3" });
      expect(
        await c.postReservedIPAction(second, { type: "assign", droplet_id: droplet.id }).catch((e: unknown) => e),
      ).toMatchObject({ status: 422 });
      // Destroying the droplet frees its IP.
      await c.deleteDroplet(droplet.id);
      expect((await c.getReservedIP(ip))?.droplet).toBeNull();
      expect(slow.violations()).toEqual([]);
    } finally {
      await slow.close();
    }
  });

  it("answers the same in-process as over the socket", async () => {
    standin.state.createTag("same");
    const viaSocket = await raw("GET", "/v2/tags/same");
    const inProcess = await standin.fetch(new Request(`${standin.url}/v2/tags/same`, { headers: auth() }));
    expect(inProcess.status).toBe(viaSocket.status);
    expect(await inProcess.json()).toEqual(viaSocket.body);
    standin.faults.dropConnection({ count: 1 });
    await expect(standin.fetch(new Request(`${standin.url}/v2/tags`, { headers: auth() }))).rejects.toBeInstanceOf(
      TypeError,
    );
    standin.faults.dropConnection({ count: 1 });
    await expect(fetch(`${standin.url}/v2/tags`, { headers: auth() })).rejects.toBeInstanceOf(TypeError);
  });

  it("delays requests on demand", async () => {
    standin.faults.latency({ ms: 60, count: 1, operationId: "vpcs_list" });
    const started = performance.now();
    expect((await raw("GET", "/v2/vpcs")).status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(standin.faults.pending().latency).toBe(0);
  });

  it("pages with links.pages and meta.total", async () => {
    for (let i = 0; i < 5; i++) standin.state.createTag(`tag-${i}`);
    const first = await raw("GET", "/v2/tags?per_page=2");
    expect(first.body).toMatchObject({
      meta: { total: 5 },
      links: { pages: { next: expect.stringContaining("page=2"), last: expect.stringContaining("page=3") } },
    });
    const last = await raw("GET", "/v2/tags?per_page=2&page=3");
    expect(last.body).toMatchObject({
      tags: [{ name: "tag-4" }],
      links: { pages: { first: expect.stringContaining("page=1"), prev: expect.stringContaining("page=2") } },
    });
    expect((last.body as { links: { pages: Record<string, string> } }).links.pages["next"]).toBeUndefined();
  });
});
