import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { packageRoot } from "../../src/lab/paths.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { ANCHOR_ANNOTATION } from "../../src/agents/node/anchor.js";
import { REPORT_ANNOTATION } from "../../src/controller/status.js";
import { KUBE_ACCESS, KubeClient } from "../../src/kube/client.js";
import {
  COMPONENT_ACCOUNTS,
  k8sBinary,
  startKubeCluster,
  type KubeCluster,
  type ServiceAccountRef,
} from "../../src/lab/control-plane/index.js";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

// Least privilege and the node agent's admission policy, proven by a real kube-apiserver (RBAC
// and admission on) with each component's own service-account token: every call the code makes
// (KUBE_ACCESS) is allowed, and calls outside a component's role are refused by the server.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

let cluster: KubeCluster;
let dir: string;
const kubeconfigs = new Map<string, string>();
const clients = new Map<string, KubeClient>();
let admin: KubeClient;

function client(name: string): KubeClient {
  return clients.get(name)!;
}

async function addAs(name: string, sa: ServiceAccountRef, node?: string): Promise<void> {
  const text = await cluster.kubeconfigFor(sa, node ? { node } : {});
  const path = join(dir, `${name}.kubeconfig`);
  writeFileSync(path, text, { mode: 0o600 });
  kubeconfigs.set(name, path);
  const kc = new KubeConfig();
  kc.loadFromString(text);
  clients.set(name, new KubeClient(kc));
}

/** The server's answer to "may I": a SelfSubjectAccessReview made with the component's own token. */
async function mayI(
  as: string,
  verb: string,
  group: string,
  resource: string,
  namespace?: string,
  name?: string,
): Promise<boolean> {
  const [res, sub] = resource.split("/");
  const kc = client(as).kubeconfig;
  const { AuthorizationV1Api } = await import("@kubernetes/client-node");
  const review = await kc.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
    body: {
      spec: {
        resourceAttributes: {
          verb,
          group,
          resource: res!,
          ...(sub ? { subresource: sub } : {}),
          ...(namespace ? { namespace } : {}),
          ...(name ? { name } : {}),
        },
      },
    },
  });
  return review.status?.allowed === true;
}

/** The HTTP status of a failed call (0 when it succeeded). */
async function statusOf(call: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await call;
    return { code: 0, message: "" };
  } catch (e) {
    const err = e as { code?: number; body?: string; message?: string };
    let message = err.message ?? "";
    try {
      message = (JSON.parse(err.body ?? "{}") as { message?: string }).message ?? message;
    } catch {
      /* not JSON */
    }
    return { code: err.code ?? -1, message };
  }
}

