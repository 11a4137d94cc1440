import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { parseDocuments, snapshotFromObjects, type KubeObject } from "../api/objects.js";
import { API_VERSION } from "../api/v1alpha1/common.js";
import { Planner } from "../planner/plan.js";
import { parseIPv4 } from "../util/ipv4.js";
import type { ClusterNetwork } from "../planner/model.js";
import { runCommand } from "../util/exec.js";
import type { LabConfig } from "./config.js";
import {
  addNamespace,
  addVethPair,
  admitVpcSource,
  deleteNamespacesWithPrefix,
  execIn,
  gatewayBootSysctls,
  installVpcAntiSpoofing,
  killNamespaceProcesses,
  LAB_NAME_ROOT,
  listNamespaces,
  natGatewaySetup,
  sysctl,
  wipeGatewayHost,
} from "./netns.js";
import { readPoolRecord } from "./gateway-pool.js";
import { LAB_STATE_ROOT, packageRoot, spawnCli } from "./paths.js";
import { baseConflist, wirePod, type PodWiring } from "./cni-chain.js";
import {
  applyGateways,
  applyPolicyObjects,
  deletePolicyObjects,
  listGateways,
  listPolicies,
  refreshPodIPs,
  startControlPlane,
} from "./kube-lab.js";
import {
  LAB_NETWORK,
  planTopology,
  type LabGatewayHost,
  type LabNatHost,
  type LabPod,
  type LabTopology,
} from "./topology.js";
import { LAB_CLOUD, readCloudRecord, type LabCloudRecord } from "./cloud.js";
import { connectPodNetwork, startNetworkPolicyEnforcer } from "./network-policy.js";
import { DigitalOceanClient } from "../cloud/digitalocean/index.js";
import { installPlugin } from "../cni/install.js";
import { alive, removeLeftovers as removeControlPlaneLeftovers } from "./control-plane/processes.js";
import {
  GATEWAY_DEATHS,
  HOST_DEATHS,
  type GatewayDeath,
  type LabHost,
  type LabMode,
  type LabRecord,
} from "./record.js";
import { LabError, waitFor } from "./wait.js";

export { GATEWAY_DEATHS, HOST_DEATHS, waitFor, type GatewayDeath, type LabMode, type LabRecord };
import { freePort } from "./control-plane/cluster.js";

export const LAB_CLUSTER_NETWORK: ClusterNetwork = {
  podCIDRs: [LAB_NETWORK.podCidr],
  serviceCIDRs: [LAB_NETWORK.serviceCidr],
  nodeCIDRs: [LAB_NETWORK.vpcCidr],
};

/** Where a Prometheus in the root namespace scrapes one lab agent (Lab.exposeMetrics). */
export interface MetricsTarget {
  job: "node" | "gateway" | "health-responder" | "controller";
  /** The node or gateway host it runs on. */
  host: string;
  /** `127.0.0.1:<port>` */
  address: string;
}

/** Agents serve metrics on this port inside their namespace (health responders on +1). */
export const LAB_METRICS_PORT = 9464;

/** Kubernetes mode: how often gateway agents write their traffic into the policies' status (60 s in a cluster). */
const LAB_TRAFFIC_REPORT_SECONDS = 2;

/** A hung host: nothing in, nothing out, nothing through. */
const SILENCE = `table inet lab_silence {
  chain in { type filter hook prerouting priority -400; policy drop; }
  chain out { type filter hook output priority -400; policy drop; }
}
`;

export interface LabPodStatus {
  pod: string;
  node: string;
  ip: string;
  /** Source address the lab's Internet saw for this pod. */
  egressIP: string | null;
  /** Addresses it may legitimately leave with (any instance of its policy, or its node). */
  expected: string[];
  policy: string | null;
  ok: boolean;
  error?: string;
}

export class Lab implements LabHost {
  private constructor(
    readonly record: LabRecord,
    readonly dir: string,
  ) {}

  get topology(): LabTopology {
    return this.record.topology;
  }

  get clusterFile(): string {
    return join(this.dir, "cluster.yaml");
  }

  get udpLog(): string {
    return join(this.dir, "internet-udp.jsonl");
  }

