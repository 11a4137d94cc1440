import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LabConfig } from "../../src/lab/config.js";
import type { Lab } from "../../src/lab/lab.js";
import { waitFor } from "../../src/lab/lab.js";
import { addNamespace, addVethPair, execIn } from "../../src/lab/netns.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { startLab, waitConverged } from "./support.js";

// Attacks on "an egress IP speaks for its own pods and nobody else" (docs/security.md). Each
// one counts, at the lab's Internet (its UDP sink), what got out with the policy's egress IPs.
// node1 runs Debian's ptp plugin, node2 Debian's bridge plugin.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
const METADATA = "169.254.169.254";
const cfg: LabConfig = {
  nodes: [{ name: "node1" }, { name: "node2", cni: "bridge" }],
  gateways: [
    {
      name: "shared",
      // Tenancy: the payments namespace may claim the checkout IPs (docs/security-tenancy.md).
      grants: [
        { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "payments" } }, egressIPs: CHECKOUT_IPS },
      ],
      instances: [
        { name: "gw-a", egressIPs: ["192.0.2.10"] },
        { name: "gw-b", egressIPs: ["192.0.2.20"] },
      ],
      health: { intervalMs: 100, multiplier: 3, holdDownMs: 1500 },
    },
  ],
  pods: [
    { name: "pay-1", namespace: "payments", node: "node1", labels: { app: "checkout" } },
    { name: "web-1", namespace: "web", node: "node1", labels: { app: "frontend" } },
    { name: "pay-2", namespace: "payments", node: "node2", labels: { app: "checkout" } },
    { name: "web-2", namespace: "web", node: "node2", labels: { app: "frontend" } },
  ],
  policies: [
    {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: "checkout", namespace: "payments" },
      // No destinationCIDRs: everything outside the cluster, so link-local would match too.
      spec: { podSelector: { matchLabels: { app: "checkout" } }, gatewayName: "shared", egressIPs: CHECKOUT_IPS },
    },
  ],
};

let lab: Lab;
let seq = 0;

beforeAll(async () => {
  lab = await startLab(cfg);
  await waitConverged(lab, undefined, 30_000);
  await waitFor(() => lab.allInstancesUp(), 15_000, "instances not up");
}, 120_000);

afterAll(async () => {
  await lab?.down();
});

/**
 * Sends `count` UDP datagrams from inside `netns`, bound to `src` (which must be on one of its
 * interfaces), with payload `<tag> <n>`; TTL 255 when asked (as a one-hop BFD peer would).
 */
async function sendUdp(
  netns: string,
  o: { src: string; dst: string; port: number; tag?: string; count?: number; hex?: string; ttl?: number },
): Promise<void> {
  const script = `
    const s = require("node:dgram").createSocket("udp4");
    s.bind({ address: ${JSON.stringify(o.src)} }, () => {
      ${o.ttl ? `s.setTTL(${o.ttl});` : ""}
      let n = 0;
      const t = setInterval(() => {
        const payload = ${o.hex ? `Buffer.from(${JSON.stringify(o.hex)}, "hex")` : `${JSON.stringify(o.tag ?? "")} + " " + n`};
        s.send(payload, ${o.port}, ${JSON.stringify(o.dst)}, () => undefined);
        if (++n >= ${o.count ?? 20}) { clearInterval(t); setTimeout(() => s.close(), 200); }
      }, 20);
    });`;
  await execIn(netns, process.execPath, ["-e", script]);
}

/** Sources the Internet's UDP sink recorded for a tag (after a moment for its batched log). */
async function sinkSources(tag: string): Promise<string[]> {
  await new Promise((r) => setTimeout(r, 600));
  return lab
    .udpRecords()
    .filter((d) => d.payload.startsWith(`${tag} `))
    .map((d) => d.src);
}

const egressIPsIn = (sources: readonly string[]) => sources.filter((s) => CHECKOUT_IPS.includes(s));

