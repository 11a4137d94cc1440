import { readdirSync, readFileSync } from "node:fs";
import { runtimeConfigFile } from "../cni/conflist.js";
import { join } from "node:path";
import { runCommand } from "../util/exec.js";
import { addNamespace, deleteNamespace } from "./netns.js";

/** Where a pod is wired: its node's namespace and pod CIDR, the lab's IPAM state. */
export interface PodWiring {
  nodeNetns: string;
  podCidr: string;
  podNetns: string;
  containerId: string;
  namespace: string;
  name: string;
  ipamDir: string;
  /** The node's cluster CNI (default ptp). */
  cni?: "ptp" | "bridge";
  /** Directory holding our plugin as `static-egress`. */
  extraPluginDir?: string;
  /**
   * The node's CNI config directory: the chain is read from its first config file, as a runtime
   * does (the node agent chains our plugin into it). Without it: ptp + host-local only.
   */
  confDir?: string;
}

interface LabConflist {
  cniVersion: string;
  name: string;
  plugins: ({ type: string } & Record<string, unknown>)[];
}

/**
 * The cluster CNI's own list for a node (the lab's "cluster CNI"), masquerading, host-local:
 * ptp (a routed veth per pod), or Debian's bridge plugin (bridge `cni0` as the pods' gateway).
 */
export function baseConflist(podCidr: string, ipamDir: string, cni: "ptp" | "bridge" = "ptp"): LabConflist {
  const ipam = {
    type: "host-local",
    ranges: [[{ subnet: podCidr }]],
    routes: [{ dst: "0.0.0.0/0" }],
    dataDir: ipamDir,
  };
  return {
    cniVersion: "1.0.0",
    name: "lab",
    plugins: [
      cni === "bridge"
        ? { type: "bridge", bridge: "cni0", isGateway: true, ipMasq: true, ipam }
        : { type: "ptp", ipMasq: true, ipam },
    ],
  };
}

/** The list a runtime would run from a CNI config directory: its first config file by name. */
export function readRuntimeConflist(confDir: string): LabConflist {
  const file = runtimeConfigFile(readdirSync(confDir));
  if (!file) throw new Error(`${confDir}: no CNI configuration`);
  return JSON.parse(readFileSync(join(confDir, file), "utf8")) as LabConflist;
}

function conflist(w: PodWiring): LabConflist {
  return w.confDir ? readRuntimeConflist(w.confDir) : baseConflist(w.podCidr, w.ipamDir, w.cni);
}

/**
 * Runs the CNI chain the way a container runtime does: each plugin in the node's namespace,
 * with the CNI_* environment and the previous plugin's result as `prevResult`.
 */
async function runChain(command: "ADD" | "DEL", w: PodWiring): Promise<{ ips?: { address: string }[] }> {
  const list = conflist(w);
  const plugins = command === "ADD" ? list.plugins : [...list.plugins].reverse();
  let prevResult: unknown;
  let result: { ips?: { address: string }[] } = {};
  const path = ["/usr/lib/cni", ...(w.extraPluginDir ? [w.extraPluginDir] : [])].join(":");
  for (const plugin of plugins) {
    const dir = plugin.type === "static-egress" ? w.extraPluginDir! : "/usr/lib/cni";
    const conf = {
      cniVersion: list.cniVersion,
      name: list.name,
      ...plugin,
      ...(prevResult && command === "ADD" ? { prevResult } : {}),
    };
    const out = await runCommand("ip", ["netns", "exec", w.nodeNetns, join(dir, plugin.type)], {
      input: JSON.stringify(conf),
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: w.containerId,
        CNI_NETNS: `/var/run/netns/${w.podNetns}`,
        CNI_IFNAME: "eth0",
        CNI_PATH: path,
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${w.namespace};K8S_POD_NAME=${w.name}`,
      },
    });
    if (command === "ADD" && out.stdout.trim()) {
      result = JSON.parse(out.stdout) as typeof result;
      prevResult = result;
    }
  }
  return result;
}

/** Creates the pod's namespace and wires it; returns its address. */
export async function wirePod(w: PodWiring): Promise<string> {
  await addNamespace(w.podNetns);
  const result = await runChain("ADD", w);
  const ip = result.ips?.[0]?.address.split("/")[0];
  if (!ip) throw new Error(`CNI ADD for pod ${w.namespace}/${w.name} returned no address: ${JSON.stringify(result)}`);
  return ip;
}

export async function unwirePod(w: PodWiring): Promise<void> {
  await runChain("DEL", w).catch(() => undefined);
  await deleteNamespace(w.podNetns);
}
