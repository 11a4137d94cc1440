/**
 * Tenancy and fail-closed attacks on a real datapath (issue #9, outcomes 5, 6 and 8): network
 * namespaces, the agents, and the lab's Internet host, which records every UDP datagram it gets
 * with the source address it saw. What matters is counted there: datagrams that got out with a
 * policy's egress IP, or with a node's IP.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KubeObject } from "../../src/api/objects.js";
import type { Lab } from "../../src/lab/lab.js";
import { waitFor } from "../../src/lab/lab.js";
import { execIn } from "../../src/lab/netns.js";
import { divertListing } from "../support/divert.js";
import { cliEntry } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { byPod, startLab, waitConverged } from "./support.js";

// The example lab: payments (checkout: 192.0.2.10, .20) and reporting (exporter: .11, .21) are
// granted their own IPs on gateway `shared`; namespace web is granted nothing.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];

let lab: Lab;

beforeAll(async () => {
  lab = await startLab();
  await waitConverged(lab);
});

afterAll(async () => {
  await lab?.down();
});

const nodeIP = (name: string) => lab.topology.nodes.find((n) => n.name === name)!.publicIP;
const nodeNetns = (name: string) => lab.topology.nodes.find((n) => n.name === name)!.netns;

/** Sends UDP datagrams tagged `tag` from a pod to the Internet's echo address; resolves to the number sent. */
function udpStream(pod: string, tag: string, durationMs: number): Promise<number> {
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      lab.findPod(pod).netns,
      process.execPath,
      cliEntry(),
      "lab",
      "udp-stream",
      "--tag",
      tag,
      "--interval-ms",
      "2",
      "--duration-ms",
      String(durationMs),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out += b.toString()));
  return new Promise<number>((resolve, reject) =>
    child.on("exit", (code) =>
      code === 0
        ? resolve(Number(/"sent":(\d+)/.exec(out)?.[1] ?? 0))
        : reject(new Error(`udp-stream from ${pod} exited ${code}: ${out}`)),
    ),
  );
}

const received = (tag: string) => lab.udpRecords().filter((d) => d.payload.startsWith(`${tag} `));

async function failClosedDrops(node: string): Promise<number> {
  const out = await execIn(nodeNetns(node), "nft", ["list", "counter", "ip", "static_egress", "failclosed_drops"]);
  return Number(/packets (\d+)/.exec(out)?.[1] ?? NaN);
}

/** The mark the node always drops (no instance): what an invalid policy's pods get. */
const DROP_MARK = "0x10000000";

/** The marks of a pod address's entries in a node's divert map. */
async function marksOf(node: string, podIP: string): Promise<string[]> {
  const listing = (await divertListing(nodeNetns(node))).join("\n");
  const escaped = podIP.replace(/\./g, "\\.");
  return [...listing.matchAll(new RegExp(`\\b${escaped} \\. [^:,]+: (0x[0-9a-f]+)`, "g"))].map((m) => m[1]!);
}

async function checkout(): Promise<KubeObject> {
  return (await lab.currentPolicies()).find(
    (p) => p.metadata?.name === "checkout" && p.metadata?.namespace === "payments",
  )!;
}

/** Waits until node1's agent has logged `resource` as invalid (it planned the change). */
async function agentSawInvalid(resource: string): Promise<void> {
  const log = lab.record.processes.find((p) => p.name === "agent-node1")!.log;
  const seen = () =>
    readFileSync(log, "utf8")
      .split("\n")
      .filter((l) => l.includes("invalid resource ignored") && l.includes(resource)).length;
  const before = seen();
  await waitFor(() => seen() > before, 15_000, `agent-node1 did not report ${resource} invalid`);
}

