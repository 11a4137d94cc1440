import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { AuthenticationV1Api, AuthorizationV1Api, KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "../../src/lab/config.js";
import { refreshPodIPs } from "../../src/lab/kube-lab.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import {
  enforcerHooked,
  enforcerLeftovers,
  KUBE_ROUTER_ACCOUNT,
  startNetworkPolicyEnforcer,
  stopNetworkPolicyEnforcer,
} from "../../src/lab/network-policy.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";

// Issue #12 outcome 6: one app cannot reach another app's pods, shown with a real NetworkPolicy
// enforcer (kube-router's network-policy controller on every lab node, docs/lab.md). Two Apps,
// reconciled by the controller into namespaces, Deployments, Services and NetworkPolicies
// (docs/apps.md "Isolation"); the lab kubelet runs their pods on two nodes, whose pods reach each
// other across the VPC. App alpha's pods serve on their http_port (8080) and an internal port
// (9090); a pod of app beta attacks them on its own node and across nodes. The lab has no
// kube-proxy, so "the service port" is reached at the pods' addresses (the Service's endpoints).
// Every attempt is counted. Then the enforcer is stopped and the same attack succeeds: the
// enforcer is what blocks it. Alpha has dedicated egress: its pods keep leaving with its IPs.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const ADDRESSES = ["192.0.2.50", "192.0.2.60", "192.0.2.70", "192.0.2.80"];
const CLI = join(packageRoot(), "dist", "cli", "main.js");
const HTTP_PORT = 8080;
const INTERNAL_PORT = 9090;
const N = 20; // connection attempts per pair and port

let lab: Lab;
const servers: ChildProcess[] = [];
type Pod = Lab["topology"]["pods"][number] & { ip: string };
let alpha: Pod[]; // two, on two nodes
let beta: Pod;
let edge: Pod; // the ingress side (namespace labelled staticegress.io/apps-ingress=true)
let alphaIPs: string[];

const specs = {
  alpha: {
    name: "alpha",
    services: [
      {
        name: "web",
        image: { registry_type: "DOCKER_HUB", repository: "busybox", tag: "1.36" },
        run_command: "sleep 3600",
        http_port: HTTP_PORT,
        internal_ports: [INTERNAL_PORT],
        instance_count: 2,
      },
    ],
    egress: { type: "DEDICATED_IP" },
  },
  beta: {
    name: "beta",
    workers: [
      {
        name: "job",
        image: { registry_type: "DOCKER_HUB", repository: "busybox", tag: "1.36" },
        run_command: "sleep 3600",
        instance_count: 1,
      },
    ],
  },
};

async function apps(...args: string[]): Promise<string> {
  const r = await promisify(execFile)(process.execPath, [CLI, "apps", ...args, "--kubeconfig", lab.kubeconfigPath]);
  return r.stdout;
}

async function podsOf(namespace: string): Promise<Pod[]> {
  await refreshPodIPs(lab);
  return lab.topology.pods
    .filter((p) => p.namespace === namespace && lab.record.podIPs[`${p.namespace}/${p.name}`])
    .map((p) => ({ ...p, ip: lab.record.podIPs[`${p.namespace}/${p.name}`]! }));
}

/** A TCP server in the pod on both ports: each connection gets `<pod>:<port>` and is closed. */
function serve(pod: Pod): void {
  const script = `const net = require("node:net");
for (const port of [${HTTP_PORT}, ${INTERNAL_PORT}])
  net.createServer((s) => s.end(process.argv[1] + ":" + port + "\\n")).listen(port);`;
  const child = spawn("ip", ["netns", "exec", pod.netns, process.execPath, "-e", script, pod.name], {
    stdio: "ignore",
  });
  servers.push(child);
}

/** How many of `n` TCP connections from `from` to `to:port` got the server's answer (1 s each). */
async function answers(from: Pod, to: Pod, port: number, n = N): Promise<number> {
  const script = `const net = require("node:net");
const [host, port, n, want] = process.argv.slice(1);
const once = () => new Promise((done) => {
  const s = net.connect({ host, port: Number(port), timeout: 1000 });
  let got = "";
  s.on("data", (d) => (got += d));
  s.on("end", () => done(got === want + "\\n" ? 1 : 0));
  s.on("timeout", () => { s.destroy(); done(0); });
  s.on("error", () => done(0));
});
(async () => { let ok = 0; for (let i = 0; i < Number(n); i++) ok += await once(); console.log(ok); })();`;
  const args = [script, to.ip, String(port), String(n), `${to.name}:${port}`];
  const out = await execIn(from.netns, process.execPath, ["-e", ...args]);
  return Number(out.trim());
}

