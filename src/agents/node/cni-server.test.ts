import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { KubeObject } from "../../api/objects.js";
import { AgentClient, AgentResponseError, AgentUnavailableError } from "../../cni/client.js";
import type { QuarantineEntry } from "../../cni/quarantine.js";
import { parseCidr, type Range } from "../../util/ipv4.js";
import type { NodePlan } from "../../planner/model.js";
import { silentLogger } from "../../util/log.js";
import { CniServer, CniService, vouchFor, type CniAgent, type QuarantineStore } from "./cni-server.js";

const NODE = "node1";

function pod(name: string, opts: { ns?: string; node?: string; ips?: string[]; deleting?: boolean; phase?: string } = {}): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: opts.ns ?? "payments", ...(opts.deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}) } as KubeObject["metadata"],
    spec: { nodeName: opts.node ?? NODE },
    status: { ...(opts.phase ? { phase: opts.phase } : {}), ...(opts.ips ? { podIPs: opts.ips.map((ip) => ({ ip })) } : {}) },
  };
}

describe("vouching for a pod's addresses", () => {
  it.each([
    ["an unknown pod", undefined, ["10.244.1.2"], false, false],
    ["a pod with no address in the API yet (the runtime's address is used)", pod("p"), ["10.244.1.2"], false, true],
    ["... but not for the sweep, which must see the API agree", pod("p"), ["10.244.1.2"], true, false],
    ["a pod the API shows with these addresses", pod("p", { ips: ["10.244.1.2", "fd00::2"] }), ["10.244.1.2"], true, true],
    ["a pod the API shows with another address (an earlier sandbox)", pod("p", { ips: ["10.244.1.9"] }), ["10.244.1.2"], false, false],
    ["a pod bound to another node", pod("p", { node: "node2" }), ["10.244.1.2"], false, false],
    ["a pod being deleted", pod("p", { deleting: true, ips: ["10.244.1.2"] }), ["10.244.1.2"], true, false],
    ["a finished pod", pod("p", { phase: "Succeeded", ips: ["10.244.1.2"] }), ["10.244.1.2"], true, false],
  ])("%s", (_what, p, ips, strict, ok) => {
    const v = vouchFor(p, NODE, ips, strict);
    expect(v.ok).toBe(ok);
    if (!v.ok) expect(v.reason).toMatch(/\w/);
  });
});

/** The node agent as the service sees it: pods it knows, the policy it would give them. */
function fakeAgent(knownPods: () => readonly KubeObject[], policies: Record<string, string> = {}) {
  const admitted: { namespace: string; name: string; ips: string[]; wait: number | undefined }[] = [];
  const released: string[] = [];
  const agent: CniAgent = {
    admitPod: async (req, wait) => {
      admitted.push({ ...req, wait });
      const known = knownPods().some((p) => p.metadata?.name === req.name && p.metadata?.namespace === req.namespace);
      return { known, policy: policies[`${req.namespace}/${req.name}`] };
    },
    releasePod: async (req) => {
      released.push(`${req.namespace}/${req.name}`);
    },
  };
  return { agent, admitted, released };
}

function fakeQuarantine() {
  const held = new Map<string, string | undefined>();
  const syncs: (readonly Range[])[] = [];
  let exists = true;
  const store: QuarantineStore = {
    hold: async (entries) => {
      for (const e of entries) held.set(e.ip, e.comment);
      return { created: false };
    },
    release: async (ips) => {
      for (const ip of ips) held.delete(ip);
    },
    list: async (): Promise<QuarantineEntry[] | undefined> => (exists ? [...held].map(([ip, comment]) => ({ ip, ...(comment ? { comment } : {}) })) : undefined),
    sync: async (cluster) => {
      exists = true;
      syncs.push(cluster);
    },
  };
  return { store, held, syncs, drop: () => (exists = false) };
}

function setup(objects: KubeObject[], policies: Record<string, string> = {}) {
  const a = fakeAgent(() => objects, policies);
  const q = fakeQuarantine();
  let now = 1_000;
  const service = new CniService({ nodeName: NODE, agent: a.agent, objects: () => objects, quarantine: q.store, logger: silentLogger, now: () => now, resyncMs: 30_000 });
  return { service, a, q, objects, tick: (ms: number) => (now += ms) };
}

const req = { containerId: "c1", namespace: "payments", name: "pay-1", ips: ["10.244.1.2"] };

