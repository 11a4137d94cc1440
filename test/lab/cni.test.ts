import { CNI_LAB_YAML, POLICY_IP, startCniNodeAgent } from "../support/cni-lab.js";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import type { KubeObject } from "../../src/api/objects.js";
import { AgentClient } from "../../src/cni/client.js";
import { DEFAULT_AGENT_SOCKET } from "../../src/cni/input.js";
import { FALLBACK_PLUGIN, installPlugin, PLUGIN_TYPE } from "../../src/cni/install.js";
import { QuarantineTable } from "../../src/cni/quarantine.js";
import { CniRuntime, type ConfList, type Sandbox } from "../support/cni-runtime.js";
import { parseLabConfig } from "../../src/lab/config.js";
import { Lab, LAB_CLUSTER_NETWORK, waitFor } from "../../src/lab/lab.js";
import { addNamespace, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { inNamespace } from "../../src/util/exec.js";
import { alive } from "../../src/lab/control-plane/processes.js";

/**
 * The chained plugin as a container runtime calls it: Debian's ptp (masquerade on, host-local
 * IPAM) then static-egress with ptp's result, inside the node's namespace, with a node agent
 * serving the CNI socket. One node, one gateway instance owning the checkout policy's IP.
 *
 * Two cluster views, as in a real cluster at the moment of ADD: the node agent's (the API)
 * has a new pod without an address (the kubelet writes it only after ADD); the gateway's
 * already has it. The gateway learns pod addresses from the API only, so in a real cluster it
 * knows a new pod a moment after ADD; giving it the address up front isolates what the plugin
 * is responsible for: the node side, programmed before ADD returns.
 */

const NODE_IP = "203.0.113.11"; // node1's public address: what ptp's masquerade gives a pod
const GW_METRICS = "http://10.0.0.101:9465/metrics"; // gw-a's health responder: inside the cluster (VPC)

interface ExtraPod {
  namespace: string;
  name: string;
  app: string;
  ip: string;
  netns: string;
  /** The API (the node agent's view) shows the address: the kubelet has written the status. */
  statusWritten: boolean;
  result?: unknown;
}

let lab: Lab;
let nodeNetns: string;
let runtime: CniRuntime;
let agentPid: number | undefined;
let socket: string;
let nodeView: string;
const pods: ExtraPod[] = [];
let nextHost = 50;

function atomicWrite(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

function podObject(p: ExtraPod, withAddress: boolean): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: p.namespace, labels: { app: p.app } },
    spec: { nodeName: "node1" },
    status: withAddress ? { phase: "Running", podIP: p.ip, podIPs: [{ ip: p.ip }] } : { phase: "Pending" },
  };
}

/** The node agent's view (the API) and the gateway's (the lab's cluster file). */
async function writeViews(): Promise<void> {
  const base = lab.objects(await lab.currentPolicies());
  atomicWrite(
    nodeView,
    [...base, ...pods.map((p) => podObject(p, p.statusWritten))].map((o) => stringify(o)).join("---\n"),
  );
  atomicWrite(
    lab.clusterFile,
    [...base, ...pods.map((p) => podObject(p, true))].map((o) => stringify(o)).join("---\n"),
  );
}

/** A pod the scheduler put on node1: its namespace exists, its object is in both views. */
async function schedulePod(namespace: string, name: string, app: string): Promise<ExtraPod> {
  const p: ExtraPod = {
    namespace,
    name,
    app,
    ip: `10.244.1.${nextHost++}`,
    netns: `${lab.record.prefix}-pod-${namespace}-${name}`,
    statusWritten: false,
  };
  await addNamespace(p.netns);
  pods.push(p);
  await writeViews();
  // The gateway must already know the address (see the header comment).
  if (app === "checkout") {
    await waitFor(
      async () =>
        (
          await execIn(gatewayNetns(), "nft", ["list", "map", "ip", "static_egress_gw", "egress_snat"]).catch(() => "")
        ).includes(p.ip),
      15_000,
      `gateway never learned ${p.ip}`,
    );
  }
  return p;
}