  /** Builds the namespace cluster and starts the internet server and all agents. */
  static async up(
    cfg: LabConfig,
    opts: { prefix: string; persistent: boolean; mode?: LabMode; log?: (line: string) => void },
  ): Promise<Lab> {
    const log = opts.log ?? (() => undefined);
    await removeLeftovers(log);
    const topology = planTopology(opts.prefix, cfg);
    const dir = join(LAB_STATE_ROOT, opts.prefix);
    mkdirSync(join(dir, "logs"), { recursive: true });
    const record: LabRecord = {
      prefix: opts.prefix,
      persistent: opts.persistent,
      ownerPid: process.pid,
      topology,
      config: cfg,
      podIPs: {},
      processes: [],
      mode: opts.mode ?? "file",
    };
    if (record.mode !== "kubernetes" && cfg.gateways.some((g) => g.digitalocean)) {
      throw new LabError("lab.gateways: a digitalocean gateway needs the controller: use --mode kubernetes");
    }
    if (record.mode !== "kubernetes" && cfg.apps?.digitalocean) {
      throw new LabError("lab.apps.digitalocean: apps need the controller: use --mode kubernetes");
    }
    if (record.mode !== "kubernetes" && (cfg.apps?.gatewayPool ?? cfg.apps?.specs)) {
      throw new LabError("lab.apps: apps need the controller: use --mode kubernetes");
    }
    if (record.mode !== "kubernetes" && cfg.networkPolicy) {
      throw new LabError("lab.networkPolicy: the enforcer reads NetworkPolicies from the API: use --mode kubernetes");
    }
    const lab = new Lab(record, dir);
    lab.save();
    try {
      log(`building fabric, ${topology.nodes.length} nodes, ${topology.gatewayHosts.length} gateway hosts, internet`);
      await lab.buildFabric();
      const startHosts = async () => {
        await lab.startInternet();
        for (const g of topology.gatewayHosts) lab.startGatewayHost(g.name);
        for (const n of topology.natHosts ?? []) lab.startNatGateway(n.name);
        for (const n of topology.nodes) lab.startNodeAgent(n.name);
        // As a DaemonSet would be: there before the first pod.
        if (cfg.networkPolicy) await startNetworkPolicyEnforcer(lab, log);
      };
      if (record.mode === "kubernetes") {
        log(
          "starting the control plane (etcd, kube-apiserver, kube-controller-manager), the controller and the lab kubelet",
        );
        // As in a cluster: the node agents (a DaemonSet) and our chained CNI plugin are there
        // before the first pod, so a pod's routing exists before its first packet.
        installPlugin(join(dir, "cni-bin"), {
          entry: join(packageRoot(), "dist", "cni", "main.js"),
          shim: join(packageRoot(), "dist", "cni", "static-egress-shim"),
        });
        // Each node's "cluster CNI" list; the node agent chains our plugin into it (--cni-conf-dir).
        for (const n of topology.nodes) {
          mkdirSync(lab.cniConfDir(n.name), { recursive: true });
          writeFileSync(
            join(lab.cniConfDir(n.name), "10-lab.conflist"),
            JSON.stringify(baseConflist(n.podCidr, join(dir, "ipam"), n.cni), null, 2),
          );
        }
        if (cfg.networkPolicy) await connectPodNetwork(topology.nodes);
        await startControlPlane(lab, log, startHosts);
      } else {
        log(`wiring ${topology.pods.length} pods with the CNI plugins (ptp + host-local, masquerade on)`);
        for (const pod of topology.pods) await lab.addPod(pod);
        lab.writeCluster(cfg.policies as KubeObject[] | undefined);
        await startHosts();
      }
      lab.save();
      return lab;
    } catch (e) {
      await lab.down();
      throw e;
    }
  }

  /** Finds a lab: the named one, or the only one there is. */
  static open(prefix?: string): Lab {
    const prefixes = existsSync(LAB_STATE_ROOT)
      ? readdirSync(LAB_STATE_ROOT).filter((p) => existsSync(join(LAB_STATE_ROOT, p, "lab.json")))
      : [];
    const chosen = prefix ?? (prefixes.length === 1 ? prefixes[0] : undefined);
    if (!chosen)
      throw new LabError(
        prefixes.length === 0
          ? "no lab is up (run `static-egress lab up`)"
          : `several labs are up (${prefixes.join(", ")}): pass --name`,
      );
    const dir = join(LAB_STATE_ROOT, chosen);
    if (!existsSync(join(dir, "lab.json"))) throw new LabError(`no lab named ${chosen}`);
    return new Lab(JSON.parse(readFileSync(join(dir, "lab.json"), "utf8")) as LabRecord, dir);
  }

  save(): void {
    atomicWrite(join(this.dir, "lab.json"), JSON.stringify(this.record, null, 2));
  }

  private async buildFabric(): Promise<void> {
    const t = this.topology;
    await addNamespace(t.fabric);
    for (const br of ["vpc", "public"]) {
      await runCommand("ip", ["-n", t.fabric, "link", "add", br, "type", "bridge"]);
      await runCommand("ip", ["-n", t.fabric, "link", "set", br, "up"]);
    }
    await installVpcAntiSpoofing(t.fabric, this.record.config.vpc?.antiSpoofing ?? true);
    await addNamespace(t.internet);
    await addVethPair({ ns: t.internet, name: "eth0" }, { ns: t.fabric, name: "inet" });
    await runCommand("ip", ["-n", t.fabric, "link", "set", "inet", "master", "public"]);
    await runCommand("ip", ["-n", t.internet, "addr", "add", `${LAB_NETWORK.internetRouter}/24`, "dev", "eth0"]);
    for (const svc of [LAB_NETWORK.echoService, LAB_NETWORK.allowlistService, LAB_NETWORK.otherService]) {
      await runCommand("ip", ["-n", t.internet, "addr", "add", `${svc}/32`, "dev", "lo"]);
    }
    for (const host of [...t.nodes, ...t.gatewayHosts, ...(t.natHosts ?? []), ...(t.poolHosts ?? [])]) {
      await addNamespace(host.netns);
      await addVethPair({ ns: host.netns, name: "eth0" }, { ns: t.fabric, name: host.fabricVpcPort });
      await addVethPair({ ns: host.netns, name: "eth1" }, { ns: t.fabric, name: host.fabricPublicPort });
      await runCommand("ip", ["-n", t.fabric, "link", "set", host.fabricVpcPort, "master", "vpc"]);
      // A NAT gateway forwards others' packets (replies to the nodes carry Internet sources): the
      // VPC lets it, as DigitalOcean's does for a droplet configured as a gateway.
      if (host.role !== "nat") await admitVpcSource(t.fabric, host.fabricVpcPort, host.vpcIP);
      await runCommand("ip", ["-n", t.fabric, "link", "set", host.fabricPublicPort, "master", "public"]);
      await runCommand("ip", ["-n", host.netns, "addr", "add", `${host.vpcIP}/24`, "dev", "eth0"]);
      await runCommand("ip", ["-n", host.netns, "addr", "add", `${host.publicIP}/24`, "dev", "eth1"]);
      // The only default route in the lab points at the lab's own Internet namespace.
      await runCommand("ip", ["-n", host.netns, "route", "add", "default", "via", LAB_NETWORK.internetRouter]);
      // Nodes route their pods; a gateway host boots with forwarding off (its agent turns it on).
      if (host.role === "node") await sysctl(host.netns, "net.ipv4.ip_forward", "1");
      else if (host.role === "nat") await natGatewaySetup(host.netns);
      else await gatewayBootSysctls(host.netns);
    }
    // The Internet routes each egress IP to the gateway host that owns it (a cloud's reserved IP).
    for (const g of [...t.gatewayHosts, ...(t.poolHosts ?? [])]) {
      for (const ip of g.egressIPs)
        await runCommand("ip", ["-n", t.internet, "route", "add", `${ip}/32`, "via", g.publicIP]);
    }
  }

