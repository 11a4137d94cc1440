import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NodeDataplane } from "../../src/dataplane/node.js";
import { commandKernel } from "../../src/dataplane/kernel.js";
import { KernelWatch, localStreams, ownNftCommand, type StreamSpawner } from "../../src/dataplane/kernel-watch.js";
import { deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { waitFor } from "../../src/lab/lab.js";
import { tableFor } from "../../src/planner/ids.js";
import { inNamespace, type CommandRunner } from "../../src/util/exec.js";
import { classOfPod, divertListing } from "../support/divert.js";
import { addNodeNamespace, twoInstancePlan } from "../support/node-namespace.js";

// Issue #16, goal 2 (docs/design.md "Knowing the kernel without reading it"): with the kernel's
// own monitors (`ip monitor`, `nft monitor`) a verify reads back only what someone else changed,
// and a pod's interface made before its event is known when the event comes. Real monitors, real
// nft and routes in a namespace; every foreign change is still found and repaired.
const prefix = newRunPrefix();
const ns = `${prefix}-kw`;
const streams: StreamSpawner = (command, args, on) => localStreams("ip", ["netns", "exec", ns, command, ...args], on);
const commands: string[] = [];
const inNode = inNamespace(ns);
const recording: CommandRunner = {
  run: (cmd, args, o) => (commands.push(`${cmd} ${args.join(" ")}`), inNode.run(cmd, args, o)),
};
const nft = ownNftCommand();
const watch = new KernelWatch(streams, { tables: ["ip static_egress", "bridge static_egress_bind"] });

const plan = (pods: number) => twoInstancePlan("via", pods);

/** Reads of the kernel among the commands run (writes and the CNI's own are not reads). */
const reads = () => commands.filter((c) => / list | -json | -j /.test(` ${c} `));

/** The monitors have told everything so far (their lines come a little after the change). */
const drained = () => new Promise((r) => setTimeout(r, 300));

async function podInterface(name: string, ip: string): Promise<void> {
  await execIn(ns, "ip", ["link", "add", name, "type", "veth", "peer", "name", `${name}p`]);
  await execIn(ns, "ip", ["link", "set", name, "up"]);
  await execIn(ns, "ip", ["route", "add", `${ip}/32`, "dev", name]);
}

beforeAll(async () => {
  await addNodeNamespace(ns);
  watch.start();
  await waitFor(() => watch.mark() !== undefined, 5_000, "the monitors did not settle", 50);
});

afterAll(async () => {
  watch.stop();
  await deleteNamespacesWithPrefix(`${prefix}-`);
});

describe("knowing the kernel without reading it (ip monitor, nft monitor)", () => {
  const dp = new NodeDataplane(commandKernel(recording, { nft }), { watch, nft });

  it("a verify reads nothing back when no one else changed the kernel; our own failover does not count", async () => {
    await dp.apply(plan(3), { verify: true });
    await drained();
    await dp.apply(plan(3), { verify: true }); // reads back what our own writes changed
    await drained();
    commands.length = 0;
    expect(await dp.apply(plan(3), { verify: true })).toMatchObject({ nftChanged: false, routingAdded: 0 });
    expect(reads()).toEqual([]);
    // A failover written with our nft: not someone else's change.
    await dp.applyHealth(new Map([["gw/a", "down"]]));
    await dp.applyHealth(new Map([["gw/a", "up"]]));
    await drained();
    commands.length = 0;
    await dp.apply(plan(3), { verify: true });
    expect(reads().filter((c) => c.includes("nft"))).toEqual([]);
  });

  it("finds and repairs an element someone else deleted from its table, at the next verify", async () => {
    const pod = plan(3).entries[0]!.podIP;
    const before = (await divertListing(ns)).filter((r) => r.startsWith(`${pod} . `));
    expect(before).toHaveLength(1);
    const map = (await classOfPod(ns, pod))!;
    await execIn(ns, "nft", ["delete", "element", "ip", "static_egress", map, "{ 198.51.100.0/24 }"]);
    await drained();
    commands.length = 0;
    expect(await dp.apply(plan(3), { verify: true })).toMatchObject({ nftChanged: true });
    expect(reads().some((c) => c.includes("list"))).toBe(true);
    expect((await divertListing(ns)).filter((r) => r.startsWith(`${pod} . `))).toEqual(before);
  });

  it("finds and repairs an instance route someone else deleted, at the next verify", async () => {
    await execIn(ns, "ip", ["route", "del", "default", "table", String(tableFor(1))]);
    await drained();
    expect((await dp.apply(plan(3), { verify: true })).routingAdded).toBeGreaterThan(0);
    expect(await execIn(ns, "ip", ["-4", "route", "show", "table", String(tableFor(1))])).toContain("via 169.254.53.1");
  });

  it("a pod's interface made before its event is known when the event comes, without a read", async () => {
    await podInterface("vpod13", "10.244.1.13");
    await drained(); // the watch's prefetch has read it meanwhile
    commands.length = 0;
    const report = await dp.apply(plan(4));
    expect(report.unbound).toBe(3); // 10.244.1.10-12 have no interface here
    expect(reads()).toEqual([]);
    expect(await execIn(ns, "nft", ["list", "set", "ip", "static_egress", "pod_ifaces"])).toContain(
      '10.244.1.13 . "vpod13"',
    );
  });

  it("a pod whose event comes before the watch told of its interface is still bound (read then)", async () => {
    await podInterface("vpod14", "10.244.1.14");
    const report = await dp.apply(plan(5));
    expect(report.unbound).toBe(3);
    expect(await execIn(ns, "nft", ["list", "set", "ip", "static_egress", "pod_ifaces"])).toContain(
      '10.244.1.14 . "vpod14"',
    );
  });

  it("a selected pod's interface that comes after its apply is told, and the next apply binds it", async () => {
    let told = 0;
    dp.onBindable(() => told++);
    await podInterface("vpod10", "10.244.1.10");
    await waitFor(() => told > 0, 5_000, "the dataplane did not tell of the new interface", 20);
    expect((await dp.apply(plan(5))).unbound).toBe(2);
    expect(await execIn(ns, "nft", ["list", "set", "ip", "static_egress", "pod_ifaces"])).toContain(
      '10.244.1.10 . "vpod10"',
    );
    await dp.cleanup();
  });
});
