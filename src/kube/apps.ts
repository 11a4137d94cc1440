import {
  AppsV1Api,
  ListWatch,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { APP_LABEL } from "../api/keys.js";
import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import { PLURALS } from "./client.js";
import type { Logger } from "../util/log.js";
import { statusOf, type KubeClient } from "./client.js";
import { listAllPages } from "./paged-list.js";
import { pruneOwn } from "./prune.js";
import { pruningWatch } from "./source.js";

/**
 * The API calls of Apps (docs/apps.md): the controller's (server-side apply of what an App is
 * made of, deletes, the App's status and finalizer) and the CLI's (`static-egress apps`, with
 * the user's kubeconfig). Listed in KUBE_ACCESS (src/kube/client.ts) like every other call.
 */

const APPS_PLURAL = "apps";
/** Server-side apply's field manager: the controller owns the fields it sets, and only those. */
const FIELD_MANAGER = "static-egress-controller";
/** Everything the controller makes carries this label (the informers below select on it). */
const MANAGED_SELECTOR = "app.kubernetes.io/managed-by=static-egress";

const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export type AppChildKind =
  "Namespace" | "Deployment" | "Service" | "Secret" | "NetworkPolicy" | "EgressGateway" | "EgressPolicy";

async function ignoreNotFound(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (e) {
    if (statusOf(e) !== 404) throw e;
  }
}

export class AppsClient {
  private readonly appsApi: AppsV1Api;
  private readonly networking: NetworkingV1Api;

  constructor(readonly kube: KubeClient) {
    this.appsApi = kube.kubeconfig.makeApiClient(AppsV1Api);
    this.networking = kube.kubeconfig.makeApiClient(NetworkingV1Api);
  }

  /** Server-side apply of one object the controller makes (created if missing; fields it no longer sets are removed). */
  async applyChild(o: KubernetesObject): Promise<void> {
    const name = o.metadata?.name ?? "";
    const namespace = o.metadata?.namespace ?? "";
    const params = { name, body: o, fieldManager: FIELD_MANAGER, force: true };
    const core = this.kube.core;
    switch (o.kind as AppChildKind) {
      case "Namespace":
        await core.patchNamespace(params, apply);
        return;
      case "Deployment":
        await this.appsApi.patchNamespacedDeployment({ ...params, namespace }, apply);
        return;
      case "Service":
        await core.patchNamespacedService({ ...params, namespace }, apply);
        return;
      case "Secret":
        await core.patchNamespacedSecret({ ...params, namespace }, apply);
        return;
      case "NetworkPolicy":
        await this.networking.patchNamespacedNetworkPolicy({ ...params, namespace }, apply);
        return;
      case "EgressGateway":
        await this.kube.custom.patchClusterCustomObject(
          { ...params, group: GROUP, version: VERSION, plural: PLURALS.EgressGateway },
          apply,
        );
        return;
      case "EgressPolicy":
        await this.kube.custom.patchNamespacedCustomObject(
          { ...params, namespace, group: GROUP, version: VERSION, plural: PLURALS.EgressPolicy },
          apply,
        );
        return;
      default:
        throw new Error(`applyChild: ${o.kind} is not a kind Apps are made of`);
    }
  }

  /** Deletes one object the controller made; already gone counts as done. */
  async deleteChild(kind: AppChildKind, namespace: string, name: string): Promise<void> {
    const core = this.kube.core;
    switch (kind) {
      case "Namespace":
        return ignoreNotFound(core.deleteNamespace({ name }));
      case "Deployment":
        return ignoreNotFound(this.appsApi.deleteNamespacedDeployment({ namespace, name }));
      case "Service":
        return ignoreNotFound(core.deleteNamespacedService({ namespace, name }));
      case "Secret":
        return ignoreNotFound(core.deleteNamespacedSecret({ namespace, name }));
      case "NetworkPolicy":
        return ignoreNotFound(this.networking.deleteNamespacedNetworkPolicy({ namespace, name }));
      case "EgressGateway":
        return ignoreNotFound(
          this.kube.custom.deleteClusterCustomObject({
            group: GROUP,
            version: VERSION,
            plural: PLURALS.EgressGateway,
            name,
          }),
        );
      case "EgressPolicy":
        return ignoreNotFound(
          this.kube.custom.deleteNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            plural: PLURALS.EgressPolicy,
            namespace,
            name,
          }),
        );
    }
  }

  async patchAppStatus(name: string, status: unknown): Promise<void> {
    await this.kube.custom.patchClusterCustomObjectStatus(
      { group: GROUP, version: VERSION, plural: APPS_PLURAL, name, body: { status } },
      mergePatch,
    );
  }

  /** Replaces the finalizer list if the App is still at `resourceVersion` (409 otherwise). */
  async patchAppFinalizers(name: string, finalizers: string[], resourceVersion: string | undefined): Promise<void> {
    const body = { metadata: { finalizers, ...(resourceVersion ? { resourceVersion } : {}) } };
    await this.kube.custom.patchClusterCustomObject(
      { group: GROUP, version: VERSION, plural: APPS_PLURAL, name, body },
      mergePatch,
    );
  }

  // ---- the CLI's calls (the user's own credentials) ----

  /** Creates an App; the server refuses unknown fields (Strict) rather than dropping them. */
  async createApp(body: object): Promise<KubernetesObject> {
    return (await this.kube.custom.createClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: APPS_PLURAL,
      body,
      fieldValidation: "Strict",
    })) as KubernetesObject;
  }

  async getApp(name: string): Promise<KubernetesObject | undefined> {
    try {
      return (await this.kube.custom.getClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: APPS_PLURAL,
        name,
      })) as KubernetesObject;
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  async listApps(): Promise<KubernetesObject[]> {
    const list = (await this.kube.custom.listClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: APPS_PLURAL,
    })) as { items?: KubernetesObject[] };
    return list.items ?? [];
  }

  /** Replaces an App (its resourceVersion in `body` makes a concurrent change a 409). */
  async replaceApp(name: string, body: object): Promise<KubernetesObject> {
    return (await this.kube.custom.replaceClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: APPS_PLURAL,
      name,
      body,
      fieldValidation: "Strict",
    })) as KubernetesObject;
  }

  /** Deletes an App; false when there was none. */
  async deleteApp(name: string): Promise<boolean> {
    try {
      await this.kube.custom.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: APPS_PLURAL, name });
      return true;
    } catch (e) {
      if (statusOf(e) === 404) return false;
      throw e;
    }
  }
}

