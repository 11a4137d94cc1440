import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "../../src/lab/config.js";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { analyzeStream, startUdpStreamIn } from "../../src/lab/traffic.js";

// DigitalOcean's StaticRoute on the lab's Kubernetes (docs/static-routes.md): objects written for
// the operator, applied with kubectl as they are; the node agents route the node's own traffic
// (and so its hostNetwork pods', which share the node's namespace) through plain NAT gateways,
// fail over between them under a stream, refuse what would cut a node off, and give the node's
// routing back exactly as it was.
let lab: Lab;
const ECHO = LAB_NETWORK.echoService;
const OTHER = LAB_NETWORK.otherService;

function kubectl(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(k8sBinary("kubectl"), ["--kubeconfig", lab.kubeconfigPath, ...args], { input, encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function apply(doc: unknown): void {
  const r = kubectl(["apply", "-f", "-"], typeof doc === "string" ? doc : stringify(doc));
  expect(r.status, r.stderr).toBe(0);
}

type NodeEntry = { name: string; state: string; gateway?: string; message?: string };
function nodeStatus(route: string, node: string): NodeEntry | undefined {
  const r = kubectl(["get", "staticroute", route, "-o", "json"]);
  if (r.status !== 0) return undefined;
  return ((JSON.parse(r.stdout) as { status?: { nodes?: NodeEntry[] } }).status?.nodes ?? []).find(
    (n) => n.name === node,
  );
}

async function waitState(route: string, node: string, state: string, gateway?: string): Promise<NodeEntry> {
  let last: NodeEntry | undefined;
  await waitFor(
    () => {
      last = nodeStatus(route, node);
      return last?.state === state && (gateway === undefined || last.gateway === gateway);
    },
    20_000,
    `${route} on ${node}: not ${state}${gateway ? ` via ${gateway}` : ""}`,
  ).catch((e: Error) => {
    throw new Error(`${e.message} (last: ${JSON.stringify(last)})`, { cause: e });
  });
  return last!;
}

function host(name: string) {
  const all = [...lab.topology.nodes, ...(lab.topology.natHosts ?? [])];
  return all.find((h) => h.name === name)!;
}

/** The source address the echo service saw, for an HTTP request from a node's own namespace. */
async function sourceSeen(node: string, target: string): Promise<string> {
  const out = await execIn(host(node).netns, "curl", ["-s", "--max-time", "3", `http://${target}/`]).catch(() => "");
  return (out.match(/\d+\.\d+\.\d+\.\d+/) ?? [""])[0];
}

async function routing(node: string): Promise<unknown> {
  const ns = host(node).netns;
  return {
    routes: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "route", "show", "table", "all"])) as unknown,
    rules: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "rule", "show"])) as unknown,
  };
}

const before = new Map<string, unknown>();

beforeAll(async () => {
  const cfg = parseLabConfig(
    stringify({
      nodes: [{ name: "node1", labels: { egress: "nat" } }, { name: "node2" }],
      gateways: [],
      pods: [],
      natGateways: [{ name: "nat-a" }, { name: "nat-b" }],
    }),
    "static-routes lab",
  );
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  // Someone else's route for a destination a StaticRoute will name: never ours to touch.
  await execIn(host("node1").netns, "ip", ["route", "add", `${ECHO}/32`, "via", LAB_NETWORK.internetRouter]);
  // The node agents' own state first (their catch-all rule), then the baseline.
  for (const n of ["node1", "node2"]) {
    await waitFor(
      async () => (await execIn(host(n).netns, "ip", ["rule", "show"])).includes("10099:"),
      30_000,
      `node agent on ${n} did not program`,
    );
    before.set(n, await routing(n));
  }
}, 240_000);

afterAll(async () => {
  await lab?.down();
});

