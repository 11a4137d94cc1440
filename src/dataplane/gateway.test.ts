import { describe, expect, it } from "vitest";
import type { GatewayPlan } from "../planner/model.js";
import { parseIPv4 } from "../util/ipv4.js";
import type { CommandRunner } from "../util/exec.js";
import { commandKernel } from "./kernel.js";
import {
  ANCHOR_MARK,
  ANCHOR_TABLE,
  GatewayDataplane,
  gatewayRoutes,
  gatewayRules,
  gatewayTableModel,
  gatewayTunnels,
  GATEWAY_TABLE,
  NODE_REPLY_MARK,
  NODE_REPLY_TABLE,
} from "./gateway.js";
import { renderFull } from "./nft.js";

const plan: GatewayPlan = {
  instance: "cloud/gw-0",
  address: "10.0.0.150",
  snat: [
    {
      podIP: "10.244.1.2",
      dst: { from: parseIPv4("198.51.100.0"), to: parseIPv4("198.51.100.255") },
      egressIP: "192.0.2.30",
      policy: "EgressPolicy/payments/checkout",
    },
  ],
  returnRoutes: [{ cidr: "10.244.1.0/24", via: "10.0.0.11", port: 20007 }],
  nodeAddresses: ["10.0.0.11", "10.0.0.12"],
  egressIPs: ["192.0.2.30"],
  egressIPOwners: [{ egressIP: "192.0.2.30", policy: "EgressPolicy/payments/checkout" }],
  vni: 42,
  tunnels: [
    { node: "node1", address: "10.0.0.11", port: 20007 },
    { node: "node2", address: "10.0.0.12", port: 20950 },
  ],
  podsByTunnel: [{ port: 20007, podIP: "10.244.1.2" }],
};
const base = { table: GATEWAY_TABLE, routeProto: 94, healthPort: 3784 };
const snatElements = (o: Parameters<typeof gatewayTableModel>[1]) =>
  gatewayTableModel(plan, o).sets.find((s) => s.name === "egress_snat")!.elements;

