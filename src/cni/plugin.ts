import type { Range } from "../util/ipv4.js";
import { AgentUnavailableError, type AgentApi } from "./client.js";
import type { PluginLogger } from "./log.js";
import {
  parseCommand,
  parseEnv,
  parseNetConf,
  versionForErrors,
  versionForVersionCommand,
  type CniEnv,
  type NetConf,
  type PodIdentity,
} from "./input.js";
import { parseClusterCIDRs, quarantineComment, type QuarantineEntry } from "./quarantine.js";
import { CniCode, CniError, convertResult, ipv4Addresses, LATEST_VERSION, SUPPORTED_VERSIONS } from "./spec.js";

/**
 * The chained CNI plugin: ADD tells the node agent the pod's addresses and returns only once
 * the agent has programmed them (or, when it cannot get that answer, once the pod is
 * quarantined), then passes the previous plugin's result through. No policy logic lives here.
 */

/** What the plugin does to the node besides talking to the agent. */
export interface QuarantineApi {
  hold(entries: readonly QuarantineEntry[], bootstrapCluster?: readonly Range[]): Promise<{ created: boolean }>;
}

export interface PluginDeps {
  /** The agent behind `socket`; every call bounded by `timeoutMs`. */
  agent(socket: string, timeoutMs: number): AgentApi;
  quarantine: QuarantineApi;
  logger: PluginLogger;
}

export interface PluginInput {
  env: Readonly<Record<string, string | undefined>>;
  stdin: string;
}

export interface PluginOutcome {
  exitCode: number;
  /** What goes to stdout: the result, the version list, or the spec's error object. */
  stdout: string;
}

export async function runPlugin(input: PluginInput, deps: PluginDeps): Promise<PluginOutcome> {
  try {
    const command = parseCommand(input.env);
    if (command === "VERSION")
      return ok({ cniVersion: versionForVersionCommand(input.stdin), supportedVersions: [...SUPPORTED_VERSIONS] });
    const conf = parseNetConf(input.stdin, command);
    const env = parseEnv(input.env, command);
    switch (command) {
      case "ADD":
        return ok(await add(env, conf, deps));
      case "DEL":
        await del(env, conf, deps);
        return { exitCode: 0, stdout: "" };
      case "CHECK":
        await check(env, conf, deps);
        return { exitCode: 0, stdout: "" };
    }
  } catch (e) {
    const err =
      e instanceof CniError
        ? e
        : new CniError(CniCode.IOFailure, "static-egress failed unexpectedly", (e as Error).message, { cause: e });
    deps.logger.error({ code: err.code, err: err.message, details: err.details }, "CNI call failed");
    return { exitCode: 1, stdout: JSON.stringify(err.toJSON(safeVersion(input.stdin))) + "\n" };
  }
}

function ok(body: unknown): PluginOutcome {
  return { exitCode: 0, stdout: JSON.stringify(body) + "\n" };
}

function safeVersion(stdin: string): string {
  try {
    return versionForErrors(stdin);
  } catch {
    return LATEST_VERSION;
  }
}

function podOf(env: CniEnv): PodIdentity {
  // parseEnv guarantees it for ADD and CHECK.
  if (!env.pod)
    throw new CniError(CniCode.InvalidEnvironment, "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME");
  return env.pod;
}

/**
 * ADD succeeds only in two ways: the agent answered that the pod is programmed (selected or
 * not), or the pod's addresses are quarantined. Anything else (agent away, slow, or answering
 * nonsense) ends in the quarantine; if even that fails, ADD fails and the runtime retries.
 */
async function add(env: CniEnv, conf: NetConf, deps: PluginDeps): Promise<unknown> {
  const prev = conf.prevResult ?? {};
  const result = convertResult(prev, conf.cniVersion);
  const ips = ipv4Addresses(prev);
  const pod = podOf(env);
  const log = deps.logger.child({ pod: `${pod.namespace}/${pod.name}`, containerId: env.containerId });
  // IPv6-only pods are outside the datapath (IPv4 only for now): nothing to program or hold.
  if (ips.length === 0) {
    log.warn("the previous result has no IPv4 address; nothing to do");
    return result;
  }
  try {
    const answer = await deps
      .agent(conf.agentSocket, conf.timeoutMs)
      .add({ containerId: env.containerId, namespace: pod.namespace, name: pod.name, ips });
    if (answer.quarantined)
      log.warn(
        { ips, reason: answer.reason },
        "the agent quarantined the pod: outside traffic is dropped until it can program it",
      );
    else log.debug({ ips, selected: answer.selected, policy: answer.policy }, "programmed by the agent");
    return result;
  } catch (e) {
    log.warn(
      { ips, err: (e as Error).message },
      "no answer from the agent: quarantining the pod (outside traffic dropped until the agent programs it)",
    );
    const entries = ips.map((ip) => ({ ip, comment: quarantineComment(pod.namespace, pod.name) }));
    try {
      const { created } = await deps.quarantine.hold(entries, parseClusterCIDRs(conf.clusterCIDRs));
      if (created) log.warn("created the quarantine table (the node agent has not run on this node yet)");
    } catch (q) {
      throw new CniError(
        CniCode.TryAgainLater,
        "cannot program the pod: the node agent did not answer and quarantining the pod failed",
        `agent: ${(e as Error).message}; quarantine: ${(q as Error).message}`,
        { cause: q },
      );
    }
    return result;
  }
}

/** Never fails for a pod that is gone or an agent that is away: the sandbox must be deletable. */
async function del(env: CniEnv, conf: NetConf, deps: PluginDeps): Promise<void> {
  if (!env.pod) return;
  const ips = conf.prevResult ? ipv4Addresses(conf.prevResult) : [];
  try {
    await deps.agent(conf.agentSocket, conf.timeoutMs).del({
      containerId: env.containerId,
      namespace: env.pod.namespace,
      name: env.pod.name,
      ...(ips.length > 0 ? { ips } : {}),
    });
  } catch (e) {
    // The agent forgets admitted addresses of pods that never show up by itself.
    deps.logger.warn(
      { pod: `${env.pod.namespace}/${env.pod.name}`, err: (e as Error).message },
      "could not tell the agent the pod is gone (ignored)",
    );
  }
}

/** The pod is programmed by the agent as the previous result describes it, and not quarantined. */
async function check(env: CniEnv, conf: NetConf, deps: PluginDeps): Promise<void> {
  const pod = podOf(env);
  const ips = ipv4Addresses(conf.prevResult ?? {});
  if (ips.length === 0) return;
  let answer;
  try {
    answer = await deps
      .agent(conf.agentSocket, conf.timeoutMs)
      .check({ containerId: env.containerId, namespace: pod.namespace, name: pod.name, ips });
  } catch (e) {
    const code = e instanceof AgentUnavailableError ? CniCode.TryAgainLater : CniCode.IOFailure;
    throw new CniError(code, "cannot verify the pod: no usable answer from the node agent", (e as Error).message, {
      cause: e,
    });
  }
  if (answer.quarantined)
    throw new CniError(
      CniCode.Quarantined,
      `pod ${pod.namespace}/${pod.name} is quarantined: its outside traffic is dropped until the agent programs it`,
      answer.reason,
    );
  if (!answer.programmed)
    throw new CniError(
      CniCode.NotProgrammed,
      `the node agent has not programmed pod ${pod.namespace}/${pod.name} with ${ips.join(", ")}`,
      answer.reason,
    );
}
