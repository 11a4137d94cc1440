import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { stringify } from "yaml";
import { PLUGIN_TYPE } from "../cni/install.js";
import { readRuntimeConflist } from "./cni-chain.js";
import { join } from "node:path";
import { KubeConfig, setHeaderOptions } from "@kubernetes/client-node";
import type { KubeObject } from "../api/objects.js";
import { GROUP, VERSION } from "../api/v1alpha1/common.js";
import { KubeClient, PLURALS, statusOf } from "../kube/client.js";
import { runCommand } from "../util/exec.js";
import type { LabHost as Lab } from "./record.js";
import { waitFor } from "./wait.js";
import { LAB_API_ADDRESS, LAB_API_PORT } from "./topology.js";
import { addNamespace, addVethPair, admitVpcSource } from "./netns.js";
import { LAB_CLOUD } from "./cloud.js";
import { COMPONENT_ACCOUNTS, freePort } from "./control-plane/cluster.js";
import { serviceAccountKubeconfig } from "./control-plane/tokens.js";
import { createLabApps, gatewayPoolFlags, startGatewayPool } from "./apps-lab.js";
import { labNodeStatus } from "./kubelet.js";

const mergePatch = setHeaderOptions("Content-Type", "application/merge-patch+json");

export function labClient(lab: Lab): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromFile(lab.kubeconfigPath);
  return new KubeClient(kc);
}

/**
 * Kubernetes mode: a real control plane (etcd, kube-apiserver, kube-controller-manager, built
 * from their Go modules; root namespace, loopback, so `kubectl` works from the host) with
 * deploy/ installed, two relays that let agents inside the lab reach it through a unix socket,
 * the controller, and the lab kubelet. Then the cluster's objects are created through the API,
 * and pods are run by the kubelet with the CNI chain. Every component uses its own
 * service-account token, bound by deploy/'s RBAC (the node agents' bound to their Node).
 */
