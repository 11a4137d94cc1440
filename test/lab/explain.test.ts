import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KubeObject } from "../../src/api/objects.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { byPod, exampleLabConfig, waitConverged } from "./support.js";

// `static-egress explain --local` on a node of the lab on Kubernetes: the pod's entry read from
// the node's own kernel (its network namespace) must be the path its traffic really takes, as
// the lab's Internet sees it; deleting the deciding policy changes both. And the controller's
// egress-IP feed: ETag, 304, a new document after an IP change.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const ECHO = "198.51.100.10";
const cli = join(packageRoot(), "dist", "cli", "main.js");
let lab: Lab;

/** `explain --local -o json` run inside a node's namespace, with that node agent's own identity. */
async function explainOn(node: string, pod: string): Promise<Json> {
  const n = lab.topology.nodes.find((x) => x.name === node)!;
  const out = await execIn(n.netns, process.execPath, [
    cli,
    "explain",
    pod,
    "--local",
    "--to",
    ECHO,
    "-o",
    "json",
    "--kubeconfig",
    lab.componentKubeconfig(`node-${node}`),
    "--config",
    join(lab.dir, "agent-config.yaml"),
  ]);
  return JSON.parse(out) as Json;
}

/** The VPC address of the gateway host that owns an egress IP: where that IP's traffic must be tunnelled. */
function hostOf(egressIP: string): string {
  const host = lab.topology.gatewayHosts.find((g) => g.egressIPs.includes(egressIP));
  if (!host) throw new Error(`no gateway host owns ${egressIP}`);
  return host.vpcIP;
}

async function seenSource(pod: string): Promise<string | null> {
  return byPod(await lab.status(ECHO)).get(pod)?.egressIP ?? null;
}

beforeAll(async () => {
  const cfg = exampleLabConfig();
  // A free IP on gw-a for a cluster-wide policy that loses to checkout (priority) until checkout goes.
  cfg.gateways[0]!.instances![0]!.egressIPs.push("192.0.2.12");
  // payments' policies compete with cluster policies by priority (tenancy: its grant lets them outrank).
  cfg.gateways[0]!.grants![0]!.outrankClusterPolicies = true;
  const policies = (cfg.policies ?? []) as KubeObject[];
  const checkout = policies.find((p) => p.metadata?.name === "checkout")!;
  checkout.spec = { ...checkout.spec, publishEgressIPs: true };
  cfg.policies = policies;
  policies.push({
    apiVersion: "staticegress.io/v1alpha1",
    kind: "ClusterEgressPolicy",
    metadata: { name: "catch-all" },
    spec: {
      podSelector: { matchLabels: { app: "checkout" } },
      namespaceSelector: {},
      gatewayName: "shared",
      egressIPs: ["192.0.2.12"],
      destinationCIDRs: ["198.51.100.0/24"],
      priority: 500,
    },
  });
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  await waitConverged(lab, ECHO, 45_000);
}, 300_000);

afterAll(async () => {
  await lab?.down();
});

describe("explain --local on the pod's node", () => {
  it("a selected pod: the kernel's entry leads through the tunnel to the gateway its traffic really reached", async () => {
    const seen = await seenSource("payments/pay-1");
    expect(["192.0.2.10", "192.0.2.20"]).toContain(seen);
    let e: Json = {};
    // The node's report (the health view the plan uses) may trail the kernel by a pass.
    await waitFor(
      async () => (e = await explainOn("node1", "payments/pay-1")).kernel?.[0]?.comparison?.matches === true,
      20_000,
      "the kernel's entry never matched the plan",
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(e.kernel)}`, { cause: err });
    });
    expect(e.verdict).toBe("diverted");
    const decision = e.decisions[0];
    expect(decision.policy).toBe("EgressPolicy/payments/checkout");
    expect(decision.path.egressIPs).toEqual([seen]);
    expect(decision.path.address).toBe(hostOf(seen!));
    // The policy it beat, and why.
    expect(e.policies).toContainEqual(
      expect.objectContaining({
        policy: "ClusterEgressPolicy/catch-all",
        lost: [expect.objectContaining({ to: "EgressPolicy/payments/checkout", rule: "priority" })],
      }),
    );
    // What node1's kernel holds for pay-1's address: one divert row to the echo service, its
    // mark's rule, table and tunnel, whose far end is the gateway host the Internet saw.
    const k = e.kernel[0];
    expect(k.present).toBe(true);
    expect(k.podIP).toBe(e.pod.ips[0]);
    expect(k.entries).toHaveLength(1);
    expect(k.entries[0].mark).toBe(decision.path.mark);
    expect(k.boundInterface).toMatch(/\S/);
    expect(k.paths).toEqual([
      expect.objectContaining({
        mark: decision.path.mark,
        down: false,
        rule: expect.objectContaining({ action: { table: decision.path.table } }),
        tunnel: expect.objectContaining({ remote: hostOf(seen!) }),
      }),
    ]);
    expect(k.paths[0].routes).toEqual([expect.objectContaining({ table: decision.path.table, kind: "via" })]);
  });

  it("an unselected pod: no entry in the kernel, and it leaves with the node's own IP", async () => {
    const node1 = lab.topology.nodes.find((n) => n.name === "node1")!;
    expect(await seenSource("web/web-1")).toBe(node1.publicIP);
    const e = await explainOn("node1", "web/web-1");
    expect(e.verdict).toBe("not-selected");
    expect(e.summary).toEqual([`not selected by any policy: leaves with the node's IP for ${ECHO}`]);
    expect(e.kernel).toEqual([expect.objectContaining({ podIP: e.pod.ips[0], present: true, entries: [], paths: [] })]);
    expect(e.kernel[0].comparison.matches).toBe(true);
  });
});