/** Packets kube-router's REJECT rules refused on a node (its pods' firewall chains). */
async function rejected(node: string): Promise<number> {
  const n = lab.topology.nodes.find((x) => x.name === node)!;
  const out = await execIn(n.netns, "iptables", ["-t", "filter", "-L", "-v", "-x", "-n"]).catch(() => "");
  return out
    .split("\n")
    .filter((l) => /\bREJECT\b/.test(l))
    .reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[0]), 0);
}

const sameNode = () => alpha.find((a) => a.node === beta.node)!;
const otherNode = () => alpha.find((a) => a.node !== beta.node)!;

/** The attack: beta's pod on both of alpha's ports, to the alpha pod on its node and the one on the other. */
async function attack(): Promise<Record<string, number>> {
  return {
    sameNodeHttp: await answers(beta, sameNode(), HTTP_PORT),
    sameNodeInternal: await answers(beta, sameNode(), INTERNAL_PORT),
    otherNodeHttp: await answers(beta, otherNode(), HTTP_PORT),
    otherNodeInternal: await answers(beta, otherNode(), INTERNAL_PORT),
  };
}

/** What the apps' policies admit: alpha to alpha (any port, across nodes), the ingress side to the http_port only. */
async function admitted(): Promise<Record<string, number>> {
  return {
    alphaToAlphaHttp: await answers(alpha[0]!, alpha[1]!, HTTP_PORT),
    alphaToAlphaInternal: await answers(alpha[1]!, alpha[0]!, INTERNAL_PORT),
    edgeToAlphaHttp: (await answers(edge, alpha[0]!, HTTP_PORT)) + (await answers(edge, alpha[1]!, HTTP_PORT)),
    edgeToAlphaInternal:
      (await answers(edge, alpha[0]!, INTERNAL_PORT)) + (await answers(edge, alpha[1]!, INTERNAL_PORT)),
  };
}

/** Until the enforcer has synced the apps' policies: beta refused on both nodes, the allowed paths open. */
async function enforced(): Promise<boolean> {
  const one = async (from: Pod, to: Pod, port: number) => answers(from, to, port, 1);
  return (
    (await one(beta, sameNode(), HTTP_PORT)) === 0 &&
    (await one(beta, otherNode(), HTTP_PORT)) === 0 &&
    (await one(edge, alpha[0]!, HTTP_PORT)) === 1 &&
    (await one(edge, alpha[1]!, HTTP_PORT)) === 1 &&
    (await one(alpha[0]!, alpha[1]!, INTERNAL_PORT)) === 1
  );
}

beforeAll(async () => {
  const cfg = parseLabConfig(
    stringify({
      nodes: [{ name: "node1" }, { name: "node2" }],
      gateways: [],
      namespaces: [{ name: "edge", labels: { "staticegress.io/apps-ingress": "true" } }],
      pods: [{ name: "lb", namespace: "edge", node: "node1" }],
      apps: { digitalocean: { addresses: ADDRESSES } },
      networkPolicy: { enforcer: "kube-router" },
    }),
    "network-policy-lab.yaml",
  );
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  for (const [name, spec] of Object.entries(specs)) writeFileSync(join(lab.dir, `${name}.yaml`), stringify(spec));
  // Alpha first, alone: its two pods are bound one after the other, so to both nodes.
  await apps("create", "--spec", join(lab.dir, "alpha.yaml"));
  await waitFor(async () => (await podsOf("app-alpha")).length === 2, 90_000, "alpha's pods never ran", 500);
  await apps("create", "--spec", join(lab.dir, "beta.yaml"));
  await waitFor(async () => (await podsOf("app-beta")).length === 1, 60_000, "beta's pod never ran", 500);
  alpha = await podsOf("app-alpha");
  [beta] = (await podsOf("app-beta")) as [Pod];
  [edge] = (await podsOf("edge")) as [Pod];
  for (const p of alpha) serve(p);
  await waitFor(
    async () => {
      const app = JSON.parse(await apps("get", "alpha", "-o", "json")) as Json;
      alphaIPs = ((app.dedicated_ips as Json[] | undefined) ?? [])
        .filter((d) => d.status === "ASSIGNED")
        .map((d) => d.ip);
      return alphaIPs.length === 2;
    },
    120_000,
    "alpha's dedicated IPs never ASSIGNED",
    1_000,
  );
}, 360_000);

afterAll(async () => {
  for (const s of servers) s.kill("SIGKILL");
  await lab?.down();
});

