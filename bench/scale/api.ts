import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { ALL_KINDS } from "../../src/api/v1alpha1/crd.js";
import { FINALIZER } from "../../src/controller/status.js";
import type { KubeStandin } from "../../src/lab/kube-standin/index.js";
import { packageRoot } from "../../src/lab/paths.js";
import {
  expectedSelectedPods,
  gatewayName,
  gatewayObject,
  namespaceObject,
  nodeObject,
  podObject,
  podParams,
  podStatus,
  policyObject,
  policyRef,
  type Json,
  type PolicyRef,
  type ScaleShape,
} from "./fixture.js";

type Seedable = Parameters<KubeStandin["seed"]>[0];
const GROUP_VERSION = "staticegress.io/v1alpha1";

export class ApiCallError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ApiCallError";
  }
}

/** Plain HTTP calls to the stand-in, as a kubelet or a user would make them. */
export class StandinHttp {
  constructor(private readonly api: KubeStandin) {}

  async call(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<Json> {
    const res = await fetch(`${this.api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.api.token}`, ...(body !== undefined ? { "content-type": contentType } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (res.status >= 300) throw new ApiCallError(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as Json;
  }

  createPod(pod: Json): Promise<Json> {
    const ns = (pod.metadata as { namespace: string }).namespace;
    return this.call("POST", `/api/v1/namespaces/${ns}/pods`, pod);
  }

  patchPodStatus(namespace: string, name: string, status: Json): Promise<Json> {
    return this.call("PATCH", `/api/v1/namespaces/${namespace}/pods/${name}/status`, { status }, "application/merge-patch+json");
  }

  patchPolicySpec(ref: PolicyRef, spec: Json): Promise<Json> {
    return this.call("PATCH", policyPath(ref), { spec }, "application/merge-patch+json");
  }

  patchNodeAnnotations(name: string, annotations: Record<string, string>): Promise<Json> {
    return this.call("PATCH", `/api/v1/nodes/${name}`, { metadata: { annotations } }, "application/merge-patch+json");
  }
}

export function policyPath(ref: PolicyRef): string {
  return ref.kind === "EgressPolicy" ? `/apis/${GROUP_VERSION}/namespaces/${ref.namespace}/egresspolicies/${ref.name}` : `/apis/${GROUP_VERSION}/clusteregresspolicies/${ref.name}`;
}

export interface SeedTimings {
  /** CRDs, namespaces, nodes, gateways and policies through seed(). */
  clusterObjectsMs: number;
  /** Pods through seed() (created Pending, as a create is). */
  podsMs: number;
  /** The kubelet's status patches (Running + addresses) over HTTP. */
  podStatusMs: number;
  podStatusPatchesPerSecond: number;
}

/**
 * Fills the stand-in. Pods are seeded (fast, no HTTP), but a create always resets a pod's
 * status to Pending, so each pod then gets its Running status with a real HTTP status patch.
 */
export async function fillCluster(api: KubeStandin, s: ScaleShape, opts: { concurrency: number; log: (line: string) => void }): Promise<SeedTimings> {
  const t0 = performance.now();
  const crds = ALL_KINDS.map((k) => parse(readFileSync(join(packageRoot(), "deploy", "crds", `${k.plural}.yaml`), "utf8")) as Json);
  const seed = (objects: Json[]) => api.seed(objects as unknown as Seedable);
  seed(crds);
  seed([{ apiVersion: "v1", kind: "Namespace", metadata: { name: "static-egress" } }, ...range(s.namespaces).map((i) => namespaceObject(s, i))]);
  seed(range(s.nodes).map(nodeObject));
  seed(range(s.gateways).map((g) => gatewayObject(s, g)));
  seed(range(s.policies).map((p) => policyObject(s, p)));
  const t1 = performance.now();
  const chunk = 5_000;
  for (let i = 0; i < s.pods; i += chunk) {
    seed(range(Math.min(chunk, s.pods - i)).map((j) => podObject(s, i + j)));
    // Let the event loop breathe (signals, the watchdog) between chunks.
    await new Promise((r) => setImmediate(r));
  }
  const t2 = performance.now();
  opts.log(`seeded ${s.pods} pods in ${Math.round(t2 - t1)} ms; patching their status over HTTP`);
  const http = new StandinHttp(api);
  let next = 0;
  const worker = async () => {
    while (next < s.pods) {
      const p = podParams(s, next++);
      await http.patchPodStatus(p.namespace, p.name, podStatus(p));
    }
  };
  await Promise.all(range(opts.concurrency).map(worker));
  const t3 = performance.now();
  return {
    clusterObjectsMs: Math.round(t1 - t0),
    podsMs: Math.round(t2 - t1),
    podStatusMs: Math.round(t3 - t2),
    podStatusPatchesPerSecond: Math.round(s.pods / ((t3 - t2) / 1000)),
  };
}

interface StoredPolicy {
  metadata: { generation?: number; finalizers?: string[] };
  status?: { observedGeneration?: number; selectedPods?: number; conditions?: { type: string; status: string; reason: string }[] };
}

export interface StatusProgress {
  total: number;
  /** A status with conditions for the current generation. */
  withStatus: number;
  withFinalizer: number;
  ready: number;
}

/** How far the controller got, read from the stand-in's store (no HTTP). */
export function policyProgress(api: KubeStandin, s: ScaleShape): StatusProgress {
  let withStatus = 0;
  let withFinalizer = 0;
  let ready = 0;
  for (const ref of policyRefs(s)) {
    const o = storedPolicy(api, ref);
    if (!o) continue;
    if (o.status?.conditions?.length && o.status.observedGeneration === o.metadata.generation) withStatus++;
    if (o.metadata.finalizers?.includes(FINALIZER)) withFinalizer++;
    if (o.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")) ready++;
  }
  return { total: s.policies, withStatus, withFinalizer, ready };
}

export function storedPolicy(api: KubeStandin, ref: PolicyRef): StoredPolicy | undefined {
  const resource = ref.kind === "EgressPolicy" ? "egresspolicies.staticegress.io" : "clusteregresspolicies.staticegress.io";
  return api.store.get(resource, ref.namespace, ref.name) as unknown as StoredPolicy | undefined;
}

export function policyRefs(s: ScaleShape): PolicyRef[] {
  return range(s.policies).map((p) => policyRef(s, p));
}

/** Policies whose `status.selectedPods` differs from what the fixture says they select. */
export function selectedPodMismatches(api: KubeStandin, s: ScaleShape): { policy: string; expected: number; actual: number | undefined }[] {
  const expected = expectedSelectedPods(s);
  const out: { policy: string; expected: number; actual: number | undefined }[] = [];
  for (const ref of policyRefs(s)) {
    const key = ref.kind === "EgressPolicy" ? `EgressPolicy/${ref.namespace}/${ref.name}` : `ClusterEgressPolicy/${ref.name}`;
    const actual = storedPolicy(api, ref)?.status?.selectedPods;
    if (actual !== expected.get(key)) out.push({ policy: key, expected: expected.get(key) ?? -1, actual });
  }
  return out;
}

export function gatewaysWithStatus(api: KubeStandin, s: ScaleShape): number {
  return range(s.gateways).filter((g) => (api.store.get("egressgateways.staticegress.io", undefined, gatewayName(g)) as { status?: { conditions?: unknown[] } } | undefined)?.status?.conditions?.length).length;
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