type Obj = Record<string, unknown>;

/**
 * What the App informers keep of the objects an App is made of: metadata (with our labels and
 * annotations, owner references, generation), a Deployment's replicas and rollout status. Secrets
 * are not watched at all (the controller writes them and never reads any Secret).
 */
function pruneAppChild(o: KubernetesObject): KubernetesObject {
  const src = o as Obj;
  const own = pruneOwn({ apiVersion: o.apiVersion, kind: o.kind, metadata: o.metadata } as KubernetesObject) as Obj;
  const meta = own.metadata as Obj;
  const owners = (o.metadata as Obj | undefined)?.ownerReferences;
  if (Array.isArray(owners))
    meta.ownerReferences = owners.map((r: Obj) => ({ kind: r.kind, name: r.name, uid: r.uid }));
  const spec = src.spec as Obj | undefined;
  const status = src.status as Obj | undefined;
  if (spec && typeof spec.replicas === "number") own.spec = { replicas: spec.replicas };
  if (status && o.kind !== "Namespace") {
    const s: Obj = {};
    for (const k of ["observedGeneration", "replicas", "updatedReplicas", "availableReplicas", "readyReplicas"])
      if (status[k] !== undefined) s[k] = status[k];
    if (Object.keys(s).length > 0) own.status = s;
  }
  if (status && o.kind === "Namespace" && status.phase !== undefined) own.status = { phase: status.phase };
  return own as KubernetesObject;
}

/** Our own kinds an App is made of (its gateway and policy): spec and status whole, with owner references. */
function pruneOwnedCustom(o: KubernetesObject): KubernetesObject {
  const out = pruneOwn(o) as Obj;
  const owners = (o.metadata as Obj | undefined)?.ownerReferences;
  if (Array.isArray(owners))
    (out.metadata as Obj).ownerReferences = owners.map((r: Obj) => ({ kind: r.kind, name: r.name, uid: r.uid }));
  return out as KubernetesObject;
}

interface Informed {
  kind: string;
  informer: ListWatch<KubernetesObject>;
  retry?: NodeJS.Timeout;
}

