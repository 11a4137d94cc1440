import { afterEach, describe, expect, it } from "vitest";
import { until as waitFor } from "../../../test/support/until.js";
import { BfdAgent } from "./bfd/agent.js";
import { responderSession } from "./responder.js";

// Real UDP on loopback: a node probing at 50 ms x 3, and a gateway's health responder.
const NODE = "127.0.0.8";
const GATEWAY = "127.0.0.9";
const port = 40_000 + Math.floor(Math.random() * 10_000);

let running: BfdAgent[] = [];
afterEach(async () => {
  await Promise.all(running.map((a) => a.stop()));
  running = [];
});

async function detectionOnNode(acceptPeer: () => ReturnType<typeof responderSession>): Promise<number> {
  const node = new BfdAgent({ localAddress: NODE, port });
  const gateway = new BfdAgent({ localAddress: GATEWAY, port, acceptPeer });
  running = [node, gateway];
  await Promise.all([node.start(), gateway.start()]);
  await node.addPeer({ peer: GATEWAY, desiredMinTxMs: 50, requiredMinRxMs: 50, detectMultiplier: 3 });
  const status = () => node.statuses().find((s) => s.peer === GATEWAY);
  await waitFor(() => status()?.state === "Up");
  // The responder leaves the slow rate of set-up with a Poll once Up: its next packets carry the rate.
  await waitFor(() => (status()?.remoteDesiredMinTxUs ?? 1e9) < 1_000_000);
  await new Promise((r) => setTimeout(r, 300));
  return status()!.detectionTimeMs;
}

describe("the health responder's session", () => {
  it("sends at the node's rate: a node probing at 50 ms x 3 detects a dead gateway in 150 ms, not 300", async () => {
    expect(await detectionOnNode(responderSession)).toBe(150);
  });

  it("with the default transmit interval (as before) the node's detection stays at 300 ms", async () => {
    expect(await detectionOnNode(() => ({ peer: "", passive: true }))).toBe(300);
  });
});
