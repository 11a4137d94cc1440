import { KubeConfig, PatchStrategy, setHeaderOptions, type KubernetesObject, type V1Pod } from "@kubernetes/client-node";
import { GROUP, VERSION } from "../../api/v1alpha1/common.js";
import { ALL_KINDS, crdFor } from "../../api/v1alpha1/crd.js";
import type { EgressGateway } from "../../api/v1alpha1/egress-gateway.js";
import { startDigitalOceanStandin, type DigitalOceanStandin, type StandinOptions } from "../../lab/do-standin/index.js";
import { startKubeStandin, type KubeObject, type KubeStandin } from "../../lab/kube-standin/index.js";
import { KubeClient } from "../../kube/client.js";
import { controllerSourceOptions, KubeSource } from "../../kube/source.js";
import { silentLogger, type Logger } from "../../util/log.js";
import { Controller } from "../controller.js";
import { PROVISIONING, REPORT_ANNOTATION } from "../status.js";
import { digitalOceanPlugins, type DigitalOceanPlugins, type DigitalOceanPluginsOptions } from "./index.js";
import { RESERVED_IP_GRANT_KEY } from "./reserved-ip-rules.js";

/**
 * Test and benchmark harness: the controller with the DigitalOcean plugins, in-process, against
 * the Kubernetes API stand-in and the DigitalOcean API stand-in (both on loopback). Cluster nodes
 * are droplets in the DigitalOcean stand-in (tagged with the node tag) and Node objects whose
 * providerID names them.
 */

export const CLUSTER_ID = "0f3e6b1c-5d2a-4c1e-9a7b-2c4d6e8f0a1b";
export const NODE_TAG = `k8s:${CLUSTER_ID}`;
export const REGION = "ams3";
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export interface CloudHarnessOptions {
  /** Cluster nodes (droplets + Node objects) node1..nodeN (default 3). */
  nodes?: number;
  /** DigitalOcean stand-in timing (default: 10 ms boot, 20 ms actions). */
  cloud?: StandinOptions;
  /** Controller resync (default 300 ms). */
  resyncMs?: number;
  plugins?: Partial<Omit<DigitalOceanPluginsOptions, "clusterId" | "token" | "apiUrl">>;
  logger?: Logger;
  network?: { podCIDRs: string[]; serviceCIDRs: string[]; nodeCIDRs: string[] };
  /** Watch Services, so that the follower keeps their externalIPs (default false). */
  serviceExternalIPs?: boolean;
  /**
   * Start the controller's passes at once (default true). False: the test prepares the cloud
   * first, as a restarted controller finds it, and calls `controller.activate()` itself.
   */
  activate?: boolean;
}

export interface CloudHarness {
  kube: KubeStandin;
  cloud: DigitalOceanStandin;
  client: KubeClient;
  controller: Controller;
  plugins: DigitalOceanPlugins;
  /** Node name -> droplet id. */
  nodeDroplets: Map<string, number>;
  addNode(name: string): Promise<number>;
  /** Creates a pod on a node, Running and (by default) Ready. */
  createPod(p: { namespace?: string; name: string; node: string; labels?: Record<string, string>; annotations?: Record<string, string>; ready?: boolean; readySince?: Date }): Promise<void>;
  setPodReady(namespace: string, name: string, ready: boolean): Promise<void>;
  deletePod(namespace: string, name: string): Promise<void>;
  deleteNode(name: string): Promise<void>;
  /** Sets the Node's Ready condition (False/Unknown is what the node lifecycle controller writes for a dead node). */
  setNodeReady(name: string, ready: "True" | "False" | "Unknown"): Promise<void>;
  /** Droplet id holding the reserved IP in the stand-in, or undefined. */
  holderOf(ip: string): number | undefined;
  /**
   * A new reserved IP in the account, granted to the namespace (default web) as a cluster admin
   * would: annotation staticegress.io/reserved-ips on the Namespace.
   */
  grantedReservedIP(namespace?: string): Promise<string>;
  /** Adds IPs to a Namespace's grant. */
  grant(namespace: string, ...ips: string[]): Promise<void>;
  /**
   * Plays the part of a node agent whose probes of every active instance are up: writes the node's
   * report (as the agent does) each time the listed instances change. Without it no node has
   * judged any instance, and the controller rightly says Unknown. Returns a function that stops it.
   */
  judgeInstancesUp(node: string): () => void;
  close(): Promise<void>;
}