  private async addPod(pod: LabPod): Promise<void> {
    this.record.podIPs[`${pod.namespace}/${pod.name}`] = await wirePod(this.wiring(pod));
  }

  /** How a pod of this lab is wired by the CNI chain. */
  wiring(pod: LabPod): PodWiring {
    const node = this.topology.nodes.find((n) => n.name === pod.node);
    if (!node) throw new LabError(`pod ${pod.namespace}/${pod.name}: no node named ${pod.node}`);
    return {
      nodeNetns: node.netns,
      podCidr: node.podCidr,
      ...(node.cni ? { cni: node.cni } : {}),
      podNetns: pod.netns,
      containerId: `${this.record.prefix}-${pod.namespace}-${pod.name}`,
      namespace: pod.namespace,
      name: pod.name,
      ipamDir: join(this.dir, "ipam"),
      ...(this.record.mode === "kubernetes"
        ? { extraPluginDir: join(this.dir, "cni-bin"), confDir: this.cniConfDir(node.name) }
        : {}),
    };
  }

  /** A node's CNI config directory (Kubernetes mode): the lab kubelet runs its first list. */
  cniConfDir(node: string): string {
    return join(this.dir, "net.d", node);
  }

  /** The node agent's socket for the chained CNI plugin (Kubernetes mode). */
  cniSocket(node: string): string {
    return join(this.dir, `cni-${node}.sock`);
  }