function metric(text: string, name: string): number {
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)$`, "m"));
  return m ? Number(m[1]) : 0;
}

const podNs = (ref: string) => lab.findPod(ref).netns;
const podIP = (ref: string) => lab.record.podIPs[ref]!;

describe.each([
  ["ptp (routed veth per pod)", "node1", "payments/pay-1", "web/web-1"],
  ["bridge (one bridge, a port per pod)", "node2", "payments/pay-2", "web/web-2"],
] as const)("same-node spoofing with a %s CNI", (_cni, node, victim, intruder) => {
  it("an unselected pod that takes a selected pod's address never leaves with its egress IP", async () => {
    // Control: the selected pod itself leaves with its policy's IP, so the path works.
    const own = `own-${seq++}`;
    await sendUdp(podNs(victim), {
      src: podIP(victim),
      dst: LAB_NETWORK.echoService,
      port: LAB_NETWORK.udpSinkPort,
      tag: own,
    });
    expect(egressIPsIn(await sinkSources(own)).length).toBeGreaterThan(0);

    const before = metric(await lab.agentMetrics(node), "static_egress_spoofed_dropped_packets");
    const forged = `spoof-${seq++}`;
    await execIn(podNs(intruder), "ip", ["addr", "add", `${podIP(victim)}/32`, "dev", "eth0"]);
    try {
      await sendUdp(podNs(intruder), {
        src: podIP(victim),
        dst: LAB_NETWORK.echoService,
        port: LAB_NETWORK.udpSinkPort,
        tag: forged,
        count: 50,
      });
    } finally {
      await execIn(podNs(intruder), "ip", ["addr", "del", `${podIP(victim)}/32`, "dev", "eth0"]);
    }
    const got = await sinkSources(forged);
    expect(egressIPsIn(got)).toEqual([]);
    // Dropped and counted on the node (the metric node agents export).
    expect(metric(await lab.agentMetrics(node), "static_egress_spoofed_dropped_packets")).toBeGreaterThan(before);
    // The victim is unharmed.
    const after = `own-${seq++}`;
    await sendUdp(podNs(victim), {
      src: podIP(victim),
      dst: LAB_NETWORK.echoService,
      port: LAB_NETWORK.udpSinkPort,
      tag: after,
    });
    expect(egressIPsIn(await sinkSources(after)).length).toBeGreaterThan(0);
  });
});

describe("forged health probes", () => {
  it("a pod sending BFD AdminDown as a gateway (its VPC address, TTL 255) does not make the node fail over", async () => {
    const gwA = lab.topology.gatewayHosts.find((g) => g.name === "gw-a")!;
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    const metrics = await lab.agentMetrics("node1");
    const failovers = metric(metrics, 'static_egress_failovers_total\\{instance="shared/gw-a"\\}');
    const forgedBefore = metric(metrics, "static_egress_forged_health_dropped_packets");
    // RFC 5880 control packet: version 1, diag 7 (administratively down), state AdminDown, Your
    // Discriminator 0 (accepted from the peer's address in that state, so no guessing is needed).
    const adminDown = "27" + "00" + "03" + "18" + "0badf00d" + "00000000" + "000186a0" + "000186a0" + "00000000";
    const web1 = podNs("web/web-1");
    await execIn(web1, "ip", ["addr", "add", `${gwA.vpcIP}/32`, "dev", "eth0"]);
    try {
      await sendUdp(web1, { src: gwA.vpcIP, dst: node1.vpcIP, port: 3784, hex: adminDown, ttl: 255, count: 30 });
    } finally {
      await execIn(web1, "ip", ["addr", "del", `${gwA.vpcIP}/32`, "dev", "eth0"]);
    }
    await new Promise((r) => setTimeout(r, 500));
    const after = await lab.agentMetrics("node1");
    expect(metric(after, 'static_egress_failovers_total\\{instance="shared/gw-a"\\}')).toBe(failovers);
    expect(after).toMatch(/^static_egress_instance_up\{instance="shared\/gw-a"\} 1$/m);
    expect(metric(after, "static_egress_forged_health_dropped_packets")).toBeGreaterThanOrEqual(forgedBefore + 30);
  });
});

describe("never diverted", () => {
  it("the metadata address is reached directly from a selected pod, never through a gateway", async () => {
    await execIn(lab.topology.internet, "ip", ["addr", "add", `${METADATA}/32`, "dev", "lo"]);
    // A capture at each gateway: a counter of packets for the metadata address, before any other hook.
    const capture =
      `table ip se_test_capture {\n  counter metadata { }\n  chain pre { type filter hook prerouting ` +
      `priority -400; policy accept; ip daddr ${METADATA} counter name "metadata"; }\n}\n`;
    for (const g of lab.topology.gatewayHosts) await execIn(g.netns, "nft", ["-f", "-"], capture);
    const tag = `meta-${seq++}`;
    await sendUdp(podNs("payments/pay-1"), {
      src: podIP("payments/pay-1"),
      dst: METADATA,
      port: LAB_NETWORK.udpSinkPort,
      tag,
    });
    const got = await sinkSources(tag);
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    expect(got.length).toBeGreaterThan(0);
    expect(egressIPsIn(got)).toEqual([]);
    expect(new Set(got)).toEqual(new Set([node1.publicIP]));
    for (const g of lab.topology.gatewayHosts) {
      const out = await execIn(g.netns, "nft", ["-j", "list", "counter", "ip", "se_test_capture", "metadata"]);
      const packets = (JSON.parse(out) as { nftables: { counter?: { packets: number } }[] }).nftables.find(
        (e) => e.counter,
      )?.counter?.packets;
      expect(packets, `capture at ${g.name}`).toBe(0);
    }
  });
});

describe("a gateway host with no agent yet", () => {
  it("forwards nothing after a reboot, and nothing but selected pods once its agent runs", async () => {
    const gwA = lab.topology.gatewayHosts.find((g) => g.name === "gw-a")!;
    // A host on the VPC that sends with gw-a's egress IP as source, routed through gw-a: what
    // an open relay would let out under that IP.
    const rogue = `${lab.record.prefix}-rogue`;
    await addNamespace(rogue);
    await addVethPair({ ns: rogue, name: "eth0" }, { ns: lab.topology.fabric, name: "rogue" });
    await execIn(lab.topology.fabric, "ip", ["link", "set", "rogue", "master", "vpc"]);
    await execIn(rogue, "ip", ["addr", "add", "10.0.0.250/24", "dev", "eth0"]);
    await execIn(rogue, "ip", ["addr", "add", `${gwA.egressIPs[0]}/32`, "dev", "eth0"]);
    await execIn(rogue, "ip", ["route", "add", `${LAB_NETWORK.echoService}/32`, "via", gwA.vpcIP]);
    const relay = (tag: string) =>
      sendUdp(rogue, {
        src: gwA.egressIPs[0]!,
        dst: LAB_NETWORK.echoService,
        port: LAB_NETWORK.udpSinkPort,
        tag,
        count: 30,
      });

    await lab.killGateway("gw-a", "reboot");
    const rebooted = `reboot-${seq++}`;
    await relay(rebooted);
    expect(await sinkSources(rebooted)).toEqual([]);
    expect((await execIn(gwA.netns, "sysctl", ["-n", "net.ipv4.ip_forward"])).trim()).toBe("0");
    // Nothing of the agent survives, its tunnel devices neither (they come back with the agent).
    expect(JSON.parse((await execIn(gwA.netns, "ip", ["-json", "link", "show", "type", "vxlan"])) || "[]")).toEqual([]);

    // Agents start (as at the end of boot): the filter first, then forwarding. The rogue keeps
    // sending meanwhile; it never gets out.
    const starting = `starting-${seq++}`;
    const during = relay(starting);
    await lab.reviveGateway("gw-a");
    await during;
    await waitFor(
      async () => (await execIn(gwA.netns, "sysctl", ["-n", "net.ipv4.ip_forward"])).trim() === "1",
      15_000,
      "gw-a's agent did not turn forwarding on",
    );
    const running = `running-${seq++}`;
    await relay(running);
    expect([...(await sinkSources(starting)), ...(await sinkSources(running))]).toEqual([]);
    // And it does forward what it should: the selected pods converge on both instances again.
    await waitConverged(lab, undefined, 30_000);
  });
});
