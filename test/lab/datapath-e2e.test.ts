import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import type { Lab, LabPodStatus } from "../../src/lab/lab.js";
import { waitFor } from "../../src/lab/lab.js";
import { execIn } from "../../src/lab/netns.js";
import { divertListing } from "../support/divert.js";
import { cliEntry } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { inNamespace } from "../../src/util/exec.js";
import { readRules, readRoutes } from "../../src/dataplane/routing.js";
import { commandKernel } from "../../src/dataplane/kernel.js";
import { byPod, startLab, waitConverged } from "./support.js";
import { analyzeStream, startUdpStream } from "../../src/lab/traffic.js";

// The example lab: checkout (payments) and exporter (reporting) share gateway `shared`
// (instances gw-a, gw-b) with their own IPs; web pods are not selected.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
const EXPORTER_IPS = ["192.0.2.11", "192.0.2.21"];

let lab: Lab;

beforeAll(async () => {
  lab = await startLab();
  await waitConverged(lab);
});

afterAll(async () => {
  await lab?.down();
});

function nodeIP(name: string): string {
  return lab.topology.nodes.find((n) => n.name === name)!.publicIP;
}

async function divertEntries(node: string): Promise<string> {
  const ns = lab.topology.nodes.find((n) => n.name === node)!.netns;
  return (await divertListing(ns)).join("\n");
}

describe("dedicated egress through the gateways", () => {
  it("selected pods leave with their own policy's IP, unselected pods with their node's IP", async () => {
    const rows = byPod(await lab.status(LAB_NETWORK.echoService));
    for (const pod of ["payments/pay-1", "payments/pay-2"]) expect(CHECKOUT_IPS).toContain(rows.get(pod)!.egressIP);
    for (const pod of ["reporting/rep-1", "reporting/rep-2"]) expect(EXPORTER_IPS).toContain(rows.get(pod)!.egressIP);
    expect(rows.get("web/web-1")!.egressIP).toBe(nodeIP("node1"));
    expect(rows.get("web/web-2")!.egressIP).toBe(nodeIP("node3"));
  });

  it("diverts only included destinations", async () => {
    // checkout includes 198.51.100.0/24 but excludes 198.51.100.200/32.
    const rows = byPod(await lab.status(LAB_NETWORK.otherService));
    expect(rows.get("payments/pay-1")!.egressIP).toBe(nodeIP("node1"));
    expect(rows.get("payments/pay-2")!.egressIP).toBe(nodeIP("node2"));
    // exporter has no destination list: everything outside the cluster.
    expect(EXPORTER_IPS).toContain(rows.get("reporting/rep-1")!.egressIP);
  });

  it("two policies on one gateway instance keep their own IPs", async () => {
    // With gw-b silent, both policies' pods must leave through gw-a, which holds checkout's
    // 192.0.2.10 and exporter's 192.0.2.11: one instance, each policy with its own IP.
    const gwA = lab.topology.gatewayHosts.find((g) => g.name === "gw-a")!;
    expect(gwA.egressIPs).toEqual(expect.arrayContaining([CHECKOUT_IPS[0], EXPORTER_IPS[0]]));
    const want: Record<string, string> = {
      "payments/pay-1": CHECKOUT_IPS[0]!,
      "payments/pay-2": CHECKOUT_IPS[0]!,
      "reporting/rep-1": EXPORTER_IPS[0]!,
      "reporting/rep-2": EXPORTER_IPS[0]!,
    };
    const echo = LAB_NETWORK.echoService;
    await lab.killGateway("gw-b", "silent");
    try {
      let rows = new Map<string, LabPodStatus>();
      const seen = () => Object.fromEntries(Object.keys(want).map((p) => [p, rows.get(p)?.egressIP]));
      await waitFor(
        async () => {
          rows = byPod(await lab.status());
          return Object.entries(want).every(([p, ip]) => rows.get(p)?.egressIP === ip);
        },
        15_000,
        "the pods did not all move to gw-a",
      ).catch(() => undefined);
      // Only the probes below count on gw-a: forget its earlier connections to the echo service.
      await execIn(gwA.netns, "conntrack", ["-D", "-p", "tcp", "--orig-dst", echo]).catch(() => undefined);
      rows = byPod(await lab.status());
      expect(seen()).toEqual(want);
      // gw-a itself translated each pod's connection to its policy's IP (its connection tracking).
      const flows = await execIn(gwA.netns, "conntrack", ["-L", "-p", "tcp", "--orig-dst", echo]);
      const esc = (ip: string) => ip.replaceAll(".", "\\.");
      for (const [pod, ip] of Object.entries(want)) {
        expect(flows).toMatch(
          new RegExp(`src=${esc(rows.get(pod)!.ip)} dst=${esc(echo)} .*src=${esc(echo)} dst=${esc(ip)} `),
        );
      }
    } finally {
      await lab.reviveGateway("gw-b");
      // Back as before for the next tests: every node sees both instances up again (after the hold-down).
      await waitFor(() => lab.allInstancesUp(), 30_000, "gw-b did not come back up on every node");
      await waitConverged(lab);
    }
  });

  it("the allowlisted service admits the selected pods and refuses the others", async () => {
    const pay = await lab.probe(lab.findPod("payments/pay-1"), `http://${LAB_NETWORK.allowlistService}/`);
    expect(pay.status).toBe(200);
    expect(pay.admitted).toBe(true);
    for (const other of ["reporting/rep-1", "web/web-1"]) {
      const r = await lab.probe(lab.findPod(other), `http://${LAB_NETWORK.allowlistService}/`);
      expect(r.status).toBe(403);
    }
  });
});