function gatewayNetns(): string {
  return lab.topology.gatewayHosts[0]!.netns;
}

/** Debian's ptp with masquerade and host-local, then (unless `ptpOnly`) our plugin. The pod's address is fixed by its range. */
function confList(p: ExtraPod, opts: { ptpOnly?: boolean; timeoutMs?: number } = {}): ConfList {
  const ptp = {
    type: "ptp",
    ipMasq: true,
    ipam: {
      type: "host-local",
      ranges: [[{ subnet: "10.244.1.0/24", rangeStart: p.ip, rangeEnd: p.ip }]],
      routes: [{ dst: "0.0.0.0/0" }],
      dataDir: join(lab.dir, "cni-ipam"),
    },
  };
  const ours = {
    type: "static-egress",
    agentSocket: socket,
    timeoutMs: opts.timeoutMs ?? 5_000,
    clusterCIDRs: [
      ...LAB_CLUSTER_NETWORK.podCIDRs,
      ...LAB_CLUSTER_NETWORK.serviceCIDRs,
      ...LAB_CLUSTER_NETWORK.nodeCIDRs,
    ],
  };
  return { cniVersion: "1.0.0", name: "lab-chain", plugins: opts.ptpOnly ? [ptp] : [ptp, ours] };
}

function sandbox(p: ExtraPod): Sandbox {
  return {
    containerId: `${lab.record.prefix}-${p.namespace}-${p.name}`,
    netns: `/var/run/netns/${p.netns}`,
    ifname: "eth0",
    args: {
      IgnoreUnknown: "1",
      K8S_POD_NAMESPACE: p.namespace,
      K8S_POD_NAME: p.name,
      K8S_POD_INFRA_CONTAINER_ID: `${lab.record.prefix}-${p.namespace}-${p.name}`,
    },
  };
}

/** One datagram to the lab Internet's UDP sink, sent by bash (starts in milliseconds). */
async function sendDatagram(p: ExtraPod, tag: string): Promise<void> {
  await execIn(p.netns, "bash", [
    "-c",
    `printf '%s' "$1" > /dev/udp/${LAB_NETWORK.echoService}/${LAB_NETWORK.udpSinkPort}`,
    "send",
    `${tag} 0 ${Date.now()}`,
  ]);
}

function sources(tag: string): string[] {
  return lab
    .udpRecords()
    .filter((r) => r.payload.startsWith(`${tag} `))
    .map((r) => r.src);
}

async function sourceOf(tag: string): Promise<string> {
  await waitFor(() => sources(tag).length > 0, 5_000, `datagram ${tag} never reached the Internet`);
  return sources(tag)[0]!;
}

function startAgent(): void {
  agentPid = startCniNodeAgent({
    labDir: lab.dir,
    netns: nodeNetns,
    view: nodeView,
    socket,
    logName: "cni-node-agent.log",
  });
}

async function stopAgent(): Promise<void> {
  const pid = agentPid;
  if (pid === undefined) return;
  agentPid = undefined;
  try {
    process.kill(pid, "SIGKILL"); // a crash: no graceful close, the socket file stays
  } catch {
    /* gone */
  }
  await waitFor(() => !alive(pid), 5_000, `node agent ${pid} did not exit`);
}

async function agentReady(): Promise<void> {
  await waitFor(
    async () => {
      try {
        return (await new AgentClient(socket, 1_000).health()).ok;
      } catch {
        return false;
      }
    },
    20_000,
    "the node agent's CNI socket never answered",
    100,
  );
}

const SHIM = join(packageRoot(), "dist", "cni", "static-egress-shim");

/** The same plugin entry under another type: `static-egress-nodejs` is the TypeScript plugin itself. */
function asType(list: ConfList, type: string): Record<string, unknown> {
  return { ...list.plugins.at(-1)!, type };
}

const quarantine = () => new QuarantineTable(inNamespace(nodeNetns));

