import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { statusOf } from "../kube/client.js";
import { runCommand } from "../util/exec.js";
import { k8sBinary } from "./control-plane/binaries.js";
import { alive } from "./control-plane/processes.js";
import { serviceAccountKubeconfig, type ServiceAccountRef } from "./control-plane/tokens.js";
import { execIn } from "./netns.js";
import type { LabHost } from "./record.js";
import { LAB_API_ADDRESS, LAB_API_PORT, LAB_NETWORK, type LabNode } from "./topology.js";
import { LabError, waitFor } from "./wait.js";

/**
 * The lab's NetworkPolicy enforcer (docs/lab.md "NetworkPolicies"): kube-router's network-policy
 * controller only (`--run-router=false --run-service-proxy=false`), one process per node inside
 * the node's namespace, so the iptables rules and ipsets it writes are that node's. It reaches the
 * API through the lab's control-plane relay (10.0.0.2:6443 on the VPC, a unix socket to the API
 * server) like the node agents, with a service-account token of its own. Test-only: never shipped.
 */

/** Its identity: a ClusterRole with the reads kube-router's informers make, nothing else. */
export const KUBE_ROUTER_ACCOUNT: ServiceAccountRef = { namespace: "kube-system", name: "lab-kube-router" };
const ROLE = "lab-kube-router";

/** The pod network between nodes: a VXLAN device per node (as flannel's vxlan backend), its own port and VNI. */
const POD_VXLAN = { device: "pods", vni: 4242, port: 8472 } as const;

const processName = (node: string) => `netpol-${node}`;

/**
 * Pods on different nodes reach each other with their own addresses, as a cluster's CNI makes
 * them: a VXLAN device per node, a route, neighbour and FDB entry per other node's pod CIDR (the
 * VPC sees node addresses only, so its anti-spoofing holds), and pod-to-pod traffic kept out of
 * the ptp plugin's masquerade by an identity SNAT one step before it (the trick our node table
 * uses for diverted pods).
 */
export async function connectPodNetwork(nodes: readonly LabNode[]): Promise<void> {
  const mac = (i: number) => `02:5e:00:00:00:${(i + 1).toString(16).padStart(2, "0")}`;
  const vtep = (n: LabNode) => n.podCidr.replace(/\/\d+$/, "");
  for (const [i, n] of nodes.entries()) {
    const ip = (...args: string[]) => runCommand("ip", ["-n", n.netns, ...args]);
    await ip(
      ...["link", "add", POD_VXLAN.device, "type", "vxlan", "id", String(POD_VXLAN.vni)],
      ...["local", n.vpcIP, "dstport", String(POD_VXLAN.port), "dev", "eth0", "nolearning"],
    );
    await ip("link", "set", POD_VXLAN.device, "address", mac(i), "up");
    for (const [j, peer] of nodes.entries()) {
      if (j === i) continue;
      await ip("neigh", "add", vtep(peer), "lladdr", mac(j), "dev", POD_VXLAN.device, "nud", "permanent");
      await runCommand("bridge", ["-n", n.netns, "fdb", "append", mac(j), "dev", POD_VXLAN.device, "dst", peer.vpcIP]);
      await ip("route", "add", peer.podCidr, "via", vtep(peer), "dev", POD_VXLAN.device, "onlink");
    }
    const pods = LAB_NETWORK.podCidr;
    await execIn(
      n.netns,
      "nft",
      ["-f", "-"],
      `table ip lab_pod_network {\n  chain keep_pod_source {\n    type nat hook postrouting priority srcnat - 5; policy accept;\n` +
        `    ip saddr ${pods} ip daddr ${pods} oifname "${POD_VXLAN.device}" snat ip to ip saddr\n  }\n}\n`,
    );
  }
}

/** The ClusterRole of kube-router's own manifests, cut to the network-policy controller's reads. */
function clusterRole() {
  return {
    metadata: { name: ROLE },
    rules: [
      // Its informer factory lists and watches all of these (pkg/cmd/kube-router.go); it gets its Node.
      { apiGroups: [""], resources: ["namespaces", "pods", "services", "endpoints"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] },
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      { apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ["list", "watch"] },
    ],
  };
}

async function applyIdentity(admin: KubeConfig): Promise<void> {
  const ignoreExists = (e: unknown) => {
    if (statusOf(e) !== 409) throw e;
  };
  const { namespace, name } = KUBE_ROUTER_ACCOUNT;
  await admin
    .makeApiClient(CoreV1Api)
    .createNamespacedServiceAccount({ namespace, body: { metadata: { name, namespace } } })
    .catch(ignoreExists);
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  await rbac.createClusterRole({ body: clusterRole() }).catch(ignoreExists);
  await rbac
    .createClusterRoleBinding({
      body: {
        metadata: { name: ROLE },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: ROLE },
        subjects: [{ kind: "ServiceAccount", namespace, name }],
      },
    })
    .catch(ignoreExists);
}

/** kube-router's chains and the jumps to them (each jump carries the comment "kube-router netpol"). */
const KUBE_ROUTER_RULE = /KUBE-(ROUTER|POD-FW|NWPLCY)|kube-router netpol/;

/** The filter table of a node, as kube-router sees it (iptables-nft). */
async function filterRules(netns: string): Promise<string> {
  return execIn(netns, "iptables-save", ["-t", "filter"]).catch(() => "");
}

