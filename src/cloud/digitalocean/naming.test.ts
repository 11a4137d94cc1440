import { describe, expect, it } from "vitest";
import {
  escapeTagComponent,
  fleetNames,
  gatewayOfFleetTag,
  sanitizeResourceName,
  serviceFirewallName,
  unescapeTagComponent,
} from "./naming.js";

const TAG = /^[a-zA-Z0-9_\-:]+$/;
const DROPLET_NAME = /^[a-zA-Z0-9]?[a-z0-9A-Z.-]*[a-z0-9A-Z]$/;
const FIREWALL_NAME = /^[a-zA-Z0-9][a-zA-Z0-9.-]+$/;

describe("naming", () => {
  it("escapes injectively, also for separators and case", () => {
    expect(escapeTagComponent("egress.prod")).toBe("egress_2eprod");
    expect(escapeTagComponent("a:b")).not.toBe(escapeTagComponent("a_b"));
    expect(escapeTagComponent("ABC")).not.toBe(escapeTagComponent("abc"));
    expect(escapeTagComponent("a_2eb")).not.toBe(escapeTagComponent("a.b"));
  });

  it("builds valid DigitalOcean tag, droplet and firewall names", () => {
    const n = fleetNames("4d0e1c7a-0c2f-4a9a-9d5b-2f7a1b3c4d5e", "egress.prod-gw");
    for (const tag of [n.clusterTag, n.fleetTag, n.ipRecordTag(12, "203.0.113.77")]) {
      expect(tag).toMatch(TAG);
      expect(tag.length).toBeLessThanOrEqual(255);
    }
    expect(n.dropletName(3)).toMatch(DROPLET_NAME);
    expect(n.firewallName).toMatch(FIREWALL_NAME);
    expect(serviceFirewallName("c1", "default/my svc")).toMatch(FIREWALL_NAME);
  });

  it("round-trips slots and IP records, and ignores other fleets", () => {
    const a = fleetNames("c1", "gw");
    const b = fleetNames("c2", "gw");
    expect(a.slotOf(a.dropletName(7))).toBe(7);
    expect(a.slotOf(b.dropletName(7))).toBeUndefined();
    expect(a.slotOf(`${a.dropletName(1)}0x`)).toBeUndefined();
    expect(a.parseIpRecordTag(a.ipRecordTag(2, "203.0.113.9"))).toEqual({ slot: 2, ip: "203.0.113.9" });
    expect(a.parseIpRecordTag(b.ipRecordTag(2, "203.0.113.9"))).toBeUndefined();
    expect(a.parsePendingTag(a.pendingTag(1, 1_700_000_000.7))).toEqual({ slot: 1, at: 1_700_000_000 });
    expect(a.parsePendingTag(a.ipRecordTag(1, "203.0.113.9"))).toBeUndefined();
    expect(a.parseIpRecordTag(a.pendingTag(1, 1_700_000_000))).toBeUndefined();
    expect(a.fleetTag).not.toBe(b.fleetTag);
    expect(a.firewallName).not.toBe(b.firewallName);
  });

  it("hashes keys that would exceed the tag limit", () => {
    const n = fleetNames("c".repeat(200), "g".repeat(200));
    expect(n.fleetTag.length).toBeLessThanOrEqual(255);
    expect(n.ipRecordTag(99999, "255.255.255.255").length).toBeLessThanOrEqual(255);
    expect(n.pendingTag(99999, 999_999_999_999).length).toBeLessThanOrEqual(255);
    expect(n.fleetTag).not.toBe(fleetNames("c".repeat(200), "g".repeat(199)).fleetTag);
  });

  it("reads the gateway back from its fleet tag, for this cluster only", () => {
    for (const gw of ["gw", "egress.prod-gw", "A:b_c/ü"]) {
      expect(unescapeTagComponent(escapeTagComponent(gw))).toBe(gw);
      expect(gatewayOfFleetTag("c1", fleetNames("c1", gw).fleetTag)).toBe(gw);
      expect(gatewayOfFleetTag("c1", fleetNames("c1", gw).fleetTag.toUpperCase())).toBe(gw); // DO may change the case
      expect(gatewayOfFleetTag("c2", fleetNames("c1", gw).fleetTag)).toBeUndefined();
    }
    const n = fleetNames("c1", "gw");
    for (const other of [
      n.clusterTag,
      n.ipRecordTag(0, "203.0.113.9"),
      n.pendingTag(0, 1),
      "static-egress",
      `${n.fleetTag}_zz`,
      `${n.fleetTag}_2`,
    ]) {
      expect(gatewayOfFleetTag("c1", other)).toBeUndefined();
    }
    expect(unescapeTagComponent("a_2")).toBeUndefined();
    expect(unescapeTagComponent("a_61")).toBeUndefined(); // "a" is never escaped: not our output
    // A hashed key does not say its gateway.
    expect(gatewayOfFleetTag("c".repeat(200), fleetNames("c".repeat(200), "gw").fleetTag)).toBeUndefined();
  });

  it("sanitizes resource names", () => {
    expect(sanitizeResourceName("--a b_c--", 40)).toBe("a-b-c");
    expect(sanitizeResourceName("___", 40)).toBe("x");
  });
});