beforeAll(async () => {
  if (!existsSync(join(packageRoot(), "dist", "cni", "main.js")))
    throw new Error("dist/cni/main.js is missing: run `npm run build` first");
  if (!existsSync(SHIM)) throw new Error(`${SHIM} is missing: run scripts/build-cni-shim.sh first`);
  lab = await Lab.up(parseLabConfig(CNI_LAB_YAML, "cni.test.ts"), { prefix: newRunPrefix(), persistent: false });
  nodeNetns = lab.topology.nodes[0]!.netns;
  // The lab's own node agent reads the same view as the gateway; ours reads the API's view.
  lab.killProcess("agent-node1");
  socket = join(lab.dir, "cni.sock");
  nodeView = join(lab.dir, "node-view.yaml");
  const binDir = join(lab.dir, "cni-bin");
  mkdirSync(binDir, { recursive: true });
  // Installed exactly as a node would have it: the shim named after the plugin's type, the
  // TypeScript plugin's wrapper beside it.
  installPlugin(binDir, { entry: join(packageRoot(), "dist", "cni", "main.js"), shim: SHIM });
  runtime = new CniRuntime([binDir, "/usr/lib/cni"], nodeNetns);
  await writeViews();
  startAgent();
  await agentReady();
});

afterAll(async () => {
  await stopAgent();
  await lab?.down();
});

describe("ADD", () => {
  it("passes ptp's result through unchanged, and a selected pod's very first packet leaves with the policy's IP", async () => {
    const p = await schedulePod("payments", "pay-new", "checkout");
    const { result, runs } = await runtime.add(confList(p), sandbox(p));
    p.result = result;
    expect(runs.map((r) => r.type)).toEqual(["ptp", "static-egress"]);
    expect(JSON.parse(runs[1]!.stdout)).toEqual(JSON.parse(runs[0]!.stdout));
    expect((result as { ips: { address: string }[] }).ips[0]!.address).toBe(`${p.ip}/24`);
    // The first packet the pod ever sends, right after ADD returned.
    await sendDatagram(p, "first-pay-new");
    expect(await sourceOf("first-pay-new")).toBe(POLICY_IP);
    // The agent knew the address only from ADD: its view of the API still has none.
    expect(p.statusWritten).toBe(false);
  });

  it("control: without our plugin in the chain, the same first packet leaves with the node's IP", async () => {
    const p = await schedulePod("payments", "pay-ctl", "checkout");
    await runtime.add(confList(p, { ptpOnly: true }), sandbox(p));
    await sendDatagram(p, "first-pay-ctl");
    expect(await sourceOf("first-pay-ctl")).toBe(NODE_IP);
    await runtime.del(confList(p, { ptpOnly: true }), sandbox(p));
  });

  it("an unselected pod starts at once and leaves with the node's IP", async () => {
    const p = await schedulePod("web", "web-new", "frontend");
    const { result } = await runtime.add(confList(p), sandbox(p));
    p.result = result;
    await sendDatagram(p, "first-web-new");
    expect(await sourceOf("first-web-new")).toBe(NODE_IP);
    expect(await quarantine().list()).toEqual([]);
  });
});

