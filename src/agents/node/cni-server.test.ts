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
import { runPlugin } from "../../cni/plugin.js";
import { CniServer, CniService, vouchFor, type CniAgent, type QuarantineStore } from "./cni-server.js";

const NODE = "node1";

function pod(
  name: string,
  opts: { ns?: string; node?: string; ips?: string[]; deleting?: boolean; phase?: string } = {},
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: opts.ns ?? "payments",
      ...(opts.deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
    } as KubeObject["metadata"],
    spec: { nodeName: opts.node ?? NODE },
    status: {
      ...(opts.phase ? { phase: opts.phase } : {}),
      ...(opts.ips ? { podIPs: opts.ips.map((ip) => ({ ip })) } : {}),
    },
  };
}

describe("vouching for a pod's addresses", () => {
  it.each([
    ["an unknown pod", undefined, ["10.244.1.2"], false, false],
    ["a pod with no address in the API yet (the runtime's address is used)", pod("p"), ["10.244.1.2"], false, true],
    ["... but not for the sweep, which must see the API agree", pod("p"), ["10.244.1.2"], true, false],
    [
      "a pod the API shows with these addresses",
      pod("p", { ips: ["10.244.1.2", "fd00::2"] }),
      ["10.244.1.2"],
      true,
      true,
    ],
    [
      "a pod the API shows with another address (an earlier sandbox)",
      pod("p", { ips: ["10.244.1.9"] }),
      ["10.244.1.2"],
      false,
      false,
    ],
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
  /** Every release call's addresses (each a kernel commit). */
  const releases: (readonly string[])[] = [];
  let exists = true;
  const store: QuarantineStore = {
    hold: async (entries) => {
      for (const e of entries) held.set(e.ip, e.comment);
      return { created: false };
    },
    release: async (ips) => {
      releases.push(ips);
      for (const ip of ips) held.delete(ip);
    },
    list: async (): Promise<QuarantineEntry[] | undefined> =>
      exists ? [...held].map(([ip, comment]) => ({ ip, ...(comment ? { comment } : {}) })) : undefined,
    sync: async (cluster) => {
      exists = true;
      syncs.push(cluster);
    },
  };
  return { store, held, syncs, releases, drop: () => (exists = false) };
}

function setup(objects: KubeObject[], policies: Record<string, string> = {}) {
  const a = fakeAgent(() => objects, policies);
  const q = fakeQuarantine();
  let now = 1_000;
  const service = new CniService({
    nodeName: NODE,
    agent: a.agent,
    objects: () => objects,
    quarantine: q.store,
    logger: silentLogger,
    now: () => now,
    resyncMs: 30_000,
  });
  return { service, a, q, objects, tick: (ms: number) => (now += ms) };
}

const req = { containerId: "c1", namespace: "payments", name: "pay-1", ips: ["10.244.1.2"] };

describe("ADD", () => {
  it("answers with the policy once the agent has programmed the pod", async () => {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await s.service.add(req)).toEqual({
      selected: true,
      policy: "EgressPolicy/payments/checkout",
      quarantined: false,
    });
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
    s.q.held.set("10.244.1.7", "payments/other");
    await s.service.add({ ...req, ips: ["10.244.1.2", "10.244.1.3"] });
    expect([...s.q.held.keys()]).toEqual(["10.244.1.7"]);
    // Only what it holds: deleting an absent address costs a kernel commit for nothing.
    expect(s.q.releases).toEqual([["10.244.1.2"]]);
  });

  it("writes nothing to the quarantine when it holds none of the pod's addresses (the usual ADD: a read only)", async () => {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    s.q.held.set("10.244.1.7", "payments/other");
    expect(await s.service.add(req)).toMatchObject({ selected: true, quarantined: false });
    expect(s.q.releases).toEqual([]);
    s.q.drop(); // no table at all: nobody is held
    expect(await s.service.add(req)).toMatchObject({ selected: true, quarantined: false });
    expect(s.q.releases).toEqual([]);
  });

  it("keeps a pod it cannot vouch for in the quarantine an earlier attempt put it in (the release beside ADD is undone)", async () => {
    const s = setup([]);
    s.q.held.set("10.244.1.2", "payments/pay-1");
    expect(await s.service.add(req)).toMatchObject({ quarantined: true });
    expect([...s.q.held]).toEqual([["10.244.1.2", "payments/pay-1"]]);
  });

  it("quarantines a pod the agent does not know (yet), or whose address the API contradicts", async () => {
    const s = setup([]);
    expect(await s.service.add(req)).toMatchObject({
      selected: false,
      quarantined: true,
      reason: expect.stringContaining("does not know"),
    });
    expect([...s.q.held]).toEqual([["10.244.1.2", "payments/pay-1"]]);
    const t = setup([pod("pay-1", { ips: ["10.244.1.9"] })], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await t.service.add(req)).toMatchObject({
      selected: false,
      quarantined: true,
      reason: expect.stringContaining("earlier sandbox"),
    });
  });
});

describe("DEL and CHECK", () => {
  it("DEL forgets the admitted address", async () => {
    const s = setup([pod("pay-1")]);
    expect(await s.service.del({ containerId: "c1", namespace: "payments", name: "pay-1" })).toEqual({
      released: true,
    });
    expect(s.a.released).toEqual(["payments/pay-1"]);
  });

  it("CHECK reports programmed and quarantined, and admits nothing", async () => {
    const s = setup([pod("pay-1")], { "payments/pay-1": "EgressPolicy/payments/checkout" });
    expect(await s.service.check(req)).toEqual({ known: true, programmed: true, quarantined: false });
    s.q.held.set("10.244.1.2", "payments/pay-1");
    expect(await s.service.check(req)).toMatchObject({ programmed: true, quarantined: true });
    const unknown = setup([]);
    expect(await unknown.service.check(req)).toMatchObject({
      known: false,
      programmed: false,
      reason: expect.any(String),
    });
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
    const s = setup([
      pod("web-0", { ns: "web", ips: ["10.244.1.7"] }),
      pod("old", { ns: "web", ips: ["10.244.1.2"], deleting: true }),
    ]);
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

  function raw(
    path: string,
    method: string,
    url: string,
    body?: string,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const r = request({ socketPath: path, method, path: url, headers }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }),
        );
      });
      r.on("error", reject);
      r.end(body);
    });
  }

  it("is private to root (mode 0600) and serves the plugin's client", async () => {
    const s = await serve();
    expect(statSync(s.path).mode & 0o777).toBe(0o600);
    expect(await s.client.health()).toEqual({ ok: true, node: NODE });
    expect(await s.client.add(req)).toEqual({
      selected: true,
      policy: "EgressPolicy/payments/checkout",
      quarantined: false,
    });
    expect(await s.client.check(req)).toMatchObject({ programmed: true });
    expect(await s.client.del({ containerId: "c1", namespace: "payments", name: "pay-1" })).toEqual({ released: true });
  });

  it("answers bad requests with 400 naming the field, and wrong routes with 404/405/415", async () => {
    const s = await serve();
    expect(
      await raw(s.path, "POST", "/v1/cni/add", JSON.stringify({ ...req, ips: ["300.1.1.1"] }), {
        "content-type": "application/json",
      }),
    ).toEqual({
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

  it("runs a whole CNI call from the shim (POST /v1/cni/exec) and answers the plugin's stdout and exit code; only CNI_* variables pass", async () => {
    const s = await serve();
    const stdin = JSON.stringify({
      cniVersion: "1.0.0",
      name: "k8s",
      type: "static-egress",
      prevResult: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.2/24" }] },
    });
    const answer = await raw(
      s.path,
      "POST",
      "/v1/cni/exec",
      JSON.stringify({ env: { ...cniEnv("ADD"), CNI_PATH: "/opt/cni/bin" }, stdin }),
      { "content-type": "application/json" },
    );
    expect(answer).toEqual({
      status: 200,
      json: {
        exitCode: 0,
        stdout: `${JSON.stringify({ cniVersion: "1.0.0", ips: [{ address: "10.244.1.2/24" }] })}\n`,
      },
    });
    expect(s.a.admitted.map((a) => a.ips)).toEqual([["10.244.1.2"]]);
    expect(
      await raw(s.path, "POST", "/v1/cni/exec", JSON.stringify({ env: { PATH: "/bin" }, stdin }), {
        "content-type": "application/json",
      }),
    ).toEqual({
      status: 400,
      json: { error: "env.PATH: is not a CNI_* variable", field: "env.PATH" },
    });
    expect(
      (await raw(s.path, "POST", "/v1/cni/exec", JSON.stringify({ env: {} }), { "content-type": "application/json" }))
        .json,
    ).toMatchObject({ field: "stdin" });
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

function cniEnv(command: string, name = "pay-1"): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: "c1",
    CNI_NETNS: "/var/run/netns/p",
    CNI_IFNAME: "eth0",
    CNI_ARGS: `K8S_POD_NAMESPACE=payments;K8S_POD_NAME=${name}`,
  };
}

describe("a whole CNI call run in the agent (the shim's path) answers as the plugin asking over the socket does", () => {
  const dir = mkdtempSync(join(tmpdir(), "se-cni-exec-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const prev = { cniVersion: "1.0.0", ips: [{ address: "10.244.1.2/24", gateway: "10.244.1.1" }] };
  const conf = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "k8s",
      type: "static-egress",
      timeoutMs: 200,
      clusterCIDRs: ["10.96.0.0/12"],
      prevResult: prev,
      ...extra,
    });

  /** The plugin outside the agent must be told the socket; stdin that is not a JSON object stays as it is. */
  const withSocket = (stdin: string, path: string) =>
    /^\{"/.test(stdin) ? JSON.stringify({ ...(JSON.parse(stdin) as object), agentSocket: path }) : stdin;

  /** The same call both ways, each against its own fresh service; returns both outcomes and what each did to the quarantine. */
  async function both(env: Record<string, string>, stdin: string, agent?: Partial<CniAgent>, objects = [pod("pay-1")]) {
    const inAgent = setup(objects, { "payments/pay-1": "EgressPolicy/payments/checkout" });
    Object.assign(inAgent.a.agent, agent);
    const viaShim = await inAgent.service.exec({ env, stdin });
    const overSocket = setup(objects, { "payments/pay-1": "EgressPolicy/payments/checkout" });
    Object.assign(overSocket.a.agent, agent);
    const path = join(dir, `s-${Math.random().toString(36).slice(2)}.sock`);
    const server = await CniServer.listen(path, overSocket.service, silentLogger);
    try {
      const viaPlugin = await runPlugin(
        { env, stdin: withSocket(stdin, path) },
        {
          agent: (socket, timeoutMs) => new AgentClient(socket, timeoutMs),
          quarantine: overSocket.q.store,
          logger: silentLogger,
        },
      );
      return { viaShim, viaPlugin, heldInAgent: [...inAgent.q.held], heldOverSocket: [...overSocket.q.held] };
    } finally {
      await server.close();
    }
  }

  it.each([
    ["ADD of a known pod", cniEnv("ADD"), conf()],
    ["ADD of a pod the agent does not know (quarantined by the agent)", cniEnv("ADD", "stranger"), conf()],
    ["CHECK of a programmed pod", cniEnv("CHECK"), conf()],
    ["CHECK of an unknown pod (100)", cniEnv("CHECK", "stranger"), conf()],
    ["DEL", cniEnv("DEL"), conf()],
    ["VERSION", { CNI_COMMAND: "VERSION" }, JSON.stringify({ cniVersion: "0.4.0" })],
    ["a bad field (7)", cniEnv("ADD"), conf({ timeoutMs: 1 })],
    ["no prevResult (7)", cniEnv("ADD"), conf({ prevResult: undefined })],
    ["a bad environment (4)", { ...cniEnv("ADD"), CNI_IFNAME: "" }, conf()],
    ["stdin that is not JSON (6)", cniEnv("ADD"), "{nope"],
  ])("%s", async (_what, env, stdin) => {
    const r = await both(env, stdin);
    expect(r.viaShim).toEqual(r.viaPlugin);
    expect(r.heldInAgent).toEqual(r.heldOverSocket);
  });

  it("ADD quarantines the pod when the agent cannot program it (apply failed) or does not answer within timeoutMs", async () => {
    const failing = await both(cniEnv("ADD"), conf(), { admitPod: () => Promise.reject(new Error("nft failed")) });
    expect(failing.viaShim).toEqual({ exitCode: 0, stdout: `${JSON.stringify(prev)}\n` });
    expect(failing.viaShim).toEqual(failing.viaPlugin);
    expect(failing.heldInAgent).toEqual([["10.244.1.2", "payments/pay-1"]]);
    expect(failing.heldOverSocket).toEqual(failing.heldInAgent);
    const hanging = await both(cniEnv("ADD"), conf(), { admitPod: () => new Promise(() => undefined) });
    expect(hanging.viaShim).toEqual(hanging.viaPlugin);
    expect(hanging.heldInAgent).toEqual([["10.244.1.2", "payments/pay-1"]]);
  });
});