  /** The Kubernetes objects the agents read: namespaces, nodes, pods, gateways, policies. */
  objects(policies: readonly KubeObject[] = []): KubeObject[] {
    const t = this.topology;
    const cfg = this.record.config;
    const cloud = this.cloud();
    const created = "2026-01-01T00:00:00Z";
    const namespaces = new Map<string, Record<string, string>>();
    for (const p of t.pods) namespaces.set(p.namespace, {});
    for (const n of cfg.namespaces ?? []) namespaces.set(n.name, n.labels ?? {});
    const objs: KubeObject[] = [
      ...[...namespaces].map(([name, labels]) => ({
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name, labels: { "kubernetes.io/metadata.name": name, ...labels } },
      })),
      ...t.nodes.map((n) => ({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: n.name, labels: { "kubernetes.io/hostname": n.name, ...n.labels } },
        spec: {
          podCIDR: n.podCidr,
          podCIDRs: [n.podCidr],
          ...(cloud?.nodeDroplets[n.name] ? { providerID: `digitalocean://${cloud.nodeDroplets[n.name]}` } : {}),
        },
        status: {
          addresses: [
            { type: "InternalIP", address: n.vpcIP },
            { type: "ExternalIP", address: n.publicIP },
          ],
        },
      })),
      ...t.pods.map((p) => {
        // In Kubernetes mode a pod may be listed before its sandbox has an address: it is Pending then.
        const ip = this.record.podIPs[`${p.namespace}/${p.name}`];
        return {
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
          spec: { nodeName: p.node },
          status: ip ? { phase: "Running", podIP: ip, podIPs: [{ ip }] } : { phase: "Pending" },
        };
      }),
      ...cfg.gateways.map((g) => ({
        apiVersion: API_VERSION,
        kind: "EgressGateway",
        metadata: { name: g.name, creationTimestamp: created },
        spec: {
          ...(g.digitalocean
            ? { digitalocean: digitaloceanSource(g.digitalocean, cloud) }
            : {
                static: {
                  instances: t.gatewayHosts
                    .filter((h) => h.gateway === g.name)
                    .map((h) => ({
                      name: h.name,
                      address: h.vpcIP,
                      egressIPs: h.egressIPs,
                      ...(this.drained.has(h.name) ? { drain: true } : {}),
                    })),
                },
              }),
          ...(g.health ? { health: g.health } : {}),
          ...(g.grants ? { grants: g.grants } : {}),
        },
      })),
    ];
    return [...objs, ...policies];
  }

  /** The lab cloud's record (digitalocean gateways), or undefined when the lab has none. */
  cloud(): LabCloudRecord | undefined {
    return readCloudRecord(this.dir);
  }

  get hasCloud(): boolean {
    return (
      this.record.config.gateways.some((g) => g.digitalocean) || this.record.config.apps?.digitalocean !== undefined
    );
  }

  /**
   * Every gateway host there is now: the static instances and the droplets the lab cloud runs
   * (with the reserved IP each holds as its egress IP).
   */
  gatewayInstances(): LabGatewayHost[] {
    const cloud = this.cloud();
    const droplets: LabGatewayHost[] = (cloud?.droplets ?? []).map((d) => ({
      role: "gateway",
      name: d.name,
      gateway: d.gateway,
      netns: d.netns,
      vpcIP: d.vpcIP,
      publicIP: d.publicIP,
      fabricVpcPort: "",
      fabricPublicPort: "",
      egressIPs: Object.entries(cloud?.reservedIPs ?? {})
        .filter(([, id]) => id === d.id)
        .map(([ip]) => ip),
    }));
    // Pool hosts serving an app's gateway now, under that gateway (docs/lab.md).
    const pool = readPoolRecord(this.dir)?.hosts ?? {};
    const pooled = (this.topology.poolHosts ?? [])
      .filter((h) => pool[h.name])
      .map((h) => ({ ...h, gateway: pool[h.name]!.gateway }));
    return [...this.topology.gatewayHosts, ...droplets, ...pooled];
  }

  private isPoolHost(name: string): boolean {
    return (this.topology.poolHosts ?? []).some((h) => h.name === name);
  }

  get drained(): Set<string> {
    return new Set(this.record.drained ?? []);
  }

  /** Marks an instance as draining (spec field `drain`) or not, and rewrites the cluster state. */
  async setDrain(name: string, drain: boolean): Promise<void> {
    const g = this.gatewayHost(name);
    const set = this.drained;
    if (drain) set.add(g.name);
    else set.delete(g.name);
    this.record.drained = [...set];
    this.save();
    if (this.record.mode === "kubernetes") await applyGateways(this);
    else this.writeCluster(await this.currentPolicies());
  }

  /** The policies the agents see now. */
  async currentPolicies(): Promise<KubeObject[]> {
    if (this.record.mode === "kubernetes") return listPolicies(this);
    if (!existsSync(this.clusterFile)) return [];
    return parseDocuments(readFileSync(this.clusterFile, "utf8"), this.clusterFile).filter(
      (o) => o.kind === "EgressPolicy" || o.kind === "ClusterEgressPolicy",
    );
  }

  /** Rewrites the agents' source atomically; they reload within their poll interval. */
  writeCluster(policies?: readonly KubeObject[]): void {
    atomicWrite(
      join(this.dir, "agent-config.yaml"),
      stringify({ clusterNetwork: LAB_CLUSTER_NETWORK, resyncSeconds: 10 }),
    );
    if (this.record.mode === "kubernetes") return;
    const stamped = (policies ?? []).map((p, i) => ({
      ...p,
      metadata: {
        ...p.metadata,
        creationTimestamp: p.metadata?.creationTimestamp ?? new Date(Date.UTC(2026, 0, 1, 0, 0, i + 1)).toISOString(),
      },
    }));
    const text = this.objects(stamped)
      .map((o) => stringify(o))
      .join("---\n");
    atomicWrite(this.clusterFile, text);
  }

  /** Adds or replaces policies (by kind, namespace, name), like `kubectl apply`. */
  async applyPolicies(docs: readonly KubeObject[]): Promise<void> {
    for (const d of docs) {
      if (d.kind !== "EgressPolicy" && d.kind !== "ClusterEgressPolicy")
        throw new LabError(`lab apply takes EgressPolicy and ClusterEgressPolicy documents, not ${d.kind}`);
    }
    if (this.record.mode === "kubernetes") return applyPolicyObjects(this, docs);
    const key = (o: KubeObject) => `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;
    const current = await this.currentPolicies();
    const byKey = new Map(current.map((o) => [key(o), o]));
    for (const d of docs) {
      const old = byKey.get(key(d));
      byKey.set(key(d), {
        ...d,
        metadata: {
          ...d.metadata,
          ...(old?.metadata?.creationTimestamp
            ? { creationTimestamp: old.metadata.creationTimestamp }
            : { creationTimestamp: new Date().toISOString() }),
        },
      });
    }
    this.writeCluster([...byKey.values()]);
  }

  async deletePolicies(docs: readonly KubeObject[]): Promise<number> {
    if (this.record.mode === "kubernetes") return deletePolicyObjects(this, docs);
    const key = (o: KubeObject) => `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;
    const doomed = new Set(docs.map(key));
    const current = await this.currentPolicies();
    const kept = current.filter((o) => !doomed.has(key(o)));
    this.writeCluster(kept);
    return current.length - kept.length;
  }

  private async startInternet(): Promise<void> {
    const allowlist = this.record.config.internet?.allowlist ?? [];
    writeFileSync(this.udpLog, "");
    this.startProcess("internet", this.topology.internet, [
      "lab",
      "internet-server",
      "--allowlist",
      allowlist.join(",") || "none",
      "--udp-log",
      this.udpLog,
    ]);
    await waitFor(
      async () => {
        const out = await execIn(this.topology.internet, "ss", ["-Hltn", "sport = :80"]).catch(() => "");
        return out.includes(":80");
      },
      10_000,
      "the lab's internet server did not start",
    );
  }

  startAgent(name: string, netns: string, args: string[]): void {
    // Each agent with its own identity: a node agent's token is bound to its Node.
    const identity = this.topology.nodes.some((n) => n.name === name) ? `node-${name}` : "gateway";
    const source =
      this.record.mode === "kubernetes"
        ? ["--source", "kubernetes", "--kubeconfig", this.componentKubeconfig(identity)]
        : ["--source", this.clusterFile];
    this.startProcess(`agent-${name}`, netns, [...args, ...source, "--config", join(this.dir, "agent-config.yaml")]);
  }

  /** kubeconfig for a person (and the controller) in the root namespace: the API on loopback. */
  get kubeconfigPath(): string {
    return join(this.dir, "kubeconfig");
  }

  /**
   * A component's kubeconfig (Kubernetes mode), with its own service-account token: "controller"
   * (the API on loopback), "gateway" and "node-<node>" (the API through the control-plane relay
   * on the VPC).
   */
  componentKubeconfig(component: string): string {
    return join(this.dir, `kubeconfig-${component}`);
  }

  /** Starts `static-egress <args>` inside `netns` (or in the root namespace when netns is ""), logging to the lab's logs. */
  startProcess(name: string, netns: string, args: string[]): void {
    const logPath = join(this.dir, "logs", `${name}.log`);
    const child = spawnCli(netns, args, logPath, true);
    this.record.processes = this.record.processes.filter((p) => p.name !== name);
    this.record.processes.push({ name, netns, pid: child.pid ?? -1, log: logPath });
    this.save();
  }

  /** The last lines of a lab process's log (for errors that would otherwise say only "did not start"). */
  logTail(name: string, lines = 5): string {
    const p = this.record.processes.find((x) => x.name === name);
    if (!p || !existsSync(p.log)) return "(no log)";
    return readFileSync(p.log, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  }

  /** Whether a lab process has ended (or was never started). */
  processExited(name: string): boolean {
    const p = this.record.processes.find((x) => x.name === name);
    return !p || !alive(p.pid);
  }

  /** Kills one lab process (an agent) the hard way, as a crash would. */
  killProcess(name: string, sig: NodeJS.Signals = "SIGKILL"): void {
    const p = this.record.processes.find((x) => x.name === name);
    if (!p) throw new LabError(`no lab process named ${name}`);
    signal(p.pid, sig);
  }

  startNodeAgent(name: string): void {
    const n = this.topology.nodes.find((x) => x.name === name);
    if (!n) throw new LabError(`no node named ${name}`);
    const cni =
      this.record.mode === "kubernetes"
        ? ["--cni-socket", this.cniSocket(n.name), "--cni-conf-dir", this.cniConfDir(n.name)]
        : [];
    this.startAgent(n.name, n.netns, [
      "agent",
      "node",
      "--node",
      n.name,
      "--address",
      n.vpcIP,
      "--metrics-port",
      String(LAB_METRICS_PORT),
      "--static-routes",
      ...cni,
    ]);
  }

  /** A gateway host runs two processes: the agent (datapath) and the BFD health responder. */
  startGatewayHost(name: string): void {
    const g = this.gatewayHost(name);
    this.startProcess(`health-${g.name}`, g.netns, [
      "agent",
      "health-responder",
      "--listen",
      g.vpcIP,
      "--metrics-port",
      String(LAB_METRICS_PORT + 1),
      "--metrics-address",
      g.vpcIP,
    ]);
    this.startAgent(g.name, g.netns, this.gatewayAgentArgs(g));
  }

  /**
   * A gateway agent's arguments. With the API as source it reports its traffic into the policies'
   * status every LAB_TRAFFIC_REPORT_SECONDS (the live view's traffic moves within seconds).
   */
  private gatewayAgentArgs(g: LabGatewayHost): string[] {
    const traffic =
      this.record.mode === "kubernetes" ? ["--traffic-report-seconds", String(LAB_TRAFFIC_REPORT_SECONDS)] : [];
    return [
      "agent",
      "gateway",
      "--instance",
      `${g.gateway}/${g.name}`,
      "--metrics-port",
      String(LAB_METRICS_PORT),
      ...traffic,
    ];
  }

  /** A pool host's gateway agent arguments besides --instance (the pool process starts it: ./gateway-pool.ts). */
  poolAgentArgs(): string[] {
    return [
      "--metrics-port",
      String(LAB_METRICS_PORT),
      "--traffic-report-seconds",
      String(LAB_TRAFFIC_REPORT_SECONDS),
      "--source",
      "kubernetes",
      "--kubeconfig",
      this.componentKubeconfig("gateway"),
      "--config",
      join(this.dir, "agent-config.yaml"),
    ];
  }

  /** A NAT gateway answers BFD probes from the nodes on its VPC address (no agent: it is not an EgressGateway instance). */
  startNatGateway(name: string): void {
    const n = this.natHost(name);
    this.startProcess(`health-${n.name}`, n.netns, ["agent", "health-responder", "--listen", n.vpcIP]);
  }

  natHost(name: string): LabNatHost {
    const n = (this.topology.natHosts ?? []).find((x) => x.name === name);
    if (!n) throw new LabError(`no NAT gateway named ${name}`);
    return n;
  }

  /** A NAT gateway dies (its VPC link goes down: no probes answered, nothing forwarded) or comes back. */
  async setNatGatewayLink(name: string, up: boolean): Promise<void> {
    await runCommand("ip", ["-n", this.natHost(name).netns, "link", "set", "eth0", up ? "up" : "down"]);
  }

  gatewayHost(name: string): LabGatewayHost {
    const all = this.gatewayInstances();
    // A pool host in no gateway now is still a host (a link downed while it served can be revived).
    const g =
      all.find((x) => x.name === name || `${x.gateway}/${x.name}` === name) ??
      this.topology.poolHosts?.find((x) => x.name === name);
    if (!g)
      throw new LabError(
        `no gateway instance named ${name} (have: ${all.map((x) => x.name).join(", ") || "none yet"})`,
      );
    return g;
  }

  private droplet(name: string): LabCloudRecord["droplets"][number] | undefined {
    return this.cloud()?.droplets.find((d) => d.name === name || `${d.gateway}/${d.name}` === name);
  }

  /** Starts a killed agent again with the same arguments. */
  restartAgent(hostName: string): void {
    if (this.topology.nodes.some((n) => n.name === hostName)) return this.startNodeAgent(hostName);
    const g = this.gatewayHost(hostName);
    this.startAgent(g.name, g.netns, this.gatewayAgentArgs(g));
  }

  /**
   * Kills a gateway instance in one of three ways: its software dies (agent and health
   * responder killed; the kernel still forwards), its VPC link goes down, or the host falls
   * silent (every packet in and out dropped, as a hung host).
   */
  async killGateway(name: string, kind: GatewayDeath): Promise<void> {
    const g = this.gatewayHost(name);
    const droplet = this.droplet(g.name);
    const pooled = readPoolRecord(this.dir)?.hosts[g.name];
    if (kind === "destroy" && !droplet)
      throw new LabError(`${g.name} is not a droplet: --kind destroy is for instances of a digitalocean gateway`);
    switch (kind) {
      case "agent":
        if (droplet ?? pooled) {
          signal((droplet ?? pooled)!.pids.agent, "SIGKILL");
          signal((droplet ?? pooled)!.pids.health, "SIGKILL");
          break;
        }
        this.killProcess(`agent-${g.name}`);
        this.killProcess(`health-${g.name}`);
        break;
      case "destroy": {
        // As a person (or a failure) deleting it: through the API; the lab cloud then removes its namespace.
        const cloud = this.cloud()!;
        const client = new DigitalOceanClient({
          token: readFileSync(cloud.tokenFile, "utf8").trim(),
          baseUrl: cloud.url,
        });
        await client.deleteDroplet(droplet!.id);
        await waitFor(
          () => !this.droplet(g.name) || this.droplet(g.name)!.id !== droplet!.id,
          10_000,
          `droplet ${g.name} did not go away`,
        );
        break;
      }
      case "link":
        await runCommand("ip", ["-n", g.netns, "link", "set", "eth0", "down"]);
        break;
      case "silent":
        await execIn(g.netns, "nft", ["-f", "-"], SILENCE);
        break;
      case "reboot":
        if (droplet) throw new LabError(`${g.name} is a droplet: use --kind destroy`);
        if (pooled) {
          signal(pooled.pids.agent, "SIGKILL");
          signal(pooled.pids.health, "SIGKILL");
        } else {
          this.killProcess(`agent-${g.name}`);
          this.killProcess(`health-${g.name}`);
        }
        // A rebooting host stops at once; what survives is only what its boot configures.
        await wipeGatewayHost(g.netns);
        break;
    }
    this.record.dead = { ...this.record.dead, [g.name]: kind };
    this.save();
  }

  async reviveGateway(name: string): Promise<void> {
    const kind = this.record.dead?.[name] ?? this.record.dead?.[name.split("/").pop() ?? ""];
    if (kind === "destroy")
      throw new LabError(`${name} was destroyed: the controller replaces the droplet by itself (see lab status)`);
    const g = this.gatewayHost(name);
    if (kind === "agent" && this.droplet(g.name))
      throw new LabError(
        `${g.name} is a droplet: its agents come back when the droplet is replaced (kill it with --kind destroy)`,
      );
    if ((kind === "agent" || kind === "reboot") && this.isPoolHost(g.name))
      throw new LabError(`${g.name} is a pool host: its agents start again when the controller next assigns it`);
    if (kind === "agent" || kind === "reboot") this.startGatewayHost(g.name);
    if (kind === "link") await runCommand("ip", ["-n", g.netns, "link", "set", "eth0", "up"]);
    if (kind === "silent")
      await execIn(g.netns, "nft", ["delete", "table", "inet", "lab_silence"]).catch(() => undefined);
    const dead = { ...this.record.dead };
    delete dead[g.name];
    this.record.dead = dead;
    this.save();
  }

  findPod(ref: string): LabPod {
    const matches = this.topology.pods.filter((p) => `${p.namespace}/${p.name}` === ref || p.name === ref);
    if (matches.length === 1) return matches[0]!;
    throw new LabError(
      matches.length === 0 ? `no pod ${ref} in the lab` : `pod name ${ref} is ambiguous: use <namespace>/<name>`,
    );
  }

  /** Runs a command inside a pod's namespace. */
  async execInPod(ref: string, command: string, args: readonly string[]): Promise<string> {
    return execIn(this.findPod(ref).netns, command, args);
  }

  /** Each pod asks the echo service which source address it saw, and compares with the expected one. */
  async status(target: string = LAB_NETWORK.echoService): Promise<LabPodStatus[]> {
    if (this.record.mode === "kubernetes") await refreshPodIPs(this);
    let objects = this.objects(await this.currentPolicies());
    // The gateways as the API has them: a digitalocean gateway's instances exist only in its status.
    if (this.record.mode === "kubernetes")
      objects = [...objects.filter((o) => o.kind !== "EgressGateway"), ...(await listGateways(this))];
    const snapshot = snapshotFromObjects(objects, LAB_CLUSTER_NETWORK);
    const planner = new Planner(snapshot);
    const plans = new Map(this.topology.nodes.map((n) => [n.name, planner.planNode(n.name, new Map())]));
    const dst = parseIPv4(target);
    return Promise.all(
      this.topology.pods.map(async (pod) => {
        const key = `${pod.namespace}/${pod.name}`;
        const ip = this.record.podIPs[key] ?? "";
        const node = this.topology.nodes.find((n) => n.name === pod.node)!;
        const entry = plans.get(pod.node)?.entries.find((e) => e.podIP === ip && e.dst.from <= dst && dst <= e.dst.to);
        const policy = entry ? planner.resolution.policies.find((p) => p.resource === entry.policy) : undefined;
        // An entry of no instance is dropped (an invalid policy, fail-closed): nothing may get out.
        const expected =
          entry?.instance === ""
            ? []
            : policy
              ? [...policy.egressIPsByInstance.values()].flat().sort()
              : [node.publicIP];
        const probe = await this.probe(pod, `http://${target}/`);
        const egressIP = probe.source ?? null;
        return {
          pod: key,
          node: pod.node,
          ip,
          egressIP,
          expected,
          policy: entry?.policy ?? null,
          ok: expected.length === 0 ? egressIP === null : egressIP !== null && expected.includes(egressIP),
          ...(probe.error ? { error: probe.error } : {}),
        };
      }),
    );
  }

  /**
   * One HTTP GET from inside the pod with curl: a process that starts in milliseconds, so a
   * status round over many pods does not starve the agents' BFD timers of CPU.
   */
  async probe(
    pod: LabPod,
    url: string,
  ): Promise<{ status: number; source?: string; admitted?: boolean; error?: string }> {
    try {
      const out = await execIn(pod.netns, "curl", ["-s", "-m", "2", "-w", "\n%{http_code}", url]);
      const [body = "", code = "0"] = out.trimEnd().split(/\n(?=\d+$)/);
      const parsed = body ? (JSON.parse(body) as { source?: string; admitted?: boolean }) : {};
      return { status: Number(code), ...parsed };
    } catch (e) {
      return { status: 0, error: (e as Error).message.split("\n")[0] ?? "probe failed" };
    }
  }

  /** A node agent's Prometheus metrics (scraped inside the node's namespace). */
  async agentMetrics(node: string): Promise<string> {
    const n = this.topology.nodes.find((x) => x.name === node);
    if (!n) throw new LabError(`no node named ${node}`);
    return execIn(n.netns, "curl", ["-s", "-m", "2", `http://127.0.0.1:${LAB_METRICS_PORT}/metrics`]);
  }

  /**
   * Makes every agent's metrics reachable from the root namespace, for a Prometheus on loopback:
   * per agent a relay inside its namespace from a unix socket to the agent's metrics port, and
   * one in the root namespace from a free loopback port to that socket (a file, not a network
   * link: no lab packet can leave the lab this way). The relays end with the lab.
   */
  async exposeMetrics(): Promise<MetricsTarget[]> {
    const agents = [
      ...this.topology.nodes.map((n) => ({
        job: "node" as const,
        host: n.name,
        netns: n.netns,
        to: `127.0.0.1:${LAB_METRICS_PORT}`,
      })),
      ...this.gatewayInstances().flatMap((g) => [
        { job: "gateway" as const, host: g.name, netns: g.netns, to: `127.0.0.1:${LAB_METRICS_PORT}` },
        { job: "health-responder" as const, host: g.name, netns: g.netns, to: `${g.vpcIP}:${LAB_METRICS_PORT + 1}` },
      ]),
    ];
    const targets: MetricsTarget[] = [];
    for (const a of agents) {
      const name = `metrics-${a.job}-${a.host}`;
      const sock = join(this.dir, `${name}.sock`);
      const port = await freePort();
      this.startProcess(`${name}-in`, a.netns, ["lab", "relay", "--listen", `unix:${sock}`, "--to", `tcp:${a.to}`]);
      this.startProcess(`${name}-out`, "", [
        "lab",
        "relay",
        "--listen",
        `tcp:127.0.0.1:${port}`,
        "--to",
        `unix:${sock}`,
      ]);
      targets.push({ job: a.job, host: a.host, address: `127.0.0.1:${port}` });
    }
    if (this.record.controllerMetricsPort)
      targets.push({
        job: "controller",
        host: "controller",
        address: `127.0.0.1:${this.record.controllerMetricsPort}`,
      });
    return targets;
  }

  /** The controller's live view (Kubernetes mode; docs/view.md), or undefined in file mode. */
  viewUrl(): string | undefined {
    return this.record.controllerViewPort ? `http://127.0.0.1:${this.record.controllerViewPort}/` : undefined;
  }

  /** The controller's HTTP server (Kubernetes mode): `/metrics`, `/healthz`, `/readyz`, `/egress-ips`. */
  async controllerHttp(
    path: string,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: string; headers: Headers }> {
    if (!this.record.controllerMetricsPort)
      throw new LabError("this lab runs no controller (only in --mode kubernetes)");
    const res = await fetch(`http://127.0.0.1:${this.record.controllerMetricsPort}${path}`, {
      headers,
      signal: AbortSignal.timeout(2_000),
    });
    return { status: res.status, body: await res.text(), headers: res.headers };
  }

  /** Every node agent sees every gateway instance up (its metrics: static_egress_instance_up). */
  async allInstancesUp(): Promise<boolean> {
    const instances = this.gatewayInstances().length;
    for (const n of this.topology.nodes) {
      const text = await this.agentMetrics(n.name).catch(() => "");
      if ((text.match(/^static_egress_instance_up\{[^}]*\} 1$/gm) ?? []).length < instances) return false;
    }
    return true;
  }

  /** Forgets the UDP records so far (the server appends to the same file). */
  clearUdpRecords(): void {
    writeFileSync(this.udpLog, "");
  }

  /** Every UDP datagram the Internet host received so far. */
  udpRecords(): { t: number; src: string; payload: string }[] {
    if (!existsSync(this.udpLog)) return [];
    return readFileSync(this.udpLog, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { t: number; src: string; payload: string });
  }

  async down(): Promise<void> {
    await removeLab(this.record.prefix, this.record.processes);
  }
}

