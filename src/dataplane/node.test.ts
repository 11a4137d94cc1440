import { describe, expect, it } from "vitest";
import { markFor, tableFor } from "../planner/ids.js";
import { parseCidr } from "../planner/ipv4.js";
import type { NodePlan } from "../planner/model.js";
import { bindTableModel, nodeTableModel, type NodeFacts } from "./node.js";

const plan: NodePlan = {
  node: "n1",
  instances: [{ key: "gw/a", address: "10.0.0.101", mark: markFor(1), table: tableFor(1), route: "via" }],
  entries: [
    { podIP: "10.244.1.5", dst: parseCidr("0.0.0.0/0"), mark: markFor(1), policy: "EgressPolicy/p/c", instance: "gw/a" },
    { podIP: "10.244.1.6", dst: parseCidr("0.0.0.0/0"), mark: markFor(1), policy: "EgressPolicy/p/c", instance: "gw/a" },
    { podIP: "10.244.1.7", dst: parseCidr("0.0.0.0/0"), mark: markFor(1), policy: "EgressPolicy/p/c", instance: "gw/a" },
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
    expect(set(nodeTableModel(plan, "t", facts), "never_divert")).toEqual(["10.0.0.0-10.255.255.255", "169.254.0.0-169.254.255.255", "224.0.0.0-239.255.255.255", "255.255.255.255"]);
  });

  it("binds each selected pod's address to its interface; an unknown one gets no element (its diverted packets drop)", () => {
    expect(set(nodeTableModel(plan, "t", facts), "pod_ifaces")).toEqual(['10.244.1.5 . "veth5"', '10.244.1.6 . "cni0"']);
  });

  it("checks the binding first for every diverted packet, then fail-closed", () => {
    const chains = nodeTableModel(plan, "t", facts).chains;
    expect(chains).toMatch(/chain enforce \{\n\s+ip saddr \. iifname != @pod_ifaces counter name "spoofed_drops" drop\n\s+meta mark @down_instances counter name "failclosed_drops" drop\n/);
  });

  it("hears BFD only with TTL 255, from an instance address on the interface toward it", () => {
    const m = nodeTableModel(plan, "t", facts);
    expect(set(m, "health_peers")).toEqual(['"eth0" . 10.0.0.101']);
    expect(m.chains).toContain("type filter hook input priority filter - 10; policy accept;");
    expect(m.chains).toContain('udp dport { 3784, 4784 } ip ttl != 255 counter name "forged_health_drops" drop');
    expect(m.chains).toContain('udp dport { 3784, 4784 } iifname . ip saddr != @health_peers counter name "forged_health_drops" drop');
  });

  it("the bridge table guards only bridged pods' addresses, by port, for IP and ARP", () => {
    const b = bindTableModel(plan, facts);
    expect(b.family).toBe("bridge");
    expect(b.sets.find((s) => s.name === "guarded")!.elements).toEqual(["10.244.1.6"]);
    expect(b.sets.find((s) => s.name === "ports")!.elements).toEqual(['10.244.1.6 . "vethsix"']);
    expect(b.chains).toContain('ip saddr @guarded ip saddr . iifname != @ports counter name "spoofed_drops" drop');
    expect(b.chains).toContain('arp saddr ip @guarded arp saddr ip . iifname != @ports counter name "spoofed_drops" drop');
  });
});