beforeAll(async () => {
  cluster = await startKubeCluster({ controllerManager: false });
  dir = mkdtempSync(join(tmpdir(), "se-access-"));
  const kc = new KubeConfig();
  kc.loadFromString(cluster.adminKubeconfig());
  admin = new KubeClient(kc);
  for (const name of ["node1", "node2"]) {
    await admin.core.createNode({
      body: {
        metadata: { name, labels: { "kubernetes.io/hostname": name } },
        spec: { podCIDR: name === "node1" ? "10.244.1.0/24" : "10.244.2.0/24" },
      },
    });
  }
  await admin.core.createNamespace({ body: { metadata: { name: "payments" } } });
  await addAs("controller", COMPONENT_ACCOUNTS.controller);
  await addAs("gateway-agent", COMPONENT_ACCOUNTS.gateway);
  // The node agent's token is bound to its node, as the projected token of its pod there is.
  await addAs("node-agent", COMPONENT_ACCOUNTS.nodeAgent, "node1");
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("RBAC from deploy/, proven by the API server", () => {
  it("allows every call each component makes (KUBE_ACCESS), with its own token", async () => {
    const denied: string[] = [];
    for (const a of KUBE_ACCESS) {
      if (a.component === "user") continue; // the CLI runs with the user's own credentials
      // Leases live in our namespace only (a Role), and only the controller's own Lease may be
      // read and renewed; Events go to the object's namespace.
      const namespace = a.resource === "leases" ? "static-egress" : a.resource === "events" ? "payments" : undefined;
      for (const verb of a.verbs) {
        const name =
          a.resource === "leases" && verb !== "create"
            ? "static-egress-controller"
            : a.resource === "endpoints"
              ? "kubernetes"
              : undefined;
        if (!(await mayI(a.component, verb, a.apiGroup, a.resource, namespace, name)))
          denied.push(`${a.component} ${verb} ${a.resource}`);
      }
    }
    expect(denied).toEqual([]);
  });

  it("refuses what no component's code does", async () => {
    const outside: [string, string, string, string, string?, string?][] = [
      ["node-agent", "get", "", "secrets", "static-egress"],
      ["node-agent", "list", "", "secrets"],
      ["node-agent", "create", "staticegress.io", "egresspolicies", "payments"],
      ["node-agent", "patch", "staticegress.io", "egresspolicies/status", "payments"],
      ["node-agent", "delete", "", "pods", "payments"],
      // StaticRoutes: the node agent reads them and writes only their status.
      ["node-agent", "create", "networking.digitalocean.com", "staticroutes"],
      ["node-agent", "patch", "networking.digitalocean.com", "staticroutes"],
      ["node-agent", "delete", "networking.digitalocean.com", "staticroutes"],
      ["node-agent", "get", "networking.digitalocean.com", "staticroutes"],
      ["controller", "list", "networking.digitalocean.com", "staticroutes"],
      ["gateway-agent", "list", "networking.digitalocean.com", "staticroutes"],
      ["node-agent", "get", "", "endpoints", "payments", "another-service"],
      ["node-agent", "list", "", "endpoints"],
      ["controller", "get", "", "secrets", "static-egress"],
      ["controller", "update", "staticegress.io", "egresspolicies", "payments"],
      ["controller", "create", "staticegress.io", "clusteregresspolicies"],
      ["controller", "get", "", "secrets", "app-web"],
      ["controller", "delete", "", "pods", "payments"],
      ["controller", "patch", "", "nodes"],
      ["controller", "create", "coordination.k8s.io", "leases", "payments"],
      ["controller", "update", "coordination.k8s.io", "leases", "static-egress", "another-lease"],
      ["gateway-agent", "patch", "", "nodes"],
      ["gateway-agent", "create", "", "events", "payments"],
      ["gateway-agent", "get", "", "secrets", "static-egress"],
    ];
    for (const [as, verb, group, resource, ns, name] of outside)
      expect(await mayI(as, verb, group, resource, ns, name), `${as} ${verb} ${resource}`).toBe(false);
    // And the calls themselves are refused with 403.
    expect(
      (await statusOf(client("node-agent").core.readNamespacedSecret({ namespace: "static-egress", name: "any" })))
        .code,
    ).toBe(403);
    const policy = {
      apiVersion: "staticegress.io/v1alpha1",
      kind: "EgressPolicy",
      metadata: { name: "p", namespace: "payments" },
      spec: { podSelector: {}, gatewayName: "g", egressIPs: ["192.0.2.10"] },
    };
    expect(
      await statusOf(
        client("node-agent").custom.createNamespacedCustomObject({
          group: "staticegress.io",
          version: "v1alpha1",
          namespace: "payments",
          plural: "egresspolicies",
          body: policy,
        }),
      ),
    ).toMatchObject({ code: 403 });
    expect((await statusOf(client("controller").core.listNamespacedSecret({ namespace: "static-egress" }))).code).toBe(
      403,
    );
    expect(
      (await statusOf(client("gateway-agent").patchNodeAnnotations("node1", { [REPORT_ANNOTATION]: "{}" }))).code,
    ).toBe(403);
  });

  it("kubectl auth can-i answers the same, with a component's kubeconfig", async () => {
    // Exit 0 for yes, 1 for no; either way it prints the answer. (Asynchronously: the fault
    // proxy kubectl talks to runs in this process.)
    const canI = async (as: string, ...args: string[]) => {
      const out = await execFileP(k8sBinary("kubectl"), [
        "--kubeconfig",
        kubeconfigs.get(as)!,
        "auth",
        "can-i",
        ...args,
      ]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? "" }));
      return out.stdout.trim();
    };
    expect(await canI("node-agent", "patch", "nodes")).toBe("yes");
    expect(await canI("node-agent", "get", "secrets", "-n", "static-egress")).toBe("no");
    expect(await canI("controller", "patch", "egresspolicies.staticegress.io/status", "-n", "payments")).toBe("yes");
    expect(
      await canI("controller", "update", "leases.coordination.k8s.io/static-egress-controller", "-n", "static-egress"),
    ).toBe("yes");
    expect(await canI("controller", "update", "leases.coordination.k8s.io/someone-else", "-n", "static-egress")).toBe(
      "no",
    );
    expect(await canI("gateway-agent", "watch", "egresspolicies.staticegress.io")).toBe("yes");
    expect(await canI("gateway-agent", "patch", "nodes")).toBe("no");
  });
});