describe("ADD", () => {
  it("answers with the policy once the agent has programmed the pod", async () => {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await s.service.add(req)).toEqual({ selected: true, policy: "EgressPolicy/payments/checkout", quarantined: false });
    expect(s.a.admitted).toEqual([{ namespace: "payments", name: "pay-1", ips: ["10.244.1.2"], wait: undefined }]);
    expect(s.q.held.size).toBe(0);
  });

  it("answers 'not selected' for a pod no policy selects", async () => {
    const s = setup([pod("pay-1")]);
    expect(await s.service.add(req)).toEqual({ selected: false, quarantined: false });
  });

  it("lets a pod out of a quarantine an earlier attempt put it in", async () => {
    const s = setup([pod("pay-1")]);
    s.q.held.set("10.244.1.2", "payments/pay-1");
    await s.service.add(req);
    expect(s.q.held.size).toBe(0);
  });

  it("quarantines a pod the agent does not know (yet), or whose address the API contradicts", async () => {
    const s = setup([]);
    expect(await s.service.add(req)).toMatchObject({ selected: false, quarantined: true, reason: expect.stringContaining("does not know") });
    expect([...s.q.held]).toEqual([["10.244.1.2", "payments/pay-1"]]);
    const t = setup([pod("pay-1", { ips: ["10.244.1.9"] })], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await t.service.add(req)).toMatchObject({ selected: false, quarantined: true, reason: expect.stringContaining("earlier sandbox") });
  });
});

describe("DEL and CHECK", () => {
  it("DEL forgets the admitted address", async () => {
    const s = setup([pod("pay-1")]);
    expect(await s.service.del({ containerId: "c1", namespace: "payments", name: "pay-1" })).toEqual({ released: true });
    expect(s.a.released).toEqual(["payments/pay-1"]);
  });

  it("CHECK reports programmed and quarantined, and admits nothing", async () => {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await s.service.check(req)).toEqual({ known: true, programmed: true, quarantined: false });
    s.q.held.set("10.244.1.2", "payments/pay-1");
    expect(await s.service.check(req)).toMatchObject({ programmed: true, quarantined: true });
    const unknown = setup([]);
    expect(await unknown.service.check(req)).toMatchObject({ known: false, programmed: false, reason: expect.any(String) });
    const contradicted = setup([pod("pay-1", { ips: ["10.244.1.9"] })]);
    expect(await contradicted.service.check(req)).toMatchObject({ known: true, programmed: false });
    expect([...s.a.admitted, ...unknown.a.admitted, ...contradicted.a.admitted]).toEqual([]);
  });
});

describe("the quarantine sweep", () => {
  it("releases a pod once the API shows its address, after a reconcile that includes it", async () => {
    const objects = [pod("pay-1")];
    const s = setup(objects);
    s.q.held.set("10.244.1.2", "payments/pay-1");
    // Known, but the API has no address yet: the quarantine's word is not enough.
    expect(await s.service.sweep()).toEqual({ released: [], kept: 1 });
    objects[0] = pod("pay-1", { ips: ["10.244.1.2"] });
    expect(await s.service.sweep()).toEqual({ released: ["10.244.1.2"], kept: 0 });
    expect(s.a.admitted).toEqual([{ namespace: "payments", name: "pay-1", ips: ["10.244.1.2"], wait: 0 }]);
    expect(s.q.held.size).toBe(0);
  });

  it("keeps an address whose named pod now has another one (a reused name), even if a stale pod still shows it", async () => {
    const s = setup([pod("web-0", { ns: "web", ips: ["10.244.1.7"] }), pod("old", { ns: "web", ips: ["10.244.1.2"], deleting: true })]);
    s.q.held.set("10.244.1.2", "web/web-0");
    expect(await s.service.sweep()).toEqual({ released: [], kept: 1 });
    expect(s.a.admitted).toEqual([]);
  });

  it("finds the pod by address when the comment does not name it", async () => {
    const s = setup([pod("pay-1", { ips: ["10.244.1.2"] }), pod("elsewhere", { node: "node2", ips: ["10.244.1.3"] })]);
    s.q.held.set("10.244.1.2", undefined);
    s.q.held.set("10.244.1.3", undefined);
    expect(await s.service.sweep()).toEqual({ released: ["10.244.1.2"], kept: 1 });
  });

  it("keeps the table's cluster ranges in step with the plan, and puts a removed table back", async () => {
    const s = setup([]);
    const plan = (cidrs: string[]) => ({ neverDivert: cidrs.map(parseCidr) }) as unknown as NodePlan;
    s.service.onPlan(plan(["10.244.0.0/16"]));
    s.service.onPlan(plan(["10.244.0.0/16"]));
    await s.service.sweep();
    expect(s.q.syncs).toEqual([[parseCidr("10.244.0.0/16")]]);
    s.service.onPlan(plan(["10.244.0.0/16", "10.96.0.0/12"]));
    await s.service.sweep();
    expect(s.q.syncs).toHaveLength(2);
    s.q.drop();
    await s.service.sweep();
    expect(s.q.syncs).toHaveLength(3);
    // And, drift or not, at least every resync period.
    s.tick(30_000);
    await s.service.sweep();
    expect(s.q.syncs).toHaveLength(4);
  });
});

