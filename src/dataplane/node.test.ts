import { describe, expect, it } from "vitest";
import { markFor, tableFor } from "../planner/ids.js";
import { parseCidr } from "../util/ipv4.js";
import type { NodePlan } from "../planner/model.js";
import type { CommandRunner } from "../util/exec.js";
import { commandKernel } from "./kernel.js";
import {
  BIND_TABLE,
  bindTableModel,
  divertClasses,
  NodeDataplane,
  nodeRouting,
  nodeTableModel,
  nodeTunnels,
  type NodeFacts,
} from "./node.js";

const plan: NodePlan = {
  node: "n1",
  instances: [{ key: "gw/a", address: "10.0.0.101", mark: markFor(1), table: tableFor(1), route: "via", vni: 1 }],
  entries: [
    {
      podIP: "10.244.1.5",
      dst: parseCidr("0.0.0.0/0"),
      mark: markFor(1),
      policy: "EgressPolicy/p/c",
      instance: "gw/a",
    },
    {
      podIP: "10.244.1.6",
      dst: parseCidr("0.0.0.0/0"),
      mark: markFor(1),
      policy: "EgressPolicy/p/c",
      instance: "gw/a",
    },
    {
      podIP: "10.244.1.7",
      dst: parseCidr("0.0.0.0/0"),
      mark: markFor(1),
      policy: "EgressPolicy/p/c",
      instance: "gw/a",
    },
  ],
  neverDivert: [parseCidr("10.0.0.0/8"), parseCidr("169.254.0.0/17")],
  unavailable: [],
  podsByPolicy: {},
};
const facts: NodeFacts = {
  bindings: new Map([
    ["10.244.1.5", { podIP: "10.244.1.5", iface: "veth5" }],
    ["10.244.1.6", { podIP: "10.244.1.6", iface: "cni0", port: "vethsix" }],
    // 10.244.1.7: interface not known yet
  ]),
  instanceDevices: new Map([["10.0.0.101", "eth0"]]),
};
const set = (m: ReturnType<typeof nodeTableModel>, name: string) => m.sets.find((s) => s.name === name)!.elements;