describe("gateway datapath model", () => {
  it("SNATs each selected (pod, destination) to its policy's egress IP, with no anchor route", () => {
    expect(snatElements(base)).toEqual(["10.244.1.2 . 198.51.100.0-198.51.100.255 : 192.0.2.30"]);
    expect(gatewayTableModel(plan, base).chains).not.toContain("mark_for_anchor");
    expect(gatewayRules(base)).toEqual([]);
    // Replies go back through the node's tunnel (its inner next hop), never plainly across the VPC.
    expect(gatewayRoutes(plan, base)).toEqual([
      { table: "main", dst: "10.244.1.0/24", kind: "via", via: "169.254.53.2", onlinkDev: "se-nd20007", proto: 94 },
    ]);
  });

  it("behind DigitalOcean's anchor NAT: SNAT to the anchor IP, marked traffic routed via the anchor gateway", () => {
    const o = { ...base, anchor: { address: "10.20.0.5", gateway: "10.20.0.1" } };
    expect(snatElements(o)).toEqual(["10.244.1.2 . 198.51.100.0-198.51.100.255 : 10.20.0.5"]);
    // Only the forwarded selected flows are marked (replies and the host's own traffic keep the main table).
    expect(gatewayTableModel(plan, o).chains).toMatch(
      new RegExp(
        /chain mark_for_anchor \{\n\s+type filter hook prerouting priority mangle; policy accept;\n/.source +
          /\s+ip saddr \. ip daddr @egress_snat meta mark set meta mark \| 0x20000000/.source,
      ),
    );
    expect(gatewayRules(o)).toEqual([
      { priority: 10003, fwmark: ANCHOR_MARK, mask: ANCHOR_MARK, action: { table: ANCHOR_TABLE } },
    ]);
    expect(gatewayRoutes(plan, o)).toContainEqual({
      table: ANCHOR_TABLE,
      dst: "default",
      kind: "via",
      via: "10.20.0.1",
    });
  });
});

describe("SNAT pools and port ranges", () => {
  const pooled: GatewayPlan = {
    ...plan,
    snat: plan.snat.map((e) => ({ ...e, pool: ["192.0.2.30", "192.0.2.31"] })),
    egressIPs: ["192.0.2.30", "192.0.2.31"],
  };

  it("a policy with several egress IPs here: its (pod, destination) jumps to a chain that takes them in turn; a single IP keeps the plain map", () => {
    const model = gatewayTableModel(pooled, base);
    expect(model.sets.find((s) => s.name === "egress_snat_pools")?.elements).toEqual([
      "10.244.1.2 . 198.51.100.0-198.51.100.255 : goto snat_pool_0",
    ]);
    expect(model.chains).toContain(
      "chain snat_pool_0 {\n    snat ip to numgen inc mod 2 map { 0 : 192.0.2.30, 1 : 192.0.2.31 }\n  }",
    );
    const nat = /chain snat_to_egress_ip \{([^}]*)\}/
      .exec(model.chains)![1]!
      .trim()
      .split("\n")
      .map((l) => l.trim());
    expect(nat.slice(1)).toEqual([
      "ip saddr . ip daddr vmap @egress_snat_pools",
      "snat ip to ip saddr . ip daddr map @egress_snat",
    ]);
    // The filter and the anchor mark still use the plain map (it holds the pool's first IP).
    expect(model.sets.find((s) => s.name === "egress_snat")?.elements).toEqual([
      "10.244.1.2 . 198.51.100.0-198.51.100.255 : 192.0.2.30",
    ]);
    expect(gatewayTableModel(plan, base).sets.map((s) => s.name)).not.toContain("egress_snat_pools");
    // Behind a 1:1 NAT there is one address: no pool.
    expect(
      gatewayTableModel(pooled, { ...base, anchor: { address: "10.20.0.5", gateway: "10.20.0.1" } }).chains,
    ).not.toContain("snat_pool");
  });

  it("a configured port range applies to TCP and UDP (ports exist only there)", () => {
    const chains = gatewayTableModel(pooled, { ...base, snatPorts: { from: 20000, to: 20015 } }).chains;
    expect(chains).toContain(
      "meta l4proto { tcp, udp } snat ip to ip saddr . ip daddr map @egress_snat : 20000-20015\n    snat ip to ip saddr . ip daddr map @egress_snat\n",
    );
    expect(chains).toContain(
      "meta l4proto { tcp, udp } snat ip to numgen inc mod 2 map { 0 : 192.0.2.30, 1 : 192.0.2.31 } : 20000-20015",
    );
  });
});

describe("gateway startup", () => {
  it("loads its filter table before it turns forwarding on, and turns it on after its tunnel devices exist", async () => {
    const calls: string[] = [];
    // Records the commands (with their input); answers reads with empty JSON lists.
    const runner: CommandRunner = {
      run: async (cmd, args, o) => (
        calls.push(`${cmd} ${args.join(" ")} ${o?.input ?? ""}`),
        { stdout: cmd === "ip" ? "[]" : "", stderr: "" }
      ),
    };
    await new GatewayDataplane(commandKernel(runner)).apply(plan);
    const nft = calls.findIndex((c) => c.startsWith("nft -f"));
    const devices = calls.findIndex((c) => c.includes("type vxlan id 42"));
    const forward = calls.findIndex((c) => c.includes("/proc/sys/net/ipv4/ip_forward 1"));
    expect(nft).toBeGreaterThanOrEqual(0);
    expect(devices).toBeGreaterThanOrEqual(0);
    expect(forward).toBeGreaterThan(nft);
    expect(forward).toBeGreaterThan(devices);
    // Forwarding is switched on once, at the end: nothing sets it on before the filter.
    expect(calls.filter((c) => c.includes("ip_forward"))).toHaveLength(1);
  });

  it("admits BFD only with TTL 255 and only from cluster nodes", () => {
    const chains = gatewayTableModel(plan, base).chains;
    expect(chains).toContain("udp dport { 3784, 4784 } ip ttl != 255 counter drop");
    expect(chains).toContain("udp dport { 3784, 4784 } ip saddr != @cluster_nodes counter drop");
  });
});

