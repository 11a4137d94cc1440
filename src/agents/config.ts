import { readFileSync } from "node:fs";
import { Type } from "@sinclair/typebox";
import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";
import type { ClusterNetwork } from "../api/cluster.js";
import { IPv4Cidr } from "../api/v1alpha1/common.js";
import { describeErrors } from "../api/v1alpha1/validate.js";
import { StaticEgressError } from "../util/errors.js";

const CidrList = Type.Array(IPv4Cidr, { default: [] });

/** The agent config's schema: the same schema library and error wording as the API's objects. */
const AgentConfigSchema = Type.Object({
  clusterNetwork: Type.Object({ podCIDRs: CidrList, serviceCIDRs: CidrList, nodeCIDRs: CidrList }, { default: {} }),
  resyncSeconds: Type.Number({ exclusiveMinimum: 0, default: 30, description: "A positive number of seconds" }),
});

/** Agent settings that are not Kubernetes objects (in a cluster: a ConfigMap mounted as a file). */
export interface AgentConfig {
  clusterNetwork: ClusterNetwork;
  /** How often the agent reads the kernel back and repairs drift. */
  resyncSeconds: number;
}

export class ConfigError extends StaticEgressError {}

let validate: ValidateFunction | undefined;

export function parseAgentConfig(text: string, source: string): AgentConfig {
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (e) {
    throw new ConfigError(`${source}: ${(e as Error).message}`);
  }
  validate ??= new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true }).compile(AgentConfigSchema);
  if (!validate(raw)) {
    const errors = describeErrors(validate.errors ?? [], "config").map(
      (e) => `${e.field.replace(/^config\.?/, "") || "(document)"}: ${e.message}`,
    );
    throw new ConfigError(`${source}: ${errors.join("; ")}`);
  }
  const c = raw as AgentConfig;
  // Only what the agents read: unknown fields are ignored (a newer ConfigMap works with an older agent).
  return {
    clusterNetwork: {
      podCIDRs: c.clusterNetwork.podCIDRs,
      serviceCIDRs: c.clusterNetwork.serviceCIDRs,
      nodeCIDRs: c.clusterNetwork.nodeCIDRs,
    },
    resyncSeconds: c.resyncSeconds,
  };
}

export function loadAgentConfig(path: string): AgentConfig {
  return parseAgentConfig(readFileSync(path, "utf8"), path);
}