describe("the shim answers as the TypeScript plugin does", () => {
  it("is the Go binary, not the wrapper", () => {
    expect(readFileSync(join(runtime.cniPath[0]!, PLUGIN_TYPE)).subarray(0, 4)).toEqual(
      Buffer.from([0x7f, 0x45, 0x4c, 0x46]),
    );
  });

  it(
    "the same ADD, CHECK, DEL and VERSION calls, good and bad, give the same exit code and stdout " +
      "through the shim (the agent runs the plugin) and through the TypeScript plugin",
    async () => {
      const p = pods.find((x) => x.name === "pay-new")!;
      const base = confList(p);
      const v04 = { ...base, cniVersion: "0.4.0" };
      const prev04 = {
        ...(p.result as object),
        cniVersion: "0.4.0",
        ips: (p.result as { ips: object[] }).ips.map((ip) => ({ ...ip, version: "4" })),
      };
      const stranger = { ...sandbox(p), args: { ...sandbox(p).args, K8S_POD_NAME: "nobody" } };
      const cases: {
        what: string;
        command: "ADD" | "CHECK" | "DEL" | "VERSION";
        list: ConfList;
        extra?: Record<string, unknown>;
        sandbox: Sandbox;
        prev?: unknown;
        fallback?: boolean;
      }[] = [
        { what: "VERSION", command: "VERSION", list: base, sandbox: sandbox(p) },
        { what: "VERSION 0.4.0", command: "VERSION", list: v04, sandbox: sandbox(p) },
        { what: "ADD again (idempotent)", command: "ADD", list: base, sandbox: sandbox(p), prev: p.result },
        {
          what: "ADD converting a 1.0.0 result for a 0.4.0 list",
          command: "ADD",
          list: v04,
          sandbox: sandbox(p),
          prev: p.result,
        },
        {
          what: "ADD converting a 0.4.0 result for a 1.0.0 list",
          command: "ADD",
          list: base,
          sandbox: sandbox(p),
          prev: prev04,
        },
        { what: "CHECK of a programmed pod", command: "CHECK", list: base, sandbox: sandbox(p), prev: p.result },
        {
          what: "CHECK of a pod the agent does not have (100)",
          command: "CHECK",
          list: base,
          sandbox: stranger,
          prev: p.result,
        },
        {
          what: "DEL of a container never added",
          command: "DEL",
          list: base,
          sandbox: { ...sandbox(p), containerId: "never-added", netns: "" },
        },
        { what: "ADD without prevResult (7)", command: "ADD", list: base, sandbox: sandbox(p) },
        {
          what: "ADD with a bad timeoutMs (7, names the field)",
          command: "ADD",
          list: base,
          extra: { timeoutMs: "soon" },
          sandbox: sandbox(p),
          prev: p.result,
        },
        {
          what: "ADD with a bad clusterCIDRs entry (7, names the field)",
          command: "ADD",
          list: base,
          extra: { clusterCIDRs: ["10.0.0.0/33"] },
          sandbox: sandbox(p),
          prev: p.result,
        },
        // The shim cannot tell where the agent is: it asks the default socket (none here), then the TypeScript plugin.
        {
          what: "ADD with a relative agentSocket (7)",
          command: "ADD",
          list: base,
          extra: { agentSocket: "cni.sock" },
          sandbox: sandbox(p),
          prev: p.result,
          fallback: !existsSync(DEFAULT_AGENT_SOCKET),
        },
        {
          what: "ADD with a bad address in prevResult (7)",
          command: "ADD",
          list: base,
          sandbox: sandbox(p),
          prev: { cniVersion: "1.0.0", ips: [{ address: "10.244.1.300/24" }] },
        },
        {
          what: "ADD without the pod's identity (4)",
          command: "ADD",
          list: base,
          sandbox: { ...sandbox(p), args: {} },
          prev: p.result,
        },
        {
          what: "ADD with a bad CNI_IFNAME (4)",
          command: "ADD",
          list: base,
          sandbox: { ...sandbox(p), ifname: "a/b" },
          prev: p.result,
        },
        {
          what: "ADD of an unsupported version (1)",
          command: "ADD",
          list: { ...base, cniVersion: "0.3.1" },
          sandbox: sandbox(p),
          prev: p.result,
        },
      ];
      for (const c of cases) {
        const viaShim = await runtime.exec(
          c.command,
          c.list,
          { ...asType(c.list, PLUGIN_TYPE), ...c.extra },
          c.sandbox,
          c.prev,
        );
        const viaPlugin = await runtime.exec(
          c.command,
          c.list,
          { ...asType(c.list, FALLBACK_PLUGIN), ...c.extra },
          c.sandbox,
          c.prev,
        );
        expect({ what: c.what, exitCode: viaShim.exitCode, stdout: viaShim.stdout }).toEqual({
          what: c.what,
          exitCode: viaPlugin.exitCode,
          stdout: viaPlugin.stdout,
        });
        // Whether the agent took the call: the fallback says on stderr that it runs it.
        if (c.fallback) expect(viaShim.stderr, c.what).toContain("the shim could not hand this call");
        else expect(viaShim.stderr, c.what).not.toContain("the shim could not hand this call");
      }
      // The bad-field answers name the field.
      const bad = await runtime.exec(
        "ADD",
        base,
        { ...asType(base, PLUGIN_TYPE), timeoutMs: "soon" },
        sandbox(p),
        p.result,
      );
      expect(JSON.parse(bad.stdout)).toMatchObject({ code: 7, msg: expect.stringContaining("timeoutMs") });
    },
  );
});

