import type { KubeObject } from "../api/objects.js";
import { API_VERSION, GROUP, VERSION } from "../api/v1alpha1/common.js";
import { StaticEgressError } from "../util/errors.js";
import type { KubeClient } from "./client.js";
import { statusOf } from "./errors.js";
import { listAllPages } from "./paged-list.js";
import { prunerFor } from "./prune.js";

/**
 * One-shot reads for the commands people run (`explain`, `egress-ips`): each kind listed whole,
 * in pages, pruned as the informers prune it, so a command sees the cluster as the controller and
 * the agents do. Failures say what could not be read and why, in words (no access, not installed,
 * unreachable), not as a stack.
 */

class ReadError extends StaticEgressError {}

export type ReadKind = "Pod" | "Node" | "Namespace" | "EgressGateway" | "EgressPolicy" | "ClusterEgressPolicy" | "App";

const KINDS: Record<ReadKind, { apiVersion: string; resource: string; group: string; namespaced: boolean }> = {
  Pod: { apiVersion: "v1", resource: "pods", group: "", namespaced: true },
  Node: { apiVersion: "v1", resource: "nodes", group: "", namespaced: false },
  Namespace: { apiVersion: "v1", resource: "namespaces", group: "", namespaced: false },
  EgressGateway: { apiVersion: API_VERSION, resource: "egressgateways", group: GROUP, namespaced: false },
  EgressPolicy: { apiVersion: API_VERSION, resource: "egresspolicies", group: GROUP, namespaced: true },
  ClusterEgressPolicy: { apiVersion: API_VERSION, resource: "clusteregresspolicies", group: GROUP, namespaced: false },
  App: { apiVersion: API_VERSION, resource: "apps", group: GROUP, namespaced: false },
};

/** The server's own words from a failed call (a Status object's message), if any. */
function serverMessage(e: unknown): string {
  const body = (e as { body?: unknown }).body;
  if (typeof body === "string") {
    try {
      const m = (JSON.parse(body) as { message?: unknown }).message;
      if (typeof m === "string") return m;
    } catch {
      /* not JSON */
    }
  }
  return (e as Error).message ?? String(e);
}

/** Lists one kind (in `namespace`, or everywhere), objects with kind and apiVersion set; ours being deleted left out, as the agents leave them out. */
export async function listKind(
  client: KubeClient,
  kind: ReadKind,
  opts: {
    namespace?: string;
    fieldSelector?: string;
    /** A CRD that is not installed lists as empty. */ optional?: boolean;
  } = {},
): Promise<KubeObject[]> {
  const k = KINDS[kind];
  const base = k.group === "" ? "/api/v1" : `/apis/${GROUP}/${VERSION}`;
  const path = `${base}${opts.namespace !== undefined ? `/namespaces/${opts.namespace}` : ""}/${k.resource}`;
  const scope =
    opts.namespace !== undefined ? ` in namespace ${opts.namespace}` : k.namespaced ? " in all namespaces" : "";
  const what = `${k.group === "" ? k.resource : `${k.resource}.${k.group}`}${scope}`;
  let list;
  try {
    list = await listAllPages(
      (q) => client.listPage(path, { ...q, ...(opts.fieldSelector ? { fieldSelector: opts.fieldSelector } : {}) }),
      prunerFor(kind),
    );
  } catch (e) {
    const status = statusOf(e);
    const server = client.kubeconfig.getCurrentCluster()?.server ?? "(no server in the kubeconfig)";
    if (status === 401)
      throw new ReadError(`the API server at ${server} refused these credentials (401): ${serverMessage(e)}`, {
        cause: e,
      });
    if (status === 403) throw new ReadError(`no access: cannot list ${what}: ${serverMessage(e)}`, { cause: e });
    if (status === 404 && k.group !== "" && opts.optional) return [];
    if (status === 404 && k.group !== "")
      throw new ReadError(`cannot list ${what}: the ${k.resource}.${GROUP} CRD is not installed (404)`, { cause: e });
    if (status === undefined)
      throw new ReadError(`cannot reach the API server at ${server}: ${(e as Error).message}`, { cause: e });
    throw new ReadError(`cannot list ${what} (HTTP ${status}): ${serverMessage(e)}`, { cause: e });
  }
  return (list.items as KubeObject[])
    .filter((o) => k.group === "" || !(o.metadata as { deletionTimestamp?: unknown } | undefined)?.deletionTimestamp)
    .map((o) => ({ ...o, kind, apiVersion: k.apiVersion }));
}

/** One pod, or a ReadError naming it when it is not there. */
export async function readPod(client: KubeClient, namespace: string, name: string): Promise<KubeObject> {
  const [pod] = await listKind(client, "Pod", { namespace, fieldSelector: `metadata.name=${name}` });
  if (!pod) throw new ReadError(`pod ${namespace}/${name} not found`);
  return pod;
}

/** What the planner reads, as `KubeSource.objects()` has it: pods, nodes, namespaces, gateways and policies. */
export async function readCluster(client: KubeClient): Promise<KubeObject[]> {
  const kinds: ReadKind[] = ["Pod", "Node", "Namespace", "EgressGateway", "EgressPolicy", "ClusterEgressPolicy"];
  return (await Promise.all(kinds.map((k) => listKind(client, k)))).flat();
}