describe("the node agent's ValidatingAdmissionPolicy, enforced by the API server", () => {
  const agent = () => client("node-agent");

  it("lets the agent write its own annotations on its own Node", async () => {
    expect(
      (
        await statusOf(
          agent().patchNodeAnnotations("node1", {
            [REPORT_ANNOTATION]: JSON.stringify({ at: new Date().toISOString() }),
            [ANCHOR_ANNOTATION]: "10.0.0.11",
          }),
        )
      ).code,
    ).toBe(0);
    const n = await admin.core.readNode({ name: "node1" });
    expect(n.metadata?.annotations?.[ANCHOR_ANNOTATION]).toBe("10.0.0.11");
  });

  it("refuses another Node, naming why", async () => {
    const r = await statusOf(agent().patchNodeAnnotations("node2", { [REPORT_ANNOTATION]: "{}" }));
    expect(r.code).toBe(403);
    expect(r.message).toContain("may change only the Node it runs on");
    expect((await admin.core.readNode({ name: "node2" })).metadata?.annotations?.[REPORT_ANNOTATION]).toBeUndefined();
  });

  it("refuses its own Node's labels, spec, taints and other annotations", async () => {
    const patch = (body: Json) => statusOf(agent().core.patchNode({ name: "node1", body }, mergePatch));
    expect(await patch({ metadata: { labels: { "node-role.kubernetes.io/control-plane": "" } } })).toMatchObject({
      code: 403,
      message: expect.stringContaining("labels"),
    });
    expect(await patch({ spec: { unschedulable: true } })).toMatchObject({
      code: 403,
      message: expect.stringContaining("spec"),
    });
    expect(await patch({ spec: { taints: [{ key: "k", effect: "NoSchedule" }] } })).toMatchObject({ code: 403 });
    expect(await patch({ metadata: { annotations: { "example.com/other": "x" } } })).toMatchObject({
      code: 403,
      message: expect.stringContaining("own annotations"),
    });
    const n = await admin.core.readNode({ name: "node1" });
    expect(n.metadata?.labels?.["node-role.kubernetes.io/control-plane"]).toBeUndefined();
    expect(n.spec?.unschedulable).toBeUndefined();
  });

  it("refuses a node-agent token bound to no node", async () => {
    await addAs("node-agent-unbound", COMPONENT_ACCOUNTS.nodeAgent);
    const r = await statusOf(client("node-agent-unbound").patchNodeAnnotations("node1", { [REPORT_ANNOTATION]: "{}" }));
    expect(r).toMatchObject({ code: 403, message: expect.stringContaining("may change only the Node it runs on") });
  });

  it("leaves other users alone (an admin may still change a Node)", async () => {
    expect(
      (
        await statusOf(
          admin.core.patchNode({ name: "node2", body: { metadata: { labels: { zone: "a" } } } }, mergePatch),
        )
      ).code,
    ).toBe(0);
  });
});