describe("CHECK, DEL and VERSION", () => {
  it("CHECK passes for a programmed pod and fails, with the spec's error object, for a pod the agent does not have", async () => {
    const p = pods.find((x) => x.name === "pay-new")!;
    await expect(runtime.check(confList(p), sandbox(p), p.result)).resolves.toHaveLength(2);
    const stranger = { ...sandbox(p), args: { ...sandbox(p).args, K8S_POD_NAME: "nobody" } };
    const run = await runtime.exec("CHECK", confList(p), confList(p).plugins[1]!, stranger, p.result);
    expect(run.exitCode).not.toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      cniVersion: "1.0.0",
      code: 100,
      msg: expect.stringContaining("has not programmed"),
    });
  });

  it("DEL is idempotent, and succeeds for a container nobody ever added", async () => {
    const p = pods.find((x) => x.name === "web-new")!;
    await runtime.del(confList(p), sandbox(p), p.result);
    await runtime.del(confList(p), sandbox(p), p.result);
    const never = await runtime.exec("DEL", confList(p), confList(p).plugins[1]!, {
      ...sandbox(p),
      containerId: "never-added",
      netns: "",
    });
    expect(never).toMatchObject({ exitCode: 0, stdout: "" });
  });

  it("VERSION and bad input answer as the spec says", async () => {
    const p = pods[0]!;
    const ours = confList(p).plugins[1]!;
    const version = await runtime.exec("VERSION", confList(p), ours, sandbox(p));
    expect(JSON.parse(version.stdout)).toEqual({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
    const noPrev = await runtime.exec("ADD", confList(p), ours, sandbox(p));
    expect(noPrev.exitCode).not.toBe(0);
    expect(JSON.parse(noPrev.stdout)).toMatchObject({ code: 7 });
    const prev = { cniVersion: "1.0.0", ips: [{ address: `${p.ip}/24` }] };
    const noPod = await runtime.exec("ADD", confList(p), ours, { ...sandbox(p), args: {} }, prev);
    expect(JSON.parse(noPod.stdout)).toMatchObject({ code: 4 });
    const oldVersion = await runtime.exec("ADD", { ...confList(p), cniVersion: "0.3.1" }, ours, sandbox(p), prev);
    expect(JSON.parse(oldVersion.stdout)).toMatchObject({ code: 1 });
  });
});

