import { describe, expect, it } from "vitest";
import { ConfigError, parseAgentConfig } from "./config.js";

describe("parseAgentConfig", () => {
  it("fills defaults for an empty file", () => {
    expect(parseAgentConfig("", "c.yaml")).toEqual({
      clusterNetwork: { podCIDRs: [], serviceCIDRs: [], nodeCIDRs: [] },
      resyncSeconds: 30,
    });
  });

  it("reads the cluster's CIDRs and the resync period", () => {
    const c = parseAgentConfig(
      "clusterNetwork:\n  podCIDRs: [10.244.0.0/16]\n  serviceCIDRs: [10.96.0.0/12]\nresyncSeconds: 5\n",
      "c.yaml",
    );
    expect(c).toEqual({
      clusterNetwork: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: [] },
      resyncSeconds: 5,
    });
  });

  it("names the file and the field of a bad value", () => {
    expect(() => parseAgentConfig("clusterNetwork:\n  podCIDRs: [10.244.0.0/16, 300.1.1.1/8]\n", "c.yaml")).toThrow(
      /^c\.yaml: clusterNetwork\.podCIDRs\[1\]: invalid value "300\.1\.1\.1\/8"/,
    );
    expect(() => parseAgentConfig("clusterNetwork:\n  nodeCIDRs: 10.0.0.0/8\n", "c.yaml")).toThrow(
      /^c\.yaml: clusterNetwork\.nodeCIDRs: /,
    );
    expect(() => parseAgentConfig("resyncSeconds: 0\n", "c.yaml")).toThrow(/^c\.yaml: resyncSeconds: /);
    expect(() => parseAgentConfig("resyncSeconds: often\n", "c.yaml")).toThrow(ConfigError);
    expect(() => parseAgentConfig("- a list\n", "c.yaml")).toThrow(ConfigError);
  });
});
