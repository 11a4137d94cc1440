import { describe, expect, it } from "vitest";
import { silentLogger } from "../util/log.js";
import { AgentResponseError, AgentUnavailableError, type AgentApi } from "./client.js";
import { runPlugin, type QuarantineApi } from "./plugin.js";
import type { AddRequest, CheckResponse, DelRequest } from "./protocol.js";
import type { QuarantineEntry } from "./quarantine.js";
import type { Range } from "../util/ipv4.js";

const env = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "c0ffee-1",
  CNI_NETNS: "/var/run/netns/pod",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "K8S_POD_NAMESPACE=payments;K8S_POD_NAME=pay-1",
  CNI_PATH: "/opt/cni/bin",
};
const prevResult = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "veth1", mac: "1a:2b:3c:4d:5e:6f" },
    { name: "eth0", sandbox: "/var/run/netns/pod" },
  ],
  ips: [{ interface: 1, address: "10.244.1.2/24", gateway: "10.244.1.1" }],
  routes: [{ dst: "0.0.0.0/0" }],
  dns: {},
};
const conf = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    cniVersion: "1.0.0",
    name: "k8s-pod-network",
    type: "static-egress",
    agentSocket: "/run/test/cni.sock",
    timeoutMs: 300,
    clusterCIDRs: ["10.96.0.0/12"],
    prevResult,
    ...extra,
  });

/** A fake agent: records calls; each method answers or throws as told. */
function fakeAgent(behaviour: { add?: () => unknown; del?: () => unknown; check?: () => CheckResponse } = {}) {
  const calls: { op: string; socket: string; timeoutMs: number; req: unknown }[] = [];
  const factory = (socket: string, timeoutMs: number): AgentApi => ({
    add: async (req: AddRequest) => {
      calls.push({ op: "add", socket, timeoutMs, req });
      return (
        behaviour.add ?? (() => ({ selected: true, policy: "EgressPolicy/payments/checkout", quarantined: false }))
      )() as never;
    },
    del: async (req: DelRequest) => {
      calls.push({ op: "del", socket, timeoutMs, req });
      return (behaviour.del ?? (() => ({ released: true })))() as never;
    },
    check: async (req) => {
      calls.push({ op: "check", socket, timeoutMs, req });
      return (behaviour.check ?? (() => ({ known: true, programmed: true, quarantined: false })))();
    },
    health: async () => ({ ok: true, node: "n" }),
  });
  return { factory, calls };
}

function fakeQuarantine(fail?: Error) {
  const holds: { entries: readonly QuarantineEntry[]; cluster: readonly Range[] | undefined }[] = [];
  const q: QuarantineApi = {
    hold: async (entries, cluster) => {
      if (fail) throw fail;
      holds.push({ entries, cluster });
      return { created: false };
    },
  };
  return { q, holds };
}

async function run(
  vars: Record<string, string | undefined>,
  stdin: string,
  agent = fakeAgent(),
  quarantine = fakeQuarantine(),
) {
  const out = await runPlugin(
    { env: vars, stdin },
    { agent: agent.factory, quarantine: quarantine.q, logger: silentLogger },
  );
  return {
    ...out,
    json: out.stdout ? (JSON.parse(out.stdout) as Record<string, unknown>) : undefined,
    agent,
    quarantine,
  };
}

