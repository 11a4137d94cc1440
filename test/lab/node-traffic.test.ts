import { spawn, spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "../../src/lab/config.js";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import { Lab, LAB_METRICS_PORT, waitFor } from "../../src/lab/lab.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { analyzeStream, startUdpStreamIn } from "../../src/lab/traffic.js";
import { GATEWAY_INNER, nodeTunnelDevice } from "../../src/dataplane/tunnel.js";

// Issue #13, outcome 3 (docs/static-routes.md, "Node traffic through an EgressGateway"): a
// ClusterEgressPolicy with a nodeSelector sends the selected node's own traffic (its namespace:
// what hostNetwork pods share) to listed destinations through the gateway's tunnel, SNATed to the
// policy's egress IPs; fail-closed; another node cannot borrow it; deleting it restores all.
let lab: Lab;
const ECHO = LAB_NETWORK.echoService;
const OTHER = LAB_NETWORK.otherService;
const EGRESS_IPS = ["192.0.2.10", "192.0.2.20"];
const FORGED_TABLE = "250";

const policy = {
  apiVersion: "staticegress.io/v1alpha1",
  kind: "ClusterEgressPolicy",
  metadata: { name: "hosts" },
  spec: {
    nodeSelector: { matchLabels: { egress: "gateway" } },
    gatewayName: "shared",
    egressIPs: EGRESS_IPS,
    destinationCIDRs: [`${ECHO}/32`],
  },
};

function kubectl(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(k8sBinary("kubectl"), ["--kubeconfig", lab.kubeconfigPath, ...args], { input, encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function host(name: string) {
  return [...lab.topology.nodes, ...lab.topology.gatewayHosts].find((h) => h.name === name)!;
}

/** The source address the echo service saw, for an HTTP request from a node's own namespace (= hostNetwork). */
async function sourceSeen(node: string, target: string): Promise<string> {
  const out = await execIn(host(node).netns, "curl", ["-s", "--max-time", "3", `http://${target}/`]).catch(() => "");
  return (out.match(/\d+\.\d+\.\d+\.\d+/) ?? [""])[0];
}

/** Routes, rules and our nft tables of a host, counters left out (they only count). */
async function datapath(name: string): Promise<string> {
  const ns = host(name).netns;
  const table = host(name).role === "node" ? "static_egress" : "static_egress_gw";
  const nft = (await execIn(ns, "nft", ["list", "table", "ip", table])).replace(/packets \d+ bytes \d+/g, "");
  return JSON.stringify({
    routes: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "route", "show", "table", "all"])) as unknown,
    rules: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "rule", "show"])) as unknown,
    nft,
  });
}

async function failClosedDrops(node: string): Promise<number> {
  const out = JSON.parse(
    await execIn(host(node).netns, "nft", ["-j", "list", "counter", "ip", "static_egress", "failclosed_drops"]),
  ) as { nftables: { counter?: { packets: number } }[] };
  return out.nftables.find((e) => e.counter)?.counter?.packets ?? NaN;
}

