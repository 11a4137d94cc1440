import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { GROUP, VERSION } from "../../src/api/v1alpha1/common.js";
import { parseLabConfig, readAppSpecFile } from "../../src/lab/config.js";
import { readPoolRecord } from "../../src/lab/gateway-pool.js";
import { labClient, refreshPodIPs } from "../../src/lab/kube-lab.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { listNamespaces, newRunPrefix } from "../../src/lab/netns.js";
import { alive } from "../../src/lab/control-plane/processes.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { analyzeStream, startUdpStream } from "../../src/lab/traffic.js";

// Issue 12 outcome 6, end to end on one machine with examples/lab-apps.yaml: two apps with
// dedicated egress (web, payments) and one without (crawler), created from their spec files;
// kube-controller-manager makes their pods, kube-scheduler places them, the lab kubelet runs them
// through the CNI chain. The controller (--apps-gateway-pool) puts two pool hosts in each dedicated
// app's gateway, and the lab runs those hosts' agents as the API assigns them. The lab's Internet
// records every datagram's source.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const CLI = join(packageRoot(), "dist", "cli", "main.js");
const EXAMPLES = join(packageRoot(), "examples");

let lab: Lab;
let poolIPs: string[];

async function apps(...args: string[]): Promise<string> {
  const r = await promisify(execFile)(process.execPath, [CLI, "apps", ...args, "--kubeconfig", lab.kubeconfigPath]);
  return r.stdout;
}

async function getApp(name: string): Promise<Json | undefined> {
  try {
    return (await labClient(lab).custom.getClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: "apps",
      name,
    })) as Json;
  } catch {
    return undefined;
  }
}
const dedicated = (a: Json | undefined): Json[] => (a?.status?.dedicated_ips as Json[] | undefined) ?? [];
const assigned = (a: Json | undefined): string[] =>
  dedicated(a)
    .filter((d) => d.status === "ASSIGNED")
    .map((d) => d.ip as string);

/** The app's pods as the lab runs them (refreshed from the API). */
async function podsOf(app: string): Promise<Lab["topology"]["pods"]> {
  await refreshPodIPs(lab);
  return lab.topology.pods.filter((p) => p.namespace === `app-${app}` && lab.record.podIPs[`${p.namespace}/${p.name}`]);
}

const nodeIP = (node: string) => lab.topology.nodes.find((n) => n.name === node)!.publicIP;

async function sourceOf(pod: Lab["topology"]["pods"][number]): Promise<string | undefined> {
  return (await lab.probe(pod, `http://${LAB_NETWORK.echoService}/`)).source;
}