describe("node table", () => {
  it("never diverts link-local, multicast and broadcast, merged with the cluster's ranges", () => {
    expect(set(nodeTableModel(plan, "t", facts), "never_divert")).toEqual([
      "10.0.0.0-10.255.255.255",
      "169.254.0.0-169.254.255.255",
      "224.0.0.0-239.255.255.255",
      "255.255.255.255",
    ]);
  });

  it("binds each selected pod's address to its interface; an unknown one gets no element (its diverted packets drop)", () => {
    expect(set(nodeTableModel(plan, "t", facts), "pod_ifaces")).toEqual([
      '10.244.1.5 . "veth5"',
      '10.244.1.6 . "cni0"',
    ]);
  });

  it("checks the binding first for every diverted packet, then fail-closed", () => {
    const chains = nodeTableModel(plan, "t", facts).chains;
    expect(chains).toMatch(
      new RegExp(
        /chain enforce \{\n\s+ip saddr \. iifname != @pod_ifaces counter name "spoofed_drops" drop\n/.source +
          /\s+meta mark @down_instances counter name "failclosed_drops" drop\n/.source,
      ),
    );
  });

  it("hears BFD only with TTL 255, from an instance address on the interface toward it", () => {
    const m = nodeTableModel(plan, "t", facts);
    expect(set(m, "health_peers")).toEqual(['"eth0" . 10.0.0.101']);
    expect(m.chains).toContain("type filter hook input priority filter - 10; policy accept;");
    expect(m.chains).toContain('udp dport { 3784, 4784 } ip ttl != 255 counter name "forged_health_drops" drop');
    expect(m.chains).toContain(
      'udp dport { 3784, 4784 } iifname . ip saddr != @health_peers counter name "forged_health_drops" drop',
    );
  });

  it("the bridge table guards only bridged pods' addresses, by port, for IP and ARP", () => {
    const b = bindTableModel(plan, facts);
    expect(b.family).toBe("bridge");
    expect(b.sets.find((s) => s.name === "guarded")!.elements).toEqual(["10.244.1.6"]);
    expect(b.sets.find((s) => s.name === "ports")!.elements).toEqual(['10.244.1.6 . "vethsix"']);
    expect(b.chains).toContain('ip saddr @guarded ip saddr . iifname != @ports counter name "spoofed_drops" drop');
    expect(b.chains).toContain(
      'arp saddr ip @guarded arp saddr ip . iifname != @ports counter name "spoofed_drops" drop',
    );
  });
});

const tunnelPlan = (tunnel: NodePlan["tunnel"], route: "via" | "blackhole" = "via"): NodePlan => ({
  node: "node1",
  instances: [
    { key: "gw/a", address: "10.0.0.101", mark: markFor(7), table: tableFor(7), route, vni: 7 },
    { key: "gw/b", address: "10.0.0.102", mark: markFor(9), table: tableFor(9), route: "via", vni: 9 },
  ],
  entries: [],
  neverDivert: [],
  unavailable: [],
  podsByPolicy: {},
  ...(tunnel ? { tunnel } : {}),
});

describe("node side of the tunnels", () => {
  it("routes each instance's table into the tunnel to it, from the node's own address and port", () => {
    const p = tunnelPlan({ address: "10.0.0.11", port: 20123 });
    expect(nodeTunnels(p).map((t) => [t.name, t.vni, t.local, t.remote, t.port])).toEqual([
      ["se-gw7", 7, "10.0.0.11", "10.0.0.101", 20123],
      ["se-gw9", 9, "10.0.0.11", "10.0.0.102", 20123],
    ]);
    const { routes, rules } = nodeRouting(p);
    expect(routes).toEqual([
      { table: 7007, dst: "default", kind: "via", via: "169.254.53.1", onlinkDev: "se-gw7" },
      { table: 7009, dst: "default", kind: "via", via: "169.254.53.1", onlinkDev: "se-gw9" },
    ]);
    // The tunnel's own packets (marked like the inner one) reach the instance through the main
    // table, before the instance rules; the catch-all blackhole stays last.
    expect(rules.slice(0, 2)).toEqual([
      { priority: 10005, to: "10.0.0.101/32", fwmark: 0x1000_0000, mask: 0x1000_0000, action: { table: "main" } },
      { priority: 10005, to: "10.0.0.102/32", fwmark: 0x1000_0000, mask: 0x1000_0000, action: { table: "main" } },
    ]);
    expect(rules.at(-1)).toEqual({ priority: 10099, fwmark: 0x1000_0000, mask: 0x1000_0000, action: "blackhole" });
  });

  it("a down instance keeps its tunnel, its table holds a blackhole", () => {
    const p = tunnelPlan({ address: "10.0.0.11", port: 20123 }, "blackhole");
    expect(nodeTunnels(p)).toHaveLength(2);
    expect(nodeRouting(p).routes[0]).toEqual({ table: 7007, dst: "default", kind: "blackhole" });
  });

  it("without a tunnel end of its own the node has no tunnels and every table is a blackhole", () => {
    const p = tunnelPlan(undefined);
    expect(nodeTunnels(p)).toEqual([]);
    expect(nodeRouting(p).routes.map((r) => r.kind)).toEqual(["blackhole", "blackhole"]);
  });
});

describe("VXLAN into the node", () => {
  it("admits its tunnel port only from an instance's address with that instance's VNI, before the vxlan socket", () => {
    const m = nodeTableModel(tunnelPlan({ address: "10.0.0.11", port: 20123 }), "t");
    expect(m.sets.find((s) => s.name === "tunnel_sources")).toEqual({
      kind: "set",
      name: "tunnel_sources",
      spec: "typeof ip saddr . udp dport . @th,96,24;",
      elements: ["10.0.0.101 . 20123 . 7", "10.0.0.102 . 20123 . 9"],
    });
    expect(m.chains).toMatch(
      new RegExp(
        /chain tunnel_in \{\n\s+type filter hook input priority filter - 10; policy accept;\n/.source +
          /\s+udp dport 20123 ip saddr \. udp dport \. @th,96,24 != @tunnel_sources /.source +
          /counter name "foreign_tunnel_drops" drop\n/.source,
      ),
    );
  });

  it("does not connection-track the tunnels' own packets (its port, both directions)", () => {
    const chains = nodeTableModel(tunnelPlan({ address: "10.0.0.11", port: 20123 }), "t").chains;
    expect(chains).toMatch(
      /chain tunnel_notrack_in \{\n\s+type filter hook prerouting priority raw; policy accept;\n\s+udp dport 20123 notrack\n/,
    );
    expect(chains).toMatch(
      /chain tunnel_notrack_out \{\n\s+type filter hook output priority raw; policy accept;\n\s+udp dport 20123 notrack\n/,
    );
  });

  it("a node without a tunnel end listens on no port and has no rule for one", () => {
    const m = nodeTableModel(tunnelPlan(undefined), "t");
    expect(m.sets.find((s) => s.name === "tunnel_sources")!.elements).toEqual([]);
    expect(m.chains).not.toContain("tunnel_in");
    expect(m.chains).not.toContain("notrack");
  });
});

describe("drop counters", () => {
  it("reads every named counter of both tables in one listing each, adding the bridge table's spoofed drops", async () => {
    const calls: string[] = [];
    const listing = (family: string, counters: Record<string, number>) =>
      JSON.stringify({
        nftables: [
          { metainfo: {} },
          ...Object.entries(counters).map(([name, packets]) => ({
            counter: { family, name, table: "t", packets, bytes: 0 },
          })),
        ],
      });
    const runner: CommandRunner = {
      run: async (cmd, args) => {
        calls.push(`${cmd} ${args.join(" ")}`);
        if (args.includes("bridge")) return { stdout: listing("bridge", { spoofed_drops: 2 }), stderr: "" };
        return {
          stdout: listing("ip", {
            failclosed_drops: 5,
            spoofed_drops: 3,
            foreign_tunnel_drops: 7,
            forged_health_drops: 11,
          }),
          stderr: "",
        };
      },
    };
    expect(await new NodeDataplane(commandKernel(runner)).drops()).toEqual({
      failClosed: 5,
      spoofed: 5,
      foreignTunnel: 7,
      forgedHealth: 11,
    });
    expect(calls).toEqual([
      "nft -j list counters table ip static_egress",
      `nft -j list counters table bridge ${BIND_TABLE}`,
    ]);
  });

  it("counts nothing for a table that is not there", async () => {
    const runner: CommandRunner = { run: async () => Promise.reject(new Error("No such file or directory")) };
    expect(await new NodeDataplane(commandKernel(runner)).drops()).toEqual({
      failClosed: 0,
      spoofed: 0,
      foreignTunnel: 0,
      forgedHealth: 0,
    });
  });
});

describe("the node's own traffic (ClusterEgressPolicy nodeSelector)", () => {
  const nodePlan: NodePlan = {
    ...plan,
    entries: [],
    tunnel: { address: "10.0.0.11", port: 20007 },
    nodeEntries: [
      { dst: parseCidr("198.51.100.0/24"), mark: markFor(1), policy: "ClusterEgressPolicy/hosts", instance: "gw/a" },
    ],
    keepLocal: ["10.0.0.1", "not-an-address"],
  };
  const model = nodeTableModel(nodePlan, "static_egress", {
    ...facts,
    localSubnets: ["10.0.0.0/24", "192.168.5.0/24"],
  });

  it("marks locally generated packets to the listed destinations, never the tunnels', probes, replies, the cluster's, the API server's or the VPC's", () => {
    expect(set(model, "node_divert")).toEqual(["198.51.100.0-198.51.100.255 : 0x10010000"]);
    // The API server address (what does not parse is left out) and the node's own subnets.
    expect(set(model, "node_keep")).toEqual(["10.0.0.0-10.0.0.255", "192.168.5.0-192.168.5.255"]);
    const chain = model.chains
      .split("chain mark_node_egress {\n")[1]!
      .split("\n  }")[0]!
      .split("\n")
      .map((l) => l.trim());
    expect(chain.slice(0, 8)).toEqual([
      "type route hook output priority mangle; policy accept;",
      // The tunnel's own packets carry the inner packet's mark: returned before anything else.
      "meta mark & 0x10000000 == 0x10000000 return",
      "udp dport { 3784, 4784, 20007 } return",
      "ct direction reply return",
      "fib daddr type local return",
      "ip daddr @never_divert return",
      "ip daddr @node_keep return",
      "ct mark & 0x40000000 == 0x40000000 meta mark set ct mark & 0x1fff0000 goto node_enforce",
    ]);
    // A down instance's mark is dropped and counted, as for pods.
    expect(model.chains).toMatch(
      /chain node_enforce \{\n\s+meta mark @down_instances counter name "failclosed_drops" drop/,
    );
  });

  it("never diverts its own tunnel's packets, on its own port only (a lower-range port too), not the whole range", () => {
    const low = nodeTableModel({ ...nodePlan, tunnel: { address: "10.0.0.11", port: 16000 } }, "static_egress", facts);
    expect(low.chains).toContain("udp dport { 3784, 4784, 16000 } return\n");
    // Other nodes' ports may be a policy's destinations: not exempt.
    expect(low.chains).not.toMatch(/udp dport \{[^}]*(15905|24095|20001)/);
    const noTunnel = nodeTableModel({ ...nodePlan, tunnel: undefined }, "static_egress", facts);
    expect(noTunnel.chains).toContain("udp dport { 3784, 4784 } return\n");
  });

  it("leaves through the tunnel with the node's InternalIP (the address its gateways bind to its tunnel), pods keep their own", () => {
    expect(model.chains).toMatch(
      /ct mark & 0x40000000 == 0x40000000 counter snat ip to 10\.0\.0\.11\n\s+meta mark & 0x10000000 == 0x10000000 counter snat ip to ip saddr/,
    );
  });

  it("adds nothing to a node no such policy selects", () => {
    const none = nodeTableModel({ ...plan, tunnel: { address: "10.0.0.11", port: 20007 } }, "static_egress", facts);
    expect(none.chains).not.toContain("mark_node_egress");
    expect(none.chains).not.toContain("0x40000000");
    expect(set(none, "node_divert")).toEqual([]);
    expect(set(none, "node_keep")).toEqual([]);
  });
});

describe("verification probes (spec.verification)", () => {
  const probePlan: NodePlan = {
    ...plan,
    tunnel: { address: "10.0.0.11", port: 20007 },
    probes: [
      {
        policy: "EgressPolicy/p/c",
        url: "http://198.51.100.10:8080/",
        host: "198.51.100.10",
        address: "198.51.100.10",
        port: 8080,
        path: "/",
        intervalSeconds: 60,
        timeoutSeconds: 5,
        sourcePort: 25001,
        instance: "gw/a",
        mark: markFor(1),
        expected: ["192.0.2.10"],
      },
    ],
  };
  const model = nodeTableModel(probePlan, "static_egress", { ...facts, probeUid: 1234 });
  const chain = () =>
    model.chains
      .split("chain mark_node_egress {\n")[1]!
      .split("\n  }")[0]!
      .split("\n")
      .map((l) => l.trim());

  it("marks only the agent's own sockets on the policy's source port to the echo service, before anything the node keeps", () => {
    expect(set(model, "probe_divert")).toEqual(["198.51.100.10 . 25001 . 8080 : 0x10010000"]);
    const rules = chain();
    const probe = rules.indexOf(
      "meta skuid 1234 meta l4proto tcp meta mark set ip daddr . tcp sport . tcp dport map @probe_divert " +
        "ct mark set meta mark | 0x40000000 goto node_enforce",
    );
    expect(probe).toBeGreaterThan(rules.indexOf("ip daddr @never_divert return"));
    expect(probe).toBeLessThan(rules.indexOf("ip daddr @node_keep return"));
    // Nothing else of the node is diverted: the node_divert map is empty.
    expect(set(model, "node_divert")).toEqual([]);
    // A down instance's probe is dropped and counted like its pods' packets.
    expect(model.chains).toMatch(
      /chain node_enforce \{\n\s+meta mark @down_instances counter name "failclosed_drops" drop/,
    );
  });

  it("sends them with the node's InternalIP, the address its gateways accept from its tunnel", () => {
    expect(model.chains).toMatch(/ct mark & 0x40000000 == 0x40000000 counter snat ip to 10\.0\.0\.11\n/);
  });

  it("has none of it without probes", () => {
    const none = nodeTableModel({ ...probePlan, probes: [] }, "static_egress", facts);
    expect(none.chains).not.toContain("probe_divert");
    expect(none.chains).not.toContain("mark_node_egress");
    expect(set(none, "probe_divert")).toEqual([]);
  });
});

describe("divert classes", () => {
  const entry = (podIP: string, dst: string, id: number) => ({
    podIP,
    dst: parseCidr(dst),
    mark: markFor(id),
    policy: "EgressPolicy/p/c",
    instance: `gw/${id}`,
  });

  it("pods with the same decision share a class whatever the order of their entries; a different range or value is another class", () => {
    const c = divertClasses([
      entry("10.244.1.5", "198.51.100.0/24", 1),
      entry("10.244.1.5", "203.0.113.0/24", 1),
      entry("10.244.1.6", "203.0.113.0/24", 1),
      entry("10.244.1.6", "198.51.100.0/24", 1),
      entry("10.244.1.7", "198.51.100.0/24", 2),
      entry("10.244.1.8", "198.51.100.0/25", 1),
    ]);
    expect(c.podClass.get("10.244.1.5")).toBe(c.podClass.get("10.244.1.6"));
    expect(new Set(c.podClass.values()).size).toBe(3);
    expect(c.classes.get(c.podClass.get("10.244.1.5")!)).toEqual([
      `198.51.100.0-198.51.100.255 : 0x${markFor(1).toString(16).padStart(8, "0")}`,
      `203.0.113.0-203.0.113.255 : 0x${markFor(1).toString(16).padStart(8, "0")}`,
    ]);
    for (const name of c.classes.keys()) expect(name).toMatch(/^class_[0-9a-f]{8}$/);
  });

  it("a class keeps its name while other classes come and go", () => {
    const a = divertClasses([entry("10.244.1.5", "198.51.100.0/24", 1)]);
    const b = divertClasses([
      entry("10.244.1.5", "198.51.100.0/24", 1),
      entry("10.244.1.6", "203.0.113.0/24", 2),
      entry("10.244.1.7", "192.0.2.0/24", 3),
    ]);
    expect(b.podClass.get("10.244.1.5")).toBe(a.podClass.get("10.244.1.5"));
  });

  it("the table jumps from pod_class to one chain per class; a class miss returns with the mark untouched, a value without remap drops", () => {
    const m = nodeTableModel(plan, "t", facts);
    const [name] = [...new Set(set(m, "pod_class").map((e) => e.split(" : jump ")[1]))];
    expect(set(m, "pod_class")).toEqual(["10.244.1.5", "10.244.1.6", "10.244.1.7"].map((ip) => `${ip} : jump ${name}`));
    expect(m.chains).toContain("    ip saddr vmap @pod_class\n");
    expect(m.chains).not.toMatch(/meta mark set ip saddr/); // the mark never carries the class
    expect(m.chains).toContain(
      `  chain ${name} {\n    meta mark set ip daddr map @${name} meta mark set meta mark map @remap ct mark set meta mark goto enforce\n` +
        `    ip daddr @${name} counter name "failclosed_drops" drop\n  }\n`,
    );
  });
});