describe("attack: a valid policy made invalid", () => {
  it("its pods never leave with the node IP: dropped and counted, during the change and after it", async () => {
    const original = await checkout();
    const dropsBefore = await failClosedDrops("node1");
    // A stream that runs while the policy turns invalid (192.0.2.11 is reporting's, not granted to payments).
    const during = udpStream("payments/pay-1", "turning", 6000);
    await waitFor(() => received("turning").length > 0, 10_000, "the stream did not start");
    const broken = {
      ...original,
      spec: { ...(original.spec as object), egressIPs: ["192.0.2.10", "192.0.2.11"] },
    } as KubeObject;
    await lab.applyPolicies([broken]);
    try {
      await agentSawInvalid("EgressPolicy/payments/checkout");
      // node1 has applied the change: pay-1 is in no gateway's entry any more (dropped, or absent).
      await waitFor(
        async () => (await marksOf("node1", lab.record.podIPs["payments/pay-1"]!)).every((m) => m === DROP_MARK),
        10_000,
        "pay-1 still diverted to a gateway",
      );
      await during;
      // And a stream that starts once the invalid policy is planned.
      const sent = await udpStream("payments/pay-1", "invalid", 1000);
      expect(sent).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 300));

      const turning = received("turning");
      const invalid = received("invalid");
      // The leak this is about: nothing with a node's IP, at any moment.
      expect([...turning, ...invalid].filter((d) => d.src === nodeIP("node1"))).toEqual([]);
      // Before the change the stream left with checkout's IPs; after it, nothing gets out.
      expect(turning.every((d) => CHECKOUT_IPS.includes(d.src))).toBe(true);
      expect(invalid).toEqual([]);
      expect(await failClosedDrops("node1")).toBeGreaterThan(dropsBefore);
      // lab status agrees: pay-1 is dropped (no answer), the other policies keep their IPs.
      const rows = byPod(await waitConverged(lab));
      expect(rows.get("payments/pay-1")!.egressIP).toBeNull();
      expect(rows.get("reporting/rep-1")!.egressIP).toMatch(/^192\.0\.2\.(11|21)$/);
      expect(rows.get("web/web-1")!.egressIP).toBe(nodeIP("node1"));
    } finally {
      await lab.applyPolicies([original]);
    }
    const restored = byPod(await waitConverged(lab));
    expect(CHECKOUT_IPS).toContain(restored.get("payments/pay-1")!.egressIP);
  });
});

describe("attack: a namespace claims another namespace's egress IPs", () => {
  it("first, while they are free: it gets nothing out with them, and the owner gets them back", async () => {
    const original = await checkout();
    // The owner's policy goes away for a moment (a redeploy); namespace web claims its IPs first.
    await lab.deletePolicies([original]);
    const grab: KubeObject = {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: "grab", namespace: "web" },
      spec: {
        podSelector: { matchLabels: { app: "frontend" } },
        gatewayName: "shared",
        egressIPs: CHECKOUT_IPS,
        destinationCIDRs: ["198.51.100.0/24"],
      },
    };
    await lab.applyPolicies([grab]);
    // node1 has planned the claim (web-1 gets entries: dropped, or diverted if the claim were honoured).
    await waitFor(
      async () => (await marksOf("node1", lab.record.podIPs["web/web-1"]!)).length > 0,
      10_000,
      "node1 did not plan web/grab",
    );
    await lab.applyPolicies([{ ...original, metadata: { name: "checkout", namespace: "payments" } }]);
    await waitConverged(lab);

    const sent = await Promise.all([
      udpStream("web/web-1", "grab-1", 1000),
      udpStream("web/web-2", "grab-2", 1000),
      udpStream("payments/pay-1", "owner", 1000),
    ]);
    for (const n of sent) expect(n).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    // Counted at the Internet: nothing of web's pods with the payments IPs (nor with any egress IP).
    const fromWeb = [...received("grab-1"), ...received("grab-2")];
    expect(fromWeb.filter((d) => CHECKOUT_IPS.includes(d.src))).toEqual([]);
    expect(fromWeb.filter((d) => d.src.startsWith("192.0.2."))).toEqual([]);
    // The owner leaves with its own IPs.
    const owner = received("owner");
    expect(owner.length).toBeGreaterThan(0);
    expect(owner.every((d) => CHECKOUT_IPS.includes(d.src))).toBe(true);
    // The partner that allowlists payments' IPs admits payments, not web.
    for (const pod of ["web/web-1", "web/web-2"])
      expect((await lab.probe(lab.findPod(pod), `http://${LAB_NETWORK.allowlistService}/`)).status).not.toBe(200);
    expect((await lab.probe(lab.findPod("payments/pay-1"), `http://${LAB_NETWORK.allowlistService}/`)).status).toBe(
      200,
    );

    await lab.deletePolicies([grab]);
    await waitConverged(lab);
  });
});
