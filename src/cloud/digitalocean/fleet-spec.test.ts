import { describe, expect, it } from "vitest";
import type { GatewayFleetSpec } from "../provider.js";
import { GatewayFleetSpecError } from "../provider.js";
import { validateFleetSpec } from "./provider.js";

const spec = (over: Partial<GatewayFleetSpec> = {}): GatewayFleetSpec => ({
  gatewayName: "egress-a",
  clusterId: "c1",
  region: "ams3",
  size: "s-1vcpu-1gb",
  image: "debian-12-x64",
  count: 2,
  userData: "#cloud-config\n",
  nodeTag: "k8s:c1",
  ports: [{ protocol: "tcp", ports: "all" }],
  ...over,
});

/** The field an invalid spec is refused for (the error names it), or undefined when valid. */
function refusedField(s: GatewayFleetSpec): string | undefined {
  try {
    validateFleetSpec(s);
    return undefined;
  } catch (e) {
    if (e instanceof GatewayFleetSpecError) return e.field;
    throw e;
  }
}

describe("validateFleetSpec", () => {
  it("accepts a complete spec, with pod CIDRs as forwarded sources", () => {
    expect(refusedField(spec())).toBeUndefined();
    expect(refusedField(spec({ sourceCIDRs: ["10.244.0.0/16", "10.245.0.0/24"] }))).toBeUndefined();
  });

  it.each([
    [{ sourceCIDRs: ["10.244.0.0"] }, "sourceCIDRs[0]"],
    [{ sourceCIDRs: ["10.244.0.0/16", "10.244.0.0/33"] }, "sourceCIDRs[1]"],
    [{ sourceCIDRs: ["fd00::/8"] }, "sourceCIDRs[0]"],
    [{ nodeTag: "k8s cluster" }, "nodeTag"],
    [{ vpcUuid: "vpc-1" }, "vpcUuid"],
    [{ reservedIPs: ["203.0.113.5", "203.0.113.5"] }, "reservedIPs"],
    [{ reservedIPs: ["203.0.113.x"] }, "reservedIPs[0]"],
    [{ count: 101 }, "count"],
    [{ count: 1.5 }, "count"],
    [{ region: " " }, "region"],
  ] as [Partial<GatewayFleetSpec>, string][])("refuses %j, naming %s", (over, field) => {
    expect(refusedField(spec(over))).toBe(field);
  });
});
