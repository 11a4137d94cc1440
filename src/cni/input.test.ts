import { describe, expect, it } from "vitest";
import {
  DEFAULT_AGENT_SOCKET,
  DEFAULT_TIMEOUT_MS,
  isInterfaceName,
  parseCniArgs,
  parseCommand,
  parseEnv,
  parseNetConf,
  versionForVersionCommand,
} from "./input.js";
import { CniCode, CniError } from "./spec.js";

const env = {
  CNI_COMMAND: "ADD",
  CNI_CONTAINERID: "c0ffee-1",
  CNI_NETNS: "/var/run/netns/pod",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=payments;K8S_POD_NAME=pay-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee-1",
  CNI_PATH: "/opt/cni/bin",
};

const prevResult = { cniVersion: "1.0.0", ips: [{ address: "10.244.1.2/24", gateway: "10.244.1.1", interface: 0 }] };
const conf = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ cniVersion: "1.0.0", name: "k8s-pod-network", type: "static-egress", prevResult, ...extra });

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e.code;
    throw e;
  }
  return undefined;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return "";
}

describe("environment", () => {
  it("reads the pod identity from CNI_ARGS", () => {
    const e = parseEnv(env, "ADD");
    expect(e).toEqual({
      command: "ADD",
      containerId: "c0ffee-1",
      netns: "/var/run/netns/pod",
      ifname: "eth0",
      pod: { namespace: "payments", name: "pay-1" },
    });
  });

  it("knows the four commands and nothing else (error 4)", () => {
    expect(parseCommand({ CNI_COMMAND: "VERSION" })).toBe("VERSION");
    expect(codeOf(() => parseCommand({}))).toBe(CniCode.InvalidEnvironment);
    expect(codeOf(() => parseCommand({ CNI_COMMAND: "GC" }))).toBe(CniCode.InvalidEnvironment);
    expect(codeOf(() => parseCommand({ CNI_COMMAND: "add" }))).toBe(CniCode.InvalidEnvironment);
  });

  it.each([
    ["CNI_CONTAINERID", undefined, "CNI_CONTAINERID is not set"],
    ["CNI_CONTAINERID", "-starts-with-dash", "is not a valid container ID"],
    ["CNI_IFNAME", undefined, "CNI_IFNAME is not set"],
    ["CNI_IFNAME", "a-name-longer-than-15", "is not a valid interface name"],
    ["CNI_NETNS", undefined, "CNI_NETNS is not set"],
    ["CNI_ARGS", "K8S_POD_NAMESPACE=payments", "must carry K8S_POD_NAMESPACE and K8S_POD_NAME"],
    [
      "CNI_ARGS",
      "K8S_POD_NAMESPACE=Payments;K8S_POD_NAME=pay-1",
      'K8S_POD_NAMESPACE "Payments" is not a valid namespace name',
    ],
    ["CNI_ARGS", "K8S_POD_NAMESPACE=payments;K8S_POD_NAME=pay_1", 'K8S_POD_NAME "pay_1" is not a valid pod name'],
    ["CNI_ARGS", "K8S_POD_NAMESPACE=payments;garbage", '"garbage" is not KEY=VALUE'],
  ])("ADD refuses %s=%s with error 4", (key, value, message) => {
    const bad = { ...env, [key]: value };
    expect(codeOf(() => parseEnv(bad, "ADD"))).toBe(CniCode.InvalidEnvironment);
    expect(messageOf(() => parseEnv(bad, "ADD"))).toContain(message);
  });

  it("DEL needs no network namespace and no pod identity (nothing to tell the agent then)", () => {
    expect(parseEnv({ ...env, CNI_COMMAND: "DEL", CNI_NETNS: "", CNI_ARGS: "" }, "DEL")).toMatchObject({
      netns: "",
      pod: undefined,
    });
    // ...but malformed values are still refused.
    expect(codeOf(() => parseEnv({ ...env, CNI_ARGS: "K8S_POD_NAMESPACE=UPPER;K8S_POD_NAME=x" }, "DEL"))).toBe(
      CniCode.InvalidEnvironment,
    );
  });

  it("splits CNI_ARGS at the first = only", () => {
    expect([...parseCniArgs("A=1;B=x=y;;C=")]).toEqual([
      ["A", "1"],
      ["B", "x=y"],
      ["C", ""],
    ]);
  });

  it("checks interface names as Linux does", () => {
    expect(isInterfaceName("eth0")).toBe(true);
    expect(isInterfaceName("123456789012345")).toBe(true);
    for (const bad of ["", ".", "..", "a/b", "a b", "a:b", "1234567890123456"])
      expect(isInterfaceName(bad)).toBe(false);
  });
});