describe("the controller's egress-IP feed", () => {
  it("serves a published policy with a strong ETag, 304 for it, and a new document after an IP change", async () => {
    const first = await lab.controllerHttp("/egress-ips/payments/checkout");
    expect(first.status).toBe(200);
    const doc = JSON.parse(first.body) as Json;
    expect(doc).toMatchObject({ name: "checkout", gateway: "shared", egressIPs: ["192.0.2.10", "192.0.2.20"] });
    const etag = first.headers.get("etag")!;
    expect(etag).toMatch(/^"[\w-]+"$/);
    expect((await lab.controllerHttp("/egress-ips/payments/checkout", { "if-none-match": etag })).status).toBe(304);
    // Unpublished: exporter never opted in.
    expect((await lab.controllerHttp("/egress-ips/reporting/exporter")).status).toBe(404);
    const all = JSON.parse((await lab.controllerHttp("/egress-ips")).body) as Json;
    expect(all.items.map((i: Json) => i.path)).toEqual(["/egress-ips/payments/checkout"]);

    const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")!;
    await lab.applyPolicies([{ ...checkout, spec: { ...checkout.spec, egressIPs: ["192.0.2.10"] } }]);
    let changed = first;
    await waitFor(
      async () =>
        (changed = await lab.controllerHttp("/egress-ips/payments/checkout", { "if-none-match": etag })).status === 200,
      20_000,
      "the feed did not change after the IP change",
    );
    const after = JSON.parse(changed.body) as Json;
    expect(after.egressIPs).toEqual(["192.0.2.10"]);
    expect(Date.parse(after.lastChange)).toBeGreaterThan(Date.parse(doc.lastChange));
    expect(changed.headers.get("etag")).not.toBe(etag);
    // And the pods follow: pay-2 (node2) too leaves with the one IP left.
    await waitFor(
      async () => (await seenSource("payments/pay-2")) === "192.0.2.10",
      20_000,
      "pay-2 did not move to 192.0.2.10",
    );
  });
});

describe("explain follows the cluster", () => {
  it("once the deciding policy is deleted, the one it beat decides: kernel and traffic agree", async () => {
    const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")!;
    await lab.deletePolicies([checkout]);
    await waitFor(
      async () => (await seenSource("payments/pay-1")) === "192.0.2.12",
      30_000,
      "pay-1 does not leave with catch-all's IP",
    );
    let e: Json = {};
    await waitFor(
      async () => {
        e = await explainOn("node1", "payments/pay-1");
        return e.decisions[0]?.policy === "ClusterEgressPolicy/catch-all" && e.kernel[0].comparison.matches;
      },
      20_000,
      "explain did not follow the deletion",
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify({ decisions: e.decisions, kernel: e.kernel })}`, {
        cause: err,
      });
    });
    expect(e.policies.map((p: Json) => p.policy)).toEqual(["ClusterEgressPolicy/catch-all"]);
    expect(e.decisions[0].path).toMatchObject({
      kind: "gateway",
      egressIPs: ["192.0.2.12"],
      address: hostOf("192.0.2.12"),
    });
    expect(e.kernel[0].paths[0].tunnel.remote).toBe(hostOf("192.0.2.12"));
  });
});