describe("with the node agent down", () => {
  let payQ: ExtraPod;
  let webQ: ExtraPod;

  beforeAll(async () => {
    payQ = await schedulePod("payments", "pay-q", "checkout");
    webQ = await schedulePod("web", "web-q", "frontend");
    await stopAgent();
  });

  it("ADD still succeeds for any pod, and quarantines it: the shim runs the TypeScript plugin", async () => {
    for (const p of [payQ, webQ]) {
      const { result, runs } = await runtime.add(confList(p, { timeoutMs: 1_000 }), sandbox(p));
      p.result = result;
      expect(JSON.parse(runs[1]!.stdout)).toEqual(JSON.parse(runs[0]!.stdout));
      expect(runs[1]!.stderr).toContain("the shim could not hand this call to the node agent");
    }
    expect((await quarantine().list())?.sort((a, b) => a.ip.localeCompare(b.ip))).toEqual([
      { ip: payQ.ip, comment: "payments/pay-q" },
      { ip: webQ.ip, comment: "web/web-q" },
    ]);
  });

  it("a quarantined pod's outside traffic is dropped, its cluster-internal traffic works", async () => {
    const dropsBefore = await quarantine().drops();
    await sendDatagram(payQ, "held-pay-q");
    await sendDatagram(webQ, "held-web-q");
    const inside = await execIn(payQ.netns, "curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-m",
      "3",
      GW_METRICS,
    ]);
    expect(inside).toBe("200");
    const outside = await execIn(payQ.netns, "curl", [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-m",
      "1",
      `http://${LAB_NETWORK.echoService}/`,
    ]).catch(() => "000");
    expect(outside).toBe("000");
    await new Promise((r) => setTimeout(r, 500));
    expect([...sources("held-pay-q"), ...sources("held-web-q")]).toEqual([]);
    expect(await quarantine().drops()).toBeGreaterThanOrEqual(dropsBefore + 2);
  });

  it("DEL succeeds while the agent is away", async () => {
    const p = pods.find((x) => x.name === "pay-new")!;
    const run = await runtime.exec(
      "DEL",
      confList(p, { timeoutMs: 500 }),
      confList(p).plugins[1]!,
      sandbox(p),
      p.result,
    );
    expect(run).toMatchObject({ exitCode: 0, stdout: "" });
  });

  it("when the agent is back, it keeps the pods held until the API shows their addresses, then programs and releases them", async () => {
    startAgent();
    await agentReady();
    // Several sweeps: the agent knows the pods but not yet their addresses, so they stay held.
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await quarantine().list())?.map((e) => e.ip).sort()).toEqual([payQ.ip, webQ.ip].sort());
    // The kubelet writes the pods' status (the API now shows their addresses).
    payQ.statusWritten = true;
    webQ.statusWritten = true;
    await writeViews();
    await waitFor(async () => (await quarantine().list())?.length === 0, 10_000, "the agent never released the pods");
    await sendDatagram(payQ, "back-pay-q");
    await sendDatagram(webQ, "back-web-q");
    expect(await sourceOf("back-pay-q")).toBe(POLICY_IP);
    expect(await sourceOf("back-web-q")).toBe(NODE_IP);
    await runtime.check(confList(payQ), sandbox(payQ), payQ.result);
  });
});

describe("on a node where the agent never ran", () => {
  it("the plugin creates the quarantine table itself, once, also when pods race", async () => {
    const bare = `${lab.record.prefix}-bare`;
    await addNamespace(bare);
    const bareRuntime = new CniRuntime(runtime.cniPath, bare);
    const list: ConfList = {
      cniVersion: "1.0.0",
      name: "lab-chain",
      plugins: [
        {
          type: "static-egress",
          agentSocket: join(lab.dir, "nobody.sock"),
          timeoutMs: 500,
          clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12"],
        },
      ],
    };
    const prev = (ip: string) => ({ cniVersion: "1.0.0", ips: [{ address: `${ip}/24`, gateway: "10.244.9.1" }] });
    const runs = await Promise.all(
      [2, 3, 4].map((h) =>
        bareRuntime.exec(
          "ADD",
          list,
          list.plugins[0]!,
          {
            containerId: `c${h}`,
            netns: `/var/run/netns/${bare}`,
            ifname: "eth0",
            args: { K8S_POD_NAMESPACE: "web", K8S_POD_NAME: `w${h}` },
          },
          prev(`10.244.9.${h}`),
        ),
      ),
    );
    for (const [i, run] of runs.entries()) {
      expect(run.exitCode).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual(prev(`10.244.9.${i + 2}`));
    }
    const table = await execIn(bare, "nft", ["list", "table", "ip", "static_egress_quarantine"]);
    expect(table.match(/ip saddr @pods ip daddr != @cluster counter name "drops" drop/g)).toHaveLength(1);
    expect(table).toContain("10.96.0.0/12");
    expect((await new QuarantineTable(inNamespace(bare)).list())?.map((e) => e.ip).sort()).toEqual([
      "10.244.9.2",
      "10.244.9.3",
      "10.244.9.4",
    ]);
  });
});
