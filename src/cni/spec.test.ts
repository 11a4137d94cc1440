import { describe, expect, it } from "vitest";
import { CniCode, CniError, convertResult, ipv4Addresses, type CniResult } from "./spec.js";

// What Debian's ptp (1.1.1) printed for a lab pod, cniVersion 1.0.0.
const ptp10: CniResult = {
  cniVersion: "1.0.0",
  interfaces: [
    { name: "veth1b2c3d4e", mac: "1a:2b:3c:4d:5e:6f" },
    { name: "eth0", mac: "6f:5e:4d:3c:2b:1a", sandbox: "/var/run/netns/pod" },
  ],
  ips: [{ interface: 1, address: "10.244.1.2/24", gateway: "10.244.1.1" }],
  routes: [{ dst: "0.0.0.0/0" }],
  dns: {},
};

describe("result conversion", () => {
  it("is the identity when the result is already in the configuration's version", () => {
    expect(convertResult(ptp10, "1.0.0")).toEqual(ptp10);
  });

  it("adds ips[].version for 0.4.0 and drops it again for 1.0.0", () => {
    const r04 = convertResult({ ...ptp10, ips: [...(ptp10.ips ?? []), { address: "fd00::2/64" }] }, "0.4.0");
    expect(r04.cniVersion).toBe("0.4.0");
    expect(r04.ips?.map((i) => i.version)).toEqual(["4", "6"]);
    expect(r04.routes).toEqual(ptp10.routes);
    const back = convertResult(r04, "1.0.0");
    expect(back.ips?.every((i) => !("version" in i))).toBe(true);
    expect(back.ips?.[0]).toEqual(ptp10.ips?.[0]);
  });

  it("does not change its input", () => {
    const input: CniResult = { cniVersion: "0.4.0", ips: [{ address: "10.244.1.2/24", version: "4" }] };
    const copy = structuredClone(input);
    convertResult(input, "1.0.0");
    expect(input).toEqual(copy);
  });

  it("sets cniVersion when the previous result had none", () => {
    expect(convertResult({ ips: [] }, "1.0.0")).toEqual({ cniVersion: "1.0.0", ips: [] });
  });
});

describe("addresses", () => {
  it("are the IPv4 ones, without prefix length, each once", () => {
    expect(
      ipv4Addresses({
        ips: [
          { address: "10.244.1.2/24" },
          { address: "fd00::2/64" },
          { address: "10.244.1.2/32" },
          { address: "10.244.1.9/24" },
        ],
      }),
    ).toEqual(["10.244.1.2", "10.244.1.9"]);
    expect(ipv4Addresses({})).toEqual([]);
  });
});

describe("error object", () => {
  it("has the spec's shape", () => {
    const e = new CniError(CniCode.InvalidNetworkConfig, "network configuration: name: bad", "more");
    expect(e.toJSON("1.0.0")).toEqual({
      cniVersion: "1.0.0",
      code: 7,
      msg: "network configuration: name: bad",
      details: "more",
    });
    expect(new CniError(CniCode.TryAgainLater, "later").toJSON("0.4.0")).toEqual({
      cniVersion: "0.4.0",
      code: 11,
      msg: "later",
    });
  });
});
