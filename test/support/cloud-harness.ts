import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { GROUP, VERSION } from "../../src/api/v1alpha1/common.js";
import type { EgressGateway } from "../../src/api/v1alpha1/egress-gateway.js";
import {
  digitalOceanPlugins,
  type DigitalOceanPlugins,
  type DigitalOceanPluginsOptions,
} from "../../src/controller/cloud/index.js";
import { RESERVED_IP_GRANT_KEY } from "../../src/controller/cloud/reserved-ip-rules.js";
import { Controller } from "../../src/controller/controller.js";
import { PROVISIONING, REPORT_ANNOTATION } from "../../src/controller/status.js";
import type { KubeClient } from "../../src/kube/client.js";
import { controllerSourceOptions, KubeSource } from "../../src/kube/source.js";
import {
  startDigitalOceanStandin,
  type DigitalOceanStandin,
  type StandinOptions,
} from "../../src/lab/do-standin/index.js";
import { silentLogger, type Logger } from "../../src/util/log.js";
import { startTestKube, type TestKube } from "./kube.js";

/**
 * Test and benchmark harness: the controller with the DigitalOcean plugins, in-process, against a
 * real kube-apiserver (test/support/kube.ts, through its fault proxy) and the DigitalOcean API
 * stand-in (on loopback). The controller runs with its own service-account token (deploy/'s
 * RBAC); `client` is cluster-admin, for what a user, a kubelet or the cloud would do. Cluster
 * nodes are droplets in the DigitalOcean stand-in (tagged with the node tag) and Node objects
 * whose providerID names them.
 */