describe("gateway side of the node tunnels", () => {
  const set = (name: string) => gatewayTableModel(plan, base).sets.find((s) => s.name === name)!.elements;

  it("one VXLAN device per node: the node's port, this instance's VNI, from this host's address to the node's", () => {
    expect(gatewayTunnels(plan)).toEqual([
      {
        name: "se-nd20007",
        vni: 42,
        local: "10.0.0.150",
        remote: "10.0.0.11",
        port: 20007,
        mac: "02:5e:9a:00:00:01",
        peer: { address: "169.254.53.2", mac: "02:5e:9a:00:00:02" },
      },
      {
        name: "se-nd20950",
        vni: 42,
        local: "10.0.0.150",
        remote: "10.0.0.12",
        port: 20950,
        mac: "02:5e:9a:00:00:01",
        peer: { address: "169.254.53.2", mac: "02:5e:9a:00:00:02" },
      },
    ]);
    // A gateway that is no instance (no address) has no tunnels.
    expect(gatewayTunnels({ ...plan, address: "" })).toEqual([]);
  });

  it("admits a node's port only from that node's address, and a pod's address only through its node's tunnel", () => {
    expect(set("tunnel_peers")).toEqual(["10.0.0.11 . 20007", "10.0.0.12 . 20950"]);
    expect(set("pods_by_tunnel")).toEqual(['"se-nd20007" . 10.244.1.2']);
    const chains = gatewayTableModel(plan, base).chains;
    expect(chains).toContain(
      'udp dport 15905-24095 ip saddr . udp dport != @tunnel_peers counter name "foreign_tunnel_drops" drop',
    );
    expect(chains).toContain("udp dport 15905-24095 fib saddr . iif oif missing");
    // The binding is checked before established flows are accepted: no injection into a pod's flow.
    const forward = /chain forward_selected \{([^}]*)\}/
      .exec(chains)![1]!
      .trim()
      .split("\n")
      .map((l) => l.trim());
    expect(forward.slice(1)).toEqual([
      "ct state established,related ct direction reply accept",
      'iifname . ip saddr != @pods_by_tunnel counter name "foreign_source_drops" drop',
      "ct state established,related accept",
      "ct state new ip saddr . ip daddr @egress_snat accept",
      'counter comment "not a selected pod: never relay"',
    ]);
    expect(renderFull(gatewayTableModel(plan, base))).toMatch(/counter foreign_source_drops \{/);
  });

  it("does not connection-track the tunnels' own packets, in either direction, and only theirs", () => {
    const chains = gatewayTableModel(plan, base).chains;
    const address = plan.address.replaceAll(".", "\\.");
    expect(chains).toMatch(
      new RegExp(
        `chain tunnel_notrack_in \\{\\n\\s+type filter hook prerouting priority raw; policy accept;\\n\\s+ip daddr ${address} udp dport 15905-24095 notrack\\n`,
      ),
    );
    expect(chains).toMatch(
      new RegExp(
        `chain tunnel_notrack_out \\{\\n\\s+type filter hook output priority raw; policy accept;\\n\\s+ip saddr ${address} udp dport 15905-24095 notrack\\n`,
      ),
    );
    // Without an address of its own the gateway has no tunnels: nothing to leave untracked.
    const none = gatewayTableModel({ ...plan, address: "" }, base).chains;
    expect(none).toMatch(
      /chain tunnel_notrack_in \{\n\s+type filter hook prerouting priority raw; policy accept;\n\s+\}/,
    );
  });

  it("clamps TCP's MSS to what fits the tunnel, both ways", () => {
    const chains = gatewayTableModel(plan, base).chains;
    expect(chains).toContain(
      'iifname "se-nd*" tcp flags & syn == syn tcp option maxseg size > 1410 tcp option maxseg size set 1410',
    );
    expect(chains).toContain(
      'oifname "se-nd*" tcp flags & syn == syn tcp option maxseg size > 1410 tcp option maxseg size set 1410',
    );
  });
});

