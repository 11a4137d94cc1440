import { readFileSync } from "node:fs";
import { parse } from "yaml";
import type { ClusterNetwork } from "../api/cluster.js";
import { parseCidr } from "../util/ipv4.js";

/** Agent settings that are not Kubernetes objects (in a cluster: a ConfigMap mounted as a file). */
export interface AgentConfig {
  clusterNetwork: ClusterNetwork;
  /** How often the agent reads the kernel back and repairs drift. */
  resyncSeconds: number;
}

export class ConfigError extends Error {}

export function parseAgentConfig(text: string, source: string): AgentConfig {
  const raw = (parse(text) ?? {}) as { clusterNetwork?: Partial<Record<keyof ClusterNetwork, unknown>>; resyncSeconds?: unknown };
  const net = raw.clusterNetwork ?? {};
  const list = (field: keyof ClusterNetwork): string[] => {
    const v = net[field] ?? [];
    if (!Array.isArray(v) || v.some((c) => typeof c !== "string")) throw new ConfigError(`${source}: clusterNetwork.${field} must be a list of CIDRs`);
    v.forEach((c: string, i) => {
      try {
        parseCidr(c);
      } catch (e) {
        throw new ConfigError(`${source}: clusterNetwork.${field}[${i}]: ${(e as Error).message}`);
      }
    });
    return v as string[];
  };
  const resync = raw.resyncSeconds ?? 30;
  if (typeof resync !== "number" || resync <= 0) throw new ConfigError(`${source}: resyncSeconds must be a positive number`);
  return { clusterNetwork: { podCIDRs: list("podCIDRs"), serviceCIDRs: list("serviceCIDRs"), nodeCIDRs: list("nodeCIDRs") }, resyncSeconds: resync };
}

export function loadAgentConfig(path: string): AgentConfig {
  return parseAgentConfig(readFileSync(path, "utf8"), path);
}