export async function startControlPlane(
  lab: Lab,
  log: (line: string) => void,
  beforePods: () => Promise<void>,
): Promise<void> {
  const t = lab.topology;
  const cp = `${t.prefix}-cp`;
  await addNamespace(cp);
  await addVethPair({ ns: cp, name: "eth0" }, { ns: t.fabric, name: "cpv" });
  await runCommand("ip", ["-n", t.fabric, "link", "set", "cpv", "master", "vpc"]);
  await admitVpcSource(t.fabric, "cpv", LAB_API_ADDRESS);
  await runCommand("ip", ["-n", cp, "addr", "add", `${LAB_API_ADDRESS}/24`, "dev", "eth0"]);
  lab.writeCluster();

  lab.startProcess("apiserver", "", ["lab", "kube-apiserver", "--dir", lab.dir, "--extra-ip", LAB_API_ADDRESS]);
  // Written (atomically) once the API server is ready and deploy/ is installed.
  await waitFor(
    () => existsSync(lab.kubeconfigPath) || lab.processExited("apiserver"),
    180_000,
    "the control plane did not start",
  );
  if (!existsSync(lab.kubeconfigPath))
    throw new Error(`the control plane did not start: ${lab.logTail("apiserver", 30)}`);
  const port = /server: https:\/\/127\.0\.0\.1:(\d+)/.exec(readFileSync(lab.kubeconfigPath, "utf8"))?.[1];
  if (!port) throw new Error(`cannot read the API address from ${lab.kubeconfigPath}`);
  const sock = join(lab.dir, "api.sock");
  lab.startProcess("relay-root", "", ["lab", "relay", "--listen", `unix:${sock}`, "--to", `tcp:127.0.0.1:${port}`]);
  lab.startProcess("relay-lab", cp, [
    "lab",
    "relay",
    "--listen",
    `tcp:${LAB_API_ADDRESS}:${LAB_API_PORT}`,
    "--to",
    `unix:${sock}`,
  ]);

  if (lab.hasCloud) {
    log("starting the lab cloud: the DigitalOcean API stand-in, whose droplets become gateway namespaces");
    lab.startProcess("cloud", "", ["lab", "cloud", "--dir", lab.dir]);
    await waitFor(() => lab.cloud() !== undefined, 20_000, "the lab cloud did not start").catch((e: Error) => {
      throw new Error(`${e.message}: ${lab.logTail("cloud")}`, { cause: e });
    });
    // Droplets reach their metadata service through a relay, as agents reach the API.
    const doSock = join(lab.dir, "do.sock");
    lab.startProcess("relay-root-do", "", [
      "lab",
      "relay",
      "--listen",
      `unix:${doSock}`,
      "--to",
      `tcp:127.0.0.1:${new URL(lab.cloud()!.url).port}`,
    ]);
    lab.startProcess("relay-lab-do", cp, [
      "lab",
      "relay",
      "--listen",
      `tcp:${LAB_API_ADDRESS}:${LAB_CLOUD.metadataPort}`,
      "--to",
      `unix:${doSock}`,
    ]);
  }
  const client = labClient(lab);
  log("creating namespaces, nodes and gateways through the API (CRDs and RBAC come from deploy/)");
  const namespaces = new Set([
    "static-egress",
    ...t.pods.map((p) => p.namespace),
    ...(lab.record.config.namespaces ?? []).map((n) => n.name),
  ]);
  for (const name of namespaces) {
    const labels = lab.record.config.namespaces?.find((n) => n.name === name)?.labels ?? {};
    try {
      await client.core.createNamespace({
        body: { metadata: { name, labels: { "kubernetes.io/metadata.name": name, ...labels } } },
      });
    } catch (e) {
      if (statusOf(e) !== 409) throw e;
      await client.core.patchNamespace({ name, body: { metadata: { labels } } }, mergePatch);
    }
  }
  const objects = lab.objects();
  for (const node of objects.filter((o) => o.kind === "Node")) {
    await client.core.createNode({ body: { metadata: node.metadata as never, spec: node.spec as never } });
    const status = labNodeStatus(node.status);
    await client.core.patchNodeStatus({ name: node.metadata!.name!, body: { status } }, mergePatch);
    // The API server taints a new Node not-ready; the node lifecycle controller (off here: no
    // heartbeats) lifts it once the node is Ready, so the lab does, or no pod would be scheduled.
    await client.core.patchNode({ name: node.metadata!.name!, body: { spec: { taints: null } } }, mergePatch);
  }
  await writeComponentKubeconfigs(lab);
  await applyGateways(lab);
  await applyPolicyObjects(lab, (lab.record.config.policies ?? []) as KubeObject[]);

  const cloud = lab.cloud();
  const cloudFlags = cloud
    ? [
        "--cloud",
        "digitalocean",
        "--cluster-id",
        LAB_CLOUD.clusterId,
        "--digitalocean-api-url",
        cloud.url,
        "--digitalocean-token-file",
        cloud.tokenFile,
        "--cloud-resync-seconds",
        "3",
        "--cloud-poll-ms",
        "250",
      ]
    : [];
  // Apps on the lab's DigitalOcean: DEDICATED_IP apps get droplets in the lab VPC (docs/apps.md).
  const appsDo = lab.record.config.apps?.digitalocean;
  const appsFlags: string[] = [];
  if (appsDo && cloud) {
    const file = join(lab.dir, "apps-digitalocean.yaml");
    writeFileSync(
      file,
      stringify({
        region: LAB_CLOUD.region,
        size: LAB_CLOUD.size,
        vpcUUID: cloud.vpcUuid,
        nodeTag: LAB_CLOUD.nodeTag,
        ...(appsDo.onRemoval ? { onRemoval: appsDo.onRemoval } : {}),
      }),
    );
    appsFlags.push("--apps-digitalocean", file);
  }
  appsFlags.push(...gatewayPoolFlags(lab));
  // The controller runs in the root namespace: its metrics and its live view listen on loopback
  // only, each on a free port.
  lab.record.controllerMetricsPort = await freePort();
  lab.record.controllerViewPort = await freePort();
  lab.save();
  const metricsFlags = ["--metrics-port", String(lab.record.controllerMetricsPort), "--metrics-address", "127.0.0.1"];
  const viewFlags = ["--view-port", String(lab.record.controllerViewPort), "--view-address", "127.0.0.1"];
  lab.startProcess("controller", "", [
    "controller",
    "--kubeconfig",
    lab.componentKubeconfig("controller"),
    "--config",
    join(lab.dir, "agent-config.yaml"),
    "--namespace",
    "static-egress",
    "--lease-seconds",
    "5",
    ...metricsFlags,
    ...viewFlags,
    ...cloudFlags,
    ...appsFlags,
  ]);
  lab.startProcess("kubelet", "", ["lab", "kubelet", "--name", t.prefix]);
  startGatewayPool(lab);
  await beforePods();
  // As on a node: pods run only once the agent has chained our plugin into the runtime's list.
  const chained = (node: string) => readRuntimeConflist(lab.cniConfDir(node)).plugins.at(-1)?.type === PLUGIN_TYPE;
  await waitFor(
    () => t.nodes.every((n) => chained(n.name)),
    20_000,
    "the node agents did not chain the CNI plugin",
    100,
  );
  const expected = t.pods.length;
  log(`creating ${expected} pods; the lab kubelet runs them with the CNI chain`);
  for (const p of [...t.pods]) {
    await client.core.createNamespacedPod({
      namespace: p.namespace,
      body: {
        metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
        spec: { nodeName: p.node, containers: [{ name: "app", image: "lab" }] },
      },
    });
  }
  await waitFor(async () => (await refreshPodIPs(lab)) >= expected, 30_000, "pods did not start", 200);
  const cloudGateways = lab.record.config.gateways.filter((g) => g.digitalocean);
  if (cloudGateways.length > 0) {
    const want = cloudGateways.reduce((n, g) => n + (g.digitalocean!.count ?? 2), 0);
    log(`waiting for the controller to create ${want} gateway droplets, and for the nodes to see them up`);
    // Listed Up by the controller, and up on every node (the status counts a node that has not
    // judged a new instance yet as not objecting).
    await waitFor(
      async () => (await readyCloudInstances(lab)) >= want && (await lab.allInstancesUp()),
      90_000,
      "the gateway droplets did not come up",
      300,
    );
  }
  await createLabApps(lab, log);
}