describe("the socket", () => {
  const dir = mkdtempSync(join(tmpdir(), "se-cni-server-"));
  let server: CniServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function serve(path = join(dir, `s-${Math.random().toString(36).slice(2)}.sock`)) {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    server = await CniServer.listen(path, s.service, silentLogger);
    return { ...s, path, client: new AgentClient(path, 2_000) };
  }

  function raw(path: string, method: string, url: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const r = request({ socketPath: path, method, path: url, headers }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      });
      r.on("error", reject);
      r.end(body);
    });
  }

  it("is private to root (mode 0600) and serves the plugin's client", async () => {
    const s = await serve();
    expect(statSync(s.path).mode & 0o777).toBe(0o600);
    expect(await s.client.health()).toEqual({ ok: true, node: NODE });
    expect(await s.client.add(req)).toEqual({ selected: true, policy: "EgressPolicy/payments/checkout", quarantined: false });
    expect(await s.client.check(req)).toMatchObject({ programmed: true });
    expect(await s.client.del({ containerId: "c1", namespace: "payments", name: "pay-1" })).toEqual({ released: true });
  });

  it("answers bad requests with 400 naming the field, and wrong routes with 404/405/415", async () => {
    const s = await serve();
    expect(await raw(s.path, "POST", "/v1/cni/add", JSON.stringify({ ...req, ips: ["300.1.1.1"] }), { "content-type": "application/json" })).toEqual({
      status: 400,
      json: { error: `ips[0]: "300.1.1.1" is not an IPv4 address`, field: "ips[0]" },
    });
    expect((await raw(s.path, "POST", "/v1/cni/add", "{not json")).status).toBe(400);
    expect((await raw(s.path, "POST", "/v1/nope", "{}")).status).toBe(404);
    expect((await raw(s.path, "GET", "/v1/cni/add")).status).toBe(405);
    expect((await raw(s.path, "POST", "/v1/cni/add", "x", { "content-type": "text/plain" })).status).toBe(415);
    expect((await raw(s.path, "POST", "/v1/cni/add", JSON.stringify({ pad: "x".repeat(70_000) }))).status).toBe(413);
    await expect(s.client.add({ ...req, namespace: "Bad" })).rejects.toThrow(AgentResponseError);
  });

  it("replaces a stale socket file, but never a live one or a file that is not a socket", async () => {
    const path = join(dir, "stale.sock");
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(path, r));
    // A live listener on the path: a second agent must not steal it.
    await expect(serve(path)).rejects.toThrow(/another process is serving it/);
    // Killed without cleanup: the file stays, nobody answers.
    await new Promise<void>((r) => stale.close(() => r()));
    writeFileSync(join(dir, "plain"), "");
    await expect(serve(join(dir, "plain"))).rejects.toThrow(/not a socket/);
  });

  it("the client tells 'agent away' apart from 'agent refused'", async () => {
    await expect(new AgentClient(join(dir, "nobody.sock"), 500).health()).rejects.toThrow(AgentUnavailableError);
    // A listener that accepts and never answers: the client gives up in time.
    const path = join(dir, "silent.sock");
    const silent = createServer((s) => s.resume());
    await new Promise<void>((r) => silent.listen(path, r));
    try {
      const started = Date.now();
      await expect(new AgentClient(path, 200).add(req)).rejects.toThrow(/within 200 ms/);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});