/** Whether the node's FORWARD chain jumps to kube-router's. */
export async function enforcerHooked(netns: string): Promise<boolean> {
  return /^-A FORWARD .*-j KUBE-ROUTER-FORWARD$/m.test(await filterRules(netns));
}

/** Whether any rule, chain or ipset of kube-router is left on the node. */
export async function enforcerLeftovers(netns: string): Promise<string[]> {
  const rules = (await filterRules(netns)).split("\n").filter((l) => KUBE_ROUTER_RULE.test(l));
  const sets = (await execIn(netns, "ipset", ["list", "-n"]).catch(() => ""))
    .split("\n")
    .filter((l) => l.startsWith("KUBE-"));
  return [...rules, ...sets];
}

/**
 * Starts the enforcer on every node and waits until each one hooked the node's FORWARD, INPUT and
 * OUTPUT chains. Its processes are the lab's: `lab down` ends them with the rest.
 */
export async function startNetworkPolicyEnforcer(lab: LabHost, log: (line: string) => void): Promise<void> {
  const binary = k8sBinary("kube-router");
  const admin = new KubeConfig();
  admin.loadFromFile(lab.kubeconfigPath);
  await applyIdentity(admin);
  const caPem = readFileSync(join(lab.dir, "ca.crt"), "utf8");
  log(
    `starting the NetworkPolicy enforcer (kube-router's network-policy controller) on ${lab.topology.nodes.length} nodes`,
  );
  for (const n of lab.topology.nodes) {
    const kubeconfig = lab.componentKubeconfig(`kube-router-${n.name}`);
    // Bound to its Node, as the projected token of a DaemonSet pod on that node is.
    const text = await serviceAccountKubeconfig(admin, KUBE_ROUTER_ACCOUNT, {
      server: `https://${LAB_API_ADDRESS}:${LAB_API_PORT}`,
      caPem,
      node: n.name,
      expirationSeconds: 30 * 86_400,
    });
    writeFileSync(kubeconfig, text, { mode: 0o600 });
    const logPath = join(lab.dir, "logs", `${processName(n.name)}.log`);
    const fd = openSync(logPath, "a");
    const args = [
      `--kubeconfig=${kubeconfig}`,
      `--hostname-override=${n.name}`,
      "--run-firewall=true",
      "--run-router=false",
      "--run-service-proxy=false",
      `--service-cluster-ip-range=${LAB_NETWORK.serviceCidr}`,
      "--health-port=0",
      "--metrics-port=0",
    ];
    const child = spawn("ip", ["netns", "exec", n.netns, binary, ...args], {
      detached: true,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    child.on("error", () => undefined);
    child.unref();
    lab.record.processes = lab.record.processes.filter((p) => p.name !== processName(n.name));
    lab.record.processes.push({ name: processName(n.name), netns: n.netns, pid: child.pid ?? -1, log: logPath });
  }
  lab.save();
  for (const n of lab.topology.nodes) {
    const name = processName(n.name);
    await waitFor(
      async () => lab.processExited(name) || (await enforcerHooked(n.netns)),
      60_000,
      `the NetworkPolicy enforcer on ${n.name} did not start`,
      250,
    );
    if (lab.processExited(name))
      throw new LabError(`the NetworkPolicy enforcer on ${n.name} exited: ${lab.logTail(name, 20)}`);
  }
}

/**
 * Removes what the enforcer wrote on a node: its chains and jumps (the filter table restored
 * without them) and its ipsets. kube-router's own `--cleanup-config` does not (v2.1.0: its
 * network-policy cleanup has no iptables handlers when run on its own, and the service proxy's
 * cleanup then panics).
 */
async function removeEnforcerState(netns: string): Promise<void> {
  const saved = await filterRules(netns);
  if (KUBE_ROUTER_RULE.test(saved)) {
    const kept = saved
      .split("\n")
      .filter((l) => !KUBE_ROUTER_RULE.test(l))
      .join("\n");
    await execIn(netns, "iptables-restore", [], kept);
  }
  const sets = (await execIn(netns, "ipset", ["list", "-n"])).split("\n").filter((l) => l.startsWith("KUBE-"));
  for (const set of sets) await execIn(netns, "ipset", ["destroy", set]);
}

/**
 * Stops the enforcer on every node and removes what it wrote, so the nodes forward as they did
 * before it; throws if anything of it is left.
 */
export async function stopNetworkPolicyEnforcer(lab: LabHost): Promise<void> {
  for (const n of lab.topology.nodes) {
    const p = lab.record.processes.find((x) => x.name === processName(n.name));
    if (!p) continue;
    signal(p.pid, "SIGTERM");
    await waitFor(() => !alive(p.pid), 10_000, "").catch(() => signal(p.pid, "SIGKILL"));
    lab.record.processes = lab.record.processes.filter((x) => x !== p);
  }
  lab.save();
  for (const n of lab.topology.nodes) {
    await removeEnforcerState(n.netns);
    const left = await enforcerLeftovers(n.netns);
    if (left.length > 0)
      throw new LabError(`the NetworkPolicy enforcer left rules or sets on ${n.name}: ${left.slice(0, 5).join("; ")}`);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}
