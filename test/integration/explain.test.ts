import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPORT_ANNOTATION } from "../../src/api/keys.js";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import { freePort } from "../../src/lab/control-plane/cluster.js";
import { packageRoot } from "../../src/lab/paths.js";
import { waitFor } from "../../src/lab/wait.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// `static-egress explain` (without --local) and `egress-ips` against a real kube-apiserver, with
// the built CLI (dist/), the real controller command serving the feed, and the kubectl plugin
// run by the real kubectl.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const GV = { group: "staticegress.io", version: "v1alpha1" };
const mergePatch = setHeaderOptions("Content-Type", "application/merge-patch+json");
const cli = join(packageRoot(), "dist", "cli", "main.js");

let api: TestKube;
let dir: string;
let controller: ChildProcess | undefined;
let controllerLog = "";
let feedPort = 0;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously: the fault proxy the CLI talks to runs in this process. */
async function exec(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  try {
    const r = await promisify(execFile)(file, args, { env });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

const run = (args: string[], kubeconfig = "admin") =>
  exec(process.execPath, [cli, ...args, "--kubeconfig", join(dir, `${kubeconfig}.kubeconfig`)]);

function policy(kind: "EgressPolicy" | "ClusterEgressPolicy", name: string, spec: Json, namespace?: string): Json {
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind,
    metadata: { name, ...(namespace ? { namespace } : {}) },
    spec,
  };
}

async function getPolicy(name: string, namespace: string): Promise<Json> {
  return (await api.admin.custom.getNamespacedCustomObject({
    ...GV,
    namespace,
    plural: "egresspolicies",
    name,
  })) as Json;
}

function startController(): void {
  controllerLog = "";
  controller = spawn(
    process.execPath,
    [
      cli,
      "controller",
      "--kubeconfig",
      join(dir, "controller.kubeconfig"),
      "--config",
      join(dir, "agent.yaml"),
      "--identity",
      "explain-test",
      "--lease-seconds",
      "2",
      "--metrics-port",
      String(feedPort),
      "--metrics-address",
      "127.0.0.1",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  controller.stderr!.on("data", (d: Buffer) => (controllerLog += d.toString()));
}

async function stopController(): Promise<void> {
  const proc = controller;
  controller = undefined;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGTERM");
  await exited;
}

function withControllerLog(e: Error): never {
  throw new Error(`${e.message}; controller log: ${controllerLog.slice(-800)}`, { cause: e });
}

async function feed(path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`http://127.0.0.1:${feedPort}${path}`, { headers, signal: AbortSignal.timeout(5_000) });
  return { status: res.status, etag: res.headers.get("etag"), body: await res.text() };
}

beforeAll(async () => {
  api = await startTestKube();
  dir = mkdtempSync(join(tmpdir(), "se-explain-"));
  writeFileSync(join(dir, "admin.kubeconfig"), api.adminKubeconfig(), { mode: 0o600 });
  writeFileSync(join(dir, "controller.kubeconfig"), await api.kubeconfigFor("controller"), { mode: 0o600 });
  writeFileSync(
    join(dir, "agent.yaml"),
    "clusterNetwork:\n  podCIDRs: [10.244.0.0/16]\n  serviceCIDRs: [10.96.0.0/12]\n  nodeCIDRs: [10.0.0.0/24]\n",
  );
  for (const ns of ["payments", "web", "static-egress"]) await api.ensureNamespace(ns);
  // An identity with no RBAC at all: the web namespace's default service account.
  writeFileSync(
    join(dir, "nobody.kubeconfig"),
    await api.cluster.kubeconfigFor({ namespace: "web", name: "default" }),
    { mode: 0o600 },
  );
  for (const i of [1, 2])
    await api.createNode({ name: `node${i}`, podCIDR: `10.244.${i}.0/24`, internalIP: `10.0.0.1${i}` });
  // The node agent's identity is bound to its Node: made once the Node exists.
  writeFileSync(join(dir, "node1.kubeconfig"), await api.kubeconfigFor("node-agent", "node1"), { mode: 0o600 });
  const custom = api.admin.custom;
  await custom.createClusterCustomObject({
    ...GV,
    plural: "egressgateways",
    body: {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressGateway",
      metadata: { name: "shared" },
      spec: {
        grants: [{ namespaceSelector: {}, outrankClusterPolicies: true }],
        static: {
          instances: [
            { name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10", "192.0.2.11"] },
            { name: "gw-b", address: "10.0.0.102", egressIPs: ["192.0.2.20"] },
          ],
        },
      },
    },
  });
  const selector = { podSelector: { matchLabels: { app: "checkout" } }, gatewayName: "shared" };
  await custom.createNamespacedCustomObject({
    ...GV,
    namespace: "payments",
    plural: "egresspolicies",
    body: policy(
      "EgressPolicy",
      "checkout",
      { ...selector, egressIPs: ["192.0.2.10", "192.0.2.20"], publishEgressIPs: true },
      "payments",
    ),
  });
  await custom.createClusterCustomObject({
    ...GV,
    plural: "clusteregresspolicies",
    body: policy("ClusterEgressPolicy", "audit", {
      ...selector,
      namespaceSelector: {},
      egressIPs: ["192.0.2.11"],
      destinationCIDRs: ["198.51.100.0/24"],
      priority: 200,
      publishEgressIPs: true,
    }),
  });
  await custom.createNamespacedCustomObject({
    ...GV,
    namespace: "web",
    plural: "egresspolicies",
    body: policy(
      "EgressPolicy",
      "unpublished",
      { podSelector: { matchLabels: { app: "nothing" } }, gatewayName: "shared", egressIPs: ["192.0.2.10"] },
      "web",
    ),
  });
  await api.createPod({
    namespace: "payments",
    name: "pay-1",
    node: "node1",
    labels: { app: "checkout" },
    ip: "10.244.1.5",
  });
  await api.createPod({
    namespace: "web",
    name: "web-1",
    node: "node1",
    labels: { app: "frontend" },
    ip: "10.244.1.6",
  });
  // The node agent's pod on node1, as the DaemonSet labels it: explain names it in its hint.
  await api.createPod({
    namespace: "static-egress",
    name: "static-egress-node-7xk2p",
    node: "node1",
    labels: { "app.kubernetes.io/name": "static-egress", "app.kubernetes.io/component": "node-agent" },
    ip: "10.0.0.11",
  });
  // node1's agent reports: it sees gw-b down, so pay-1 uses gw-a.
  await api.admin.patchNodeAnnotations("node1", {
    [REPORT_ANNOTATION]: JSON.stringify({
      programmed: { "EgressPolicy/payments/checkout": 1 },
      health: { "shared/gw-a": "up", "shared/gw-b": "down" },
      unavailable: {},
      at: new Date().toISOString(),
    }),
  });
  feedPort = await freePort();
  startController();
  await waitFor(
    async () => ((await getPolicy("checkout", "payments")).status?.egressIPs ?? []).length === 2,
    60_000,
    "the controller did not write checkout's status",
  ).catch(withControllerLog);
}, 180_000);

afterAll(async () => {
  await stopController();
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("static-egress explain (the cluster through the API; the node's datapath as it last reported)", () => {
  it("a selected pod: the deciding policy, the one it beat and why, the instance in use with its health, the egress IP", async () => {
    const r = await run(["explain", "payments/pay-1", "-o", "json"]);
    expect(r.code, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout) as Json;
    expect(e.verdict).toBe("diverted");
    expect(e.decisions).toHaveLength(1);
    expect(e.decisions[0]).toMatchObject({
      policy: "EgressPolicy/payments/checkout",
      destinations: ["0.0.0.0/0"],
      gateway: "shared",
      // gw-b is down as node1 reports it: gw-a carries the pod, with the policy's IP on it.
      path: {
        kind: "gateway",
        instance: "shared/gw-a",
        address: "10.0.0.101",
        egressIPs: ["192.0.2.10"],
        healthOnNode: "up",
      },
    });
    expect(e.policies).toContainEqual(
      expect.objectContaining({
        policy: "ClusterEgressPolicy/audit",
        decides: [],
        lost: [
          {
            to: "EgressPolicy/payments/checkout",
            destinations: ["198.51.100.0/24"],
            rule: "priority",
            message: "priority 100 before 200 (lower wins)",
          },
        ],
      }),
    );
    expect(e.node.name).toBe("node1");
    expect(e.node.report.programmed).toEqual({ "EgressPolicy/payments/checkout": 1 });
    expect(e.node.entries).toHaveLength(1);
    expect(e.node.entries[0]).toMatchObject({
      podIP: "10.244.1.5",
      dst: "0.0.0.0/0",
      instance: "shared/gw-a",
      route: "via",
    });
    expect(e.node.entries[0].mark).toBe(e.decisions[0].path.mark);
    // No kernel read without --local: how to get it, naming the agent pod on that node.
    expect(e.kernel).toBeNull();
    expect(e.kernelHint).toBe(
      "the kernel of node1 was not read; run there: kubectl exec -n static-egress static-egress-node-7xk2p -- " +
        "node /app/dist/cli/main.js explain payments/pay-1 --local",
    );
    // The gateway's own status (the controller's, from the reports) beside the node's view.
    await waitFor(
      async () => {
        const again = JSON.parse((await run(["explain", "payments/pay-1", "-o", "json"])).stdout) as Json;
        return again.decisions[0].path.gatewayStatus === "Up";
      },
      20_000,
      "the gateway's status health never showed",
    );
  });

  it("text: a pod no policy selects leaves with the node's IP; --to narrows to one destination", async () => {
    const r = await run(["explain", "web/web-1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      "Pod web/web-1 on node1, IP 10.244.1.6\n  not selected by any policy: leaves with the node's IP\n",
    );
    const to = await run(["explain", "payments/pay-1", "--to", "198.51.100.7"]);
    expect(to.stdout).toContain(
      "to 198.51.100.7/32: leaves with 192.0.2.10 through shared/gw-a (EgressPolicy/payments/checkout)",
    );
    expect(to.stdout).toMatch(
      /ClusterEgressPolicy\/audit \(priority 200\)\n\s+lost 198\.51\.100\.7\/32 to EgressPolicy\/payments\/checkout: priority 100 before 200/,
    );
    expect(to.stdout).toContain("Kernel: the kernel of node1 was not read; run there: kubectl exec");
  });

  it("runs with the node agent's own identity (what `kubectl exec` into its pod uses): lists only", async () => {
    const r = await run(["explain", "payments/pay-1", "-o", "json"], "node1");
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Json).decisions[0].policy).toBe("EgressPolicy/payments/checkout");
  });

  it("says what is wrong: a malformed pod, a missing pod, no access", async () => {
    const malformed = await run(["explain", "pay-1"]);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toBe('static-egress: "pay-1": give the pod as <namespace>/<name>, e.g. payments/pay-1\n');
    const missing = await run(["explain", "payments/ghost"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("static-egress: pod payments/ghost not found\n");
    const denied = await run(["explain", "payments/pay-1"], "nobody");
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain(
      'static-egress: no access: cannot list pods in namespace payments: pods "pay-1" is forbidden: ' +
        'User "system:serviceaccount:web:default" cannot list resource "pods"',
    );
  });

  it("is kubectl's plugin too: `kubectl static-egress explain` runs kubectl-static_egress from PATH", async () => {
    const bin = join(dir, "bin");
    mkdirSync(bin, { recursive: true });
    const plugin = join(packageRoot(), "dist", "cli", "kubectl-plugin.js");
    chmodSync(plugin, 0o755); // what npm does to a package.json `bin` when it installs one
    symlinkSync(plugin, join(bin, "kubectl-static_egress"));
    const env = { ...process.env, PATH: `${bin}:${dirname(process.execPath)}:${process.env.PATH ?? ""}` };
    const kubeconfig = ["--kubeconfig", join(dir, "admin.kubeconfig")];
    const listed = await exec(k8sBinary("kubectl"), ["plugin", "list"], env);
    expect(listed.stdout).toContain(join(bin, "kubectl-static_egress"));
    const r = await exec(k8sBinary("kubectl"), ["static-egress", "explain", "payments/pay-1", ...kubeconfig], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^Pod payments\/pay-1 on node1, IP 10\.244\.1\.5\n\s+to 0\.0\.0\.0\/0: leaves with 192\.0\.2\.10/,
    );
    const help = await exec(k8sBinary("kubectl"), ["static-egress", "explain", "--help"], env);
    expect(help.stdout).toContain("Usage: kubectl static-egress explain [options] <namespace/pod>");
  });
});

describe("the egress-IP feed: GET /egress-ips on the controller, and `egress-ips`", () => {
  it("the controller serves exactly what `egress-ips -o json` prints: published policies only, with ETag and 304", async () => {
    // Both policies' statuses first (the feed follows the controller's own status writes).
    await waitFor(
      async () => {
        const f = await feed("/egress-ips").catch(() => undefined);
        return f?.status === 200 && (JSON.parse(f.body) as Json).egressIPs.length === 3;
      },
      30_000,
      "the feed never showed both policies' egress IPs",
    ).catch(withControllerLog);
    const served = await feed("/egress-ips");
    expect(served.status).toBe(200);
    const printed = await run(["egress-ips", "-o", "json"]);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).toBe(served.body);
    const doc = JSON.parse(served.body) as Json;
    expect(doc.items.map((i: Json) => i.path)).toEqual(["/egress-ips/audit", "/egress-ips/payments/checkout"]);
    expect(doc.egressIPs).toEqual(["192.0.2.10", "192.0.2.11", "192.0.2.20"]);
    const checkout = await getPolicy("checkout", "payments");
    expect(doc.items[1]).toEqual({
      kind: "EgressPolicy",
      namespace: "payments",
      name: "checkout",
      path: "/egress-ips/payments/checkout",
      gateway: "shared",
      egressIPs: ["192.0.2.10", "192.0.2.20"],
      lastChange: checkout.status.egressIPsChangedAt,
    });
    expect((await feed("/egress-ips", { "if-none-match": served.etag! })).status).toBe(304);
    const one = await feed("/egress-ips/payments/checkout");
    expect(one.body).toBe((await run(["egress-ips", "payments/checkout", "-o", "json"])).stdout);
    const table = await run(["egress-ips"]);
    expect(table.stdout).toMatch(/^KIND\s+NAME\s+GATEWAY\s+EGRESS-IPS\s+LAST-CHANGE\n/);
    expect(table.stdout).toMatch(/EgressPolicy\s+payments\/checkout\s+shared\s+192\.0\.2\.10,192\.0\.2\.20\s+\d{4}-/);
    // Not published: the same 404 as for nothing at all, and the CLI says how to publish.
    expect((await feed("/egress-ips/web/unpublished")).status).toBe(404);
    expect((await feed("/egress-ips/web/ghost")).status).toBe(404);
    const refused = await run(["egress-ips", "web/unpublished"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      "web/unpublished: not found, or not published (a policy publishes with spec.publishEgressIPs: true",
    );
  });

  it("lastChange survives a controller restart, and moves (with a new ETag) when the IPs change", async () => {
    const before = await feed("/egress-ips/payments/checkout");
    const since = (JSON.parse(before.body) as Json).lastChange as string;
    expect(since).toMatch(/^\d{4}-/);
    await stopController();
    startController();
    await waitFor(
      async () => (await feed("/egress-ips/payments/checkout").catch(() => ({ status: 0 }))).status === 200,
      60_000,
      "the controller did not come back",
    ).catch(withControllerLog);
    const after = await feed("/egress-ips/payments/checkout", { "if-none-match": before.etag! });
    expect(after.status).toBe(304); // the same document: lastChange kept in the API, not reset
    await api.admin.custom.patchNamespacedCustomObject(
      {
        ...GV,
        namespace: "payments",
        plural: "egresspolicies",
        name: "checkout",
        body: { spec: { egressIPs: ["192.0.2.10"] } },
      },
      mergePatch,
    );
    let changed = before;
    await waitFor(
      async () =>
        (changed = await feed("/egress-ips/payments/checkout", { "if-none-match": before.etag! })).status === 200,
      30_000,
      "the feed did not change after the IP change",
    );
    const doc = JSON.parse(changed.body) as Json;
    expect(doc.egressIPs).toEqual(["192.0.2.10"]);
    expect(Date.parse(doc.lastChange)).toBeGreaterThan(Date.parse(since));
    expect(changed.etag).not.toBe(before.etag);
  });
});