describe("agent restarts", () => {
  it("leak zero packets and duplicate nothing", async () => {
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    const rulesBefore = await readRules(commandKernel(inNamespace(node1.netns)), 10000, 10099);
    const routesBefore = await readRoutes(commandKernel(inNamespace(node1.netns)), { from: 7001, to: 7000 + 4095 });
    const stream = spawn(
      "ip",
      [
        "netns",
        "exec",
        lab.findPod("payments/pay-1").netns,
        process.execPath,
        cliEntry(),
        "lab",
        "udp-stream",
        "--tag",
        "restart",
        "--interval-ms",
        "1",
        "--duration-ms",
        "5000",
      ],
      { stdio: "ignore" },
    );
    const done = new Promise((r) => stream.on("exit", r));
    await new Promise((r) => setTimeout(r, 500));
    for (const host of ["node1", "gw-a", "gw-b"]) {
      lab.killProcess(`agent-${host}`);
      await new Promise((r) => setTimeout(r, 300));
      lab.restartAgent(host);
    }
    await done;
    await new Promise((r) => setTimeout(r, 300));
    const received = lab.udpRecords().filter((d) => d.payload.startsWith("restart "));
    expect(received.length).toBeGreaterThan(1000);
    const wrong = received.filter((d) => !CHECKOUT_IPS.includes(d.src));
    expect(wrong).toEqual([]);
    // The restarted agent adopted what it found: the same rules and routes, once each.
    await waitFor(
      () =>
        readFileSync(lab.record.processes.find((p) => p.name === "agent-node1")!.log, "utf8").includes(
          "node agent started",
        ),
      10_000,
      "agent did not restart",
    );
    await new Promise((r) => setTimeout(r, 500));
    const rulesAfter = await readRules(commandKernel(inNamespace(node1.netns)), 10000, 10099);
    const routesAfter = await readRoutes(commandKernel(inNamespace(node1.netns)), { from: 7001, to: 7000 + 4095 });
    expect(rulesAfter).toEqual(rulesBefore);
    expect(routesAfter).toEqual(routesBefore);
    await waitConverged(lab);
  });
});

/**
 * The node agent's last reported errors per invalid resource, from its log (it logs the invalid
 * verdicts whenever they change, so the last report of a resource is its current one).
 */
