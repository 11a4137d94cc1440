import { describe, expect, it } from "vitest";
import type { GatewayPlan } from "../planner/model.js";
import { parseIPv4 } from "../planner/ipv4.js";
import type { CommandRunner } from "../util/exec.js";
import { ANCHOR_MARK, ANCHOR_TABLE, GatewayDataplane, gatewayRoutes, gatewayRules, gatewayTableModel, GATEWAY_TABLE } from "./gateway.js";

const plan: GatewayPlan = {
  instance: "cloud/gw-0",
  address: "10.0.0.150",
  snat: [{ podIP: "10.244.1.2", dst: { from: parseIPv4("198.51.100.0"), to: parseIPv4("198.51.100.255") }, egressIP: "192.0.2.30", policy: "EgressPolicy/payments/checkout" }],
  returnRoutes: [{ cidr: "10.244.1.0/24", via: "10.0.0.11" }],
  nodeAddresses: ["10.0.0.11"],
  egressIPs: ["192.0.2.30"],
};
const base = { table: GATEWAY_TABLE, routeProto: 94, healthPort: 3784 };
const snatElements = (o: Parameters<typeof gatewayTableModel>[1]) => gatewayTableModel(plan, o).sets.find((s) => s.name === "egress_snat")!.elements;

describe("gateway datapath model", () => {
  it("SNATs each selected (pod, destination) to its policy's egress IP, with no anchor route", () => {
    expect(snatElements(base)).toEqual(["10.244.1.2 . 198.51.100.0-198.51.100.255 : 192.0.2.30"]);
    expect(gatewayTableModel(plan, base).chains).not.toContain("mark_for_anchor");
    expect(gatewayRules(base)).toEqual([]);
    expect(gatewayRoutes(plan, base)).toEqual([{ table: "main", dst: "10.244.1.0/24", kind: "via", via: "10.0.0.11", proto: 94 }]);
  });

  it("behind DigitalOcean's anchor NAT: SNAT to the anchor IP, marked traffic routed via the anchor gateway", () => {
    const o = { ...base, anchor: { address: "10.20.0.5", gateway: "10.20.0.1" } };
    expect(snatElements(o)).toEqual(["10.244.1.2 . 198.51.100.0-198.51.100.255 : 10.20.0.5"]);
    // Only the forwarded selected flows are marked (replies and the host's own traffic keep the main table).
    expect(gatewayTableModel(plan, o).chains).toMatch(/chain mark_for_anchor \{\n\s+type filter hook prerouting priority mangle; policy accept;\n\s+ip saddr \. ip daddr @egress_snat meta mark set meta mark \| 0x20000000/);
    expect(gatewayRules(o)).toEqual([{ priority: 10003, fwmark: ANCHOR_MARK, mask: ANCHOR_MARK, action: { table: ANCHOR_TABLE } }]);
    expect(gatewayRoutes(plan, o)).toContainEqual({ table: ANCHOR_TABLE, dst: "default", kind: "via", via: "10.20.0.1" });
  });
});

describe("gateway startup", () => {
  it("loads its filter table before it turns forwarding on", async () => {
    const calls: string[] = [];
    // Records the commands; answers reads with empty JSON lists.
    const runner: CommandRunner = { run: async (cmd, args) => (calls.push(`${cmd} ${args.join(" ")}`), { stdout: cmd === "ip" ? "[]" : "", stderr: "" }) };
    await new GatewayDataplane(runner).apply(plan);
    const nft = calls.findIndex((c) => c.startsWith("nft -f"));
    const forward = calls.findIndex((c) => c.includes("ip_forward=1"));
    expect(nft).toBeGreaterThanOrEqual(0);
    expect(forward).toBeGreaterThan(nft);
  });

  it("admits BFD only with TTL 255 and only from cluster nodes", () => {
    const chains = gatewayTableModel(plan, base).chains;
    expect(chains).toContain("udp dport { 3784, 4784 } ip ttl != 255 counter drop");
    expect(chains).toContain("udp dport { 3784, 4784 } ip saddr != @cluster_nodes counter drop");
  });
});