describe("StaticRoute in the lab", () => {
  it("serves the operator's example objects as they are (the gateway placeholder filled in) and routes them on every node", async () => {
    const text = readFileSync(join(packageRoot(), "examples", "static-route-digitalocean.yaml"), "utf8").replaceAll(
      "10.116.0.5",
      host("nat-a").vpcIP,
    );
    apply(text);
    for (const node of ["node1", "node2"]) {
      for (const name of ["static-route-ifconfig.me", "static-route-ipinfo.io"])
        expect((await waitState(name, node, "Routed")).gateway).toBe(host("nat-a").vpcIP);
      const table = await execIn(host(node).netns, "ip", ["route", "show", "table", "6997"]);
      expect(table).toContain(`34.160.111.145 via ${host("nat-a").vpcIP} dev eth0 proto 95`);
      expect(table).toContain(`34.117.59.81 via ${host("nat-a").vpcIP} dev eth0 proto 95`);
    }
    // kubectl shows the operator's columns, by their short name too.
    const wide = kubectl(["get", "sr", "-o", "wide"]).stdout;
    expect(wide).toMatch(/static-route-ifconfig\.me\s+\S+\s+\["34\.160\.111\.145"\]\s+10\.0\.0\.201/);
    // An Event per node says where the route is in place.
    const events = kubectl([
      "get",
      "events",
      "-n",
      "default",
      "--field-selector",
      "involvedObject.kind=StaticRoute,involvedObject.name=static-route-ipinfo.io",
      "-o",
      'jsonpath={range .items[*]}{.reason} {.message}{"\\n"}{end}',
    ]).stdout;
    expect(events).toMatch(/Routed node node1: routed via 10\.0\.0\.201/);
    expect(events).toMatch(/Routed node node2: routed via 10\.0\.0\.201/);
    expect(kubectl(["delete", "-f", "-"], text).status).toBe(0);
    for (const node of ["node1", "node2"])
      await waitFor(
        async () => JSON.stringify(await routing(node)) === JSON.stringify(before.get(node)),
        15_000,
        `${node}'s routing not restored`,
      );
  });

  it("sends the selected node's own traffic to listed destinations only through the gateway; other nodes and destinations as before", async () => {
    apply({
      apiVersion: "networking.digitalocean.com/v1",
      kind: "StaticRoute",
      metadata: { name: "echo" },
      spec: {
        destinations: [ECHO],
        gateway: host("nat-a").vpcIP,
        gateways: [host("nat-b").vpcIP],
        nodeSelector: { matchLabels: { egress: "nat" } },
        health: { holdDownMs: 500 },
      },
    });
    await waitState("echo", "node1", "Routed", host("nat-a").vpcIP);
    expect(nodeStatus("echo", "node2")).toBeUndefined();
    expect(await sourceSeen("node1", ECHO)).toBe(host("nat-a").publicIP);
    expect(await sourceSeen("node1", OTHER)).toBe(host("node1").publicIP);
    expect(await sourceSeen("node2", ECHO)).toBe(host("node2").publicIP);
    // Counted at the Internet host: a stream to the listed destination, one to another.
    lab.clearUdpRecords();
    await Promise.all([
      startUdpStreamIn(host("node1").netns, "listed", 1_000, 5, ECHO),
      startUdpStreamIn(host("node1").netns, "other", 1_000, 5, OTHER),
    ]);
    await new Promise((r) => setTimeout(r, 300));
    const listed = analyzeStream(lab, "listed", [host("nat-a").publicIP]);
    const other = analyzeStream(lab, "other", [host("node1").publicIP]);
    expect(listed.received).toBeGreaterThan(50);
    expect(listed.sources).toEqual({ [host("nat-a").publicIP]: listed.received });
    expect(other.received).toBeGreaterThan(50);
    expect(other.sources).toEqual({ [host("node1").publicIP]: other.received });
  });

  it("fails over under a stream from the node with no packet leaving with a wrong source, and blackholes with every gateway down", async () => {
    const allowed = [host("nat-a").publicIP, host("nat-b").publicIP];
    try {
      await failoverUnderStream(allowed);
    } finally {
      await lab.setNatGatewayLink("nat-a", true);
      await lab.setNatGatewayLink("nat-b", true);
    }
    // Back: the preferred gateway again once it has stayed up for the hold-down.
    await waitState("echo", "node1", "Routed", host("nat-a").vpcIP);
    expect(await sourceSeen("node1", ECHO)).toBe(host("nat-a").publicIP);
  });

  async function failoverUnderStream(allowed: string[]): Promise<void> {
    lab.clearUdpRecords();
    const stream = startUdpStreamIn(host("node1").netns, "failover", 8_000, 2, ECHO);
    // The sender is a fresh process (slow to start on a loaded machine): kill only once its datagrams arrive.
    await waitFor(() => analyzeStream(lab, "failover", allowed).received > 20, 20_000, "the stream did not start");
    const killedAt = Date.now();
    await lab.setNatGatewayLink("nat-a", false);
    await stream;
    await new Promise((r) => setTimeout(r, 300));
    const report = analyzeStream(lab, "failover", allowed);
    console.log(
      `static route failover: longest gap ${report.longestGapMs} ms (${report.lost} datagrams lost), sources ${JSON.stringify(report.sources)}`,
    );
    expect(report.wrongSource).toEqual([]);
    expect(report.sources[host("nat-a").publicIP]).toBeGreaterThan(0);
    expect(report.sources[host("nat-b").publicIP]).toBeGreaterThan(0);
    expect(report.lastSource).toBe(host("nat-b").publicIP);
    expect(report.gapStartedAt).toBeGreaterThanOrEqual(killedAt - 50);
    expect((await waitState("echo", "node1", "Routed", host("nat-b").vpcIP)).message).toContain(
      `${host("nat-a").vpcIP} down`,
    );
    const events = kubectl([
      "get",
      "events",
      "-n",
      "default",
      "--field-selector",
      "involvedObject.name=echo,reason=FailedOver",
      "-o",
      "jsonpath={.items[*].message}",
    ]).stdout;
    expect(events).toContain("node node1: routed via 10.0.0.202");

    // Every gateway down: fail-closed, never the node's own default route (nor the foreign main-table route).
    lab.clearUdpRecords();
    const dead = startUdpStreamIn(host("node1").netns, "dead", 8_000, 2, ECHO);
    await waitFor(() => analyzeStream(lab, "dead", allowed).received > 20, 20_000, "the stream did not start");
    await lab.setNatGatewayLink("nat-b", false);
    await dead;
    await new Promise((r) => setTimeout(r, 300));
    const deadReport = analyzeStream(lab, "dead", allowed);
    expect(deadReport.wrongSource).toEqual([]);
    await waitState("echo", "node1", "Blackholed");
    expect(await execIn(host("node1").netns, "ip", ["route", "show", "table", "6997"])).toContain(
      `blackhole ${ECHO} proto 95`,
    );
    expect(await sourceSeen("node1", ECHO)).toBe("");
  }

  it("refuses bad objects naming the field, and never routes them", async () => {
    const sr = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: "networking.digitalocean.com/v1",
      kind: "StaticRoute",
      metadata: { name },
      spec,
    });
    // The API server refuses what the operator's own schema refuses.
    const bad = kubectl(
      ["apply", "-f", "-"],
      stringify(sr("bad-shape", { destinations: ["not-an-address"], gateway: host("nat-a").vpcIP })),
    );
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain("spec.destinations[0]");
    // The node agents refuse what would cut a node off or cannot work, in status and Events.
    const cases: [string, Record<string, unknown>, string, RegExp][] = [
      [
        "covers-vpc",
        { destinations: ["10.0.0.0/16"], gateway: host("nat-a").vpcIP },
        "spec.destinations[0]",
        /subnet of this node|API server/,
      ],
      [
        "metadata",
        { destinations: ["169.254.169.254"], gateway: host("nat-a").vpcIP },
        "spec.destinations[0]",
        /metadata/,
      ],
      [
        "octets",
        { destinations: ["300.1.2.3"], gateway: host("nat-a").vpcIP },
        "spec.destinations[0]",
        /not an IPv4 address/,
      ],
      ["off-link", { destinations: ["192.0.2.0/24"], gateway: "192.168.77.1" }, "spec.gateway", /not on-link/],
      ["pods", { destinations: ["10.244.0.0/16"], gateway: host("nat-a").vpcIP }, "spec.destinations[0]", /pod CIDR/],
    ];
    for (const [name, spec] of cases) apply(sr(name, spec));
    for (const [name, , field, why] of cases) {
      for (const node of ["node1", "node2"]) {
        const entry = await waitState(name, node, "Refused");
        expect(entry.message, name).toContain(field);
        expect(entry.message, name).toMatch(why);
      }
    }
    const events = kubectl([
      "get",
      "events",
      "-n",
      "default",
      "--field-selector",
      "involvedObject.name=off-link,reason=Refused",
      "-o",
      "jsonpath={.items[*].message}",
    ]).stdout;
    expect(events).toContain("spec.gateway");
    const table = await execIn(host("node1").netns, "ip", ["route", "show", "table", "6997"]);
    expect(
      table
        .trim()
        .split("\n")
        .map((l) => l.trim()),
    ).toEqual([`${ECHO} via ${host("nat-a").vpcIP} dev eth0 proto 95`]);
    // The nodes still reach the API server and the Internet.
    expect(await sourceSeen("node2", OTHER)).toBe(host("node2").publicIP);
    for (const [name] of cases) expect(kubectl(["delete", "staticroute", name]).status).toBe(0);
  });

  it("deleting the objects gives each node its routes and rules back exactly as they were", async () => {
    expect(kubectl(["delete", "staticroute", "echo"]).status).toBe(0);
    for (const node of ["node1", "node2"]) {
      await waitFor(
        async () => JSON.stringify(await routing(node)) === JSON.stringify(before.get(node)),
        15_000,
        `${node}'s routing not restored`,
      ).catch(() => undefined);
      expect(await routing(node)).toEqual(before.get(node));
    }
    // The foreign main-table route is still there and used again.
    expect(await sourceSeen("node1", ECHO)).toBe(host("node1").publicIP);
  });
});