export const CLUSTER_ID = "0f3e6b1c-5d2a-4c1e-9a7b-2c4d6e8f0a1b";
export const NODE_TAG = `k8s:${CLUSTER_ID}`;
export const REGION = "ams3";
/** For the hooks that start and stop a harness (a control plane starts in a few seconds, slower on a busy machine). */
export const HARNESS_TIMEOUT_MS = 60_000;
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export interface CloudHarnessOptions {
  /** Run kube-controller-manager too (namespace deletion, Deployments; default false). */
  controllerManager?: boolean;
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
  /** The control plane: admin client, component identities, fault proxy. */
  kube: TestKube;
  cloud: DigitalOceanStandin;
  /** cluster-admin (what a user, a kubelet or the cloud does); the controller has its own identity. */
  client: KubeClient;
  controller: Controller;
  /** The controller's own client (its token), which it also hands its plugins: tests watch its calls. */
  controllerClient: KubeClient;
  plugins: DigitalOceanPlugins;
  /** Node name -> droplet id. */
  nodeDroplets: Map<string, number>;
  addNode(name: string): Promise<number>;
  /** Creates a pod on a node, Running and (by default) Ready. */
  createPod(p: {
    namespace?: string;
    name: string;
    node: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ready?: boolean;
    readySince?: Date;
  }): Promise<void>;
  setPodReady(namespace: string, name: string, ready: boolean): Promise<void>;
  /** Deleted at once (no kubelet confirms a graceful deletion). */
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
   * report (as the agent does, with that node's node-agent token) each time the listed instances
   * change. Without it no node has judged any instance, and the controller rightly says Unknown.
   * Returns a function that stops it.
   */
  judgeInstancesUp(node: string): () => void;
  close(): Promise<void>;
}

export async function startCloudHarness(opts: CloudHarnessOptions = {}): Promise<CloudHarness> {
  const logger = opts.logger ?? silentLogger;
  const kube = await startTestKube(opts.controllerManager ? { controllerManager: true } : {});
  let cloud: DigitalOceanStandin | undefined;
  try {
    cloud = await startDigitalOceanStandin({ dropletBootMs: 10, actionDurationMs: 20, ...opts.cloud });
    return await start(kube, cloud, opts, logger);
  } catch (e) {
    await cloud?.close().catch(() => undefined);
    await kube.stop().catch(() => undefined);
    throw e;
  }
}

async function start(
  kube: TestKube,
  cloud: DigitalOceanStandin,
  opts: CloudHarnessOptions,
  logger: Logger,
): Promise<CloudHarness> {
  const client = kube.admin;
  await kube.ensureNamespace("web");
  const nodeDroplets = new Map<string, number>();
  let nodeIndex = 0;
  const addNode = async (name: string): Promise<number> => {
    const d = cloud.state.createDroplet({
      name,
      region: REGION,
      size: "s-2vcpu-4gb",
      image: "debian-12-x64",
      tags: [NODE_TAG],
    });
    const id = d["id"] as number;
    const v4 =
      ((d["networks"] as { v4?: { type: string; ip_address: string }[] }).v4 ?? []).find((n) => n.type === "private")
        ?.ip_address ?? "";
    nodeIndex++;
    await kube.createNode({
      name,
      providerID: `digitalocean://${id}`,
      podCIDR: `10.244.${nodeIndex}.0/24`,
      internalIP: v4,
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
  // The controller with its own service-account token: deploy/'s RBAC must allow all it does.
  const controllerClient = await kube.clientFor("controller");
  const controller = new Controller({
    client: controllerClient,
    // As `static-egress controller` builds it; Services only when the test asks (default off).
    source: new KubeSource(controllerClient, logger, controllerSourceOptions(opts.serviceExternalIPs === true)),
    network: opts.network ?? {
      podCIDRs: ["10.244.0.0/16"],
      serviceCIDRs: ["10.96.0.0/12"],
      nodeCIDRs: ["10.110.0.0/20"],
    },
    logger,
    resyncMs: opts.resyncMs ?? 300,
    plugins: plugins.plugins,
  });
  try {
    await controller.startInformers();
  } catch (e) {
    await controller.stop().catch(() => undefined);
    await plugins.stop().catch(() => undefined);
    throw e;
  }
  if (opts.activate !== false) controller.activate();

  const grant = async (namespace: string, ...ips: string[]): Promise<void> => {
    const ns = await client.core.readNamespace({ name: namespace });
    const have = (ns.metadata?.annotations?.[RESERVED_IP_GRANT_KEY] ?? "").split(/[\s,]+/).filter(Boolean);
    const body = { metadata: { annotations: { [RESERVED_IP_GRANT_KEY]: [...new Set([...have, ...ips])].join(", ") } } };
    await client.core.patchNamespace({ name: namespace, body }, mergePatch);
  };

  const judges = new Set<() => void>();
  /** Reports the API server refused (RBAC, admission): close() fails with them. */
  const refused: string[] = [];
  const judgeInstancesUp = (node: string): (() => void) => {
    // The node's agent: its token is bound to that Node, and the admission policy lets it write only there.
    const agent = kube.clientFor("node-agent", node);
    agent.catch(() => undefined); // reported by the first tick
    let last = "";
    let busy = false;
    const tick = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const c = await agent;
        const list = (await c.custom.listClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: "egressgateways",
        })) as { items?: EgressGateway[] };
        const health: Record<string, "up"> = {};
        for (const gw of list.items ?? [])
          for (const i of gw.status?.instances ?? [])
            if (i.health !== PROVISIONING) health[`${gw.metadata.name}/${i.name}`] = "up";
        const body = JSON.stringify(health);
        if (body === last) return;
        await c.patchNodeAnnotations(node, {
          [REPORT_ANNOTATION]: JSON.stringify({
            programmed: {},
            health,
            unavailable: {},
            at: new Date().toISOString(),
          }),
        });
        last = body;
      } catch (e) {
        // A refusal by RBAC or the admission policy is a bug in what this plays, not a passing fault.
        const code = (e as { code?: number }).code;
        if (code === 401 || code === 403 || code === 422) refused.push(`${node}: ${(e as Error).message}`);
        // Otherwise the next tick tries again (the API may be failing on purpose).
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
  const podIPs = new Map<string, string>();
  let podIP = 10;
  return {
    kube,
    cloud,
    client,
    controller,
    controllerClient,
    plugins,
    nodeDroplets,
    addNode,
    createPod: async (p) => {
      const namespace = p.namespace ?? "web";
      const ip = `10.244.${Number(p.node.replace(/\D/g, "")) || 0}.${podIP++}`;
      podIPs.set(`${namespace}/${p.name}`, ip);
      await kube.createPod({
        namespace,
        name: p.name,
        node: p.node,
        labels: p.labels ?? {},
        annotations: p.annotations ?? {},
        ip,
        ready: p.ready !== false,
        ...(p.readySince ? { readySince: p.readySince } : {}),
      });
    },
    setPodReady: async (namespace, name, ready) => {
      const ip = podIPs.get(`${namespace}/${name}`);
      await kube.setPodStatus(namespace, name, { ...(ip ? { ip } : {}), phase: "Running", ready });
    },
    deletePod: (namespace, name) => kube.deletePod(namespace, name),
    deleteNode: async (name) => {
      await client.core.deleteNode({ name });
    },
    setNodeReady: (name, ready) => kube.setNodeReady(name, ready),
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
      await kube.stop();
      if (refused.length > 0)
        throw new Error(`the API server refused a node agent's report: ${refused[0]} (${refused.length} in all)`);
    },
  };
}
