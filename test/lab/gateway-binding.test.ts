import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LAB_METRICS_PORT, type Lab } from "../../src/lab/lab.js";
import { addNamespace, addVethPair, admitVpcSource, execIn } from "../../src/lab/netns.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { runCommand } from "../../src/util/exec.js";
import {
  GATEWAY_INNER,
  gatewayTunnelDevice,
  nodeTunnelDevice,
  NODE_INNER,
  TUNNEL_MTU,
} from "../../src/dataplane/tunnel.js";
import { exampleLabConfig, startLab, waitConverged } from "./support.js";

// Issue #9, outcome 2: a gateway forwards a pod's packet only from the node that runs that pod.
// Three attackers try to leave with payments/pay-1's egress IP (pay-1 runs on node1):
// (a) a host on the VPC that is not a node, (b) node2 (a compromised node), (c) a host on the
// VPC sending VXLAN from its own address with node1's tunnel port. The lab's Internet records
// the source of every datagram it receives on its UDP sink: nothing may arrive with an egress
// IP of a selected policy. The VPC here does NOT drop foreign sources (anti-spoofing off): the
// gateway's own checks must stop (a) and (b); (c) uses its real address, as it could in a cloud.
const SELECTED_EGRESS_IPS = ["192.0.2.10", "192.0.2.20", "192.0.2.11", "192.0.2.21"];
const FORGED_TABLE = "250";

let lab: Lab;
let intruder: string;
const INTRUDER_IP = "10.0.0.66";

beforeAll(async () => {
  const cfg = exampleLabConfig();
  cfg.vpc = { antiSpoofing: false };
  lab = await startLab(cfg);
  await waitConverged(lab);
  // A host on the VPC that is not a node (a stray VM in the same VPC).
  intruder = `${lab.record.prefix}-intruder`;
  await addNamespace(intruder);
  await addVethPair({ ns: intruder, name: "eth0" }, { ns: lab.topology.fabric, name: "intrv" });
  await runCommand("ip", ["-n", lab.topology.fabric, "link", "set", "intrv", "master", "vpc"]);
  await admitVpcSource(lab.topology.fabric, "intrv", INTRUDER_IP);
  await execIn(intruder, "ip", ["addr", "add", `${INTRUDER_IP}/24`, "dev", "eth0"]);
  await execIn(intruder, "ip", ["link", "set", "lo", "up"]);
});

afterAll(async () => {
  await lab?.down();
});

function podIP(ref: string): string {
  return lab.record.podIPs[ref]!;
}

function gateway(name: string) {
  return lab.topology.gatewayHosts.find((g) => g.name === name)!;
}

/**
 * Sends `count` datagrams to the Internet's UDP sink from `src`, an address the sender makes its
 * own for the attack (on lo), routed by `route` (an `ip route` in a table of the attacker's).
 */
async function sendForged(
  netns: string,
  src: string,
  dst: string,
  tag: string,
  routeArgs: string[],
  count = 50,
): Promise<void> {
  await execIn(netns, "ip", ["addr", "add", `${src}/32`, "dev", "lo"]);
  await execIn(netns, "ip", ["route", "replace", `${dst}/32`, ...routeArgs, "table", FORGED_TABLE]);
  await execIn(netns, "ip", ["rule", "add", "priority", "100", "from", `${src}/32`, "lookup", FORGED_TABLE]);
  try {
    const script =
      `const s=require("dgram").createSocket("udp4");` +
      `s.bind({address:process.argv[1]},async()=>{for(let ` +
      `i=0;i<${count};i++){s.send("${tag} "+i,${LAB_NETWORK.udpSinkPort},process.argv[2]);await new ` +
      `Promise(r=>setTimeout(r,5));}setTimeout(()=>s.close(),200);});`;
    await execIn(netns, process.execPath, ["-e", script, src, dst]);
  } finally {
    await execIn(netns, "ip", ["rule", "del", "priority", "100", "from", `${src}/32`, "lookup", FORGED_TABLE]).catch(
      () => undefined,
    );
    await execIn(netns, "ip", ["route", "flush", "table", FORGED_TABLE]).catch(() => undefined);
    await execIn(netns, "ip", ["addr", "del", `${src}/32`, "dev", "lo"]).catch(() => undefined);
  }
  // What was sent has had time to cross the lab (or to be dropped).
  await new Promise((r) => setTimeout(r, 500));
}

/** Datagrams of this attack that the Internet received with a selected policy's egress IP. */
function gotOut(tag: string): { src: string }[] {
  return lab.udpRecords().filter((d) => d.payload.startsWith(`${tag} `) && SELECTED_EGRESS_IPS.includes(d.src));
}