/**
 * Each component's kubeconfig, with its own service-account token: the controller's on loopback,
 * the agents' at the API address inside the lab; each node agent's token bound to its Node.
 */
async function writeComponentKubeconfigs(lab: Lab): Promise<void> {
  const admin = new KubeConfig();
  admin.loadFromFile(lab.kubeconfigPath);
  const caPem = readFileSync(join(lab.dir, "ca.crt"), "utf8");
  const inLab = `https://${LAB_API_ADDRESS}:${LAB_API_PORT}`;
  const month = 30 * 86_400;
  const write = (name: string, text: string) => writeFileSync(lab.componentKubeconfig(name), text, { mode: 0o600 });
  write(
    "controller",
    await serviceAccountKubeconfig(admin, COMPONENT_ACCOUNTS.controller, {
      server: admin.getCurrentCluster()!.server,
      caPem,
      expirationSeconds: month,
    }),
  );
  write(
    "gateway",
    await serviceAccountKubeconfig(admin, COMPONENT_ACCOUNTS.gateway, {
      server: inLab,
      caPem,
      expirationSeconds: month,
    }),
  );
  for (const n of lab.topology.nodes)
    write(
      `node-${n.name}`,
      await serviceAccountKubeconfig(admin, COMPONENT_ACCOUNTS.nodeAgent, {
        server: inLab,
        caPem,
        node: n.name,
        expirationSeconds: month,
      }),
    );
}

/** Instances of digitalocean gateways the controller lists as Up. */
async function readyCloudInstances(lab: Lab): Promise<number> {
  let n = 0;
  for (const g of await listGateways(lab)) {
    const spec = g.spec as { digitalocean?: unknown } | undefined;
    const status = (g as { status?: { instances?: { health: string }[] } }).status;
    if (spec?.digitalocean) n += (status?.instances ?? []).filter((i) => i.health === "Up").length;
  }
  return n;
}

/**
 * Reads pods from the API into the lab record (node, labels, address). Pods not running yet stay
 * listed without an address (so `lab status` shows them as not ok). Returns how many run.
 */
