import { StaticEgressError } from "../util/errors.js";

/**
 * The parts of the CNI specification (1.0.0, and 0.4.0 which it supersedes) this plugin needs:
 * versions, error codes, the error object and the result conversion between the two versions.
 * Pure: no I/O.
 */

/** Spec versions this plugin speaks (VERSION lists them; anything else is error 1). */
export const SUPPORTED_VERSIONS = ["0.4.0", "1.0.0"] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = "1.0.0";

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Well-known error codes (0-99 are the spec's; 100+ are ours). */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  /** CHECK: the node agent does not have this pod programmed as the runtime described it. */
  NotProgrammed: 100,
  /** CHECK: the pod is quarantined (its outside traffic is dropped until the agent programs it). */
  Quarantined: 101,
} as const;
export type CniCodeValue = (typeof CniCode)[keyof typeof CniCode];

/** An error the plugin reports to the runtime as the spec's error object (stdout, non-zero exit). */
export class CniError extends StaticEgressError {
  constructor(
    readonly code: CniCodeValue,
    msg: string,
    readonly details?: string,
    options?: { cause?: unknown },
  ) {
    super(msg, options);
    this.name = "CniError";
  }

  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

/** One address of a result (`ips[]`): 0.4.0 carries `version`, 1.0.0 dropped it. */
export interface ResultIP {
  address: string;
  version?: "4" | "6";
  gateway?: string;
  interface?: number;
  [key: string]: unknown;
}

/** A CNI result as the previous plugin printed it; we only read `ips`, and pass the rest through. */
export interface CniResult {
  cniVersion?: string;
  ips?: ResultIP[];
  [key: string]: unknown;
}

/**
 * The previous result in the form of `cniVersion` (the runtime normally already converted it,
 * so this is the identity then). 0.4.0 and 1.0.0 differ only in `ips[].version`.
 */
export function convertResult(prev: CniResult, cniVersion: CniVersion): CniResult {
  const out: CniResult = { ...prev, cniVersion };
  if (!prev.ips) return out;
  if (cniVersion === "1.0.0") {
    if (prev.ips.some((ip) => "version" in ip)) {
      out.ips = prev.ips.map((ip) => {
        const copy = { ...ip };
        delete copy.version;
        return copy;
      });
    }
  } else if (prev.ips.some((ip) => !("version" in ip))) {
    out.ips = prev.ips.map((ip) => ("version" in ip ? ip : { ...ip, version: ip.address.includes(":") ? "6" : "4" }));
  }
  return out;
}

/** The IPv4 addresses of a result, without prefix length (the datapath is IPv4-only for now). */
export function ipv4Addresses(result: CniResult): string[] {
  const out: string[] = [];
  for (const ip of result.ips ?? []) {
    const addr = ip.address.split("/")[0] ?? "";
    if (!addr.includes(":") && !out.includes(addr)) out.push(addr);
  }
  return out;
}