describe("a gateway forwards a pod's packet only from the node that runs the pod", () => {
  it("(a) a host on the VPC that is not a node cannot leave with a pod's egress IP", async () => {
    const pay1 = podIP("payments/pay-1");
    for (const gw of ["gw-a", "gw-b"]) {
      const tag = `attack-a-${gw}`;
      await sendForged(intruder, pay1, LAB_NETWORK.echoService, tag, ["via", gateway(gw).vpcIP, "dev", "eth0"]);
      expect(gotOut(tag)).toEqual([]);
    }
  });

  it("(b) another node cannot leave with a pod of node1's egress IP", async () => {
    const node2 = lab.topology.nodes.find((n) => n.name === "node2")!;
    const pay1 = podIP("payments/pay-1");
    for (const gw of ["gw-a", "gw-b"]) {
      // Plainly routed across the VPC to the gateway's address.
      const tag = `attack-b-vpc-${gw}`;
      await sendForged(node2.netns, pay1, LAB_NETWORK.echoService, tag, ["via", gateway(gw).vpcIP, "dev", "eth0"]);
      expect(gotOut(tag)).toEqual([]);
    }
    const drops = await foreignDrops("gw-a");
    // Through node2's own tunnel to the gateway: the tunnel is node2's, the address is not.
    for (const gw of ["gw-a", "gw-b"]) {
      const tag = `attack-b-tunnel-${gw}`;
      const vni = await instanceVni(node2.netns, gateway(gw).vpcIP);
      await sendForged(node2.netns, pay1, LAB_NETWORK.echoService, tag, [
        "via",
        GATEWAY_INNER.address,
        "dev",
        nodeTunnelDevice(vni),
        "onlink",
      ]);
      expect(gotOut(tag)).toEqual([]);
    }
    // The packets did reach the gateway through node2's tunnel, and its binding check refused them.
    expect((await foreignDrops("gw-a")).pod_source).toBeGreaterThanOrEqual(drops.pod_source + 50);
  });

  it("(c) a host on the VPC cannot send VXLAN on node1's tunnel port from its own address", async () => {
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    const pay1 = podIP("payments/pay-1");
    for (const gw of ["gw-a", "gw-b"]) {
      // Node1's tunnel to this instance, copied: same VNI, same port, only the outer source differs.
      const vni = await instanceVni(node1.netns, gateway(gw).vpcIP);
      const port = await tunnelPort(node1.netns, nodeTunnelDevice(vni));
      const dev = `x${gw}`;
      await execIn(intruder, "ip", [
        "link",
        "add",
        dev,
        "address",
        NODE_INNER.mac,
        "mtu",
        String(TUNNEL_MTU),
        "type",
        "vxlan",
        "id",
        String(vni),
        "local",
        INTRUDER_IP,
        "remote",
        gateway(gw).vpcIP,
        "dstport",
        String(port),
        "nolearning",
      ]);
      await execIn(intruder, "ip", ["link", "set", dev, "up"]);
      await execIn(intruder, "ip", [
        "neigh",
        "replace",
        GATEWAY_INNER.address,
        "lladdr",
        GATEWAY_INNER.mac,
        "dev",
        dev,
        "nud",
        "permanent",
      ]);
      const before = await foreignDrops(gw);
      const tag = `attack-c-${gw}`;
      await sendForged(intruder, pay1, LAB_NETWORK.echoService, tag, [
        "via",
        GATEWAY_INNER.address,
        "dev",
        dev,
        "onlink",
      ]);
      expect(gotOut(tag)).toEqual([]);
      expect((await foreignDrops(gw)).tunnel).toBeGreaterThanOrEqual(before.tunnel + 50);
      // The gateway does have node1's tunnel on that port: the outer source is what refused the packets.
      expect(await execIn(gateway(gw).netns, "ip", ["-d", "link", "show", gatewayTunnelDevice(port)])).toContain(
        `remote ${node1.vpcIP}`,
      );
    }
  });
});

