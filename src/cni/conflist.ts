import type { ClusterNetwork } from "../api/cluster.js";
import { PLUGIN_TYPE } from "./install.js";
import { StaticEgressError } from "../util/errors.js";

/**
 * Chaining our plugin into the cluster CNI's configuration list. Pure: text in, text out.
 *
 * A runtime (containerd, CRI-O, through libcni) reads the files of its CNI config directory with
 * these extensions, sorted by name, and uses the first one. Our entry goes last in that file's
 * `plugins`, after the plugin that assigns the addresses.
 */
const CONFIG_EXTENSIONS = [".conf", ".conflist", ".json"] as const;

export class ConflistError extends StaticEgressError {}

/** Our entry in a conflist (docs/cni.md lists the options). */
export interface ChainEntry {
  agentSocket: string;
  clusterCIDRs: string[];
  timeoutMs?: number;
}

/**
 * Our entry for an agent's socket and the cluster's ranges: a quarantined pod (no agent answered)
 * still reaches pods, Services and nodes.
 */
export function chainEntryFor(agentSocket: string, network: { clusterNetwork: ClusterNetwork }): ChainEntry {
  const n = network.clusterNetwork;
  return { agentSocket, clusterCIDRs: [...n.podCIDRs, ...n.serviceCIDRs, ...n.nodeCIDRs] };
}

/** The file the runtime uses: the first config file by name, as libcni sorts them. */
export function runtimeConfigFile(names: readonly string[]): string | undefined {
  return names.filter((n) => !n.startsWith(".") && CONFIG_EXTENSIONS.some((ext) => n.endsWith(ext))).sort()[0];
}

type Conflist = { plugins: Record<string, unknown>[] } & Record<string, unknown>;

function parseConflist(text: string, file: string): Conflist {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ConflistError(`${file}: not JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new ConflistError(`${file}: not a JSON object`);
  const obj = value as Record<string, unknown>;
  if (!Array.isArray(obj.plugins)) {
    // A single-plugin .conf: chaining needs a list; converting it would take the file from its owner.
    const kind =
      typeof obj.type === "string"
        ? `a single-plugin configuration (type ${JSON.stringify(obj.type)})`
        : "no `plugins` list";
    throw new ConflistError(`${file}: ${kind}; chain static-egress into a .conflist (see docs/cni.md)`);
  }
  obj.plugins.forEach((p, i) => {
    if (typeof p !== "object" || p === null || Array.isArray(p))
      throw new ConflistError(`${file}: plugins[${i}] is not an object`);
  });
  return obj as Conflist;
}

const ours = (p: Record<string, unknown>) => p.type === PLUGIN_TYPE;

function render(list: Conflist): string {
  return `${JSON.stringify(list, null, 2)}\n`;
}

/** The list with our entry last (replacing any older one); `changed` false if it was already so. */
export function withEntry(text: string, file: string, entry: ChainEntry): { text: string; changed: boolean } {
  const list = parseConflist(text, file);
  if (list.plugins.length === 0 || list.plugins.every(ours))
    throw new ConflistError(
      `${file}: no plugin to chain after (static-egress needs the addresses another plugin assigns)`,
    );
  const wanted: Record<string, unknown> = {
    type: PLUGIN_TYPE,
    agentSocket: entry.agentSocket,
    ...(entry.timeoutMs !== undefined ? { timeoutMs: entry.timeoutMs } : {}),
    clusterCIDRs: [...entry.clusterCIDRs],
  };
  const plugins = [...list.plugins.filter((p) => !ours(p)), wanted];
  const changed = JSON.stringify(plugins) !== JSON.stringify(list.plugins);
  return { text: changed ? render({ ...list, plugins }) : text, changed };
}

/** The list without our entry; `changed` false if it had none. */
export function withoutEntry(text: string, file: string): { text: string; changed: boolean } {
  const list = parseConflist(text, file);
  const plugins = list.plugins.filter((p) => !ours(p));
  const changed = plugins.length !== list.plugins.length;
  return { text: changed ? render({ ...list, plugins }) : text, changed };
}