export async function refreshPodIPs(lab: Lab): Promise<number> {
  const pods = (await labClient(lab).core.listPodForAllNamespaces()).items.filter((p) => p.spec?.nodeName);
  const running = pods.filter((p) => p.status?.podIP);
  lab.record.topology.pods = pods.map((p) => ({
    name: p.metadata!.name!,
    namespace: p.metadata!.namespace!,
    node: p.spec!.nodeName!,
    netns: podNetns(lab.record.prefix, p.metadata!.namespace!, p.metadata!.name!),
    labels: p.metadata?.labels ?? {},
  }));
  lab.record.podIPs = Object.fromEntries(
    running.map((p) => [`${p.metadata!.namespace}/${p.metadata!.name}`, p.status!.podIP!]),
  );
  lab.save();
  return running.length;
}

export function podNetns(prefix: string, namespace: string, name: string): string {
  return `${prefix}-pod-${namespace}-${name}`;
}

/** The EgressGateways with their status (a digitalocean gateway's instances are only there). */
export async function listGateways(lab: Lab): Promise<KubeObject[]> {
  const list = (await labClient(lab).custom.listClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: PLURALS.EgressGateway,
  })) as { items: KubeObject[] };
  return list.items.map((o) => ({ ...o, kind: "EgressGateway", apiVersion: `${GROUP}/${VERSION}` }));
}

export async function listPolicies(lab: Lab): Promise<KubeObject[]> {
  const client = labClient(lab);
  const out: KubeObject[] = [];
  for (const kind of ["EgressPolicy", "ClusterEgressPolicy"] as const) {
    const list = (await client.custom.listClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURALS[kind],
    })) as { items: KubeObject[] };
    for (const o of list.items)
      if (!(o.metadata as { deletionTimestamp?: string }).deletionTimestamp)
        out.push({ ...o, kind, apiVersion: `${GROUP}/${VERSION}` });
  }
  return out;
}

/** Creates or replaces (like kubectl apply) through the API. */
export async function applyPolicyObjects(lab: Lab, docs: readonly KubeObject[]): Promise<void> {
  const client = labClient(lab);
  for (const d of docs) {
    const kind = d.kind as "EgressPolicy" | "ClusterEgressPolicy";
    const plural = PLURALS[kind];
    const name = d.metadata!.name!;
    const body = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind,
      metadata: { name, ...(d.metadata?.namespace ? { namespace: d.metadata.namespace } : {}) },
      spec: d.spec,
    };
    const ns = kind === "EgressPolicy" ? (d.metadata?.namespace ?? "default") : undefined;
    await createOrPatchSpec(client, plural, ns, name, body);
  }
}

/** Creates one of our objects, or, when it exists, merge-patches its spec (like kubectl apply). */
async function createOrPatchSpec(
  client: KubeClient,
  plural: string,
  ns: string | undefined,
  name: string,
  body: Record<string, unknown> & { spec?: unknown },
): Promise<void> {
  const gv = { group: GROUP, version: VERSION, plural };
  try {
    if (ns) await client.custom.createNamespacedCustomObject({ ...gv, namespace: ns, body });
    else await client.custom.createClusterCustomObject({ ...gv, body });
  } catch (e) {
    if (statusOf(e) !== 409) throw e;
    const patch = { spec: body.spec };
    if (ns) await client.custom.patchNamespacedCustomObject({ ...gv, namespace: ns, name, body: patch }, mergePatch);
    else await client.custom.patchClusterCustomObject({ ...gv, name, body: patch }, mergePatch);
  }
}

export async function deletePolicyObjects(lab: Lab, docs: readonly KubeObject[]): Promise<number> {
  const client = labClient(lab);
  let n = 0;
  for (const d of docs) {
    const kind = d.kind as "EgressPolicy" | "ClusterEgressPolicy";
    const plural = PLURALS[kind];
    const name = d.metadata!.name!;
    try {
      if (kind === "EgressPolicy")
        await client.custom.deleteNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: d.metadata?.namespace ?? "default",
          plural,
          name,
        });
      else await client.custom.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural, name });
      n++;
    } catch (e) {
      if (statusOf(e) !== 404) throw e;
    }
  }
  return n;
}

/** The lab's EgressGateways (with drain flags) through the API. */
export async function applyGateways(lab: Lab): Promise<void> {
  const client = labClient(lab);
  for (const g of lab.objects().filter((o) => o.kind === "EgressGateway")) {
    const name = g.metadata!.name!;
    await createOrPatchSpec(client, "egressgateways", undefined, name, {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: "EgressGateway",
      metadata: { name },
      spec: g.spec,
    });
  }
}