/** spec.digitalocean of a lab gateway: droplets in the stand-in's lab VPC, the lab file's reserved IPs. */
function digitaloceanSource(
  d: NonNullable<LabConfig["gateways"][number]["digitalocean"]>,
  cloud: LabCloudRecord | undefined,
): Record<string, unknown> {
  return {
    region: LAB_CLOUD.region,
    size: LAB_CLOUD.size,
    ...(cloud ? { vpcUUID: cloud.vpcUuid } : {}),
    count: d.count ?? 2,
    reservedIPs: d.reservedIPs,
    allocateReservedIPs: false,
    nodeTag: LAB_CLOUD.nodeTag,
  };
}

/** Kills a lab's processes (some live in the root namespace), deletes its namespaces and state. */
async function removeLab(prefix: string, processes: readonly { pid: number; name?: string }[]): Promise<string[]> {
  // The control plane ends its own children (etcd, kube-apiserver, ...) on SIGTERM: give it time.
  const cp = processes.find((p) => p.name === "apiserver");
  if (cp) {
    signal(cp.pid, "SIGTERM");
    await waitFor(() => !alive(cp.pid), 15_000, "").catch(() => undefined);
  }
  for (const p of processes) signal(p.pid, "SIGKILL");
  removeControlPlaneLeftovers();
  const removed = await deleteNamespacesWithPrefix(`${prefix}-`);
  rmSync(join(LAB_STATE_ROOT, prefix), { recursive: true, force: true });
  return removed;
}