describe("lab: NetworkPolicies between apps, enforced by kube-router", () => {
  it("alpha's pods run on both nodes, beta's next to one of them", () => {
    expect(new Set(alpha.map((p) => p.node)).size).toBe(2);
    expect(sameNode().node).toBe(beta.node);
    expect(otherNode().node).not.toBe(beta.node);
  });

  it("the enforcer runs on every node, hooked into its FORWARD chain, with only the reads it needs (asked with its own token)", async () => {
    for (const n of lab.topology.nodes) {
      expect(lab.processExited(`netpol-${n.name}`)).toBe(false);
      expect(await enforcerHooked(n.netns)).toBe(true);
    }
    // Its token, against the API server on loopback (inside the lab it goes through the relay).
    const text = readFileSync(lab.componentKubeconfig("kube-router-node1"), "utf8");
    const server = /server: (\S+)/.exec(readFileSync(lab.kubeconfigPath, "utf8"))![1]!;
    const kc = new KubeConfig();
    kc.loadFromString(text.replace(/server: \S+/, `server: ${server}`));
    const may = async (verb: string, resource: string, group = "") => {
      const r = await kc.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
        body: { spec: { resourceAttributes: { verb, resource, group } } },
      });
      return r.status?.allowed === true;
    };
    const user = (await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: {} })).status?.userInfo;
    expect(user?.username).toBe(`system:serviceaccount:${KUBE_ROUTER_ACCOUNT.namespace}:${KUBE_ROUTER_ACCOUNT.name}`);
    for (const [verb, resource, group] of [
      ["watch", "pods", ""],
      ["list", "namespaces", ""],
      ["watch", "networkpolicies", "networking.k8s.io"],
      ["get", "nodes", ""],
      ["list", "endpointslices", "discovery.k8s.io"],
    ] as const)
      expect(await may(verb, resource, group), `${verb} ${resource}`).toBe(true);
    for (const [verb, resource, group] of [
      ["get", "secrets", ""],
      ["get", "pods", ""],
      ["list", "secrets", ""],
      ["create", "pods", ""],
      ["patch", "networkpolicies", "networking.k8s.io"],
      ["delete", "namespaces", ""],
      ["update", "nodes", ""],
      ["list", "apps", "staticegress.io"],
    ] as const)
      expect(await may(verb, resource, group), `${verb} ${resource}`).toBe(false);
  });

  it("enforcer on: alpha reaches alpha and the ingress side alpha's http_port; beta gets 0 answers, same node and across nodes", async () => {
    await waitFor(enforced, 60_000, "the enforcer never applied the apps' policies", 1_000);
    expect(await admitted()).toEqual({
      alphaToAlphaHttp: N,
      alphaToAlphaInternal: N,
      edgeToAlphaHttp: 2 * N,
      edgeToAlphaInternal: 0, // internal ports: from within the app only
    });
    const before = { same: await rejected(beta.node), other: await rejected(otherNode().node) };
    expect(await attack()).toEqual({ sameNodeHttp: 0, sameNodeInternal: 0, otherNodeHttp: 0, otherNodeInternal: 0 });
    // Refused by kube-router's rules for alpha's pods, on the node of each: a SYN per attempt at least.
    expect((await rejected(beta.node)) - before.same).toBeGreaterThanOrEqual(2 * N);
    expect((await rejected(otherNode().node)) - before.other).toBeGreaterThanOrEqual(2 * N);
  }, 180_000);

  it("enforcer on: alpha's pods still leave with alpha's dedicated IPs, beta's with its node's address", async () => {
    for (const p of alpha) {
      const r = await lab.probe(p, `http://${LAB_NETWORK.echoService}/`);
      expect(alphaIPs, JSON.stringify(r)).toContain(r.source);
    }
    const node = lab.topology.nodes.find((n) => n.name === beta.node)!;
    expect((await lab.probe(beta, `http://${LAB_NETWORK.echoService}/`)).source).toBe(node.publicIP);
  }, 60_000);

  it("enforcer off: the same attack succeeds, every attempt answered; nothing of the enforcer is left on the nodes", async () => {
    await stopNetworkPolicyEnforcer(lab);
    for (const n of lab.topology.nodes) expect(await enforcerLeftovers(n.netns)).toEqual([]);
    expect(await attack()).toEqual({ sameNodeHttp: N, sameNodeInternal: N, otherNodeHttp: N, otherNodeInternal: N });
    expect((await admitted()).edgeToAlphaInternal).toBe(2 * N);
  }, 120_000);

  it("started again in the running lab, it blocks the attack again", async () => {
    await startNetworkPolicyEnforcer(lab, () => undefined);
    await waitFor(enforced, 60_000, "the enforcer never applied the apps' policies again", 1_000);
    expect(await attack()).toEqual({ sameNodeHttp: 0, sameNodeInternal: 0, otherNodeHttp: 0, otherNodeInternal: 0 });
    const r = await lab.probe(alpha[0]!, `http://${LAB_NETWORK.echoService}/`);
    expect(alphaIPs).toContain(r.source);
  }, 120_000);
});