async function foreignSourceDrops(gw: string): Promise<number> {
  const text = await execIn(host(gw).netns, "curl", ["-s", "-m", "2", `http://127.0.0.1:${LAB_METRICS_PORT}/metrics`]);
  return Number(/^static_egress_gateway_foreign_dropped_packets\{check="pod_source"\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

const HOSTS = ["node1", "node2", "gw-a", "gw-b"];
const before = new Map<string, string>();

beforeAll(async () => {
  const cfg = parseLabConfig(
    stringify({
      nodes: [{ name: "node1", labels: { egress: "gateway" } }, { name: "node2" }],
      gateways: [
        {
          name: "shared",
          instances: [
            { name: "gw-a", egressIPs: [EGRESS_IPS[0]] },
            { name: "gw-b", egressIPs: [EGRESS_IPS[1]] },
          ],
        },
      ],
      pods: [],
    }),
    "node-traffic lab",
  );
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  for (const n of ["node1", "node2"]) {
    await waitFor(
      async () => (await execIn(host(n).netns, "ip", ["rule", "show"])).includes("10099:"),
      30_000,
      `node agent on ${n} did not program`,
    );
  }
  await waitFor(() => lab.allInstancesUp(), 30_000, "instances not up");
  for (const h of HOSTS) before.set(h, await datapath(h));
}, 240_000);

afterAll(async () => {
  await lab?.down();
});

describe("node traffic through an EgressGateway (ClusterEgressPolicy nodeSelector)", () => {
  it("sends the selected node's own traffic to listed destinations with an egress IP, everything else as before", async () => {
    const r = kubectl(["apply", "-f", "-"], stringify(policy));
    expect(r.status, r.stderr).toBe(0);
    await waitFor(
      async () => EGRESS_IPS.includes(await sourceSeen("node1", ECHO)),
      20_000,
      "node1 does not leave with an egress IP",
    );
    expect(await sourceSeen("node1", OTHER)).toBe(host("node1").publicIP);
    expect(await sourceSeen("node2", ECHO)).toBe(host("node2").publicIP);
    // Counted at the Internet host: every datagram to the listed destination with an egress IP.
    lab.clearUdpRecords();
    await Promise.all([
      startUdpStreamIn(host("node1").netns, "listed", 1_000, 5, ECHO),
      startUdpStreamIn(host("node1").netns, "other", 1_000, 5, OTHER),
    ]);
    await new Promise((r) => setTimeout(r, 300));
    const listed = analyzeStream(lab, "listed", EGRESS_IPS);
    const other = analyzeStream(lab, "other", [host("node1").publicIP]);
    expect(listed.received).toBeGreaterThan(50);
    expect(listed.wrongSource).toEqual([]);
    expect(other.received).toBeGreaterThan(50);
    expect(other.wrongSource).toEqual([]);
  });

  it("fails over under a stream from the node with no datagram of a wrong source; with every instance down nothing leaves", async () => {
    try {
      lab.clearUdpRecords();
      const stream = startUdpStreamIn(host("node1").netns, "failover", 8_000, 2, ECHO);
      await waitFor(() => analyzeStream(lab, "failover", EGRESS_IPS).received > 20, 20_000, "the stream did not start");
      const first = Object.keys(analyzeStream(lab, "failover", EGRESS_IPS).sources)[0]!;
      const carrying = first === EGRESS_IPS[0] ? "gw-a" : "gw-b";
      const survivor = carrying === "gw-a" ? "gw-b" : "gw-a";
      await lab.killGateway(carrying, "silent");
      await stream;
      await new Promise((r) => setTimeout(r, 300));
      const report = analyzeStream(lab, "failover", EGRESS_IPS);
      console.log(
        `node traffic failover: longest gap ${report.longestGapMs} ms (${report.lost} datagrams lost), sources ${JSON.stringify(report.sources)}`,
      );
      expect(report.wrongSource).toEqual([]);
      expect(report.lastSource).toBe(survivor === "gw-a" ? EGRESS_IPS[0] : EGRESS_IPS[1]);
      expect(report.sources[first]).toBeGreaterThan(0);

      // Every instance down: dropped at the node and counted, never out with the node's IP.
      const drops = await failClosedDrops("node1");
      lab.clearUdpRecords();
      const dead = startUdpStreamIn(host("node1").netns, "dead", 6_000, 2, ECHO);
      await waitFor(() => analyzeStream(lab, "dead", EGRESS_IPS).received > 20, 20_000, "the stream did not start");
      await lab.killGateway(survivor, "silent");
      await dead;
      await new Promise((r) => setTimeout(r, 300));
      const deadReport = analyzeStream(lab, "dead", EGRESS_IPS);
      expect(deadReport.wrongSource).toEqual([]);
      // Once both are judged down: nothing at all arrives.
      lab.clearUdpRecords();
      await startUdpStreamIn(host("node1").netns, "none", 1_000, 5, ECHO);
      await new Promise((r) => setTimeout(r, 300));
      expect(analyzeStream(lab, "none", []).received).toBe(0);
      expect(await failClosedDrops("node1")).toBeGreaterThan(drops);
    } finally {
      for (const gw of ["gw-a", "gw-b"]) if (lab.record.dead?.[gw]) await lab.reviveGateway(gw);
    }
    await waitFor(
      async () => EGRESS_IPS.includes(await sourceSeen("node1", ECHO)),
      30_000,
      "node1 does not leave with an egress IP again",
    );
  });

  it("another node forging the selected node's address, through its own tunnel or across the VPC, gets nothing out with an egress IP", async () => {
    const node2 = host("node2");
    const node1IP = host("node1").vpcIP;
    // The forged address on node2's lo must not make node2 answer ARP for it on the VPC.
    await execIn(node2.netns, "sysctl", ["-q", "-w", "net.ipv4.conf.all.arp_ignore=1"]);
    await execIn(node2.netns, "ip", ["addr", "add", `${node1IP}/32`, "dev", "lo"]);
    try {
      for (const gw of ["gw-a", "gw-b"]) {
        const dropsBefore = await foreignSourceDrops(gw);
        const vni = await instanceVni(node2.netns, host(gw).vpcIP);
        const viaTunnel = await sendForged(node2.netns, node1IP, `attack-tunnel-${gw}`, [
          "via",
          GATEWAY_INNER.address,
          "dev",
          nodeTunnelDevice(vni),
          "onlink",
        ]);
        expect(viaTunnel).toEqual([]);
        // They reached the gateway through node2's tunnel, and its binding check refused them.
        expect(await foreignSourceDrops(gw)).toBeGreaterThanOrEqual(dropsBefore + 50);
        expect(
          await sendForged(node2.netns, node1IP, `attack-vpc-${gw}`, ["via", host(gw).vpcIP, "dev", "eth0"]),
        ).toEqual([]);
      }
    } finally {
      await execIn(node2.netns, "ip", ["addr", "del", `${node1IP}/32`, "dev", "lo"]).catch(() => undefined);
      await execIn(node2.netns, "sysctl", ["-q", "-w", "net.ipv4.conf.all.arp_ignore=0"]);
    }
  });

  it("with every destination (0.0.0.0/0) the node keeps its API server, its VPC, its probes and its tunnels", async () => {
    const everything = { ...policy, spec: { ...policy.spec, destinationCIDRs: undefined } };
    expect(kubectl(["apply", "-f", "-"], stringify(everything)).status).toBe(0);
    await waitFor(
      async () => EGRESS_IPS.includes(await sourceSeen("node1", OTHER)),
      20_000,
      "node1's traffic to another destination is not diverted",
    );
    // BFD and the tunnels' own packets are not caught: the instances stay up and traffic keeps flowing.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await lab.allInstancesUp()).toBe(true);
    // One probe may be lost while the node's tables settle; the listed destination must answer through the gateway within seconds.
    await waitFor(
      async () => EGRESS_IPS.includes(await sourceSeen("node1", ECHO)),
      10_000,
      "node1's traffic to the listed destination no longer leaves through the gateway",
    );
    // The VPC is reached directly: node2 sees node1's own VPC address (through a gateway it would see an egress IP, or nothing).
    expect(await vpcSourceSeen("node1", "node2")).toBe(host("node1").vpcIP);
    // The node agent still hears the API server: narrowing the policy takes effect on node1.
    expect(kubectl(["apply", "-f", "-"], stringify(policy)).status).toBe(0);
    await waitFor(
      async () => (await sourceSeen("node1", OTHER)) === host("node1").publicIP,
      20_000,
      "node1 did not see the policy change",
    );
    expect(EGRESS_IPS).toContain(await sourceSeen("node1", ECHO));
  });

  it("deleting the policy restores every node's and gateway's routes, rules and nft table exactly", async () => {
    expect(kubectl(["delete", "clusteregresspolicy", "hosts"]).status).toBe(0);
    await waitFor(
      async () => (await sourceSeen("node1", ECHO)) === host("node1").publicIP,
      20_000,
      "node1 still diverted",
    );
    for (const h of HOSTS)
      await waitFor(async () => (await datapath(h)) === before.get(h), 20_000, `${h}'s datapath not restored`).catch(
        async (e: Error) => {
          expect(await datapath(h), e.message).toBe(before.get(h));
        },
      );
  });
});

/** The source `to` sees for a TCP connection from `from` to its VPC address (a one-shot server in `to`'s namespace). */
async function vpcSourceSeen(from: string, to: string): Promise<string> {
  const addr = host(to).vpcIP;
  const server = spawn(
    "ip",
    [
      "netns",
      "exec",
      host(to).netns,
      process.execPath,
      "-e",
      `const s=require("net").createServer((c)=>{c.end(c.remoteAddress);s.close();}).listen(18080,"${addr}");setTimeout(()=>process.exit(0),10000);`,
    ],
    { stdio: "ignore" },
  );
  try {
    await new Promise((r) => setTimeout(r, 1_000));
    const client =
      `const c=require("net").connect(18080,"${addr}");let d="";c.on("data",(b)=>d+=b);` +
      `c.on("end",()=>console.log(d));c.on("error",()=>process.exit(1));`;
    return (await execIn(host(from).netns, process.execPath, ["-e", client]).catch(() => "")).trim();
  } finally {
    server.kill();
  }
}

/** Datagrams (tag) sent from `src` through `routeArgs`, and those the Internet got with an egress IP. */
async function sendForged(
  netns: string,
  src: string,
  tag: string,
  routeArgs: string[],
  count = 50,
): Promise<{ src: string }[]> {
  await execIn(netns, "ip", ["route", "replace", `${ECHO}/32`, ...routeArgs, "table", FORGED_TABLE]);
  await execIn(netns, "ip", ["rule", "add", "priority", "100", "from", `${src}/32`, "lookup", FORGED_TABLE]);
  try {
    const script =
      `const s=require("dgram").createSocket("udp4");` +
      `s.bind({address:process.argv[1]},async()=>{for(let i=0;i<${count};i++){` +
      `s.send("${tag} "+i,${LAB_NETWORK.udpSinkPort},process.argv[2]);await new Promise(r=>setTimeout(r,5));}` +
      `setTimeout(()=>s.close(),200);});`;
    await execIn(netns, process.execPath, ["-e", script, src, ECHO]);
  } finally {
    await execIn(netns, "ip", ["rule", "del", "priority", "100", "from", `${src}/32`, "lookup", FORGED_TABLE]).catch(
      () => undefined,
    );
    await execIn(netns, "ip", ["route", "flush", "table", FORGED_TABLE]).catch(() => undefined);
  }
  await new Promise((r) => setTimeout(r, 500));
  return lab.udpRecords().filter((d) => d.payload.startsWith(`${tag} `) && EGRESS_IPS.includes(d.src));
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
