import { isIPv6 } from "node:net";
import { AddressError, parseCidr, parseIPv4 } from "../util/ipv4.js";
import { CniCode, CniError, isSupportedVersion, LATEST_VERSION, type CniResult, type CniVersion } from "./spec.js";

/**
 * Everything the runtime hands the plugin, parsed strictly at the edge: the environment
 * (error 4 when wrong), the network configuration on stdin (6 when not JSON, 7 when a field is
 * wrong, 1 for a spec version we do not speak). Pure.
 */

export type CniCommand = "ADD" | "DEL" | "CHECK" | "VERSION";
const COMMANDS: readonly CniCommand[] = ["ADD", "DEL", "CHECK", "VERSION"];

export const DEFAULT_AGENT_SOCKET = "/run/static-egress/cni.sock";
export const DEFAULT_TIMEOUT_MS = 5_000;

export interface PodIdentity {
  namespace: string;
  name: string;
}

export interface CniEnv {
  command: Exclude<CniCommand, "VERSION">;
  containerId: string;
  /** Empty for DEL when the runtime no longer has the namespace. */
  netns: string;
  ifname: string;
  /** From CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME); undefined only for DEL without them. */
  pod: PodIdentity | undefined;
}

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  /** The node agent's unix socket. */
  agentSocket: string;
  /** How long to wait for the agent before quarantining the pod (ADD) or giving up (DEL, CHECK). */
  timeoutMs: number;
  /**
   * Cluster ranges (pods, services, nodes) a quarantined pod may still reach when the plugin has
   * to create the quarantine table itself (the agent has never run on this node). Once the agent
   * runs it keeps that list from its own configuration.
   */
  clusterCIDRs: string[];
  prevResult: CniResult | undefined;
}

/** The command alone: VERSION needs nothing else from the environment. */
export function parseCommand(env: Readonly<Record<string, string | undefined>>): CniCommand {
  const raw = env.CNI_COMMAND;
  if (!raw)
    throw new CniError(CniCode.InvalidEnvironment, "CNI_COMMAND is not set", `expected one of ${COMMANDS.join(", ")}`);
  if (!(COMMANDS as readonly string[]).includes(raw)) {
    throw new CniError(
      CniCode.InvalidEnvironment,
      `CNI_COMMAND ${JSON.stringify(raw)} is not supported`,
      `expected one of ${COMMANDS.join(", ")}`,
    );
  }
  return raw as CniCommand;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export function isNamespaceName(s: string): boolean {
  return s.length <= 63 && DNS_LABEL.test(s);
}

export function isPodName(s: string): boolean {
  return s.length <= 253 && DNS_SUBDOMAIN.test(s);
}

export function isContainerId(s: string): boolean {
  return s.length <= 1024 && CONTAINER_ID.test(s);
}

/** Linux interface names: 1-15 bytes, no slash, colon or whitespace, not `.` or `..`. */
export function isInterfaceName(s: string): boolean {
  return s.length >= 1 && s.length <= 15 && s !== "." && s !== ".." && !/[/:\s]/.test(s);
}

/** `FOO=BAR;ABC=123` (the spec's format for CNI_ARGS). */
export function parseCniArgs(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of raw.split(";")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new CniError(CniCode.InvalidEnvironment, `CNI_ARGS: ${JSON.stringify(pair)} is not KEY=VALUE`);
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

/**
 * The environment of ADD, DEL and CHECK. DEL is lenient where the spec lets the runtime be
 * (no CNI_NETNS; missing pod identity means there is nothing to tell the agent), never about
 * malformed values.
 */
export function parseEnv(
  env: Readonly<Record<string, string | undefined>>,
  command: Exclude<CniCommand, "VERSION">,
): CniEnv {
  const containerId = env.CNI_CONTAINERID ?? "";
  if (!isContainerId(containerId)) {
    throw new CniError(
      CniCode.InvalidEnvironment,
      containerId
        ? `CNI_CONTAINERID ${JSON.stringify(containerId)} is not a valid container ID`
        : "CNI_CONTAINERID is not set",
    );
  }
  const ifname = env.CNI_IFNAME ?? "";
  if (!isInterfaceName(ifname)) {
    throw new CniError(
      CniCode.InvalidEnvironment,
      ifname ? `CNI_IFNAME ${JSON.stringify(ifname)} is not a valid interface name` : "CNI_IFNAME is not set",
    );
  }
  const netns = env.CNI_NETNS ?? "";
  if (command !== "DEL" && netns === "")
    throw new CniError(CniCode.InvalidEnvironment, `CNI_NETNS is not set (required for ${command})`);
  const args = parseCniArgs(env.CNI_ARGS ?? "");
  const namespace = args.get("K8S_POD_NAMESPACE");
  const name = args.get("K8S_POD_NAME");
  let pod: PodIdentity | undefined;
  if (namespace === undefined || name === undefined) {
    // Without the pod's identity the agent cannot tell whether a policy selects it.
    if (command !== "DEL")
      throw new CniError(
        CniCode.InvalidEnvironment,
        "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME",
        "static-egress runs for Kubernetes pods only; the kubelet's runtime sets both",
      );
  } else {
    if (!isNamespaceName(namespace))
      throw new CniError(
        CniCode.InvalidEnvironment,
        `CNI_ARGS: K8S_POD_NAMESPACE ${JSON.stringify(namespace)} is not a valid namespace name`,
      );
    if (!isPodName(name))
      throw new CniError(
        CniCode.InvalidEnvironment,
        `CNI_ARGS: K8S_POD_NAME ${JSON.stringify(name)} is not a valid pod name`,
      );
    pod = { namespace, name };
  }
  return { command, containerId, netns, ifname, pod };
}

function invalid(field: string, message: string): CniError {
  return new CniError(CniCode.InvalidNetworkConfig, `network configuration: ${field}: ${message}`);
}

function decode(stdin: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(
      CniCode.DecodingFailure,
      "network configuration on stdin is not valid JSON",
      (e as Error).message,
      { cause: e },
    );
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new CniError(CniCode.DecodingFailure, "network configuration on stdin is not a JSON object");
  return raw as Record<string, unknown>;
}

/** VERSION's stdin holds at most `{"cniVersion": ...}`; answer in that version when we speak it. */
export function versionForVersionCommand(stdin: string): CniVersion {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown } | null)?.cniVersion;
    return isSupportedVersion(v) ? v : LATEST_VERSION;
  } catch {
    return LATEST_VERSION;
  }
}