/**
 * The App controller's view of the cluster: Apps, every Namespace (a namespace that is in the
 * way of an app must be seen), and the Deployments, Services and NetworkPolicies the controller
 * made (label-selected). One informer per kind, relisting on failure, as KubeSource does.
 */
export class AppSource {
  private readonly informed: Informed[] = [];
  private stopped = false;

  constructor(
    private readonly client: KubeClient,
    private readonly logger: Logger,
  ) {}

  /** Starts the informers; resolves once every kind is listed. `onChange` gets the App a change concerns (undefined: every App). */
  async start(onChange: (app: string | undefined) => void): Promise<void> {
    const watch = new Watch(this.client.kubeconfig);
    const specs = [
      { kind: "App", path: `/apis/${GROUP}/${VERSION}/apps`, prune: pruneOwn },
      { kind: "Namespace", path: "/api/v1/namespaces", prune: pruneAppChild },
      { kind: "Deployment", path: "/apis/apps/v1/deployments", labelSelector: MANAGED_SELECTOR, prune: pruneAppChild },
      { kind: "Service", path: "/api/v1/services", labelSelector: MANAGED_SELECTOR, prune: pruneAppChild },
      {
        kind: "NetworkPolicy",
        path: "/apis/networking.k8s.io/v1/networkpolicies",
        labelSelector: MANAGED_SELECTOR,
        prune: pruneAppChild,
      },
      {
        kind: "EgressGateway",
        path: `/apis/${GROUP}/${VERSION}/egressgateways`,
        labelSelector: MANAGED_SELECTOR,
        prune: pruneOwnedCustom,
      },
      {
        kind: "EgressPolicy",
        path: `/apis/${GROUP}/${VERSION}/egresspolicies`,
        labelSelector: MANAGED_SELECTOR,
        prune: pruneOwnedCustom,
      },
    ];
    let synced = false;
    this.stopped = false;
    for (const s of specs) {
      const list = () =>
        listAllPages(
          (q) => this.client.listPage(s.path, { ...q, ...(s.labelSelector ? { labelSelector: s.labelSelector } : {}) }),
          s.prune,
        );
      const informer = new ListWatch<KubernetesObject>(
        s.path,
        pruningWatch(watch, s.prune),
        list,
        false,
        s.labelSelector,
      );
      const w: Informed = { kind: s.kind, informer };
      for (const verb of ["add", "update", "delete"] as const) {
        informer.on(verb, (o) => {
          if (!synced) return;
          onChange(s.kind === "App" ? o.metadata?.name : o.metadata?.labels?.[APP_LABEL]);
        });
      }
      informer.on("error", (err: unknown) => {
        if ((err as { name?: string } | undefined)?.name === "AbortError" || this.stopped || w.retry) return;
        this.logger.warn(
          { kind: s.kind, err: (err as Error)?.message ?? String(err) },
          "apps: watch failed; keeping the cache, retrying",
        );
        w.retry = setTimeout(() => {
          w.retry = undefined;
          if (!this.stopped) void informer.start().catch(() => undefined);
        }, 1_000);
        w.retry.unref();
      });
      this.informed.push(w);
    }
    for (let attempt = 1; ; attempt++) {
      await Promise.all(
        this.informed
          .filter((w) => !w.informer.latestResourceVersion())
          .map((w) => w.informer.start().catch(() => undefined)),
      );
      const missing = this.informed.filter((w) => !w.informer.latestResourceVersion());
      if (missing.length === 0) break;
      if (this.stopped) return;
      this.logger.warn({ kinds: missing.map((w) => w.kind), attempt }, "apps: initial list failed; retrying");
      await new Promise((r) => setTimeout(r, Math.min(500 * attempt, 5_000)));
    }
    synced = true;
  }

  /** Objects of a kind; for the children, only those of one app. */
  list(
    kind: "App" | "Namespace" | "Deployment" | "Service" | "NetworkPolicy" | "EgressGateway" | "EgressPolicy",
    app?: string,
  ): readonly KubernetesObject[] {
    const all = this.informed.find((w) => w.kind === kind)?.informer.list() ?? [];
    return app === undefined ? all : all.filter((o) => o.metadata?.labels?.[APP_LABEL] === app);
  }

  get(kind: "App" | "Namespace", name: string): KubernetesObject | undefined {
    return this.informed.find((w) => w.kind === kind)?.informer.get(name);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.informed) clearTimeout(w.retry);
    await Promise.all(this.informed.map((w) => w.informer.stop()));
  }
}
