import { afterEach, describe, expect, it } from "vitest";
import { until as waitFor } from "../../../test/support/until.js";
import { BfdAgent } from "./bfd/agent.js";
import { HealthThread } from "./thread.js";
import type { VerdictChange } from "./monitor.js";

// Real UDP on loopback: the node's health thread on 127.0.0.5, a gateway's far end on 127.0.0.6
// (on this thread). No table is written here (no apply went through the thread): the kernel side
// is test/lab/dataplane.test.ts's.
const NODE = "127.0.0.5";
const FAR = "127.0.0.6";
const port = 40_000 + Math.floor(Math.random() * 10_000);

let stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(stops.map((s) => s()));
  stops = [];
});

describe("HealthThread", () => {
  it("judges on its own thread: the agent gets each verdict with the whole view, and setInstances' view", async () => {
    const far = new BfdAgent({ localAddress: FAR, port });
    const health = new HealthThread({ localAddress: NODE, port, failover: { table: "static_egress_unused" } });
    stops = [() => far.stop(), () => health.stop()];
    await Promise.all([far.start(), health.start()]);
    const verdicts: VerdictChange[] = [];
    let changes = 0;
    health.onVerdict((c) => verdicts.push(c));
    health.onChange(() => changes++);
    await far.addPeer({ peer: NODE, desiredMinTxMs: 50, requiredMinRxMs: 50 });
    const probe = { intervalMs: 50, multiplier: 3, holdDownMs: 200 };
    await health.setInstances([{ key: "gw/a", address: FAR, ...probe }]);
    expect(health.view().size).toBe(0); // unknown until its session is up (planned like up)
    await waitFor(() => health.view().get("gw/a") === "up");
    expect(verdicts.map((v) => [v.key, v.from, v.to])).toEqual([["gw/a", "unknown", "up"]]);
    expect(changes).toBe(1);

    // An instance added after the first plan starts down, and the reply to setInstances says so.
    await health.setInstances([
      { key: "gw/a", address: FAR, ...probe },
      { key: "gw/b", address: "127.0.0.7", ...probe },
    ]);
    expect(health.latest()).toEqual(
      new Map([
        ["gw/a", "up"],
        ["gw/b", "down"],
      ]),
    );
    // The far end goes away: down, told to this thread.
    await far.removePeer(NODE);
    await waitFor(() => health.view().get("gw/a") === "down");
    expect(verdicts.at(-1)).toMatchObject({ key: "gw/a", from: "up", to: "down" });
    expect(health.failover).toBe(health);
  });
});