function agentErrors(log: string): Map<string, { field: string; message: string }[]> {
  const out = new Map<string, { field: string; message: string }[]>();
  for (const line of readFileSync(log, "utf8").split("\n")) {
    if (!line.includes("invalid resource ignored")) continue;
    const entry = JSON.parse(line) as { resource: string; errors: { field: string; message: string }[] };
    out.set(
      entry.resource,
      entry.errors.map(({ field, message }) => ({ field, message })),
    );
  }
  return out;
}

/** `static-egress validate` output: `<resource>: valid`, or `<resource>: Invalid` then `  <field>: <message>` per error. */
function validateErrors(stdout: string): Map<string, { field: string; message: string }[]> {
  const out = new Map<string, { field: string; message: string }[]>();
  let current: { field: string; message: string }[] | undefined;
  for (const line of stdout.split("\n").filter(Boolean)) {
    const error = /^ {2}([^:]+): (.*)$/.exec(line);
    if (error && current) current.push({ field: error[1]!, message: error[2]! });
    else {
      const head = /^(\S+): (valid|Invalid)$/.exec(line);
      if (!head) throw new Error(`validate printed an unexpected line: ${line}`);
      current = [];
      out.set(head[1]!, current);
    }
  }
  return out;
}

describe("bad input", () => {
  const bad = [
    { name: "bad-cidr", spec: { destinationCIDRs: ["198.51.100.0/33"] }, field: "spec.destinationCIDRs[0]" },
    { name: "bad-gateway", spec: { gatewayName: "nowhere" }, field: "spec.gatewayName" },
    {
      name: "bad-selector",
      spec: { podSelector: { matchExpressions: [{ key: "app", operator: "In", values: [] }] } },
      field: "spec.podSelector.matchExpressions[0].values",
    },
    { name: "dup-ip", spec: { egressIPs: ["192.0.2.10"] }, field: "spec.egressIPs[0]" },
  ];

  const docs = bad.map((b) => ({
    apiVersion: "staticegress.io/v1alpha1",
    kind: "EgressPolicy",
    metadata: { name: b.name, namespace: "web" },
    spec: {
      podSelector: { matchLabels: { app: "frontend" } },
      gatewayName: "shared",
      egressIPs: ["192.0.2.99"],
      ...b.spec,
    },
  }));

  it("names the resource and field, and every other policy keeps working", async () => {
    await lab.applyPolicies(docs);
    const log = lab.record.processes.find((p) => p.name === "agent-node1")!.log;
    await waitFor(
      () => bad.every((b) => readFileSync(log, "utf8").includes(`EgressPolicy/web/${b.name}`)),
      10_000,
      "agent did not report the invalid policies",
    );
    const lines = readFileSync(log, "utf8")
      .split("\n")
      .filter((l) => l.includes("invalid resource ignored"));
    for (const b of bad) {
      const line = lines.reverse().find((l) => l.includes(`EgressPolicy/web/${b.name}`))!;
      expect(line).toContain(`"field":"${b.field}"`);
    }
    // The web pods are dropped, not left with the node IP (an invalid policy fails closed;
    // before issue #9 they stayed unselected), and the good policies keep their IPs.
    const rows = await waitConverged(lab);
    expect(byPod(rows).get("web/web-1")!.egressIP).toBeNull();
    expect(byPod(rows).get("web/web-1")!.expected).toEqual([]);
    expect(CHECKOUT_IPS).toContain(byPod(rows).get("payments/pay-1")!.egressIP);
    await lab.deletePolicies(docs);
  });

  it("the CLI's validate command reports the same errors", async () => {
    const log = lab.record.processes.find((p) => p.name === "agent-node1")!.log;
    const resources = bad.map((b) => `EgressPolicy/web/${b.name}`);
    await lab.applyPolicies(docs);
    try {
      // The agent planned with them (the web pods are dropped), so its last report is about them.
      await waitConverged(lab);
      await waitFor(
        () => resources.every((r) => agentErrors(log).has(r)),
        10_000,
        "agent did not report the invalid policies",
      );
      // The same cluster file the agent read, through the CLI.
      const { stdout, code } = await new Promise<{ stdout: string; code: number | null }>((resolve) => {
        const child = spawn(process.execPath, [cliEntry(), "validate", "-f", lab.clusterFile]);
        let out = "";
        child.stdout.on("data", (b: Buffer) => (out += b.toString()));
        child.on("exit", (c) => resolve({ stdout: out, code: c }));
      });
      const cli = validateErrors(stdout);
      const agent = agentErrors(log);
      expect(code).toBe(1);
      for (const r of resources) {
        expect(agent.get(r)!.length).toBeGreaterThan(0);
        expect({ resource: r, errors: cli.get(r) }).toEqual({ resource: r, errors: agent.get(r) });
      }
      expect(cli.get("EgressPolicy/payments/checkout")).toEqual([]);
      expect(cli.get("EgressPolicy/reporting/exporter")).toEqual([]);
    } finally {
      await lab.deletePolicies(docs);
    }
  });
});

