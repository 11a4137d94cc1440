// A rolling upgrade in the documented order (docs/deploy.md, "Upgrade and removal") under a
// selected pod's traffic: the node agents one node at a time, then the gateway instances one at a
// time (drain, wait for its open flows to end, restart its agent and health responder, undrain,
// wait until it is Up). Every datagram arrives, and none leaves with an address outside the
// policy's. The processes restart on this build (there is no second version to move to here): the
// hand-over is the same as between versions, a new process that reads the kernel back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Lab } from "../../src/lab/lab.js";
import { waitFor } from "../../src/lab/lab.js";
import { analyzeStream, startUdpStream } from "../../src/lab/traffic.js";
import { byPod, exampleLabConfig, startLab, waitConverged } from "./support.js";

const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
const HOLD_DOWN_MS = 1500;
const POD = "payments/pay-1";
let lab: Lab;

beforeAll(async () => {
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.health = { intervalMs: 100, multiplier: 3, holdDownMs: HOLD_DOWN_MS };
  lab = await startLab(cfg);
  await waitConverged(lab, undefined, 20_000);
});

afterAll(async () => {
  await lab?.down();
});

async function stop(name: string): Promise<void> {
  lab.killProcess(name, "SIGTERM");
  await waitFor(() => lab.processExited(name), 10_000, `${name} did not stop on SIGTERM`);
}

function report(tag: string, from: number) {
  return analyzeStream(lab, tag, CHECKOUT_IPS, { from, to: Date.now() });
}

describe("rolling upgrade under a selected pod's traffic", () => {
  it("node agents, one node at a time: no datagram lost, none with another source", async () => {
    const tag = "upgrade-nodes";
    const from = Date.now();
    const stream = startUdpStream(lab, POD, tag, 12_000);
    await new Promise((r) => setTimeout(r, 500));
    for (const n of lab.topology.nodes) {
      await stop(`agent-${n.name}`);
      lab.startNodeAgent(n.name);
      await waitFor(
        async () => (await lab.agentMetrics(n.name).catch(() => "")).includes("static_egress_"),
        20_000,
        `the node agent of ${n.name} did not come back`,
      );
    }
    await stream;
    await new Promise((r) => setTimeout(r, 300));
    const r = report(tag, from);
    expect(r.received).toBeGreaterThan(1_000);
    expect(r.lost).toBe(0);
    expect(r.wrongSource).toEqual([]);
    await waitConverged(lab, undefined, 20_000);
  });

  it("gateway instances, one at a time with drain: no datagram lost, none with another source", async () => {
    const hosts = lab.topology.gatewayHosts.filter((g) => g.egressIPs.some((ip) => CHECKOUT_IPS.includes(ip)));
    expect(hosts.length).toBe(2);
    for (const [i, g] of hosts.entries()) {
      // Traffic before the drain: the flow that is open when the instance is drained.
      const openTag = `upgrade-gw-open-${i}`;
      const from = Date.now();
      const open = startUdpStream(lab, POD, openTag, 2_000);
      await new Promise((r) => setTimeout(r, 300));
      await lab.setDrain(g.name, true);
      await waitFor(
        async () => {
          const ip = byPod(await lab.status()).get(POD)!.egressIP;
          return ip !== null && !g.egressIPs.includes(ip);
        },
        10_000,
        `new connections did not move off ${g.name}`,
      );
      // New traffic while the drained instance is replaced.
      const duringTag = `upgrade-gw-during-${i}`;
      const during = startUdpStream(lab, POD, duringTag, 6_000);
      await open; // its open flows end before it is restarted
      await stop(`health-${g.name}`);
      await stop(`agent-${g.name}`);
      lab.startGatewayHost(g.name);
      await during;
      await lab.setDrain(g.name, false);
      await new Promise((r) => setTimeout(r, HOLD_DOWN_MS + 500));
      await waitConverged(lab, undefined, 20_000);
      await new Promise((r) => setTimeout(r, 300));
      for (const tag of [openTag, duringTag]) {
        const r = report(tag, from);
        expect(r.received, tag).toBeGreaterThan(500);
        expect(r.lost, tag).toBe(0);
        expect(r.wrongSource, tag).toEqual([]);
      }
      // The new traffic never went through the instance being replaced.
      expect(Object.keys(report(duringTag, from).sources).filter((ip) => g.egressIPs.includes(ip))).toEqual([]);
    }
  });
});