export async function startCloudHarness(opts: CloudHarnessOptions = {}): Promise<CloudHarness> {
  const logger = opts.logger ?? silentLogger;
  const kube = await startKubeStandin({ bookmarkIntervalMs: 0 });
  const cloud = await startDigitalOceanStandin({ dropletBootMs: 10, actionDurationMs: 20, ...opts.cloud });
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const client = new KubeClient(kc);
  kube.seed([
    ...(ALL_KINDS.map((k) => crdFor(k)) as unknown as KubeObject[]),
    ...["static-egress", "web"].map((name) => ({ apiVersion: "v1", kind: "Namespace", metadata: { name } }) as KubeObject),
  ]);
  const nodeDroplets = new Map<string, number>();
  let nodeIndex = 0;
  const addNode = async (name: string): Promise<number> => {
    const d = cloud.state.createDroplet({ name, region: REGION, size: "s-2vcpu-4gb", image: "debian-12-x64", tags: [NODE_TAG] });
    const id = d["id"] as number;
    const v4 = ((d["networks"] as { v4?: { type: string; ip_address: string }[] }).v4 ?? []).find((n) => n.type === "private")?.ip_address ?? "";
    nodeIndex++;
    await client.core.createNode({
      body: {
        metadata: { name },
        spec: { providerID: `digitalocean://${id}`, podCIDR: `10.244.${nodeIndex}.0/24` },
        status: { addresses: [{ type: "InternalIP", address: v4 }], conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "" }] },
      },
    });
    nodeDroplets.set(name, id);
    return id;
  };
  for (let i = 1; i <= (opts.nodes ?? 3); i++) await addNode(`node${i}`);

  const plugins = digitalOceanPlugins({
    clusterId: CLUSTER_ID,
    token: cloud.token,
    apiUrl: cloud.url,
    logger,
    fleetPollMs: 10,
    followerPollMs: 10,
    retry: { baseDelayMs: 5, maxDelayMs: 50 },
    ...opts.plugins,
    fleet: { minIntervalMs: 500, retryBaseMs: 50, retryMaxMs: 500, ...opts.plugins?.fleet },
    follower: { retryBaseMs: 20, retryMaxMs: 300, ...opts.plugins?.follower },
  });
  const controller = new Controller({
    client,
    // As `static-egress controller` builds it; Services only when the test asks (default off).
    source: new KubeSource(client, logger, controllerSourceOptions(opts.serviceExternalIPs === true)),
    network: opts.network ?? { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.110.0.0/20"] },
    logger,
    eventNamespace: "static-egress",
    resyncMs: opts.resyncMs ?? 300,
    plugins: plugins.plugins,
  });
  await controller.startInformers();
  if (opts.activate !== false) controller.activate();

  const grant = async (namespace: string, ...ips: string[]): Promise<void> => {
    const ns = await client.core.readNamespace({ name: namespace });
    const have = (ns.metadata?.annotations?.[RESERVED_IP_GRANT_KEY] ?? "").split(/[\s,]+/).filter(Boolean);
    const body = { metadata: { annotations: { [RESERVED_IP_GRANT_KEY]: [...new Set([...have, ...ips])].join(", ") } } };
    await client.core.patchNamespace({ name: namespace, body }, mergePatch);
  };

  const setPodReady = async (namespace: string, name: string, ready: boolean): Promise<void> => {
    const now = new Date();
    await client.core.patchNamespacedPodStatus(
      {
        namespace,
        name,
        body: { status: { phase: "Running", conditions: [{ type: "Ready", status: ready ? "True" : "False", lastTransitionTime: now }] } },
      },
      mergePatch,
    );
  };
  const judges = new Set<() => void>();
  const judgeInstancesUp = (node: string): (() => void) => {
    let last = "";
    let busy = false;
    const tick = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const list = (await client.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "egressgateways" })) as { items?: EgressGateway[] };
        const health: Record<string, "up"> = {};
        for (const gw of list.items ?? []) for (const i of gw.status?.instances ?? []) if (i.health !== PROVISIONING) health[`${gw.metadata.name}/${i.name}`] = "up";
        const body = JSON.stringify(health);
        if (body === last) return;
        await client.patchNodeAnnotations(node, { [REPORT_ANNOTATION]: JSON.stringify({ programmed: {}, health, unavailable: {}, at: new Date().toISOString() }) });
        last = body;
      } catch {
        // The next tick tries again (the API may be failing on purpose).
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void tick(), 50);
    const stop = () => {
      clearInterval(timer);
      judges.delete(stop);
    };
    judges.add(stop);
    return stop;
  };
  let podIP = 10;
  return {
    kube,
    cloud,
    client,
    controller,
    plugins,
    nodeDroplets,
    addNode,
    createPod: async (p) => {
      const namespace = p.namespace ?? "web";
      const body: V1Pod = {
        metadata: { name: p.name, namespace, labels: p.labels ?? {}, annotations: p.annotations ?? {} },
        spec: { nodeName: p.node, containers: [{ name: "c", image: "x" }] },
      };
      await client.core.createNamespacedPod({ namespace, body });
      const ip = `10.244.${Number(p.node.replace(/\D/g, "")) || 0}.${podIP++}`;
      await client.core.patchNamespacedPodStatus(
        {
          namespace,
          name: p.name,
          body: { status: { phase: "Running", podIP: ip, podIPs: [{ ip }], conditions: [{ type: "Ready", status: p.ready === false ? "False" : "True", lastTransitionTime: p.readySince ?? new Date() }] } },
        },
        mergePatch,
      );
    },
    setPodReady,
    deletePod: async (namespace, name) => {
      await client.core.deleteNamespacedPod({ namespace, name });
    },
    deleteNode: async (name) => {
      await client.core.deleteNode({ name });
    },
    setNodeReady: async (name, ready) => {
      await client.core.patchNodeStatus({ name, body: { status: { conditions: [{ type: "Ready", status: ready, reason: ready === "True" ? "KubeletReady" : "NodeStatusUnknown", message: "" }] } } }, mergePatch);
    },
    holderOf: (ip) => {
      const rec = cloud.state.reservedIPs().find((r) => r["ip"] === ip);
      const d = rec?.["droplet"] as { id?: number } | null | undefined;
      return d?.id;
    },
    grant,
    grantedReservedIP: async (namespace = "web") => {
      const ip = cloud.state.createReservedIP({ region: REGION });
      await grant(namespace, ip);
      return ip;
    },
    judgeInstancesUp,
    close: async () => {
      for (const stop of [...judges]) stop();
      await controller.stop();
      await plugins.stop();
      await cloud.close();
      await kube.close();
    },
  };
}

/** A Running pod asking for `ip` (label and annotation), Ready or not, as the follower's unit tests need. */
export function claimingPod(name: string, node: string, ready: boolean, ip: string): KubernetesObject {
  return {
    metadata: { name, namespace: "web", labels: { "staticegress.io/reserved-ip": "" }, annotations: { "staticegress.io/reserved-ip": ip } },
    spec: { nodeName: node },
    status: { phase: "Running", conditions: [{ type: "Ready", status: ready ? "True" : "False", lastTransitionTime: new Date("2026-01-01T00:00:00Z") }] },
  } as KubernetesObject;
}