describe("network configuration", () => {
  it("applies defaults and keeps the previous result as it came", () => {
    const c = parseNetConf(conf({ ipMasq: true, somethingElse: { x: 1 } }), "ADD");
    expect(c).toEqual({
      cniVersion: "1.0.0",
      name: "k8s-pod-network",
      type: "static-egress",
      agentSocket: DEFAULT_AGENT_SOCKET,
      timeoutMs: DEFAULT_TIMEOUT_MS,
      clusterCIDRs: [],
      prevResult,
    });
  });

  it("reads the plugin's options", () => {
    const c = parseNetConf(
      conf({ agentSocket: "/run/x/cni.sock", timeoutMs: 250, clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12"] }),
      "ADD",
    );
    expect(c).toMatchObject({
      agentSocket: "/run/x/cni.sock",
      timeoutMs: 250,
      clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12"],
    });
  });

  it("is not JSON, or not an object: error 6", () => {
    expect(codeOf(() => parseNetConf("{", "ADD"))).toBe(CniCode.DecodingFailure);
    expect(codeOf(() => parseNetConf("[]", "ADD"))).toBe(CniCode.DecodingFailure);
    expect(codeOf(() => parseNetConf("", "ADD"))).toBe(CniCode.DecodingFailure);
  });

  it("speaks 0.4.0 and 1.0.0 only: error 1 otherwise", () => {
    expect(parseNetConf(conf({ cniVersion: "0.4.0" }), "ADD").cniVersion).toBe("0.4.0");
    expect(codeOf(() => parseNetConf(conf({ cniVersion: "0.3.1" }), "ADD"))).toBe(CniCode.IncompatibleVersion);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: "1.1.0" }), "ADD"))).toBe(CniCode.IncompatibleVersion);
  });

  it.each([
    [{ cniVersion: 1 }, "cniVersion: must be a non-empty string"],
    [{ name: "" }, "name: must start with a letter or digit"],
    [{ name: "-net" }, "name: must start with a letter or digit"],
    [{ type: 3 }, "type: must be a non-empty string"],
    [{ agentSocket: "relative.sock" }, "agentSocket: must be an absolute path"],
    [{ agentSocket: `/${"x".repeat(120)}` }, "agentSocket: is longer than a unix socket path may be"],
    [{ timeoutMs: 50 }, "timeoutMs: must be an integer from 100 to 60000"],
    [{ timeoutMs: "1000" }, "timeoutMs: must be an integer from 100 to 60000"],
    [{ timeoutMs: 1.5e3 + 0.5 }, "timeoutMs: must be an integer from 100 to 60000"],
    [{ clusterCIDRs: "10.0.0.0/8" }, "clusterCIDRs: must be a list of IPv4 CIDRs"],
    [{ clusterCIDRs: ["10.0.0.0/33"] }, "clusterCIDRs[0]: not an IPv4 CIDR"],
    [{ clusterCIDRs: ["10.0.0.0/8", 7] }, "clusterCIDRs[1]: must be a string"],
    [{ prevResult: undefined }, "prevResult: is missing: static-egress is a chained plugin"],
    [{ prevResult: [] }, "prevResult: must be an object"],
    [{ prevResult: { ips: {} } }, "prevResult.ips: must be a list"],
    [
      { prevResult: { ips: [{ address: "10.244.1.2" }] } },
      'prevResult.ips[0].address: "10.244.1.2" is not an address with prefix length',
    ],
    [{ prevResult: { ips: [{ address: "010.244.1.2/24" }] } }, "prevResult.ips[0].address"],
    [{ prevResult: { ips: [{ address: "10.244.1.2/33" }] } }, "prevResult.ips[0].address"],
    [{ prevResult: { ips: [{ address: 4 }] } }, "prevResult.ips[0].address: must be a string"],
  ])("refuses %j with error 7 naming the field", (extra, message) => {
    expect(codeOf(() => parseNetConf(conf(extra), "ADD"))).toBe(CniCode.InvalidNetworkConfig);
    expect(messageOf(() => parseNetConf(conf(extra), "ADD"))).toContain(`network configuration: ${message}`);
  });

  it("accepts IPv6 addresses in the previous result (they are ignored later)", () => {
    const c = parseNetConf(
      conf({ prevResult: { ips: [{ address: "fd00::2/64" }, { address: "10.244.1.2/24" }] } }),
      "ADD",
    );
    expect(c.prevResult?.ips).toHaveLength(2);
  });

  it("DEL may come without the previous result; ADD and CHECK may not", () => {
    expect(parseNetConf(conf({ prevResult: undefined }), "DEL").prevResult).toBeUndefined();
    expect(codeOf(() => parseNetConf(conf({ prevResult: undefined }), "CHECK"))).toBe(CniCode.InvalidNetworkConfig);
  });

  it("VERSION answers in the asked version when it can", () => {
    expect(versionForVersionCommand(JSON.stringify({ cniVersion: "0.4.0" }))).toBe("0.4.0");
    expect(versionForVersionCommand(JSON.stringify({ cniVersion: "0.2.0" }))).toBe("1.0.0");
    expect(versionForVersionCommand("")).toBe("1.0.0");
  });
});
