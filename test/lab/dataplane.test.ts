import { execFileSync, spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NodeDataplane, renderNodeTable } from "../../src/dataplane/node.js";
import { GatewayDataplane } from "../../src/dataplane/gateway.js";
import { readRoutes, readRules } from "../../src/dataplane/routing.js";
import { addNamespace, deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { markFor } from "../../src/planner/ids.js";
import { divertValue } from "../../src/planner/failover.js";
import { hex } from "../../src/dataplane/nft.js";
import { NODE_REPLY_TABLE } from "../../src/api/datapath.js";
import type { GatewayPlan } from "../../src/planner/model.js";
import { formatIPv4, formatRange, parseCidr, parseIPv4 } from "../../src/util/ipv4.js";
import { inNamespace, type CommandRunner } from "../../src/util/exec.js";
import { commandKernel, type Kernel } from "../../src/dataplane/kernel.js";
import { classOfPod, divertListing } from "../support/divert.js";
import { addNodeNamespace, twoInstancePlan } from "../support/node-namespace.js";
import { waitFor } from "../../src/lab/lab.js";
import { BfdAgent } from "../../src/agents/health/bfd/agent.js";
import { BfdThread } from "../../src/agents/health/bfd/thread.js";
import { HealthThread } from "../../src/agents/health/thread.js";

// One namespace stands in for a node (and one for a gateway): a dummy interface gives the
// instance addresses a next hop. The agent's own objects are compared with what the kernel
// holds after each step: apply, re-apply, drift, foreign state, cleanup.
const prefix = newRunPrefix();
const nodeNs = `${prefix}-dpnode`;
const gwNs = `${prefix}-dpgw`;
const run = commandKernel(inNamespace(nodeNs));
const gwRun = commandKernel(inNamespace(gwNs));

const plan = twoInstancePlan;

async function foreignState(): Promise<string> {
  const rules = await execIn(nodeNs, "ip", ["-4", "rule", "show"]);
  const main = await execIn(nodeNs, "ip", ["-4", "route", "show", "table", "main"]);
  const t100 = await execIn(nodeNs, "ip", ["-4", "route", "show", "table", "100"]);
  const other = await execIn(nodeNs, "nft", ["list", "table", "ip", "someone_else"]);
  return [
    rules
      .split("\n")
      .filter((l) => !/^100\d\d:/.test(l))
      .join("\n"),
    main,
    t100,
    other,
  ].join("\n--\n");
}

beforeAll(async () => {
  for (const ns of [nodeNs, gwNs]) await addNodeNamespace(ns);
  // State that belongs to others and must survive every step untouched.
  await execIn(nodeNs, "ip", ["rule", "add", "priority", "500", "fwmark", "0x4000/0x4000", "lookup", "100"]);
  await execIn(nodeNs, "ip", ["route", "add", "blackhole", "192.0.2.0/24", "table", "100"]);
  await execIn(nodeNs, "ip", ["route", "add", "198.18.0.0/15", "via", "10.0.0.1"]);
  await execIn(nodeNs, "nft", ["add", "table", "ip", "someone_else"]);
  await execIn(nodeNs, "nft", ["add", "chain", "ip", "someone_else", "c", "{ type filter hook forward priority 0; }"]);
  await execIn(nodeNs, "nft", ["add", "rule", "ip", "someone_else", "c", "counter"]);
});

afterAll(async () => {
  await deleteNamespacesWithPrefix(`${prefix}-`);
});

/** A pod 10.244.1.10 in `podNs`, routed as ptp does: the node's pod0 to its eth0, a /32 route each way. */
async function addPod(podNs: string): Promise<void> {
  await addNamespace(podNs);
  await execIn(nodeNs, "ip", ["link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", podNs]);
  await execIn(nodeNs, "ip", ["link", "set", "pod0", "up"]);
  await execIn(nodeNs, "ip", ["addr", "add", "10.244.1.1/32", "dev", "pod0"]);
  await execIn(nodeNs, "ip", ["route", "add", "10.244.1.10/32", "dev", "pod0"]); // ptp's binding route
  await execIn(podNs, "ip", ["addr", "add", "10.244.1.10/32", "dev", "eth0"]);
  await execIn(podNs, "ip", ["link", "set", "eth0", "up"]);
  await execIn(podNs, "ip", ["route", "add", "10.244.1.1/32", "dev", "eth0"]);
  await execIn(podNs, "ip", ["route", "add", "default", "via", "10.244.1.1", "dev", "eth0"]);
}

describe("node dataplane", () => {
  it("a full replacement of a large table, or a class appearing and going, lets no new flow of a selected pod through unmarked (handover table)", async () => {
    // A replaced table's interval map is filled as its transaction ends, after its chain is live.
    // A pod sends every datagram from a new socket (a new flow, so no conntrack mark to restore),
    // while the node's table (20,000 elements) is replaced in full again and again; a chain after
    // the agent's counts the pod's diverted-destination packets that left the marking unmarked.
    const podNs = `${prefix}-dppod`;
    try {
      await addPod(podNs);
      await execIn(nodeNs, "nft", [
        "add table ip watch; add chain ip watch c { type filter hook prerouting priority -80; }; " +
          "add rule ip watch c ip saddr 10.244.1.10 ip daddr 198.51.100.7 meta mark & 0x10000000 == 0 counter; " +
          "add rule ip watch c ip saddr 10.244.1.10 ip daddr 198.51.100.7 meta mark & 0x10000000 != 0 counter",
      ]);
      const counts = async () =>
        [...(await execIn(nodeNs, "nft", ["list", "chain", "ip", "watch", "c"])).matchAll(/packets (\d+)/g)].map((m) =>
          Number(m[1]),
        );
      const big = plan("via", 10_000); // 10,000 pods x 1 range, 10.244.1.10 first among them
      // The first 100 pods (the sender's among them) with one destination more: they move to a
      // class of their own and back (a chain and its map appearing and going).
      const other = parseCidr("203.0.113.0/24");
      const fewer = {
        ...big,
        entries: [...big.entries, ...big.entries.slice(0, 100).map((e) => ({ ...e, dst: other }))],
      };
      const scripts: string[] = [];
      const counting: Kernel = Object.create(run) as Kernel;
      counting.nft = (script: string) => (scripts.push(script), run.nft(script));
      const dp = new NodeDataplane(counting);
      await dp.apply(big, { verify: true });
      let replaced: number[] = [];
      const sender = spawn(
        "ip",
        [
          "netns",
          "exec",
          podNs,
          process.execPath,
          "-e",
          `const d=require("node:dgram");const end=Date.now()+60000;let n=0;` +
            `(function go(){if(Date.now()>end)return;const s=d.createSocket("udp4");` +
            `s.send("x",9,"198.51.100.7",()=>{s.close();n++;setImmediate(go)})})()`,
        ],
        { stdio: "ignore" },
      );
      try {
        // Ten full replacements (an agent that knows nothing it applied: a restart), then ten
        // deltas of one agent that move the sender between classes.
        for (let i = 0; i < 10; i++) await new NodeDataplane(counting).apply(i % 2 === 0 ? fewer : big);
        replaced = await counts();
        // (A class whose last pod left goes at the next verify: the moves back are verifies.)
        for (let i = 0; i < 10; i++) await dp.apply(i % 2 === 0 ? fewer : big, { verify: i % 2 === 1 });
      } finally {
        sender.kill();
      }
      // The first apply and the ten restarts replaced the table (the restarts inside a handover
      // table; the kernel ends as dp left it); dp's ten class changes were deltas.
      expect(scripts.filter((s) => s.includes("delete table ip static_egress\n")).length).toBe(11);
      expect(scripts.filter((s) => /^table ip static_egress_handover \{/m.test(s)).length).toBe(10);
      expect(scripts.filter((s) => /^delete chain ip static_egress class_/m.test(s)).length).toBe(5);
      const [unmarked, marked] = await counts();
      // Through the replacements, then through the class changes.
      expect([replaced[0], replaced[1]! > 250]).toEqual([0, true]);
      expect([unmarked! - replaced[0]!, marked! - replaced[1]! > 250]).toEqual([0, true]);
    } finally {
      await execIn(nodeNs, "nft", ["delete", "table", "ip", "watch"]).catch(() => undefined);
      await execIn(nodeNs, "ip", ["link", "del", "pod0"]).catch(() => undefined);
      await new NodeDataplane(run).cleanup();
    }
  });

  it("a destination its class does not divert keeps the packet's own mark (kube-proxy's 0x4000); a diverted one takes its instance's", async () => {
    // The class is a jump (pod_class is a verdict map), not a value carried in the packet mark: a
    // miss in the class's map must leave a mark set before our chain as it was.
    const podNs = `${prefix}-dpmark`;
    try {
      await addPod(podNs);
      // Another tool's mark, set before our chain (dstnat + 10), and what is left of it after.
      await execIn(nodeNs, "nft", [
        "add table ip marker; add chain ip marker early { type filter hook prerouting priority -150; }; " +
          "add rule ip marker early ip saddr 10.244.1.10 meta mark set 0x4000; " +
          "add chain ip marker late { type filter hook prerouting priority -80; }; " +
          "add rule ip marker late ip saddr 10.244.1.10 ip daddr 203.0.113.9 meta mark 0x4000 counter; " +
          "add rule ip marker late ip saddr 10.244.1.10 ip daddr 203.0.113.9 meta mark != 0x4000 counter; " +
          `add rule ip marker late ip saddr 10.244.1.10 ip daddr 198.51.100.7 meta mark ${hex(markFor(1))} counter`,
      ]);
      const dp = new NodeDataplane(run);
      await dp.apply(plan("via"), { verify: true }); // 10.244.1.10: 198.51.100.0/24 through gw/a
      expect(await classOfPod(nodeNs, "10.244.1.10")).toMatch(/^class_[0-9a-f]{8}$/);
      for (const dst of ["203.0.113.9", "198.51.100.7"])
        await execIn(podNs, process.execPath, [
          "-e",
          `const d=require("node:dgram");let n=0;(function go(){if(n===20)return;const s=d.createSocket("udp4");` +
            `s.send("x",9,"${dst}",()=>{s.close();n++;go()})})()`,
        ]);
      const [kept, lost, diverted] = [
        ...(await execIn(nodeNs, "nft", ["list", "chain", "ip", "marker", "late"])).matchAll(/packets (\d+)/g),
      ].map((m) => Number(m[1]));
      expect(kept).toBe(20);
      expect(lost).toBe(0);
      expect(diverted).toBe(20); // every datagram a new flow, each marked by its class
    } finally {
      await execIn(nodeNs, "nft", ["delete", "table", "ip", "marker"]).catch(() => undefined);
      await execIn(nodeNs, "ip", ["link", "del", "pod0"]).catch(() => undefined);
      await new NodeDataplane(run).cleanup();
    }
  });

  it("programs rules, one table per instance, and the map; a second apply changes nothing", async () => {
    const before = await foreignState();
    const dp = new NodeDataplane(run);
    const first = await dp.apply(plan("via"), { verify: true });
    expect(first.nftChanged).toBe(true);
    const rules = await readRules(run, 10000, 10099);
    expect(rules).toHaveLength(5); // two instances, their tunnels' own packets + the catch-all blackhole
    expect(rules.find((r) => r.action === "blackhole")).toMatchObject({ priority: 10099 });
    expect(
      rules
        .filter((r) => r.to)
        .map((r) => r.to)
        .sort(),
    ).toEqual(["10.0.0.101/32", "10.0.0.102/32"]);
    const routes = await readRoutes(run, { from: 7001, to: 11095 });
    expect(routes.map((r) => `${r.table} ${r.kind} ${r.via ?? ""} ${r.onlinkDev ?? ""}`).sort()).toEqual([
      `7001 via 169.254.53.1 se-gw1`,
      `7002 via 169.254.53.1 se-gw2`,
    ]);
    // One VXLAN device per instance: the node's address and port, the instance's id as VNI.
    const links = JSON.parse(await execIn(nodeNs, "ip", ["-d", "-json", "link", "show", "type", "vxlan"])) as {
      ifname: string;
      mtu: number;
      linkinfo: { info_data: Record<string, unknown> };
    }[];
    expect(
      links
        .map((l) => [
          l.ifname,
          l.mtu,
          l.linkinfo.info_data["id"],
          l.linkinfo.info_data["local"],
          l.linkinfo.info_data["remote"],
          l.linkinfo.info_data["port"],
        ])
        .sort(),
    ).toEqual([
      ["se-gw1", 1450, 1, "10.0.0.11", "10.0.0.101", 20011],
      ["se-gw2", 1450, 2, "10.0.0.11", "10.0.0.102", 20011],
    ]);
    expect(await execIn(nodeNs, "ip", ["-4", "neigh", "show", "dev", "se-gw1"])).toContain(
      "169.254.53.1 lladdr 02:5e:9a:00:00:01 PERMANENT",
    );
    const map = (await divertListing(nodeNs)).join("\n");
    for (const ip of ["10.244.1.10", "10.244.1.11", "10.244.1.12"])
      expect(map).toContain(`${ip} . 198.51.100.0-198.51.100.255 : 0x`);

    const again = await dp.apply(plan("via"), { verify: true });
    expect(again).toEqual({ nftChanged: false, routingAdded: 0, routingRemoved: 0, unbound: 3 }); // no pod interfaces in this namespace
    // A fresh agent (a restart) adopts the same state: routes and rules untouched.
    const restarted = await new NodeDataplane(run).apply(plan("via"));
    expect(restarted.routingAdded + restarted.routingRemoved).toBe(0);
    expect(await foreignState()).toBe(before);
  });

  it("a verify after element deltas writes nothing when the kernel holds what they left, and repairs an element swapped behind its back", async () => {
    const dp = new NodeDataplane(run);
    const more = plan("via", 5);
    await dp.apply(plan("via", 3), { verify: true });
    await dp.apply(more); // two pods more: a delta
    expect(await dp.apply(more, { verify: true })).toMatchObject({ nftChanged: false }); // read back, found as written
    // The same number of elements, one of them pointing at the other instance (in the pod's class).
    const e = more.entries[0]!;
    const other = more.instances.find((i) => i.mark !== e.mark)!.mark;
    const key = formatRange(e.dst);
    const map = (await classOfPod(nodeNs, e.podIP))!;
    await execIn(nodeNs, "nft", [
      `delete element ip static_egress ${map} { ${key} }; add element ip static_egress ${map} { ${key} : ${hex(other)} }`,
    ]);
    expect(await dp.apply(more, { verify: true })).toMatchObject({ nftChanged: true });
    const values = (await divertListing(nodeNs)).filter((row) => row.startsWith(`${e.podIP} . `));
    expect(values).toEqual([`${e.podIP} . ${key} : ${hex(divertValue(e))}`]);
    expect(await dp.apply(more, { verify: true })).toMatchObject({ nftChanged: false });
    await dp.cleanup();
  });

  it("a new pod with unchanged routing reads no routing or tunnels back; the next verify does, and repairs a deleted route", async () => {
    const commands: string[] = [];
    const inNode = inNamespace(nodeNs);
    const recording: CommandRunner = {
      run: (cmd, args, o) => (commands.push(`${cmd} ${args.join(" ")}`), inNode.run(cmd, args, o)),
    };
    const dp = new NodeDataplane(commandKernel(recording));
    await dp.apply(plan("via", 3), { verify: true });
    commands.length = 0;
    expect((await dp.apply(plan("via", 4))).nftChanged).toBe(true);
    // Only the pod's interface is looked up (route table main, links); no rules, policy routes or tunnels.
    expect(commands.filter((c) => /rule show|route show table all|type vxlan|nud permanent/.test(c))).toEqual([]);
    expect(commands.filter((c) => c.startsWith("nft"))).toHaveLength(1);
    await execIn(nodeNs, "ip", ["route", "del", "table", "7002", "default"]);
    expect((await dp.apply(plan("via", 4))).routingAdded).toBe(0); // trusted until the next verify
    expect((await dp.apply(plan("via", 4), { verify: true })).routingAdded).toBe(1);
    expect((await readRoutes(run, { from: 7001, to: 11095 })).map((r) => r.table).sort()).toEqual([7001, 7002]);
  });

  it("a dead instance's table becomes a blackhole with one route change", async () => {
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via"));
    const r = await dp.apply(plan("blackhole"));
    expect(r.routingAdded).toBe(1);
    expect(r.routingRemoved).toBe(0);
    const routes = await readRoutes(run, { from: 7001, to: 11095 });
    expect(routes.find((x) => x.table === 7001)).toMatchObject({ kind: "blackhole" });
    expect(routes).toHaveLength(2);
  });

  it("forgets the diverted flows of 1,000 removed pods and of a dead instance in one conntrack batch", async () => {
    // Real conntrack entries: two diverted flows per removed pod, one kept pod's, one undiverted
    // flow of a removed pod (no flag: not ours), and a flow pinned to instance 2 (to be forgotten by its mark).
    const removed = Array.from({ length: 1000 }, (_, i) => formatIPv4(parseIPv4("10.245.0.1") + i));
    const flow = (src: string, sport: number, mark: number) =>
      `-I -s ${src} -d 203.0.113.9 -p udp --sport ${sport} --dport 53 -t 300 --mark ${mark}\n`;
    const batch = [
      ...removed.flatMap((ip) => [flow(ip, 1000, markFor(1)), flow(ip, 1001, markFor(1))]),
      flow("10.244.9.1", 1000, markFor(1)),
      flow(removed[0]!, 2000, 0),
      flow("10.244.9.2", 1000, markFor(2)),
    ].join("");
    await execIn(nodeNs, "conntrack", ["-F"]).catch(() => undefined);
    await inNamespace(nodeNs).run("sh", ["-c", "cat | conntrack -R -"], { input: batch });
    const listed = async () =>
      (await execIn(nodeNs, "conntrack", ["-L", "-p", "udp", "-d", "203.0.113.9"]).catch(() => ""))
        .split("\n")
        .filter((l) => l.includes("src="));
    expect(await listed()).toHaveLength(2003);

    const calls: string[] = [];
    const counting: CommandRunner = {
      run: (command, args, options) => {
        calls.push(`${command} ${args.join(" ")}`);
        return inNamespace(nodeNs).run(command, args, options);
      },
    };
    // 10.244.9.1 is still diverted (kept); the removed pods' range holds no kept address.
    await new NodeDataplane(commandKernel(counting)).forgetFlows({
      podIPs: removed,
      marks: [markFor(2)],
      keep: ["10.244.9.1", "10.245.3.233"],
    });
    expect(calls).toEqual(["sh -c cat | conntrack -R -"]);
    const left = (await listed()).map((l) => /src=(\S+)/.exec(l)?.[1]).sort();
    expect(left).toEqual(["10.244.9.1", removed[0]]);
    await execIn(nodeNs, "conntrack", ["-F"]).catch(() => undefined);
  });

  it("fails over while a large apply is on its way to the kernel: the failover first, then the apply, then the failover again", async () => {
    const calls: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding = false;
    const kernel = commandKernel(inNamespace(nodeNs));
    const nft = kernel.nft.bind(kernel);
    kernel.nft = async (script) => {
      const what = script.startsWith("flush map ip static_egress remap") ? "failover" : "apply";
      if (holding && what === "apply") {
        holding = false;
        calls.push("apply: held");
        await held;
      }
      await nft(script);
      calls.push(`${what}: nft done`);
    };
    const dp = new NodeDataplane(kernel);
    await dp.apply(plan("via", 100), { verify: true });
    calls.length = 0;
    holding = true;
    // 3,000 pods, planned with instance 1 up: a reconcile of many pods in flight.
    const applying = dp.apply(plan("via", 3000));
    while (!calls.includes("apply: held")) await new Promise((r) => setTimeout(r, 5));
    expect(await dp.applyHealth(new Map([["gw/a", "down"]]))).toEqual(["gw/a"]);
    const remapNow = async () => {
      const listed = JSON.parse(await execIn(nodeNs, "nft", ["-j", "list", "map", "ip", "static_egress", "remap"])) as {
        nftables: { map?: { elem?: [number, number][] } }[];
      };
      return new Map(listed.nftables.find((o) => o.map)?.map?.elem ?? []);
    };
    const table7001 = async () => (await readRoutes(run, { from: 7001, to: 7001 }))[0]?.kind;
    // Before the held apply reached the kernel: a's pods take b's mark, a's table is a blackhole.
    const early = await remapNow();
    expect([...early.values()]).toEqual([markFor(2), markFor(2)]);
    expect(await table7001()).toBe("blackhole");
    release();
    await applying;
    expect(calls).toEqual(["apply: held", "failover: nft done", "apply: nft done", "failover: nft done"]);
    expect([...(await remapNow()).values()]).toEqual([markFor(2), markFor(2)]);
    expect(await table7001()).toBe("blackhole");
    // Every divert value of the 3,000 pods has its remap element (none would be dropped or go unmarked).
    const values = new Set((await divertListing(nodeNs)).map((row) => Number(row.split(" : ")[1])));
    expect([...values].sort()).toEqual([...early.keys()].sort());
  });

  it("fails over from the health thread while the agent's thread is held: the kernel holds it before that thread runs again", async () => {
    // BFD on loopback (this process's namespace), the node's kernel in nodeNs. gw/a's far end
    // answers from this thread, which is then held as a long reconcile holds the agent's: it stops
    // answering, gw/a goes down. gw/b's far end runs on a thread of its own and stays up.
    const port = 40_000 + Math.floor(Math.random() * 10_000);
    // 100 ms x 3: detected within the 1.5 s hold, and no flap when a loaded machine delays this thread briefly.
    const timing = { desiredMinTxMs: 100, requiredMinRxMs: 100, detectMultiplier: 3 };
    const farA = new BfdAgent({ localAddress: "127.0.0.3", port });
    const farB = new BfdThread({ localAddress: "127.0.0.4", port });
    const health = new HealthThread({
      localAddress: "127.0.0.2",
      port,
      failover: { table: "static_egress", netns: nodeNs },
    });
    try {
      await Promise.all([farA.start(), farB.start(), health.start()]);
      await farA.addPeer({ peer: "127.0.0.2", ...timing });
      await farB.addPeer({ peer: "127.0.0.2", ...timing });
      const probe = { intervalMs: 100, multiplier: 3, holdDownMs: 500 };
      await health.setInstances([
        { key: "gw/a", address: "127.0.0.3", ...probe },
        { key: "gw/b", address: "127.0.0.4", ...probe },
      ]);
      await waitFor(
        () => health.view().get("gw/a") === "up" && health.view().get("gw/b") === "up",
        10_000,
        "BFD not up",
      );
      const dp = new NodeDataplane(run);
      dp.useHealthPort(health);
      await dp.apply(plan("via", 100), { verify: true });
      await expect(dp.applyHealth(new Map())).rejects.toThrow(/health thread/);
      const kernelNow = () => {
        const nft = (what: string) =>
          JSON.parse(
            execFileSync("ip", ["netns", "exec", nodeNs, "nft", "-j", "list", ...what.split(" ")]).toString(),
          ) as {
            nftables: { map?: { elem?: [number, number][] } }[];
          };
        const remap = nft("map ip static_egress remap").nftables.find((o) => o.map)?.map?.elem ?? [];
        const route = execFileSync("ip", ["netns", "exec", nodeNs, "ip", "route", "show", "table", "7001"]).toString();
        return { remap: remap.map(([, mark]) => mark), route: route.trim() };
      };
      // Both up as the hold begins (the apply's own work on this thread may have delayed gw/a's answers).
      await waitFor(
        () => health.view().get("gw/a") === "up" && kernelNow().remap[0] === markFor(1),
        10_000,
        "gw/a not up before the hold",
      );
      expect(kernelNow().remap).toEqual([markFor(1), markFor(2)]);

      // Held for 1.5 s (planning 10,000 pods, parsing their source); read at once, in the same
      // synchronous stretch: nothing on this thread has run since the hold began.
      const end = Date.now() + 1_500;
      while (Date.now() < end);
      const during = kernelNow();
      expect(during.remap).toEqual([markFor(2), markFor(2)]);
      expect(during.route).toMatch(/^blackhole default/);
      expect(health.view().get("gw/a")).toBe("up"); // this thread's copy of the view: not yet told

      // The verdict arrives; an apply rendered after it keeps the failover.
      await waitFor(() => health.view().get("gw/a") === "down", 5_000, "the verdict did not arrive");
      await dp.apply(plan("via", 101));
      expect(kernelNow().remap).toEqual([markFor(2), markFor(2)]);
      expect(kernelNow().route).toMatch(/^blackhole default/);
    } finally {
      await Promise.all([farA.stop(), farB.stop(), health.stop()]);
      await new NodeDataplane(run).cleanup();
    }
  });

  it("adds one pod to a large set with one element change, not a new table", async () => {
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via", 2000), { verify: true });
    // What the kernel reports while we apply: `nft monitor` prints every committed change.
    const watch = async (change: () => Promise<unknown>): Promise<string> => {
      const monitor = spawn("ip", ["netns", "exec", nodeNs, "nft", "monitor"], { stdio: ["ignore", "pipe", "ignore"] });
      let out = "";
      monitor.stdout.on("data", (b: Buffer) => (out += b.toString()));
      await new Promise((r) => setTimeout(r, 300));
      await change();
      await waitFor(() => out.length > 0, 5_000, "nft monitor saw no change");
      await new Promise((r) => setTimeout(r, 300));
      monitor.kill();
      return out;
    };
    // (nft monitor does not print elements of concatenated interval maps; it does print every
    // transaction as a new generation, and every table it deletes or adds.)
    const transactions = (text: string) => text.match(/^# new generation/gm)?.length ?? 0;
    const events = await watch(() => dp.apply(plan("via", 2001)));
    expect(transactions(events)).toBe(1);
    expect(events).not.toMatch(/table/);
    expect(await divertListing(nodeNs)).toHaveLength(2001);
    // A restarted agent knows nothing it applied: it replaces the whole table (one `nft -f`).
    const replaced = await watch(() => new NodeDataplane(run).apply(plan("via", 2001)));
    expect(replaced).toMatch(/^delete table ip static_egress/m);
    expect(replaced).toMatch(/^add table ip static_egress/m);
  });

  it("reads the kernel back and repairs drift", async () => {
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via"), { verify: true });
    await execIn(nodeNs, "ip", ["rule", "del", "priority", "10099"]);
    await execIn(nodeNs, "ip", ["route", "replace", "default", "via", "10.0.0.99", "table", "7002"]);
    await execIn(nodeNs, "nft", ["delete", "element", "ip", "static_egress", "pod_class", "{ 10.244.1.10 }"]);
    const r = await dp.apply(plan("via"), { verify: true });
    expect(r.nftChanged).toBe(true);
    expect(r.routingAdded).toBe(2);
    expect((await readRules(run, 10000, 10099)).some((x) => x.action === "blackhole")).toBe(true);
    expect((await readRoutes(run, { from: 7001, to: 11095 })).find((x) => x.table === 7002)?.onlinkDev).toBe("se-gw2");
    expect((await divertListing(nodeNs)).join("\n")).toContain("10.244.1.10 . ");
  });

  it("re-creates a deleted tunnel, its neighbour and its route", async () => {
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via"), { verify: true });
    await execIn(nodeNs, "ip", ["link", "del", "se-gw1"]);
    // Without the device its route is gone: the table is empty and the catch-all blackhole drops (fail-closed).
    expect((await readRoutes(run, { from: 7001, to: 11095 })).find((x) => x.table === 7001)).toBeUndefined();
    const r = await dp.apply(plan("via"), { verify: true });
    expect(r.routingAdded).toBe(2); // the device and its route
    expect((await readRoutes(run, { from: 7001, to: 11095 })).find((x) => x.table === 7001)?.onlinkDev).toBe("se-gw1");
    expect(await execIn(nodeNs, "ip", ["-4", "neigh", "show", "dev", "se-gw1"])).toContain("PERMANENT");
  });

  it("removes stale instances after the new ones are in place", async () => {
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via"));
    const onlyB = plan("via");
    onlyB.instances = onlyB.instances.filter((i) => i.key === "gw/b");
    onlyB.entries = onlyB.entries.filter((e) => e.instance === "gw/b");
    const r = await dp.apply(onlyB);
    expect(r.routingRemoved).toBe(4); // the two rules, the route and the tunnel of gw/a
    expect((await readRoutes(run, { from: 7001, to: 11095 })).map((x) => x.table)).toEqual([7002]);
  });

  it("renders a single transaction that replaces the whole table", () => {
    const script = renderNodeTable(plan("via"));
    // declare, delete, re-create: one `nft -f` run, so the kernel commits it all or nothing.
    expect(script.split("\n").slice(0, 3)).toEqual([
      "table ip static_egress",
      "delete table ip static_egress",
      "table ip static_egress {",
    ]);
    expect(script).not.toMatch(/^flush/m);
  });

  it("cleanup removes everything it owns and nothing else", async () => {
    const before = await foreignState();
    const dp = new NodeDataplane(run);
    await dp.apply(plan("via"));
    await dp.cleanup();
    expect(await readRules(run, 10000, 10099)).toEqual([]);
    expect(await readRoutes(run, { from: 7001, to: 11095 })).toEqual([]);
    await expect(execIn(nodeNs, "nft", ["list", "table", "ip", "static_egress"])).rejects.toThrow();
    expect(await execIn(nodeNs, "ip", ["-json", "link", "show", "type", "vxlan"])).toMatch(/^\[\]\s*$/);
    expect(await foreignState()).toBe(before);
    await dp.cleanup(); // idempotent
  });
});

describe("gateway dataplane", () => {
  const gwPlan: GatewayPlan = {
    instance: "gw/a",
    address: "10.0.0.11",
    snat: [
      {
        podIP: "10.244.1.10",
        dst: { from: parseIPv4("0.0.0.0"), to: parseIPv4("255.255.255.255") },
        egressIP: "192.0.2.10",
        policy: "p",
      },
    ],
    returnRoutes: [
      { cidr: "10.244.1.0/24", via: "10.0.0.12", port: 20012 },
      { cidr: "10.244.2.0/24", via: "10.0.0.13", port: 20013 },
    ],
    nodeAddresses: ["10.0.0.12", "10.0.0.13"],
    egressIPs: ["192.0.2.10"],
    egressIPOwners: [{ egressIP: "192.0.2.10", policy: "p" }],
    vni: 1,
    tunnels: [
      { node: "n2", address: "10.0.0.12", port: 20012 },
      { node: "n3", address: "10.0.0.13", port: 20013 },
    ],
    podsByTunnel: [{ port: 20012, podIP: "10.244.1.10" }],
  };

  it("programs SNAT, relay filter and return routes idempotently; cleanup leaves other routes", async () => {
    await execIn(gwNs, "ip", ["route", "add", "10.50.0.0/16", "via", "10.0.0.1"]);
    const dp = new GatewayDataplane(gwRun);
    const first = await dp.apply(gwPlan, { verify: true });
    expect(first.routingAdded).toBe(4); // two tunnels, two return routes through them
    expect(await execIn(gwNs, "ip", ["-4", "route", "show", "10.244.2.0/24"])).toContain(
      "via 169.254.53.2 dev se-nd20013 proto 94 onlink",
    );
    expect(await execIn(gwNs, "sysctl", ["-n", "net.ipv4.ip_forward"])).toBe("1\n");
    const table = await execIn(gwNs, "nft", ["list", "table", "ip", "static_egress_gw"]);
    expect(table).toContain("10.244.1.10 . 0.0.0.0/0 : 192.0.2.10");
    expect(table).toMatch(/forward priority filter - 10; policy drop/);
    expect(await dp.apply(gwPlan, { verify: true })).toEqual({ nftChanged: false, routingAdded: 0, routingRemoved: 0 });
    await dp.cleanup();
    const routes = await execIn(gwNs, "ip", ["-4", "route"]);
    expect(routes).toContain("10.50.0.0/16");
    expect(routes).not.toContain("10.244.1.0/24");
    expect(await execIn(gwNs, "ip", ["-json", "link", "show", "type", "vxlan"])).toMatch(/^\[\]\s*$/);
  });

  it("keeps the route of a node's own replies (node flows, verification probes) through every later apply", async () => {
    // The kernel lists a host route as "10.0.0.12", the plan as "10.0.0.12/32": read as another
    // route, every second apply deleted it after replacing it, and the node's replies went out
    // untunnelled until the next (verification probes failed at random).
    const withNode: GatewayPlan = { ...gwPlan, nodeReturns: [{ address: "10.0.0.12", port: 20012 }] };
    const dp = new GatewayDataplane(gwRun);
    const nodeReply = () => execIn(gwNs, "ip", ["-4", "route", "show", "table", String(NODE_REPLY_TABLE)]);
    try {
      await dp.apply(withNode, { verify: true });
      for (let i = 0; i < 3; i++) {
        expect(await nodeReply(), `after apply ${i + 1}`).toContain("10.0.0.12 via 169.254.53.2 dev se-nd20012 onlink");
        expect(await dp.apply(withNode), `apply ${i + 2}`).toEqual({
          nftChanged: false,
          routingAdded: 0,
          routingRemoved: 0,
        });
      }
    } finally {
      await dp.cleanup();
    }
    expect(await nodeReply()).toBe("");
  });
});