/** The version to write error objects in: the configuration's, if we can read one we speak. */
export function versionForErrors(stdin: string): CniVersion {
  return versionForVersionCommand(stdin);
}

export function parseNetConf(stdin: string, command: Exclude<CniCommand, "VERSION">): NetConf {
  const raw = decode(stdin);
  const version = raw.cniVersion;
  if (typeof version !== "string" || version === "") throw invalid("cniVersion", "must be a non-empty string");
  if (!isSupportedVersion(version)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `CNI version ${version} is not supported`,
      `supported versions: 0.4.0, 1.0.0`,
    );
  }
  const name = raw.name;
  if (typeof name !== "string" || !NETWORK_NAME.test(name))
    throw invalid("name", "must start with a letter or digit, then letters, digits, _ . or -");
  const type = raw.type;
  if (typeof type !== "string" || type === "") throw invalid("type", "must be a non-empty string");

  const agentSocket = raw.agentSocket ?? DEFAULT_AGENT_SOCKET;
  if (typeof agentSocket !== "string" || !agentSocket.startsWith("/"))
    throw invalid("agentSocket", "must be an absolute path");
  // sun_path holds 108 bytes including the terminating NUL.
  if (Buffer.byteLength(agentSocket) > 107)
    throw invalid("agentSocket", "is longer than a unix socket path may be (107 bytes)");

  const timeoutMs = raw.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 60_000)
    throw invalid("timeoutMs", "must be an integer from 100 to 60000");

  const clusterCIDRs = raw.clusterCIDRs ?? [];
  if (!Array.isArray(clusterCIDRs)) throw invalid("clusterCIDRs", "must be a list of IPv4 CIDRs");
  clusterCIDRs.forEach((c: unknown, i) => {
    if (typeof c !== "string") throw invalid(`clusterCIDRs[${i}]`, "must be a string");
    try {
      parseCidr(c);
    } catch (e) {
      if (e instanceof AddressError) throw invalid(`clusterCIDRs[${i}]`, e.message);
      throw e;
    }
  });

  const prevResult = parsePrevResult(raw.prevResult);
  if (prevResult === undefined && (command === "ADD" || command === "CHECK")) {
    throw invalid(
      "prevResult",
      `is missing: static-egress is a chained plugin and must follow a plugin that assigns the pod's addresses`,
    );
  }
  return {
    cniVersion: version,
    name,
    type,
    agentSocket,
    timeoutMs,
    clusterCIDRs: clusterCIDRs as string[],
    prevResult,
  };
}

/** Only `ips` is read (and checked); every other field is passed through as it came. */
function parsePrevResult(raw: unknown): CniResult | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== "object" || Array.isArray(raw)) throw invalid("prevResult", "must be an object (a CNI result)");
  const result = raw as CniResult;
  const ips: unknown = result.ips;
  if (ips === undefined) return result;
  if (!Array.isArray(ips)) throw invalid("prevResult.ips", "must be a list");
  ips.forEach((ip: unknown, i) => {
    const address = (ip as { address?: unknown } | null)?.address;
    if (typeof address !== "string") throw invalid(`prevResult.ips[${i}].address`, "must be a string");
    const [addr = "", len, extra] = address.split("/");
    const maxLen = isIPv4Address(addr) ? 32 : isIPv6(addr) ? 128 : -1;
    if (maxLen < 0 || len === undefined || extra !== undefined || !/^\d{1,3}$/.test(len) || Number(len) > maxLen) {
      throw invalid(`prevResult.ips[${i}].address`, `${JSON.stringify(address)} is not an address with prefix length`);
    }
  });
  return result;
}

/** Dotted quad without leading zeros (the same rule as the rest of static-egress). */
export function isIPv4Address(s: string): boolean {
  try {
    parseIPv4(s);
    return true;
  } catch {
    return false;
  }
}