async function listAll(plural: string): Promise<Json[]> {
  return (
    (await labClient(lab).custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as {
      items: Json[];
    }
  ).items;
}

let tag = 0;
/** Every pod of the app sends a short UDP stream; the sources the Internet saw, per pod. */
async function sourcesOf(app: string): Promise<Map<string, Record<string, number>>> {
  const out = new Map<string, Record<string, number>>();
  const pods = await podsOf(app);
  const tags = pods.map((p) => `${app}-${p.name}-${tag++}`);
  await Promise.all(pods.map((p, i) => startUdpStream(lab, `${p.namespace}/${p.name}`, tags[i]!, 1_000, 20)));
  await new Promise((r) => setTimeout(r, 500));
  pods.forEach((p, i) => out.set(`${p.node} ${p.name}`, analyzeStream(lab, tags[i]!, []).sources));
  return out;
}

beforeAll(async () => {
  const file = join(EXAMPLES, "lab-apps.yaml");
  const cfg = parseLabConfig(readFileSync(file, "utf8"), file);
  poolIPs = cfg.apps!.gatewayPool!.map((h) => h.egressIP);
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
}, 300_000);

afterAll(async () => {
  await lab?.down();
});

let webIPs: string[];
let payIPs: string[];

describe("lab: apps with dedicated egress from the lab's gateway pool (examples/lab-apps.yaml)", () => {
  it("kube-scheduler places every app's pods on the lab's nodes; the lab kubelet runs them", async () => {
    const want = { web: 3, payments: 2, crawler: 1 };
    await waitFor(
      async () => {
        for (const [app, n] of Object.entries(want)) if ((await podsOf(app)).length < n) return false;
        return true;
      },
      120_000,
      "the apps' pods never ran",
      1_000,
    );
    const pods = (await labClient(lab).core.listPodForAllNamespaces()).items.filter((p) =>
      p.metadata!.namespace!.startsWith("app-"),
    );
    expect(pods.length).toBeGreaterThanOrEqual(6);
    for (const p of pods) {
      // The scheduler's binding (the kubelet binds nothing): PodScheduled, on a lab node.
      expect(p.spec?.schedulerName).toBe("default-scheduler");
      expect(p.status?.conditions?.find((c) => c.type === "PodScheduled")?.status, p.metadata!.name).toBe("True");
      expect(lab.topology.nodes.map((n) => n.name)).toContain(p.spec!.nodeName);
    }
  }, 150_000);

  it("each dedicated app gets two pool hosts of its own, ASSIGNED; the pool process runs their agents", async () => {
    await waitFor(
      async () => assigned(await getApp("web")).length === 2 && assigned(await getApp("payments")).length === 2,
      120_000,
      "the apps' IPs never ASSIGNED",
      1_000,
    );
    webIPs = assigned(await getApp("web")).sort();
    payIPs = assigned(await getApp("payments")).sort();
    for (const ip of [...webIPs, ...payIPs]) expect(poolIPs).toContain(ip);
    expect(webIPs.filter((ip) => payIPs.includes(ip))).toEqual([]);
    expect(dedicated(await getApp("crawler"))).toEqual([]);
    // The pool hosts serve the gateway the API put them in, under the names the ids give.
    const pool = readPoolRecord(lab.dir)!.hosts;
    for (const [app, ips] of [
      ["web", webIPs],
      ["payments", payIPs],
    ] as const)
      for (const d of dedicated(await getApp(app)).filter((x) => ips.includes(x.ip))) {
        expect(pool[d.id]?.gateway).toBe(`app-${app}`);
        expect(alive(pool[d.id]!.pids.agent) && alive(pool[d.id]!.pids.health)).toBe(true);
      }
  }, 150_000);

  it("each app's pods leave with its own IPs and never another's; the crawler with its node's IP", async () => {
    for (const [app, ips] of [
      ["web", webIPs],
      ["payments", payIPs],
    ] as const) {
      // The echo service sees one of the app's IPs from every pod.
      for (const p of await podsOf(app)) expect(ips, `${app} ${p.name}`).toContain(await sourceOf(p));
      const seen = await sourcesOf(app);
      expect(seen.size).toBeGreaterThan(0);
      for (const [pod, sources] of seen) {
        expect(Object.keys(sources).length, pod).toBeGreaterThan(0);
        for (const src of Object.keys(sources)) expect(ips, `${app} ${pod} left with ${src}`).toContain(src);
      }
    }
    const crawler = await podsOf("crawler");
    expect(crawler).toHaveLength(1);
    expect(await sourceOf(crawler[0]!)).toBe(nodeIP(crawler[0]!.node));
    for (const [pod, sources] of await sourcesOf("crawler"))
      expect(Object.keys(sources), pod).toEqual([nodeIP(crawler[0]!.node)]);
  }, 120_000);

  it("a pool host killed under an app's traffic: its pods fail over to the app's other IP, no packet from another source", async () => {
    const [pod] = await podsOf("web");
    const name = `failover-${tag++}`;
    const stream = startUdpStream(lab, `${pod!.namespace}/${pod!.name}`, name, 8_000, 5);
    await waitFor(() => analyzeStream(lab, name, []).received > 20, 5_000, "no datagram of the stream arrived");
    const inUse = analyzeStream(lab, name, []).lastSource!;
    expect(webIPs).toContain(inUse);
    const victim = dedicated(await getApp("web")).find((d) => d.ip === inUse)!.id as string;
    await lab.killGateway(victim, "link");
    await stream;
    await new Promise((r) => setTimeout(r, 300));
    const report = analyzeStream(lab, name, webIPs);
    const other = webIPs.find((ip) => ip !== inUse)!;
    expect(report.wrongSource, JSON.stringify(report.sources)).toEqual([]);
    expect(report.lastSource).toBe(other);
    expect(report.sources[other]).toBeGreaterThan(50);
    await lab.reviveGateway(victim);
  }, 60_000);

  it("payments back to AUTOASSIGN: its pods leave with their nodes' IPs, its IPs REMOVED, its pool hosts free", async () => {
    const hosts = dedicated(await getApp("payments")).map((d) => d.id as string);
    const spec = readAppSpecFile(join(EXAMPLES, "apps", "payments.yaml"));
    const file = join(lab.dir, "payments-autoassign.yaml");
    writeFileSync(file, stringify({ ...spec, egress: { type: "AUTOASSIGN" } }));
    // The controller writes the App's status every few seconds (usage): an update that read an
    // older version is refused (409), never applied over it; as a user would, try again.
    await waitFor(
      () =>
        apps("update", "payments", "--spec", file).then(
          () => true,
          (e: Error) => (/HTTP 409/.test(e.message) ? false : Promise.reject(e)),
        ),
      30_000,
      "apps update kept conflicting",
      500,
    );
    await waitFor(
      async () => dedicated(await getApp("payments")).every((d) => d.status === "REMOVED"),
      60_000,
      "payments' IPs never REMOVED",
      1_000,
    );
    expect(
      dedicated(await getApp("payments"))
        .map((d) => d.ip)
        .sort(),
    ).toEqual(payIPs);
    // Every pod of the new deployment leaves with its node's IP (once the rollout is done: the
    // old pods, deleted as the new ones become available, are gone).
    await waitFor(
      async () => {
        const all = (await labClient(lab).core.listNamespacedPod({ namespace: "app-payments" })).items;
        const templates = new Set(all.map((p) => p.metadata?.labels?.["pod-template-hash"]));
        if (all.length !== 2 || templates.size !== 1 || all.some((p) => p.metadata?.deletionTimestamp)) return false;
        const pods = await podsOf("payments");
        if (pods.length < 2) return false;
        for (const p of pods) if ((await sourceOf(p)) !== nodeIP(p.node)) return false;
        return true;
      },
      90_000,
      "payments' pods never left with their nodes' IPs",
      1_000,
    );
    for (const [pod, sources] of await sourcesOf("payments"))
      expect(Object.keys(sources), pod).toEqual([nodeIP(pod.split(" ")[0]!)]);
    // Its gateway is gone and its hosts free: no agent of the app's left on them.
    await waitFor(
      async () =>
        !(await listAll("egressgateways")).some((g) => g.metadata.name === "app-payments") &&
        hosts.every((h) => !readPoolRecord(lab.dir)!.hosts[h]),
      30_000,
      "payments' pool hosts were never freed",
    );
    // web still leaves with its own IPs only.
    for (const [pod, sources] of await sourcesOf("web"))
      for (const src of Object.keys(sources)) expect(webIPs, `web ${pod} left with ${src}`).toContain(src);
  }, 180_000);

  it("apps delete: no namespace, gateway or policy of the apps is left, and the pool is free", async () => {
    for (const app of ["web", "payments", "crawler"]) await apps("delete", app);
    await waitFor(
      async () => {
        const [web, payments, crawler] = await Promise.all(["web", "payments", "crawler"].map(getApp));
        return !web && !payments && !crawler;
      },
      120_000,
      "the apps were never deleted",
      1_000,
    );
    const namespaces = (await labClient(lab).core.listNamespace()).items.map((n) => n.metadata!.name!);
    expect(namespaces.filter((n) => n.startsWith("app-"))).toEqual([]);
    expect((await listAll("egressgateways")).filter((g) => g.metadata.name.startsWith("app-"))).toEqual([]);
    expect((await listAll("egresspolicies")).filter((p) => p.metadata.namespace.startsWith("app-"))).toEqual([]);
    await waitFor(() => Object.keys(readPoolRecord(lab.dir)!.hosts).length === 0, 20_000, "pool hosts still serve");
    // Nor a pod's namespace.
    expect(listNamespaces().filter((n) => n.startsWith(`${lab.record.prefix}-pod-app-`))).toEqual([]);
  }, 180_000);
});
