import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayDataplane } from "../../src/dataplane/gateway.js";
import { commandKernel } from "../../src/dataplane/kernel.js";
import { NodeDataplane } from "../../src/dataplane/node.js";
import { GATEWAY_INNER, NODE_INNER, gatewayTunnelDevice, nodeTunnelDevice } from "../../src/dataplane/tunnel.js";
import { addNamespace, addVethPair, deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { MAX_NODE_ID, markFor, tableFor, tunnelPortFor } from "../../src/planner/ids.js";
import type { GatewayPlan, NodePlan } from "../../src/planner/model.js";
import { inNamespace } from "../../src/util/exec.js";
import { parseCidr } from "../../src/util/ipv4.js";

// A node of a cluster of more than 4,095 nodes has a tunnel port from the lower range (ids
// 4096..8191, ports 20000..15905). Its plan is built directly (the lab's clusters are small):
// node id 8096, port 16000. A gateway admits the node's tunnel on that port from the node's
// address only, and the node admits the gateway's; a host on the VPC with the same port and VNI
// from its own address is dropped by both. Three namespaces on one bridge, in a fourth.
const prefix = newRunPrefix();
const fabric = `${prefix}-tpvpc`;
const gwNs = `${prefix}-tpgw`;
const nodeNs = `${prefix}-tpnode`;
const intruderNs = `${prefix}-tpx`;
const GW_IP = "10.0.0.1";
const NODE_IP = "10.0.0.2";
const INTRUDER_IP = "10.0.0.3";
const NODE_ID = 8096;
const PORT = tunnelPortFor(NODE_ID);
const VNI = 7;
const POD_CIDR = "10.244.9.0/24";
const POD_IP = "10.244.9.10";

const gatewayPlan: GatewayPlan = {
  instance: "gw/a",
  address: GW_IP,
  snat: [{ podIP: POD_IP, dst: parseCidr("203.0.113.0/24"), egressIP: "192.0.2.10", policy: "p" }],
  returnRoutes: [{ cidr: POD_CIDR, via: NODE_IP, port: PORT }],
  nodeAddresses: [NODE_IP],
  egressIPs: ["192.0.2.10"],
  egressIPOwners: [{ egressIP: "192.0.2.10", policy: "p" }],
  vni: VNI,
  tunnels: [{ node: "pool-x-8096", address: NODE_IP, port: PORT }],
  podsByTunnel: [{ port: PORT, podIP: POD_IP }],
};

const nodePlan: NodePlan = {
  node: "pool-x-8096",
  instances: [{ key: "gw/a", address: GW_IP, mark: markFor(VNI), table: tableFor(VNI), route: "via", vni: VNI }],
  entries: [],
  neverDivert: [parseCidr("10.0.0.0/24")],
  unavailable: [],
  podsByPolicy: {},
  tunnel: { address: NODE_IP, port: PORT },
  // The node's own traffic to 198.51.100.0/24 is diverted (a ClusterEgressPolicy nodeSelector).
  nodeEntries: [
    { dst: parseCidr("198.51.100.0/24"), mark: markFor(VNI), policy: "ClusterEgressPolicy/hosts", instance: "gw/a" },
  ],
};

async function packets(ns: string, dev: string, dir: "rx" | "tx"): Promise<number> {
  const [link] = JSON.parse(await execIn(ns, "ip", ["-s", "-j", "link", "show", "dev", dev])) as {
    stats64: Record<"rx" | "tx", { packets: number }>;
  }[];
  return link!.stats64[dir].packets;
}

/** Sends `count` UDP datagrams from `ns` to `dst`:`port` (no `ping` on every machine). */
async function send(ns: string, dst: string, count = 5, port = 9): Promise<void> {
  const script =
    `const s=require("dgram").createSocket("udp4");let n=0;` +
    `const go=()=>s.send("x",${port},process.argv[1],()=>{if(++n<${count})go();else s.close();});go();`;
  await execIn(ns, process.execPath, ["-e", script, dst]);
}

const gateway = new GatewayDataplane(commandKernel(inNamespace(gwNs)));
const node = new NodeDataplane(commandKernel(inNamespace(nodeNs)));

beforeAll(async () => {
  await addNamespace(fabric);
  await execIn(fabric, "ip", ["link", "add", "vpc", "type", "bridge"]);
  await execIn(fabric, "ip", ["link", "set", "vpc", "up"]);
  for (const [ns, address, port] of [
    [gwNs, GW_IP, "gwp"],
    [nodeNs, NODE_IP, "ndp"],
    [intruderNs, INTRUDER_IP, "xp"],
  ] as const) {
    await addNamespace(ns);
    // No IPv6 chatter (router solicitations, MLD) on the tunnels: only the packets sent here.
    for (const scope of ["all", "default"])
      await execIn(ns, "sysctl", ["-qw", `net.ipv6.conf.${scope}.disable_ipv6=1`]);
    await addVethPair({ ns, name: "eth0" }, { ns: fabric, name: port });
    await execIn(fabric, "ip", ["link", "set", port, "master", "vpc", "up"]);
    await execIn(ns, "ip", ["addr", "add", `${address}/24`, "dev", "eth0"]);
    await execIn(ns, "ip", ["link", "set", "eth0", "up"]);
    await execIn(ns, "ip", ["link", "set", "lo", "up"]);
  }
  // A default route for the node's own traffic before it is diverted (never used when it is).
  await execIn(nodeNs, "ip", ["route", "add", "default", "via", "10.0.0.254"]);
  await gateway.apply(gatewayPlan, { verify: true });
  await node.apply(nodePlan, { verify: true });
  // The intruder copies the node's tunnel: same port and VNI, its own address.
  await execIn(intruderNs, "ip", [
    ...["link", "add", "forged", "type", "vxlan", "id", String(VNI), "local", INTRUDER_IP],
    ...["remote", GW_IP, "dstport", String(PORT), "nolearning"],
  ]);
  await execIn(intruderNs, "ip", ["link", "set", "forged", "up"]);
  await execIn(intruderNs, "ip", ["addr", "add", `${NODE_INNER.address}/32`, "dev", "forged"]);
  for (const inner of [GATEWAY_INNER, NODE_INNER])
    await execIn(intruderNs, "ip", [
      "neigh",
      "replace",
      inner.address,
      "lladdr",
      inner.mac,
      "dev",
      "forged",
      "nud",
      "permanent",
    ]);
});

afterAll(async () => {
  await gateway.cleanup().catch(() => undefined);
  await node.cleanup().catch(() => undefined);
  await deleteNamespacesWithPrefix(`${prefix}-`);
});

describe("a node tunnel on a port of the lower range (node id > 4095)", () => {
  it("is planned there: node id 8096 has port 16000, below 20001 (a 4,095-node cluster's range)", () => {
    expect(PORT).toBe(16000);
    expect(NODE_ID).toBeLessThanOrEqual(MAX_NODE_ID);
  });

  it("the gateway admits the node's VXLAN on that port from the node's address", async () => {
    const dev = gatewayTunnelDevice(PORT);
    const before = await packets(gwNs, dev, "rx");
    const drops = await gateway.foreignDrops();
    // Into the node's tunnel toward the gateway's inner next hop (no answer: it has no address).
    await execIn(nodeNs, "ip", [
      "route",
      "replace",
      "192.0.2.99/32",
      "via",
      GATEWAY_INNER.address,
      "dev",
      nodeTunnelDevice(VNI),
      "onlink",
    ]);
    await send(nodeNs, "192.0.2.99");
    expect(await packets(gwNs, dev, "rx")).toBeGreaterThanOrEqual(before + 5);
    expect((await gateway.foreignDrops()).tunnel).toBe(drops.tunnel);
  });

  it("the gateway drops the same port and VNI from another host's address", async () => {
    const dev = gatewayTunnelDevice(PORT);
    const before = await packets(gwNs, dev, "rx");
    const drops = await gateway.foreignDrops();
    await execIn(intruderNs, "ip", [
      "route",
      "replace",
      "192.0.2.99/32",
      "via",
      GATEWAY_INNER.address,
      "dev",
      "forged",
      "onlink",
    ]);
    await send(intruderNs, "192.0.2.99");
    // The forged packets did reach the gateway, on the port of the lower range, and were refused there.
    expect((await gateway.foreignDrops()).tunnel).toBeGreaterThanOrEqual(drops.tunnel + 5);
    // The forged packets were not delivered to the node's device (a stray one of the node's may be).
    expect(await packets(gwNs, dev, "rx")).toBeLessThan(before + 5);
  });

  it("the node admits the gateway's VXLAN on its port, and drops it from another host", async () => {
    const dev = nodeTunnelDevice(VNI);
    const before = await packets(nodeNs, dev, "rx");
    const drops = (await node.drops()).foreignTunnel;
    // The gateway's return route to the node's pods goes through the node's tunnel.
    await send(gwNs, POD_IP);
    expect(await packets(nodeNs, dev, "rx")).toBeGreaterThanOrEqual(before + 5);
    expect((await node.drops()).foreignTunnel).toBe(drops);

    // One VXLAN device per (port, VNI) on a host: the one toward the gateway goes first.
    await execIn(intruderNs, "ip", ["link", "del", "forged"]);
    await execIn(intruderNs, "ip", [
      "link",
      "add",
      "forged2",
      "type",
      "vxlan",
      "id",
      String(VNI),
      "local",
      INTRUDER_IP,
      "remote",
      NODE_IP,
      "dstport",
      String(PORT),
      "nolearning",
    ]);
    await execIn(intruderNs, "ip", ["link", "set", "forged2", "up"]);
    await execIn(intruderNs, "ip", [
      "route",
      "replace",
      "192.0.2.98/32",
      "via",
      NODE_INNER.address,
      "dev",
      "forged2",
      "onlink",
    ]);
    await execIn(intruderNs, "ip", [
      "neigh",
      "replace",
      NODE_INNER.address,
      "lladdr",
      NODE_INNER.mac,
      "dev",
      "forged2",
      "nud",
      "permanent",
    ]);
    const rx = await packets(nodeNs, dev, "rx");
    await send(intruderNs, "192.0.2.98");
    expect((await node.drops()).foreignTunnel).toBeGreaterThanOrEqual(drops + 5);
    expect(await packets(nodeNs, dev, "rx")).toBeLessThan(rx + 5);
  });

  it("the node's own traffic to a policy destination on other nodes' tunnel ports is still diverted", async () => {
    // Only the node's own port is exempt from diverting, not the whole range: 20005 (id 5) and
    // 16001 (id 8095) are other nodes' ports, and could be a policy destination's.
    const dev = nodeTunnelDevice(VNI);
    for (const port of [tunnelPortFor(5), tunnelPortFor(NODE_ID - 1)]) {
      const before = await packets(nodeNs, dev, "tx");
      await send(nodeNs, "198.51.100.7", 5, port);
      expect(await packets(nodeNs, dev, "tx"), `port ${port}`).toBeGreaterThanOrEqual(before + 5);
    }
  });

  it("a reply to a pod's UDP flow whose port is in the tunnel range is still translated back to the pod", async () => {
    // The pod (its address on the node's lo) sends through the tunnel from port 16005 (some other
    // node's tunnel port); the gateway SNATs it to the egress IP keeping the port, and the
    // Internet's reply comes back to 192.0.2.10:16005. Untracked, it would never reach the pod.
    const INTERNET = "203.0.113.7";
    await execIn(nodeNs, "ip", ["addr", "add", `${POD_IP}/32`, "dev", "lo"]);
    await execIn(nodeNs, "ip", [
      ...["route", "replace", `${INTERNET}/32`, "via", GATEWAY_INNER.address],
      ...["dev", nodeTunnelDevice(VNI), "onlink", "src", POD_IP],
    ]);
    await execIn(gwNs, "ip", ["route", "replace", `${INTERNET}/32`, "via", INTRUDER_IP]);
    await execIn(intruderNs, "ip", ["addr", "add", `${INTERNET}/32`, "dev", "lo"]);
    await execIn(intruderNs, "ip", ["route", "replace", "192.0.2.10/32", "via", GW_IP]);
    const echo = spawn("ip", [
      ...["netns", "exec", intruderNs, process.execPath, "-e"],
      `const s=require("dgram").createSocket("udp4");s.on("message",(m,r)=>s.send(m,r.port,r.address));` +
        `s.bind(7,"${INTERNET}",()=>console.log("ready"));`,
    ]);
    try {
      await new Promise((resolve, reject) => {
        echo.stdout.once("data", resolve);
        echo.once("exit", reject);
      });
      const sourcePort = tunnelPortFor(MAX_NODE_ID - 100);
      expect(sourcePort).toBe(16005);
      const client =
        `const s=require("dgram").createSocket("udp4");let got=0;s.on("message",()=>got++);` +
        `s.bind(${sourcePort},"${POD_IP}",()=>{for(let i=0;i<5;i++)s.send("r"+i,7,"${INTERNET}");` +
        `setTimeout(()=>{console.log(got);s.close();},1500);});`;
      const got = Number((await execIn(nodeNs, process.execPath, ["-e", client])).trim());
      expect(got).toBe(5);
    } finally {
      echo.kill();
    }
  });
});