describe("a node admits VXLAN only from its gateway instances", () => {
  it("(d) a host on the VPC cannot inject packets into node1's tunnels from its own address", async () => {
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    const pay1 = lab.findPod("payments/pay-1");
    const pay1IP = podIP("payments/pay-1");
    const DPORT = 40999;
    // What pay-1 receives on that port (counted in pay-1's own namespace).
    await execIn(
      pay1.netns,
      "nft",
      ["-f", "-"],
      `table ip se_test_inject {\n  counter got {\n  }\n  chain in {\n    type filter hook input ` +
        `priority filter; policy accept;\n    udp dport ${DPORT} counter name "got"\n  }\n}\n`,
    );
    for (const gw of ["gw-a", "gw-b"]) {
      // A forged "reply from the Internet" into node1's tunnel from this instance: its VNI and
      // node1's port, with the intruder's own outer source address.
      const vni = await instanceVni(node1.netns, gateway(gw).vpcIP);
      const port = await tunnelPort(node1.netns, nodeTunnelDevice(vni));
      const dev = `y${gw}`;
      // Test (c)'s device to the gateway holds the same VNI and port on the intruder: gone first.
      await execIn(intruder, "ip", ["link", "del", `x${gw}`]).catch(() => undefined);
      await execIn(intruder, "ip", [
        "link",
        "add",
        dev,
        "address",
        GATEWAY_INNER.mac,
        "mtu",
        String(TUNNEL_MTU),
        "type",
        "vxlan",
        "id",
        String(vni),
        "local",
        INTRUDER_IP,
        "remote",
        node1.vpcIP,
        "dstport",
        String(port),
        "nolearning",
      ]);
      await execIn(intruder, "ip", ["link", "set", dev, "up"]);
      await execIn(intruder, "ip", [
        "neigh",
        "replace",
        NODE_INNER.address,
        "lladdr",
        NODE_INNER.mac,
        "dev",
        dev,
        "nud",
        "permanent",
      ]);
      const before = await nodeForeignTunnelDrops();
      const src = LAB_NETWORK.echoService;
      await execIn(intruder, "ip", ["addr", "add", `${src}/32`, "dev", "lo"]);
      try {
        const script =
          `const s=require("dgram").createSocket("udp4");` +
          `s.bind({address:process.argv[1]},async()=>{for(let ` +
          `i=0;i<50;i++){s.send("inject "+i,${DPORT},process.argv[2]);await new ` +
          `Promise(r=>setTimeout(r,5));}setTimeout(()=>s.close(),200);});`;
        await execIn(intruder, "ip", [
          "route",
          "replace",
          `${pay1IP}/32`,
          "via",
          NODE_INNER.address,
          "dev",
          dev,
          "onlink",
          "table",
          FORGED_TABLE,
        ]);
        await execIn(intruder, "ip", ["rule", "add", "priority", "100", "from", `${src}/32`, "lookup", FORGED_TABLE]);
        await execIn(intruder, process.execPath, ["-e", script, src, pay1IP]);
      } finally {
        await execIn(intruder, "ip", [
          "rule",
          "del",
          "priority",
          "100",
          "from",
          `${src}/32`,
          "lookup",
          FORGED_TABLE,
        ]).catch(() => undefined);
        await execIn(intruder, "ip", ["route", "flush", "table", FORGED_TABLE]).catch(() => undefined);
        await execIn(intruder, "ip", ["addr", "del", `${src}/32`, "dev", "lo"]).catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 500));
      const got = JSON.parse(
        await execIn(pay1.netns, "nft", ["-j", "list", "counter", "ip", "se_test_inject", "got"]),
      ) as { nftables: { counter?: { packets: number } }[] };
      expect(got.nftables.find((e) => e.counter)?.counter?.packets, `injected via ${gw}'s VNI`).toBe(0);
      // They reached node1 on its tunnel port, and its check refused them.
      expect(await nodeForeignTunnelDrops()).toBeGreaterThanOrEqual(before + 50);
      await execIn(intruder, "ip", ["link", "del", dev]);
    }
  });
});

/** node1's count of refused tunnel packets, as its agent exports it. */
async function nodeForeignTunnelDrops(): Promise<number> {
  const text = await lab.agentMetrics("node1");
  return Number(/^static_egress_node_foreign_tunnel_dropped_packets (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** The VNI of `netns`'s tunnel to the instance at `address` (its id). */
async function instanceVni(netns: string, address: string): Promise<number> {
  const links = JSON.parse(await execIn(netns, "ip", ["-d", "-json", "link", "show", "type", "vxlan"])) as {
    linkinfo: { info_data: { id: number; remote: string } };
  }[];
  const link = links.find((l) => l.linkinfo.info_data.remote === address);
  if (!link) throw new Error(`no tunnel to ${address} in ${netns}`);
  return link.linkinfo.info_data.id;
}

async function tunnelPort(netns: string, dev: string): Promise<number> {
  const [link] = JSON.parse(await execIn(netns, "ip", ["-d", "-json", "link", "show", dev])) as {
    linkinfo: { info_data: { port: number } };
  }[];
  return link!.linkinfo.info_data.port;
}

/** The gateway's refusal counters, as its agent exports them. */
async function foreignDrops(gw: string): Promise<{ tunnel: number; pod_source: number }> {
  const text = await execIn(gateway(gw).netns, "curl", [
    "-s",
    "-m",
    "2",
    `http://127.0.0.1:${LAB_METRICS_PORT}/metrics`,
  ]);
  const value = (check: string) =>
    Number(
      new RegExp(`^static_egress_gateway_foreign_dropped_packets\\{check="${check}"\\} (\\d+)`, "m").exec(text)?.[1] ??
        NaN,
    );
  return { tunnel: value("tunnel"), pod_source: value("pod_source") };
}