describe("nodes' own traffic at the gateway", () => {
  const withNode: GatewayPlan = {
    ...plan,
    snat: [
      ...plan.snat,
      {
        podIP: "10.0.0.11",
        dst: { from: parseIPv4("198.51.100.10"), to: parseIPv4("198.51.100.10") },
        egressIP: "192.0.2.30",
        policy: "ClusterEgressPolicy/hosts",
      },
    ],
    podsByTunnel: [...plan.podsByTunnel, { port: 20007, podIP: "10.0.0.11" }],
    nodeReturns: [{ address: "10.0.0.11", port: 20007 }],
  };

  it("routes replies to the node's address through its tunnel by mark, from a table of their own (the main table sends the tunnel's own packets there)", () => {
    expect(gatewayRoutes(withNode, base)).toContainEqual({
      table: NODE_REPLY_TABLE,
      dst: "10.0.0.11/32",
      kind: "via",
      via: "169.254.53.2",
      onlinkDev: "se-nd20007",
    });
    expect(
      gatewayRoutes(withNode, base)
        .filter((r) => r.table === "main")
        .map((r) => r.dst),
    ).toEqual(["10.244.1.0/24"]);
    expect(gatewayRules(base, withNode)).toEqual([
      { priority: 10004, fwmark: NODE_REPLY_MARK, mask: NODE_REPLY_MARK, action: { table: NODE_REPLY_TABLE } },
    ]);
    const chains = gatewayTableModel(withNode, base).chains;
    // Only replies of SNATed flows to a node's address, after their destination is translated back.
    expect(chains).toMatch(
      new RegExp(
        /type filter hook prerouting priority dstnat \+ 10; policy accept;\n\s+/.source +
          /ct direction reply ct status snat ip daddr @node_sources meta mark set meta mark \| 0x40000000/.source,
      ),
    );
    // Cleared once routed, so the tunnel's outer packet is routed by the main table.
    expect(chains).toMatch(
      /type filter hook postrouting priority mangle; policy accept;\n\s+meta mark & 0x40000000 == 0x40000000 meta mark set meta mark & 0xbfffffff/,
    );
  });

  it("has none of it without node traffic", () => {
    expect(gatewayRules(base, plan)).toEqual([]);
    expect(gatewayTableModel(plan, base).chains).not.toContain("node_sources");
    expect(gatewayRoutes(plan, base).some((r) => r.table === NODE_REPLY_TABLE)).toBe(false);
  });
});

describe("verification probes at the gateway", () => {
  const withProbes: GatewayPlan = {
    ...plan,
    probes: [
      {
        node: "10.0.0.11",
        dst: "198.51.100.10",
        dport: 80,
        sport: 25001,
        egressIP: "192.0.2.30",
        policy: "EgressPolicy/payments/checkout",
      },
    ],
    podsByTunnel: [...plan.podsByTunnel, { port: 20007, podIP: "10.0.0.11" }],
    nodeReturns: [{ address: "10.0.0.11", port: 20007 }],
  };
  const probeSet = (o: Parameters<typeof gatewayTableModel>[1]) =>
    gatewayTableModel(withProbes, o).sets.find((s) => s.name === "probe_snat")!.elements;

  it("forwards a node's probe only on its policy's source port to the echo service, SNATed before any other map", () => {
    expect(probeSet(base)).toEqual(["10.0.0.11 . 198.51.100.10 . 25001 . 80 : 192.0.2.30"]);
    const chains = gatewayTableModel(withProbes, { ...base, snatPorts: { from: 20000, to: 20015 } }).chains;
    expect(chains).toContain(
      "ct state new meta l4proto tcp ip saddr . ip daddr . tcp sport . tcp dport @probe_snat accept",
    );
    const nat = chains
      .split("chain snat_to_egress_ip {\n")[1]!
      .split("\n  }")[0]!
      .split("\n")
      .map((l) => l.trim());
    expect(nat[1]).toBe(
      "meta l4proto tcp snat ip to ip saddr . ip daddr . tcp sport . tcp dport map @probe_snat : 20000-20015",
    );
  });

  it("SNATs to the anchor address and marks for its route behind a 1:1 NAT", () => {
    const anchor = { ...base, anchor: { address: "10.20.0.5", gateway: "10.20.0.1" } };
    expect(probeSet(anchor)).toEqual(["10.0.0.11 . 198.51.100.10 . 25001 . 80 : 10.20.0.5"]);
    expect(gatewayTableModel(withProbes, anchor).chains).toContain(
      "meta l4proto tcp ip saddr . ip daddr . tcp sport . tcp dport @probe_snat meta mark set meta mark | 0x20000000",
    );
  });

  it("has no probe rule without probes", () => {
    expect(gatewayTableModel(plan, base).chains).not.toContain("@probe_snat");
    expect(gatewayTableModel(plan, base).sets.find((s) => s.name === "probe_snat")!.elements).toEqual([]);
  });
});