/** Sends a signal; a process that is already gone is not an error. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Removes what earlier runs left behind: labs whose owner process died (unless persistent),
 * and `se-` namespaces with no lab record that are older than ten minutes.
 */
export async function removeLeftovers(log: (line: string) => void = () => undefined): Promise<string[]> {
  const removed: string[] = [];
  const records = existsSync(LAB_STATE_ROOT) ? readdirSync(LAB_STATE_ROOT) : [];
  for (const prefix of records) {
    const file = join(LAB_STATE_ROOT, prefix, "lab.json");
    let record: LabRecord | undefined;
    try {
      record = JSON.parse(readFileSync(file, "utf8")) as LabRecord;
    } catch {
      record = undefined;
    }
    if (record && (record.persistent || alive(record.ownerPid))) continue;
    removed.push(...(await removeLab(prefix, record?.processes ?? [])));
  }
  const known = new Set(existsSync(LAB_STATE_ROOT) ? readdirSync(LAB_STATE_ROOT) : []);
  for (const ns of listNamespaces()) {
    if (!ns.startsWith(LAB_NAME_ROOT)) continue;
    const prefix = ns.split("-").slice(0, 2).join("-");
    if (known.has(prefix)) continue;
    let age: number;
    try {
      age = Date.now() - statSync(`/var/run/netns/${ns}`).mtimeMs;
    } catch {
      continue;
    }
    if (age < 10 * 60_000) continue;
    await killNamespaceProcesses(ns);
    await runCommand("ip", ["netns", "delete", ns]).catch(() => undefined);
    removed.push(ns);
  }
  if (removed.length > 0) log(`removed ${removed.length} leftover namespaces of earlier runs`);
  return removed;
}

function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}
