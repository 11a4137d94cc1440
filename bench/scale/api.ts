import { Agent, request } from "node:https";
import { FINALIZER } from "../../src/controller/status.js";
import type { ControlPlane } from "../../src/lab/control-plane/index.js";
import {
  expectedSelectedPods,
  gatewayObject,
  namespaceName,
  namespaceObject,
  nodeName,
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

const GROUP_VERSION = "staticegress.io/v1alpha1";

class ApiCallError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = "ApiCallError";
  }
}

/**
 * Plain HTTPS calls to the real kube-apiserver as cluster-admin (group system:masters, which API
 * Priority and Fairness exempts by default), over a keep-alive agent: what a kubelet or a user
 * would send. Every call has a timeout.
 */
export class ApiHttp {
  private readonly agent: Agent;
  requests = 0;

  constructor(
    private readonly cp: ControlPlane,
    maxSockets = 64,
    private readonly timeoutMs = 60_000,
  ) {
    this.agent = new Agent({ ca: cp.caPem, keepAlive: true, maxSockets });
  }

  call(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<Json> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    this.requests++;
    return new Promise((resolve, reject) => {
      const req = request(
        `${this.cp.url}${path}`,
        {
          method,
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: {
            authorization: `Bearer ${this.cp.adminToken}`,
            accept: "application/json",
            ...(payload !== undefined
              ? { "content-type": contentType, "content-length": Buffer.byteLength(payload) }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (status >= 300)
              reject(new ApiCallError(`${method} ${path}: HTTP ${status}: ${text.slice(0, 500)}`, status));
            else resolve(text ? (JSON.parse(text) as Json) : {});
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer within ${this.timeoutMs} ms`)));
      req.on("error", reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  create(path: string, body: Json): Promise<Json> {
    return this.call("POST", path, body);
  }

  createPod(pod: Json): Promise<Json> {
    const ns = (pod.metadata as { namespace: string }).namespace;
    return this.call("POST", `/api/v1/namespaces/${ns}/pods`, pod);
  }

  patchPodStatus(namespace: string, name: string, status: Json): Promise<Json> {
    return this.call(
      "PATCH",
      `/api/v1/namespaces/${namespace}/pods/${name}/status`,
      { status },
      "application/merge-patch+json",
    );
  }

  patchNodeStatus(name: string, status: Json): Promise<Json> {
    return this.call("PATCH", `/api/v1/nodes/${name}/status`, { status }, "application/merge-patch+json");
  }

  patchPolicySpec(ref: PolicyRef, spec: Json): Promise<Json> {
    return this.call("PATCH", policyPath(ref), { spec }, "application/merge-patch+json");
  }

  patchNodeAnnotations(name: string, annotations: Record<string, string>): Promise<Json> {
    return this.call("PATCH", `/api/v1/nodes/${name}`, { metadata: { annotations } }, "application/merge-patch+json");
  }

  getPolicy(ref: PolicyRef): Promise<StoredPolicy> {
    return this.call("GET", policyPath(ref)) as unknown as Promise<StoredPolicy>;
  }

  /** Every object of a list path, in pages of 500. */
  async listAll(path: string): Promise<Json[]> {
    const out: Json[] = [];
    let cont: string | undefined;
    do {
      const page = (await this.call(
        "GET",
        `${path}?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ""}`,
      )) as { items?: Json[]; metadata?: { continue?: string } };
      out.push(...(page.items ?? []));
      cont = page.metadata?.continue || undefined;
    } while (cont);
    return out;
  }

  close(): void {
    this.agent.destroy();
  }
}

function policyPath(ref: PolicyRef): string {
  return ref.kind === "EgressPolicy"
    ? `/apis/${GROUP_VERSION}/namespaces/${ref.namespace}/egresspolicies/${ref.name}`
    : `/apis/${GROUP_VERSION}/clusteregresspolicies/${ref.name}`;
}

export interface LoadTimings {
  /** Namespaces (+ their `default` ServiceAccount), nodes (+ status), gateways, policies. */
  clusterObjectsMs: number;
  /** Pod creates (the API server makes them Pending, without addresses). */
  podCreatesMs: number;
  podCreatesPerSecond: number;
  /** The kubelet's status patches (Running + addresses). */
  podStatusMs: number;
  podStatusPatchesPerSecond: number;
  concurrency: number;
  requests: number;
}

/** Runs `work(i)` for i in 0..n-1 with `concurrency` workers; the first error stops it. */
async function pool(
  n: number,
  concurrency: number,
  work: (i: number) => Promise<unknown>,
  progress?: (done: number) => void,
): Promise<void> {
  let next = 0;
  let done = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < n && failed === undefined) {
      const i = next++;
      try {
        await work(i);
      } catch (e) {
        failed ??= e;
        return;
      }
      done++;
      if (progress && done % 10_000 === 0) progress(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  if (failed !== undefined) throw failed;
}

/**
 * Fills the real API server through its HTTP API, as users, the scheduler and kubelets would:
 * creates, then status patches (a create always makes a pod Pending without addresses, and a
 * node without status). `concurrency` requests in flight.
 */
export async function fillCluster(
  http: ApiHttp,
  s: ScaleShape,
  opts: { concurrency: number; log: (line: string) => void },
): Promise<LoadTimings> {
  const before = http.requests;
  const t0 = performance.now();
  const c = opts.concurrency;
  await pool(s.namespaces, c, async (i) => {
    await http.create("/api/v1/namespaces", namespaceObject(s, i));
    // No controller manager runs: pods need their namespace's default ServiceAccount.
    await http.create(`/api/v1/namespaces/${namespaceName(i)}/serviceaccounts`, { metadata: { name: "default" } });
  });
  await pool(s.nodes, c, async (i) => {
    const node = nodeObject(i);
    const { status, ...rest } = node;
    await http.create("/api/v1/nodes", rest);
    await http.patchNodeStatus(nodeName(i), status as Json);
  });
  await pool(s.gateways, c, (g) => http.create(`/apis/${GROUP_VERSION}/egressgateways`, gatewayObject(s, g)));
  await pool(s.policies, c, (p) => {
    const o = policyObject(s, p);
    const ref = policyRef(s, p);
    return http.create(
      ref.kind === "EgressPolicy"
        ? `/apis/${GROUP_VERSION}/namespaces/${ref.namespace}/egresspolicies`
        : `/apis/${GROUP_VERSION}/clusteregresspolicies`,
      o,
    );
  });
  const t1 = performance.now();
  opts.log(`namespaces, nodes, gateways, policies in ${Math.round(t1 - t0)} ms; creating ${s.pods} pods`);
  await pool(
    s.pods,
    c,
    (i) => http.createPod(podObject(s, i)),
    (n) => opts.log(`  ${n} pods created`),
  );
  const t2 = performance.now();
  opts.log(`created ${s.pods} pods in ${Math.round(t2 - t1)} ms; patching their status (Running, addresses)`);
  await pool(
    s.pods,
    c,
    (i) => {
      const p = podParams(s, i);
      return http.patchPodStatus(p.namespace, p.name, podStatus(p));
    },
    (n) => opts.log(`  ${n} pod statuses patched`),
  );
  const t3 = performance.now();
  return {
    clusterObjectsMs: Math.round(t1 - t0),
    podCreatesMs: Math.round(t2 - t1),
    podCreatesPerSecond: Math.round(s.pods / ((t2 - t1) / 1000)),
    podStatusMs: Math.round(t3 - t2),
    podStatusPatchesPerSecond: Math.round(s.pods / ((t3 - t2) / 1000)),
    concurrency: c,
    requests: http.requests - before,
  };
}

export interface StoredPolicy {
  kind?: string;
  metadata: { name: string; namespace?: string; generation?: number; finalizers?: string[] };
  status?: {
    observedGeneration?: number;
    selectedPods?: number;
    conditions?: { type: string; status: string; reason: string }[];
  };
}

export interface StatusProgress {
  total: number;
  /** A status with conditions for the current generation. */
  withStatus: number;
  withFinalizer: number;
  ready: number;
}

/** Every policy as the API server has it now (listed, in pages). */
export async function listPolicies(http: ApiHttp): Promise<Map<string, StoredPolicy>> {
  const out = new Map<string, StoredPolicy>();
  for (const p of (await http.listAll(`/apis/${GROUP_VERSION}/egresspolicies`)) as unknown as StoredPolicy[])
    out.set(`EgressPolicy/${p.metadata.namespace}/${p.metadata.name}`, p);
  for (const p of (await http.listAll(`/apis/${GROUP_VERSION}/clusteregresspolicies`)) as unknown as StoredPolicy[])
    out.set(`ClusterEgressPolicy/${p.metadata.name}`, p);
  return out;
}

function refKey(ref: PolicyRef): string {
  return ref.kind === "EgressPolicy" ? `EgressPolicy/${ref.namespace}/${ref.name}` : `ClusterEgressPolicy/${ref.name}`;
}

/** How far the controller got, from a fresh list of the policies. */
export function policyProgress(policies: Map<string, StoredPolicy>, s: ScaleShape): StatusProgress {
  let withStatus = 0;
  let withFinalizer = 0;
  let ready = 0;
  for (const ref of policyRefs(s)) {
    const o = policies.get(refKey(ref));
    if (!o) continue;
    if (o.status?.conditions?.length && o.status.observedGeneration === o.metadata.generation) withStatus++;
    if (o.metadata.finalizers?.includes(FINALIZER)) withFinalizer++;
    if (o.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")) ready++;
  }
  return { total: s.policies, withStatus, withFinalizer, ready };
}

function policyRefs(s: ScaleShape): PolicyRef[] {
  return range(s.policies).map((p) => policyRef(s, p));
}

/** Policies whose `status.selectedPods` differs from what the fixture says they select. */
export function selectedPodMismatches(
  policies: Map<string, StoredPolicy>,
  s: ScaleShape,
): { policy: string; expected: number; actual: number | undefined }[] {
  const expected = expectedSelectedPods(s);
  const out: { policy: string; expected: number; actual: number | undefined }[] = [];
  for (const ref of policyRefs(s)) {
    const key = refKey(ref);
    const actual = policies.get(key)?.status?.selectedPods;
    if (actual !== expected.get(key)) out.push({ policy: key, expected: expected.get(key) ?? -1, actual });
  }
  return out;
}

export async function gatewaysWithStatus(http: ApiHttp): Promise<number> {
  const gws = (await http.listAll(`/apis/${GROUP_VERSION}/egressgateways`)) as {
    status?: { conditions?: unknown[] };
  }[];
  return gws.filter((g) => g.status?.conditions?.length).length;
}

/** The pods the API server holds, counted with their addresses (a check that loading did what it says). */
export async function countRunningPods(
  http: ApiHttp,
  s: ScaleShape,
): Promise<{ pods: number; runningWithAddress: number; wrongAddress: number }> {
  const pods = (await http.listAll("/api/v1/pods")) as {
    metadata: { name: string; namespace: string };
    spec: { nodeName?: string };
    status?: { phase?: string; podIP?: string };
  }[];
  const expected = new Map<string, string>();
  for (let i = 0; i < s.pods; i++) {
    const p = podParams(s, i);
    expected.set(`${p.namespace}/${p.name}`, p.podIP);
  }
  let running = 0;
  let wrong = 0;
  for (const p of pods) {
    const want = expected.get(`${p.metadata.namespace}/${p.metadata.name}`);
    if (want === undefined) continue;
    if (p.status?.phase === "Running" && p.status.podIP === want) running++;
    else wrong++;
  }
  return { pods: pods.length, runningWithAddress: running, wrongAddress: wrong };
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