describe("deleting a policy", () => {
  it("restores the node IP and leaves no rule behind", async () => {
    const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")!;
    const pay1 = lab.record.podIPs["payments/pay-1"]!;
    expect(await divertEntries("node1")).toContain(pay1);
    await lab.deletePolicies([checkout]);
    await waitFor(async () => !(await divertEntries("node1")).includes(pay1), 10_000, "entries not removed");
    const rows = byPod(await waitConverged(lab));
    expect(rows.get("payments/pay-1")!.egressIP).toBe(nodeIP("node1"));
    expect(rows.get("payments/pay-2")!.egressIP).toBe(nodeIP("node2"));
    // Nothing of the policy is left on the gateways either.
    for (const g of lab.topology.gatewayHosts) {
      const snat = await execIn(g.netns, "nft", ["list", "map", "ip", "static_egress_gw", "egress_snat"]);
      expect(snat).not.toContain(pay1);
      expect(snat).not.toContain("192.0.2.10");
    }
    await lab.applyPolicies([checkout]);
    await waitConverged(lab);
  });
});

describe("a pod selected while its flow is open", () => {
  it("its open flow moves to the policy's egress IP (the node's verdict for it is not kept)", async () => {
    // The node caches "not diverted" in conntrack, so that traffic on the node's path skips the
    // divert map; the agent must forget that verdict for a pod that becomes selected.
    const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")!;
    const pay1 = lab.record.podIPs["payments/pay-1"]!;
    await lab.deletePolicies([checkout]);
    await waitFor(async () => !(await divertEntries("node1")).includes(pay1), 10_000, "entries not removed");
    const stream = startUdpStream(lab, "payments/pay-1", "reselected", 12_000, 5);
    await waitFor(async () => analyzeStream(lab, "reselected", []).received >= 50, 10_000, "the stream did not start");
    const applied = Date.now();
    await lab.applyPolicies([checkout]);
    await waitFor(async () => (await divertEntries("node1")).includes(pay1), 15_000, "pay-1 not diverted again");
    const diverted = Date.now();
    const sent = await stream;
    expect(sent?.sent).toBeGreaterThan(0);
    const before = analyzeStream(lab, "reselected", [nodeIP("node1")], { from: 0, to: applied });
    expect(before.wrongSource).toEqual([]); // on the node's path while unselected
    expect(before.received).toBeGreaterThan(0);
    // Two seconds after its entry is in the kernel, every datagram of the same flow leaves with
    // checkout's IPs, and some do.
    const after = analyzeStream(lab, "reselected", ["192.0.2.10", "192.0.2.20"], {
      from: diverted + 2_000,
      to: Number.MAX_SAFE_INTEGER,
    });
    expect(after.wrongSource.slice(0, 5)).toEqual([]);
    expect(after.received).toBeGreaterThan(100);
    await waitConverged(lab);
  });
});