describe("VERSION", () => {
  it("lists the versions we speak", async () => {
    const r = await run({ CNI_COMMAND: "VERSION" }, JSON.stringify({ cniVersion: "1.0.0" }));
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
  });

  it("needs neither the rest of the environment nor stdin", async () => {
    const r = await run({ CNI_COMMAND: "VERSION" }, "");
    expect(r.json).toEqual({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
  });
});

describe("ADD", () => {
  it("tells the agent the pod's IPv4 addresses and passes the previous result through unchanged", async () => {
    const r = await run(
      env,
      conf({ prevResult: { ...prevResult, ips: [...prevResult.ips, { interface: 1, address: "fd00::2/64" }] } }),
    );
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual({ ...prevResult, ips: [...prevResult.ips, { interface: 1, address: "fd00::2/64" }] });
    expect(r.agent.calls).toEqual([
      {
        op: "add",
        socket: "/run/test/cni.sock",
        timeoutMs: 300,
        req: { containerId: "c0ffee-1", namespace: "payments", name: "pay-1", ips: ["10.244.1.2"] },
      },
    ]);
    expect(r.quarantine.holds).toEqual([]);
  });

  it("answers in the configuration's version (0.4.0 gets ips[].version)", async () => {
    const r = await run(env, conf({ cniVersion: "0.4.0" }));
    expect(r.json).toMatchObject({ cniVersion: "0.4.0", ips: [{ address: "10.244.1.2/24", version: "4" }] });
  });

  it.each([
    [
      "the agent is away",
      () => Promise.reject(new AgentUnavailableError("cannot reach the agent at /run/test/cni.sock: ECONNREFUSED")),
    ],
    ["the agent refuses", () => Promise.reject(new AgentResponseError(500, "boom"))],
  ])("quarantines the pod when %s, and still succeeds", async (_why, add) => {
    const r = await run(env, conf(), fakeAgent({ add }));
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual(prevResult);
    expect(r.quarantine.holds).toEqual([
      { entries: [{ ip: "10.244.1.2", comment: "payments/pay-1" }], cluster: [{ from: 174063616, to: 175112191 }] },
    ]);
  });

  it("fails with 11 (try again later) when neither the agent nor the quarantine works: never a silent leak", async () => {
    const r = await run(
      env,
      conf(),
      fakeAgent({ add: () => Promise.reject(new AgentUnavailableError("away")) }),
      fakeQuarantine(new Error("nft: permission denied")),
    );
    expect(r.exitCode).toBe(1);
    expect(r.json).toMatchObject({
      cniVersion: "1.0.0",
      code: 11,
      msg: expect.stringContaining("quarantining the pod failed"),
    });
    expect(String(r.json?.details)).toContain("nft: permission denied");
  });

  it("has nothing to do for a pod without IPv4 address", async () => {
    const v6 = { ...prevResult, ips: [{ interface: 1, address: "fd00::2/64" }] };
    const r = await run(env, conf({ prevResult: v6 }));
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual(v6);
    expect(r.agent.calls).toEqual([]);
  });

  it.each([
    ["no prevResult (not chained)", env, conf({ prevResult: undefined }), 7],
    ["a bad option", env, conf({ timeoutMs: -1 }), 7],
    ["a version we do not speak", env, conf({ cniVersion: "0.3.1" }), 1],
    ["stdin that is not JSON", env, "cniVersion: 1.0.0", 6],
    ["no pod identity", { ...env, CNI_ARGS: "" }, conf(), 4],
    ["no CNI_NETNS", { ...env, CNI_NETNS: undefined }, conf(), 4],
    ["no CNI_COMMAND", { ...env, CNI_COMMAND: undefined }, conf(), 4],
  ])("refuses %s with the spec's error object on stdout", async (_what, vars, stdin, code) => {
    const r = await run(vars, stdin);
    expect(r.exitCode).not.toBe(0);
    expect(r.json).toMatchObject({ code, msg: expect.any(String) });
    expect(r.json?.cniVersion).toMatch(/^(0\.4\.0|1\.0\.0)$/);
    expect(r.agent.calls).toEqual([]);
    expect(r.quarantine.holds).toEqual([]);
  });

  it("writes errors in the configuration's version when it is one we speak", async () => {
    const r = await run({ ...env, CNI_ARGS: "" }, conf({ cniVersion: "0.4.0" }));
    expect(r.json?.cniVersion).toBe("0.4.0");
  });
});

describe("DEL", () => {
  const del = { ...env, CNI_COMMAND: "DEL" };

  it("tells the agent and prints nothing", async () => {
    const r = await run(del, conf());
    expect(r).toMatchObject({ exitCode: 0, stdout: "" });
    expect(r.agent.calls).toEqual([
      {
        op: "del",
        socket: "/run/test/cni.sock",
        timeoutMs: 300,
        req: { containerId: "c0ffee-1", namespace: "payments", name: "pay-1", ips: ["10.244.1.2"] },
      },
    ]);
  });

  it("succeeds when the agent is away, the result is gone, or the pod identity is missing", async () => {
    const away = fakeAgent({ del: () => Promise.reject(new AgentUnavailableError("away")) });
    expect((await run(del, conf(), away)).exitCode).toBe(0);
    expect((await run({ ...del, CNI_NETNS: "" }, conf({ prevResult: undefined }))).exitCode).toBe(0);
    const anonymous = await run({ ...del, CNI_ARGS: "" }, conf());
    expect(anonymous.exitCode).toBe(0);
    expect(anonymous.agent.calls).toEqual([]);
  });

  it("still refuses malformed input", async () => {
    expect((await run(del, "{")).json).toMatchObject({ code: 6 });
    expect((await run({ ...del, CNI_CONTAINERID: undefined }, conf())).json).toMatchObject({ code: 4 });
  });
});

describe("CHECK", () => {
  const check = { ...env, CNI_COMMAND: "CHECK" };

  it("passes when the agent has the pod programmed", async () => {
    const r = await run(check, conf());
    expect(r).toMatchObject({ exitCode: 0, stdout: "" });
    expect(r.agent.calls[0]).toMatchObject({ op: "check", req: { ips: ["10.244.1.2"] } });
  });

  it.each([
    ["not programmed", { known: false, programmed: false, quarantined: false, reason: "unknown pod" }, 100],
    ["quarantined", { known: true, programmed: true, quarantined: true }, 101],
  ])("fails when the pod is %s", async (_what, answer: CheckResponse, code) => {
    const r = await run(check, conf(), fakeAgent({ check: () => answer }));
    expect(r.exitCode).toBe(1);
    expect(r.json).toMatchObject({ code });
  });

  it("asks to try again later when the agent is away", async () => {
    const r = await run(
      check,
      conf(),
      fakeAgent({ check: () => Promise.reject(new AgentUnavailableError("away")) as never }),
    );
    expect(r.json).toMatchObject({ code: 11 });
  });
});