describe("StaticRoute (networking.digitalocean.com/v1): the operator's objects, and node agents writing only their own status entry", () => {
  const sr = (name: string, spec: Json) => ({
    apiVersion: "networking.digitalocean.com/v1",
    kind: "StaticRoute",
    metadata: { name },
    spec,
  });
  const create = (body: Json) =>
    statusOf(
      admin.custom.createClusterCustomObject({
        group: "networking.digitalocean.com",
        version: "v1",
        plural: "staticroutes",
        body,
      }),
    );
  const read = async (name: string) =>
    (await admin.custom.getClusterCustomObject({
      group: "networking.digitalocean.com",
      version: "v1",
      plural: "staticroutes",
      name,
    })) as Json;

  it("accepts the operator's examples as they are, and refuses what its schema refuses, naming the field", async () => {
    const examples = parseAllDocuments(
      readFileSync(join(packageRoot(), "examples", "static-route-digitalocean.yaml"), "utf8"),
    ).map((d) => d.toJS() as Json);
    for (const e of examples) expect(await create(e)).toEqual({ code: 0, message: "" });
    expect(await create(sr("bad-shape", { destinations: ["not-an-address"], gateway: "10.0.0.5" }))).toMatchObject({
      code: 422,
      message: expect.stringContaining("spec.destinations[0]"),
    });
    expect(await create(sr("no-gateway", { destinations: ["198.51.100.0/24"] }))).toMatchObject({
      code: 422,
      message: expect.stringContaining("spec.gateway"),
    });
    expect(
      await create(
        sr("bad-gateways", { destinations: ["198.51.100.0/24"], gateway: "10.0.0.5", gateways: ["10.0.0.300"] }),
      ),
    ).toMatchObject({ code: 422, message: expect.stringContaining("spec.gateways[0]") });
  });

  it("merges each node's entry of status.nodes (server-side apply), and a node agent cannot touch the spec", async () => {
    await addAs("node-agent-2", COMPONENT_ACCOUNTS.nodeAgent, "node2");
    const name = "static-route-ipinfo.io";
    const entry = (gateway: string) => ({
      state: "Routed",
      gateway,
      message: `routed via ${gateway}`,
      lastTransitionTime: "2026-12-04T00:00:00Z",
    });
    expect(await statusOf(client("node-agent").applyStaticRouteNodeStatus(name, "node1", entry("10.116.0.5")))).toEqual(
      { code: 0, message: "" },
    );
    expect(
      await statusOf(client("node-agent-2").applyStaticRouteNodeStatus(name, "node2", entry("10.116.0.6"))),
    ).toEqual({ code: 0, message: "" });
    let obj = await read(name);
    expect(obj.status.nodes.map((n: Json) => `${n.name}:${n.gateway}`).sort()).toEqual([
      "node1:10.116.0.5",
      "node2:10.116.0.6",
    ]);
    expect(obj.spec).toEqual({ destinations: ["34.117.59.81"], gateway: "10.116.0.5" });
    // A node that no longer has the route removes only its own entry.
    expect(await statusOf(client("node-agent").applyStaticRouteNodeStatus(name, "node1", undefined))).toEqual({
      code: 0,
      message: "",
    });
    obj = await read(name);
    expect(obj.status.nodes.map((n: Json) => n.name)).toEqual(["node2"]);
    const specPatch = client("node-agent").custom.patchClusterCustomObject(
      {
        group: "networking.digitalocean.com",
        version: "v1",
        plural: "staticroutes",
        name,
        body: { spec: { gateway: "10.0.0.66" } },
      },
      mergePatch,
    );
    expect((await statusOf(specPatch)).code).toBe(403);
  });
});
