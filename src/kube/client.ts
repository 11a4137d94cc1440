import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type KubernetesObject,
  type V1Lease,
} from "@kubernetes/client-node";
import { request as httpRequest, type Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import { STATIC_ROUTE_GROUP, STATIC_ROUTE_VERSION } from "../api/digitalocean-v1/static-route.js";
import type { ListPage } from "./paged-list.js";
import { statusOf, withKubeApiErrors } from "./errors.js";

export { statusOf };

/**
 * Every call static-egress makes to the Kubernetes API goes through this file, and
 * `KUBE_ACCESS` lists them: the RBAC manifests are checked against it by a test, so RBAC
 * grants exactly what the code uses (least privilege) and nothing the code uses is missing.
 */
/**
 * Where Events about cluster-scoped objects (EgressGateway, ClusterEgressPolicy) go. The API
 * server accepts a core/v1 Event whose involvedObject has no namespace only in `default` (it
 * refuses any other with "involvedObject.namespace: does not match event.namespace"); Node
 * events are there too, and `kubectl describe` finds them.
 */
export const CLUSTER_EVENT_NAMESPACE = "default";

export interface Access {
  /** `user`: the CLI's calls with the user's own kubeconfig (no service account; not in deploy/'s RBAC). */
  component: "controller" | "node-agent" | "gateway-agent" | "user";
  apiGroup: string;
  resource: string;
  verbs: string[];
}

export const KUBE_ACCESS: readonly Access[] = [
  // Informers (list + watch) — see src/kube/source.ts
  ...(["controller", "node-agent", "gateway-agent"] as const).flatMap((component) => [
    { component, apiGroup: "", resource: "pods", verbs: ["list", "watch"] },
    { component, apiGroup: "", resource: "nodes", verbs: ["list", "watch"] },
    { component, apiGroup: "", resource: "namespaces", verbs: ["list", "watch"] },
    { component, apiGroup: GROUP, resource: "egressgateways", verbs: ["list", "watch"] },
    { component, apiGroup: GROUP, resource: "egresspolicies", verbs: ["list", "watch"] },
    { component, apiGroup: GROUP, resource: "clusteregresspolicies", verbs: ["list", "watch"] },
  ]),
  { component: "controller", apiGroup: GROUP, resource: "egresspolicies/status", verbs: ["patch"] },
  { component: "controller", apiGroup: GROUP, resource: "clusteregresspolicies/status", verbs: ["patch"] },
  { component: "controller", apiGroup: GROUP, resource: "egressgateways/status", verbs: ["patch"] },
  // Finalizers are added and removed with a merge patch on the object itself.
  { component: "controller", apiGroup: GROUP, resource: "egresspolicies", verbs: ["patch"] },
  { component: "controller", apiGroup: GROUP, resource: "clusteregresspolicies", verbs: ["patch"] },
  { component: "controller", apiGroup: GROUP, resource: "egressgateways", verbs: ["patch"] },
  // A cloud fleet whose gateway the cache does not show is deleted only after the API confirms.
  { component: "controller", apiGroup: GROUP, resource: "egressgateways", verbs: ["get"] },
  { component: "controller", apiGroup: "", resource: "events", verbs: ["create"] },
  { component: "controller", apiGroup: "coordination.k8s.io", resource: "leases", verbs: ["get", "create", "update"] },
  // DigitalOcean: Services that ask for a reserved IP get the holder node's anchor IP in
  // spec.externalIPs (src/controller/cloud/service-external-ips.ts); the informer runs only then.
  { component: "controller", apiGroup: "", resource: "services", verbs: ["list", "watch", "patch"] },
  // Node agents report what they programmed and what they see of gateway health.
  { component: "node-agent", apiGroup: "", resource: "nodes", verbs: ["patch"] },
  // Gateway agents report their instance's traffic per policy (status.traffic.instances, their own entry).
  { component: "gateway-agent", apiGroup: GROUP, resource: "egresspolicies/status", verbs: ["patch"] },
  { component: "gateway-agent", apiGroup: GROUP, resource: "clusteregresspolicies/status", verbs: ["patch"] },
  // Apps (src/kube/apps.ts, docs/apps.md): informers, server-side apply of what an App is made
  // of (a patch; the API server also asks for `create` when the object does not exist yet),
  // deletes of what it no longer is. Secrets are written and deleted, never read.
  { component: "controller", apiGroup: GROUP, resource: "apps", verbs: ["list", "watch", "patch"] },
  { component: "controller", apiGroup: GROUP, resource: "apps/status", verbs: ["patch"] },
  { component: "controller", apiGroup: "", resource: "namespaces", verbs: ["create", "patch", "delete"] },
  {
    component: "controller",
    apiGroup: "apps",
    resource: "deployments",
    verbs: ["list", "watch", "create", "patch", "delete"],
  },
  {
    component: "controller",
    apiGroup: "",
    resource: "services",
    verbs: ["list", "watch", "create", "patch", "delete"],
  },
  {
    component: "controller",
    apiGroup: "networking.k8s.io",
    resource: "networkpolicies",
    verbs: ["list", "watch", "create", "patch", "delete"],
  },
  { component: "controller", apiGroup: "", resource: "secrets", verbs: ["create", "patch", "delete"] },
  // DEDICATED_IP apps: a gateway and a policy of their own (src/planner/app-egress.ts).
  { component: "controller", apiGroup: GROUP, resource: "egressgateways", verbs: ["create", "delete"] },
  { component: "controller", apiGroup: GROUP, resource: "egresspolicies", verbs: ["create", "delete"] },
  // `static-egress apps` (src/cli/apps.ts) with the user's credentials.
  { component: "user", apiGroup: GROUP, resource: "apps", verbs: ["create", "get", "list", "update", "delete"] },
  // `static-egress explain` and `egress-ips` (src/cli/explain.ts, src/kube/read.ts): lists only,
  // the cluster as the planner reads it (so the node agent's own identity can run `explain --local`).
  ...(["pods", "nodes", "namespaces"] as const).map((resource) => ({
    component: "user" as const,
    apiGroup: "",
    resource,
    verbs: ["list"],
  })),
  ...(["egressgateways", "egresspolicies", "clusteregresspolicies"] as const).map((resource) => ({
    component: "user" as const,
    apiGroup: GROUP,
    resource,
    verbs: ["list"],
  })),
  // DigitalOcean's StaticRoute (docs/static-routes.md): node agents read them, apply their own
  // entry of status.nodes (server-side apply of the status subresource only) and record Events.
  { component: "node-agent", apiGroup: STATIC_ROUTE_GROUP, resource: "staticroutes", verbs: ["list", "watch"] },
  { component: "node-agent", apiGroup: STATIC_ROUTE_GROUP, resource: "staticroutes/status", verbs: ["patch"] },
  { component: "node-agent", apiGroup: "", resource: "events", verbs: ["create"] },
  // ... and never route the API server away: its addresses, read once at start (only the
  // `kubernetes` Endpoints object: resourceNames in the role).
  { component: "node-agent", apiGroup: "", resource: "endpoints", verbs: ["get"] },
];

export type PolicyKind = "EgressPolicy" | "ClusterEgressPolicy" | "EgressGateway";

export const PLURALS: Record<PolicyKind, string> = {
  EgressPolicy: "egresspolicies",
  ClusterEgressPolicy: "clusteregresspolicies",
  EgressGateway: "egressgateways",
};

const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const serverSideApply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

/** The API calls static-egress makes, typed, through @kubernetes/client-node. */
export class KubeClient {
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationV1Api;

  constructor(readonly kubeconfig: KubeConfig) {
    // Every failed call is a KubeApiError (status + the library's error as cause).
    this.core = withKubeApiErrors(kubeconfig.makeApiClient(CoreV1Api));
    this.custom = withKubeApiErrors(kubeconfig.makeApiClient(CustomObjectsApi));
    this.coordination = withKubeApiErrors(kubeconfig.makeApiClient(CoordinationV1Api));
  }

  async patchStatus(kind: PolicyKind, namespace: string | undefined, name: string, status: unknown): Promise<void> {
    const plural = PLURALS[kind];
    if (namespace !== undefined && kind === "EgressPolicy") {
      await this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace, plural, name, body: { status } },
        mergePatch,
      );
    } else {
      await this.custom.patchClusterCustomObjectStatus(
        { group: GROUP, version: VERSION, plural, name, body: { status } },
        mergePatch,
      );
    }
  }

  /**
   * Merge-patches part of a status only if the object is still at `resourceVersion` (409
   * otherwise): for a writer that shares a status with another one (cloud plugins, the core).
   */
  async patchStatusAt(
    kind: PolicyKind,
    namespace: string | undefined,
    name: string,
    status: unknown,
    resourceVersion: string,
  ): Promise<void> {
    const plural = PLURALS[kind];
    const body = { metadata: { resourceVersion }, status };
    if (namespace !== undefined && kind === "EgressPolicy") {
      await this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace, plural, name, body },
        mergePatch,
      );
    } else {
      await this.custom.patchClusterCustomObjectStatus(
        { group: GROUP, version: VERSION, plural, name, body },
        mergePatch,
      );
    }
  }

  /**
   * Server-side applies this instance's entry of a policy's status.traffic.instances (a list
   * keyed by instance): the field manager owns that entry only, so instances never overwrite
   * each other, nor the controller's status.
   */
  async applyInstanceTraffic(
    kind: "EgressPolicy" | "ClusterEgressPolicy",
    namespace: string | undefined,
    name: string,
    entry: {
      instance: string;
      bytesPerSecond: number;
      packetsPerSecond: number;
      at: string;
      counters?: { egressIP: string; bytes: number; packets: number; since?: string }[];
    },
  ): Promise<void> {
    const plural = PLURALS[kind];
    const fieldManager = `static-egress-gateway-${entry.instance.replace(/[^a-zA-Z0-9.-]/g, "-")}`.slice(0, 128);
    const body = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind,
      metadata: { name, ...(namespace !== undefined ? { namespace } : {}) },
      status: { traffic: { instances: [entry] } },
    };
    if (namespace !== undefined && kind === "EgressPolicy") {
      await this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace, plural, name, body, fieldManager, force: true },
        serverSideApply,
      );
    } else {
      await this.custom.patchClusterCustomObjectStatus(
        { group: GROUP, version: VERSION, plural, name, body, fieldManager, force: true },
        serverSideApply,
      );
    }
  }

  /**
   * The API server's own addresses (the `kubernetes` Service's endpoints in `default`): what the
   * ClusterIP leads to, which a StaticRoute must not route away either.
   */
  async apiServerEndpoints(): Promise<string[]> {
    const ep = await this.core.readNamespacedEndpoints({ namespace: "default", name: "kubernetes" });
    return [...new Set((ep.subsets ?? []).flatMap((s) => (s.addresses ?? []).map((a) => a.ip)))].sort();
  }

  /** The EgressGateway as the API server has it now (not a cache), undefined if there is none. */
  async readGateway(name: string): Promise<KubernetesObject | undefined> {
    try {
      return (await this.custom.getClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURALS.EgressGateway,
        name,
      })) as KubernetesObject;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  /** Replaces the finalizer list; the resourceVersion makes it fail (409) if someone changed the object meanwhile. */
  async patchFinalizers(
    kind: PolicyKind,
    namespace: string | undefined,
    name: string,
    finalizers: string[],
    resourceVersion: string | undefined,
  ): Promise<void> {
    const plural = PLURALS[kind];
    const body = { metadata: { finalizers, ...(resourceVersion ? { resourceVersion } : {}) } };
    if (namespace !== undefined && kind === "EgressPolicy") {
      await this.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace, plural, name, body },
        mergePatch,
      );
    } else {
      await this.custom.patchClusterCustomObject({ group: GROUP, version: VERSION, plural, name, body }, mergePatch);
    }
  }

  /**
   * An Event about any object (e.g. a Pod whose reserved IP moved), in that object's namespace,
   * or in `default` (CLUSTER_EVENT_NAMESPACE) for a cluster-scoped object.
   */
  async createObjectEvent(e: {
    involved: { apiVersion: string; kind: string; name: string; namespace?: string; uid?: string };
    type: "Normal" | "Warning";
    reason: string;
    message: string;
    component: string;
  }): Promise<void> {
    const now = new Date();
    const { involved } = e;
    const namespace = involved.namespace ?? CLUSTER_EVENT_NAMESPACE;
    await this.core.createNamespacedEvent({
      namespace,
      body: {
        metadata: { generateName: `${involved.name}.`, namespace },
        involvedObject: {
          apiVersion: involved.apiVersion,
          kind: involved.kind,
          name: involved.name,
          ...(involved.namespace ? { namespace: involved.namespace } : {}),
          ...(involved.uid ? { uid: involved.uid } : {}),
        },
        type: e.type,
        reason: e.reason,
        message: e.message,
        source: { component: e.component },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  }

  /**
   * Sets a Service's spec.externalIPs (merge patch: the list is replaced) and annotations (null
   * removes one), only if the Service is
   * still at `resourceVersion` (409 otherwise), so a concurrent edit by its owner is never lost.
   */
  async patchServiceExternalIPs(
    namespace: string,
    name: string,
    externalIPs: string[],
    annotations: Record<string, string | null>,
    resourceVersion: string | undefined,
  ): Promise<void> {
    const body = { metadata: { annotations, ...(resourceVersion ? { resourceVersion } : {}) }, spec: { externalIPs } };
    await this.core.patchNamespacedService({ namespace, name, body }, mergePatch);
  }

  /**
   * One page of a list (`GET path?limit=..&continue=..`), as plain JSON: the informers list in
   * pages and prune each page before the next (src/kube/paged-list.ts), instead of reading the
   * whole list as one string and deserializing it into client-node's classes. Errors carry the
   * HTTP status in `statusCode` and `code` (a 410 means the continue token expired).
   */
  async listPage(
    path: string,
    query: { limit?: number; continue?: string; fieldSelector?: string; labelSelector?: string },
    timeoutMs = 60_000,
  ): Promise<ListPage> {
    const cluster = this.kubeconfig.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig: no current cluster");
    const url = new URL(cluster.server + path);
    if (query.limit !== undefined) url.searchParams.set("limit", String(query.limit));
    if (query.continue) url.searchParams.set("continue", query.continue);
    if (query.fieldSelector) url.searchParams.set("fieldSelector", query.fieldSelector);
    if (query.labelSelector) url.searchParams.set("labelSelector", query.labelSelector);
    const init = await this.kubeconfig.applyToFetchOptions({});
    const headers: Record<string, string> = { accept: "application/json" };
    (init.headers as Headers | undefined)?.forEach((v, k) => (headers[k] = v));
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    const agent = this.listAgent(init.agent as HttpAgent | undefined);
    return new Promise<ListPage>((resolve, reject) => {
      const req = send(url, { method: "GET", headers, agent, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          if (status !== 200) {
            const err = Object.assign(new Error(`GET ${path}: HTTP ${status}: ${text.slice(0, 300)}`), {
              statusCode: status,
              code: status,
              body: text.slice(0, 2_000),
            });
            reject(err);
            return;
          }
          try {
            resolve(JSON.parse(text) as ListPage);
          } catch (e) {
            reject(e as Error);
          }
        });
      });
      req.on("timeout", () => req.destroy(new Error(`GET ${path}: no answer within ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end();
    });
  }

  private keptAgent: { key: string; agent: HttpsAgent } | undefined;

  /**
   * client-node makes a new HTTPS agent (TLS context, connection, handshake) for every request: list
   * pages reuse one keep-alive agent with the same TLS settings instead (a new one when they change,
   * e.g. rotated client certificates). Anything but a plain HTTPS agent (a proxy's) is used as given.
   */
  private listAgent(given: HttpAgent | undefined): HttpAgent | undefined {
    if (!(given instanceof HttpsAgent) || given.constructor !== HttpsAgent) return given;
    const o = given.options;
    const key = JSON.stringify(
      [o.ca, o.cert, o.key, o.pfx, o.passphrase, o.rejectUnauthorized, o.servername].map((v) =>
        Buffer.isBuffer(v) ? v.toString("base64") : v,
      ),
    );
    if (this.keptAgent?.key !== key) {
      this.keptAgent?.agent.destroy();
      // Idle keep-alive sockets are unref'd by the agent: they keep no process alive.
      this.keptAgent = { key, agent: new HttpsAgent({ ...o, keepAlive: true }) };
    }
    given.destroy();
    return this.keptAgent.agent;
  }

  /**
   * This node's entry of a StaticRoute's status.nodes, by server-side apply of the status
   * subresource with a field manager of its own: the list is a map keyed by node name, so every
   * node agent owns exactly its entry and concurrent writers never overwrite each other.
   * `entry` undefined removes this node's entry (the manager applies an empty list).
   */
  async applyStaticRouteNodeStatus(
    name: string,
    node: string,
    entry: Record<string, unknown> | undefined,
  ): Promise<void> {
    const body = {
      apiVersion: `${STATIC_ROUTE_GROUP}/${STATIC_ROUTE_VERSION}`,
      kind: "StaticRoute",
      metadata: { name },
      status: { nodes: entry ? [{ ...entry, name: node }] : [] },
    };
    await this.custom.patchClusterCustomObjectStatus(
      {
        group: STATIC_ROUTE_GROUP,
        version: STATIC_ROUTE_VERSION,
        plural: "staticroutes",
        name,
        body,
        fieldManager: `static-egress-node/${node}`.slice(0, 128),
        force: true,
      },
      serverSideApply,
    );
  }

  async patchNodeAnnotations(name: string, annotations: Record<string, string | null>): Promise<void> {
    await this.core.patchNode({ name, body: { metadata: { annotations } } }, mergePatch);
  }

  readLease(namespace: string, name: string): Promise<V1Lease> {
    return this.coordination.readNamespacedLease({ name, namespace });
  }

  createLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return this.coordination.createNamespacedLease({ namespace, body: lease });
  }

  replaceLease(namespace: string, name: string, lease: V1Lease): Promise<V1Lease> {
    return this.coordination.replaceNamespacedLease({ name, namespace, body: lease });
  }
}
