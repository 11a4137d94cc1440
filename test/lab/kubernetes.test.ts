import { spawnSync } from "node:child_process";
import { KubeConfig } from "@kubernetes/client-node";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import { httpsRequest } from "../../src/lab/control-plane/https.js";
import { newRunPrefix } from "../../src/lab/netns.js";
import { analyzeStream, startUdpStream } from "../../src/lab/traffic.js";
import { byPod, exampleLabConfig, grown, namedCounters, waitConverged } from "./support.js";

// The lab on Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager), the
// controller, the lab kubelet and the agents reading the API, each with its own service-account
// token. People use kubectl; faults of the API server never leak a packet.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
let lab: Lab;
let tag = 0;

function kubectl(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(k8sBinary("kubectl"), ["--kubeconfig", lab.kubeconfigPath, ...args], { input, encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** The fault proxy's endpoint in front of the lab's API server (admin token, the lab's CA). */
async function fault(spec: unknown): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromFile(lab.kubeconfigPath);
  const res = await httpsRequest(`${kc.getCurrentCluster()!.server}/_faults`, {
    ca: readFileSync(join(lab.dir, "ca.crt"), "utf8"),
    token: kc.getCurrentUser()!.token!,
    method: spec === null ? "DELETE" : "POST",
    ...(spec === null ? {} : { body: JSON.stringify(spec) }),
    timeoutMs: 120_000,
  });
  expect(res.status, res.body).toBe(200);
}

beforeAll(async () => {
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.instances![0]!.egressIPs.push("192.0.2.12"); // a free IP for a new policy,
  // granted to the web namespace (tenancy: only granted IPs may be used)
  cfg.gateways[0]!.grants!.push({
    namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "web" } },
    egressIPs: ["192.0.2.12"],
  });
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  await waitConverged(lab, undefined, 30_000);
});

afterAll(async () => {
  await lab?.down();
});

describe("lab on Kubernetes", () => {
  it("kubectl shows the policies with their status, and the pods", async () => {
    let r = kubectl(["get", "egresspolicies", "-A"]);
    // Ready once every node reports the policy programmed.
    const ready = () =>
      /checkout\s+shared\s+\["192.0.2.10","192.0.2.20"\]\s+True/.test(
        (r = kubectl(["get", "egresspolicies", "-A"])).stdout,
      );
    await waitFor(ready, 15_000, "checkout not shown Ready").catch(() => undefined);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/checkout\s+shared\s+\["192.0.2.10","192.0.2.20"\]\s+True/);
    expect(kubectl(["get", "pods", "-n", "payments", "-o", "wide"]).stdout).toMatch(/pay-1\s+0\/1\s+Running/);
  });

  it("the controller is ready, leads, and writes gateway health that the node agents judged", async () => {
    expect((await lab.controllerHttp("/healthz")).status).toBe(200);
    expect((await lab.controllerHttp("/readyz")).status).toBe(200);
    const shared = lab.topology.gatewayHosts.filter((g) => g.gateway === "shared").length;
    expect(shared).toBeGreaterThanOrEqual(2);
    const up = new RegExp(`static_egress_gateway_instances\\{gateway="shared",health="Up"\\} ${shared}\\b`);
    await waitFor(
      async () => up.test((await lab.controllerHttp("/metrics")).body),
      15_000,
      "controller metrics do not show the instances Up",
    );
    const metrics = (await lab.controllerHttp("/metrics")).body;
    expect(metrics).toMatch(/^static_egress_controller_leader 1$/m);
    expect(metrics).toMatch(/static_egress_controller_passes_total\{result="ok",scope="full"\} [1-9]/);
    // The same health in the API, for kubectl users: judged by real agents' BFD sessions, not assumed.
    const health = kubectl([
      "get",
      "egressgateway",
      "shared",
      "-o",
      "jsonpath={.status.instances[*].health}",
    ]).stdout.split(" ");
    expect(health).toEqual(Array(shared).fill("Up"));
  });

  it("the node agents keep our CNI plugin chained, also after the cluster CNI rewrites its list", async () => {
    const file = join(lab.cniConfDir("node2"), "10-lab.conflist");
    const types = () =>
      (JSON.parse(readFileSync(file, "utf8")) as { plugins: { type: string }[] }).plugins.map((p) => p.type);
    expect(types()).toEqual(["ptp", "static-egress"]);
    const entry = (JSON.parse(readFileSync(file, "utf8")) as { plugins: Record<string, unknown>[] }).plugins[1];
    expect(entry).toMatchObject({
      agentSocket: lab.cniSocket("node2"),
      clusterCIDRs: expect.arrayContaining(["10.244.0.0/16"]),
    });
    // The cluster CNI restarts and writes its own list again.
    const own = JSON.parse(readFileSync(file, "utf8")) as { plugins: unknown[] };
    writeFileSync(file, JSON.stringify({ ...own, plugins: own.plugins.slice(0, 1) }));
    await waitFor(() => types().join() === "ptp,static-egress", 5_000, "not chained again");
  });

  it("a policy and a pod created with kubectl take effect", async () => {
    const file = join(lab.dir, "new.yaml");
    writeFileSync(
      file,
      `apiVersion: staticegress.io/v1alpha1
kind: EgressPolicy
metadata: { name: frontend, namespace: web }
spec:
  podSelector: { matchLabels: { app: frontend, tier: edge } }
  gatewayName: shared
  egressIPs: [192.0.2.10]
  destinationCIDRs: [198.51.100.200/32]
---
apiVersion: v1
kind: Pod
metadata: { name: web-3, namespace: web, labels: { app: frontend, tier: edge } }
spec: { nodeName: node2, containers: [{ name: app, image: lab }] }
`,
    );
    // 192.0.2.10 belongs to checkout and is not granted to web: the new policy must be refused, naming the field.
    expect(kubectl(["create", "-f", file]).status).toBe(0);
    await waitFor(
      () =>
        kubectl([
          "get",
          "egp",
          "frontend",
          "-n",
          "web",
          "-o",
          'jsonpath={.status.conditions[?(@.type=="Invalid")].reason}',
        ]).stdout === "InvalidSpecEgressIPs",
      15_000,
      "not marked Invalid",
    );
    await waitFor(
      async () => (await lab.status()).some((r) => r.pod === "web/web-3" && r.ok),
      20_000,
      "web-3 did not start",
    );
    // Fixed: a free IP of the gateway.
    expect(
      kubectl([
        "patch",
        "egp",
        "frontend",
        "-n",
        "web",
        "--type",
        "merge",
        "-p",
        '{"spec":{"egressIPs":["192.0.2.12"]}}',
      ]).status,
    ).toBe(0);
    await waitFor(
      async () => byPod(await lab.status("198.51.100.200")).get("web/web-3")?.egressIP === "192.0.2.12",
      20_000,
      "the new policy did not take effect",
    );
    expect(byPod(await lab.status("198.51.100.200")).get("web/web-1")?.egressIP).toBe("203.0.113.11"); // not selected (no tier label)
  });

  it("kubectl explain, apply --server-side, diff, wait and auth can-i work against the lab", async () => {
    expect(kubectl(["explain", "egresspolicy.spec.egressIPs"]).stdout).toMatch(/FIELD:\s+egressIPs/);
    expect(
      kubectl(["wait", "--for=condition=Ready", "egresspolicy/checkout", "-n", "payments", "--timeout=30s"]).stdout,
    ).toContain("condition met");
    const file = join(lab.dir, "ssa.yaml");
    const doc = (cidr: string) => `apiVersion: staticegress.io/v1alpha1
kind: EgressPolicy
metadata: { name: ssa-probe, namespace: payments }
spec:
  podSelector: { matchLabels: { app: nobody } }
  gatewayName: shared
  egressIPs: [192.0.2.10]
  destinationCIDRs: [${cidr}]
`;
    writeFileSync(file, doc("198.51.100.0/24"));
    const applied = kubectl(["apply", "--server-side", "-f", file]);
    expect(applied.status, applied.stderr).toBe(0);
    expect(applied.stdout).toContain("egresspolicy.staticegress.io/ssa-probe serverside-applied");
    expect(kubectl(["diff", "--server-side", "-f", file]).status).toBe(0); // nothing to change
    writeFileSync(file, doc("198.51.100.128/25"));
    const diff = kubectl(["diff", "--server-side", "-f", file]);
    expect(diff.status).toBe(1); // a difference
    expect(diff.stdout).toMatch(/^\+\s+- 198\.51\.100\.128\/25$/m);
    expect(kubectl(["delete", "-f", file]).status).toBe(0);
    // The controller's own identity: what its code does, and nothing else.
    const canI = (...args: string[]) =>
      spawnSync(
        k8sBinary("kubectl"),
        ["--kubeconfig", lab.componentKubeconfig("controller"), "auth", "can-i", ...args],
        { encoding: "utf8" },
      ).stdout.trim();
    expect(canI("patch", "egresspolicies.staticegress.io/status", "-n", "payments")).toBe("yes");
    expect(canI("get", "secrets", "-n", "static-egress")).toBe("no");
    expect(canI("delete", "pods", "-n", "payments")).toBe("no");
  });

  it("API faults (restart, etcd compaction, dropped watches, 410, 500s) and an unreachable API never leak and never interrupt", async () => {
    const name = `api-faults-${tag++}`;
    const from = Date.now();
    const countersBefore = namedCounters(lab);
    // When each fault began: a datagram lost is placed on this timeline in the failure message.
    const timeline: [string, number][] = [];
    const mark = (what: string) => timeline.push([what, Date.now() - from]);
    const stream = startUdpStream(lab, "payments/pay-1", name, 14_000);
    await new Promise((r) => setTimeout(r, 800));
    mark("drop watches (reset)");
    await fault({ action: "dropWatches", mode: "reset" });
    await new Promise((r) => setTimeout(r, 500));
    // Real causes: the API server restarts (every watch ends), etcd is compacted.
    mark("restart API server");
    await fault({ action: "restartApiServer" });
    mark("compact etcd");
    await fault({ action: "compactEtcd" });
    // A watch resumed from before is answered 410 Gone in the stream, as the server does for an
    // expired resourceVersion: the agents relist.
    mark("410 in watch streams");
    await fault([{ action: "fail", status: 410, count: 12, verb: "watch", inWatch: true }, { action: "dropWatches" }]);
    await new Promise((r) => setTimeout(r, 500));
    mark("500 for lists and watches");
    await fault({ action: "fail", status: 500, count: 20, verb: ["list", "watch"] });
    await fault({ action: "dropWatches" });
    await new Promise((r) => setTimeout(r, 1_000));
    // The API becomes unreachable from inside the lab: agents keep the last good datapath.
    mark("API unreachable");
    lab.killProcess("relay-lab");
    await new Promise((r) => setTimeout(r, 2_000));
    await fault(null);
    mark("API back");
    lab.startProcess("relay-lab", `${lab.record.prefix}-cp`, [
      "lab",
      "relay",
      "--listen",
      "tcp:10.0.0.2:6443",
      "--to",
      `unix:${join(lab.dir, "api.sock")}`,
    ]);
    const sent = await stream;
    await new Promise((r) => setTimeout(r, 200));
    const report = analyzeStream(lab, name, CHECKOUT_IPS, { from, to: Date.now() });
    const why = JSON.stringify({
      lost: report.lostSeqs.map((l) => ({ seq: l.seq, msAfterStart: l.after - from })),
      sendErrors: sent?.sendErrors.slice(0, 20),
      countersGrown: grown(countersBefore, namedCounters(lab)),
      timeline,
      // What the agents decided about instances meanwhile (BFD verdicts).
      verdicts: readdirSync(join(lab.dir, "logs"))
        .filter((f) => f.startsWith("agent-"))
        .flatMap((f) =>
          readFileSync(join(lab.dir, "logs", f), "utf8")
            .split("\n")
            .filter(
              (l) =>
                /gateway instance (up|down)|holding it down/.test(l) &&
                (JSON.parse(l) as { time: number }).time >= from,
            )
            .map((l) => `${f}: ${l}`),
        ),
    });
    expect(report.received).toBeGreaterThan(1000);
    expect(report.wrongSource).toEqual([]);
    expect(Object.keys(report.sources), why).toHaveLength(1); // never moved, never flushed
    expect(report.lost, why).toBe(0);
    expect(sent?.sendErrors, why).toEqual([]);
    // And the agents converge on changes made after the faults.
    const exporter = (await lab.currentPolicies()).find((p) => p.metadata?.name === "exporter")!;
    await lab.deletePolicies([exporter]);
    await waitFor(
      async () => byPod(await lab.status()).get("reporting/rep-1")?.egressIP === "203.0.113.12",
      30_000,
      "did not converge after the faults",
    );
  });
});
