import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  AppsV1Api,
  AuthorizationV1Api,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { AppController } from "../../src/controller/apps/reconciler.js";
import { LeaderElector } from "../../src/controller/runtime/leader.js";
import { FINALIZER } from "../../src/controller/status.js";
import { AppsClient, AppSource } from "../../src/kube/apps.js";
import type { KubeClient } from "../../src/kube/client.js";
import { packageRoot } from "../../src/lab/paths.js";
import { waitFor } from "../../src/lab/lab.js";
import { APPLIED_ANNOTATION, GENERATION_ANNOTATION } from "../../src/planner/apps.js";
import { silentLogger } from "../../src/util/log.js";
import { APP_REFUSALS } from "../support/app-refusals.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// The App reconciler against a real kube-apiserver with kube-controller-manager (namespace
// deletion, Deployments), running with the controller's own service-account token, bound by
// deploy/'s RBAC: what an App is made of, updates that roll, invalid specs that make nothing,
// deletion that leaves nothing, and the RBAC it needs and no more.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let api: TestKube;
let admin: KubeClient;
let adminApps: AppsClient;
let controller: AppController;
let controllerClient: KubeClient;
const examples = join(packageRoot(), "examples", "apps");
const POOL = [
  { name: "gw-a", address: "10.0.0.101", egressIP: "203.0.113.10" },
  { name: "gw-b", address: "10.0.0.102", egressIP: "203.0.113.20" },
  { name: "gw-c", address: "10.0.0.103", egressIP: "203.0.113.30" },
];
const GV = { group: "staticegress.io", version: "v1alpha1" };

function appObject(spec: Json): Json {
  return { apiVersion: "staticegress.io/v1alpha1", kind: "App", metadata: { name: spec.name }, spec };
}

function example(file: string): Json {
  return parse(readFileSync(join(examples, file), "utf8")) as Json;
}

async function app(name: string): Promise<Json | undefined> {
  return (await adminApps.getApp(name)) as Json | undefined;
}

function condition(obj: Json | undefined, type: string): Json | undefined {
  return (obj?.status?.conditions as Json[] | undefined)?.find((c) => c.type === type);
}

async function exists(call: Promise<unknown>): Promise<boolean> {
  try {
    await call;
    return true;
  } catch (e) {
    if ((e as { code?: number }).code === 404) return false;
    throw e;
  }
}

const appsV1 = () => admin.kubeconfig.makeApiClient(AppsV1Api);
const networking = () => admin.kubeconfig.makeApiClient(NetworkingV1Api);

beforeAll(async () => {
  api = await startTestKube({ controllerManager: true });
  admin = api.admin;
  adminApps = new AppsClient(admin);
  controllerClient = await api.clientFor("controller");
  controller = new AppController({
    client: controllerClient,
    apps: new AppsClient(controllerClient),
    source: new AppSource(controllerClient, silentLogger),
    logger: silentLogger,
    resyncMs: 2_000,
    retryBaseMs: 200,
    plan: { docrRegistry: "" },
    gatewayPool: { hosts: POOL },
  });
  await controller.startInformers();
  controller.activate();
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await api?.stop();
});

describe("App: create", () => {
  it("makes the namespace, a Deployment per component, a Service per service, Secrets and NetworkPolicies, all owned and labelled", async () => {
    const spec = example("web.yaml");
    await adminApps.createApp(appObject(spec));
    await waitFor(async () => (await app("web"))?.status?.phase === "DEPLOYING", 30_000, "web never got a status");
    const web = (await app("web"))!;
    expect(web.metadata.finalizers).toContain(FINALIZER);
    expect(web.status).toMatchObject({ namespace: "app-web", observedGeneration: web.metadata.generation });
    expect(condition(web, "Invalid")).toMatchObject({ status: "False" });
    expect(condition(web, "DedicatedEgress")).toMatchObject({ status: "False", reason: "Assigning" });

    const ns = await admin.core.readNamespace({ name: "app-web" });
    expect(ns.metadata?.labels).toMatchObject({
      "staticegress.io/app": "web",
      "app.kubernetes.io/managed-by": "static-egress",
    });
    expect(ns.metadata?.ownerReferences?.[0]).toMatchObject({ kind: "App", name: "web", uid: web.metadata.uid });

    const deployments = (await appsV1().listNamespacedDeployment({ namespace: "app-web" })).items;
    expect(deployments.map((d) => d.metadata?.name).sort()).toEqual(["api", "mailer"]);
    const apiDeployment = deployments.find((d) => d.metadata?.name === "api")!;
    expect(apiDeployment.spec?.replicas).toBe(2);
    const container = apiDeployment.spec!.template.spec!.containers[0]!;
    expect(container.image).toBe("ghcr.io/example/shop-api:1.4.2");
    expect(container.env).toEqual(
      expect.arrayContaining([
        { name: "LOG_LEVEL", value: "info" },
        { name: "PORT", value: "8080" },
        { name: "DATABASE_PASSWORD", valueFrom: { secretKeyRef: { name: "api-env", key: "DATABASE_PASSWORD" } } },
      ]),
    );
    for (const d of deployments) expect(d.metadata?.ownerReferences?.[0]?.uid).toBe(web.metadata.uid);

    const services = (await admin.core.listNamespacedService({ namespace: "app-web" })).items;
    expect(services.map((s) => [s.metadata?.name, s.spec?.ports?.map((p) => p.port)])).toEqual([["api", [8080, 9090]]]);

    // The secret's value is in the Secret and nowhere else the controller wrote.
    const secret = await admin.core.readNamespacedSecret({ namespace: "app-web", name: "api-env" });
    expect(Buffer.from(secret.data!.DATABASE_PASSWORD!, "base64").toString()).toBe("not-a-real-password");
    expect(JSON.stringify(deployments)).not.toContain("not-a-real-password");
    expect(JSON.stringify(web.status)).not.toContain("not-a-real-password");

    const policies = (await networking().listNamespacedNetworkPolicy({ namespace: "app-web" })).items;
    expect(policies.map((p) => p.metadata?.name).sort()).toEqual(["app-internal", "ingress-api"]);
    const internal = policies.find((p) => p.metadata?.name === "app-internal")!;
    expect(internal.spec).toMatchObject({
      podSelector: {},
      policyTypes: ["Ingress"],
      ingress: [{ _from: [{ podSelector: {} }] }],
    });
    const ingress = policies.find((p) => p.metadata?.name === "ingress-api")!;
    expect(ingress.spec?.ingress?.[0]?.ports).toEqual([{ port: 8080, protocol: "TCP" }]);
    expect(ingress.spec?.ingress?.[0]?._from?.[0]?.namespaceSelector).toEqual({
      matchLabels: { "staticegress.io/apps-ingress": "true" },
      matchExpressions: [{ key: "staticegress.io/app", operator: "DoesNotExist" }],
    });

    // kube-controller-manager runs the Deployments: pods exist (Pending: no scheduler here).
    await waitFor(
      async () => (await admin.core.listNamespacedPod({ namespace: "app-web" })).items.length === 3,
      30_000,
      "no pods from the Deployments",
    );
  });

  it("writes nothing when nothing changed (compares first)", async () => {
    await controller.idle();
    const before = (await appsV1().readNamespacedDeployment({ namespace: "app-web", name: "api" })).metadata
      ?.resourceVersion;
    await new Promise((r) => setTimeout(r, 2_500)); // a resync pass
    await controller.idle();
    expect(
      (await appsV1().readNamespacedDeployment({ namespace: "app-web", name: "api" })).metadata?.resourceVersion,
    ).toBe(before);
  });
});

describe("App: phase", () => {
  it("ACTIVE once kube-controller-manager reports every instance available (pods made Ready, as a kubelet would)", async () => {
    expect((await app("web"))!.status.phase).toBe("DEPLOYING");
    const pods = (await admin.core.listNamespacedPod({ namespace: "app-web" })).items;
    let i = 0;
    for (const p of pods)
      await api.setPodStatus("app-web", p.metadata!.name!, {
        ip: `10.244.9.${++i}`,
        ready: true,
        readySince: new Date(Date.now() - 60_000),
      });
    await waitFor(async () => (await app("web"))?.status?.phase === "ACTIVE", 60_000, "web never ACTIVE");
    const web = (await app("web"))!;
    expect(condition(web, "Ready")).toMatchObject({ status: "True", reason: "Available" });
    expect(web.status.components).toEqual([
      { name: "api", kind: "service", replicas: 2, availableReplicas: 2 },
      { name: "mailer", kind: "worker", replicas: 1, availableReplicas: 1 },
    ]);
  });
});

describe("App: update", () => {
  it("rolls the components (template changed), scales, and removes what the spec no longer has", async () => {
    const current = (await app("web"))!;
    const spec = structuredClone(current.spec) as Json;
    spec.services[0].image.tag = "1.5.0";
    spec.services[0].instance_count = 3;
    spec.services[0].envs = spec.services[0].envs.filter((e: Json) => e.type !== "SECRET");
    spec.workers = [];
    spec.services.push({
      name: "admin",
      image: { registry_type: "DOCKER_HUB", repository: "nginx", tag: "1.27" },
      http_port: 80,
    });
    const before = await appsV1().readNamespacedDeployment({ namespace: "app-web", name: "api" });
    await adminApps.replaceApp("web", { ...current, spec });
    await waitFor(
      async () =>
        (await appsV1().readNamespacedDeployment({ namespace: "app-web", name: "api" })).spec?.template.spec
          ?.containers[0]?.image === "ghcr.io/example/shop-api:1.5.0",
      30_000,
      "api not rolled",
    );
    const after = await appsV1().readNamespacedDeployment({ namespace: "app-web", name: "api" });
    expect(after.spec?.replicas).toBe(3);
    expect(after.spec?.template.metadata?.annotations?.[GENERATION_ANNOTATION]).not.toBe(
      before.spec?.template.metadata?.annotations?.[GENERATION_ANNOTATION],
    );
    expect(after.metadata?.annotations?.[APPLIED_ANNOTATION]).not.toBe(
      before.metadata?.annotations?.[APPLIED_ANNOTATION],
    );
    await waitFor(
      async () => !(await exists(appsV1().readNamespacedDeployment({ namespace: "app-web", name: "mailer" }))),
      30_000,
      "removed worker still there",
    );
    await waitFor(
      async () => !(await exists(admin.core.readNamespacedSecret({ namespace: "app-web", name: "api-env" }))),
      30_000,
      "secret of removed SECRET variables still there",
    );
    expect(await exists(admin.core.readNamespacedService({ namespace: "app-web", name: "admin" }))).toBe(true);
    expect(
      await exists(networking().readNamespacedNetworkPolicy({ namespace: "app-web", name: "ingress-admin" })),
    ).toBe(true);
    // The Deployment controller has a new ReplicaSet for the new template.
    await waitFor(
      async () =>
        (await appsV1().listNamespacedReplicaSet({ namespace: "app-web" })).items.filter((r) =>
          r.metadata?.name?.startsWith("api-"),
        ).length === 2,
      30_000,
      "no new ReplicaSet",
    );
  });
});

describe("App: dedicated egress (a gateway pool of three hosts)", () => {
  const gateway = () =>
    admin.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name: "app-web" }) as Promise<Json>;
  const policy = () =>
    admin.custom.getNamespacedCustomObject({
      ...GV,
      plural: "egresspolicies",
      namespace: "app-web",
      name: "dedicated-egress",
    }) as Promise<Json>;

  it("a gateway of two pool hosts of its own and a fail-closed policy selecting every pod of the app", async () => {
    const g = await gateway();
    expect(g.metadata.ownerReferences[0]).toMatchObject({ kind: "App", name: "web" });
    expect(g.spec.static.instances).toEqual([
      { name: "gw-a", address: "10.0.0.101", egressIPs: ["203.0.113.10"] },
      { name: "gw-b", address: "10.0.0.102", egressIPs: ["203.0.113.20"] },
    ]);
    expect(g.spec.grants).toMatchObject([
      {
        namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "app-web" } },
        egressIPs: ["203.0.113.10", "203.0.113.20"],
      },
    ]);
    expect((await policy()).spec).toMatchObject({
      podSelector: {},
      gatewayName: "app-web",
      egressIPs: ["203.0.113.10", "203.0.113.20"],
      failurePolicy: "Drop",
    });
    expect((await app("web"))!.status.dedicated_ips).toEqual([
      { ip: "203.0.113.10", id: "gw-a", status: "ASSIGNING" },
      { ip: "203.0.113.20", id: "gw-b", status: "ASSIGNING" },
    ]);
  });

  it("ASSIGNED only once the instance is up and the policy programmed", async () => {
    const now = new Date().toISOString();
    // What the core controller writes from the nodes' reports (it does not run in this test).
    await admin.patchStatus("EgressGateway", undefined, "app-web", {
      instances: [
        { name: "gw-a", address: "10.0.0.101", egressIPs: ["203.0.113.10"], health: "Up" },
        { name: "gw-b", address: "10.0.0.102", egressIPs: ["203.0.113.20"], health: "Down" },
      ],
    });
    await admin.patchStatus("EgressPolicy", "app-web", "dedicated-egress", {
      conditions: [{ type: "Ready", status: "True", reason: "Programmed", message: "", lastTransitionTime: now }],
    });
    await waitFor(
      async () => (await app("web"))!.status.dedicated_ips[0].status === "ASSIGNED",
      30_000,
      "gw-a never ASSIGNED",
    );
    expect((await app("web"))!.status.dedicated_ips[1]).toEqual({
      ip: "203.0.113.20",
      id: "gw-b",
      status: "ASSIGNING",
    });
    expect(condition(await app("web"), "DedicatedEgress")).toMatchObject({ status: "False", reason: "Assigning" });
    await admin.patchStatus("EgressGateway", undefined, "app-web", {
      instances: [
        { name: "gw-a", address: "10.0.0.101", egressIPs: ["203.0.113.10"], health: "Up" },
        { name: "gw-b", address: "10.0.0.102", egressIPs: ["203.0.113.20"], health: "Up" },
      ],
    });
    await waitFor(
      async () => condition(await app("web"), "DedicatedEgress")?.status === "True",
      30_000,
      "never Assigned",
    );
    expect((await app("web"))!.status.dedicated_ips.map((d: Json) => d.status)).toEqual(["ASSIGNED", "ASSIGNED"]);
  });

  it("two apps never share a host: a second app finds one free host and says so", async () => {
    await adminApps.createApp(appObject({ ...example("payments.yaml"), name: "second" }));
    await waitFor(
      async () => condition(await app("second"), "DedicatedEgress")?.reason === "PoolExhausted",
      30_000,
      "no PoolExhausted",
    );
    expect(condition(await app("second"), "DedicatedEgress")?.message).toContain("1 free hosts, 2 are needed");
    expect(
      await exists(admin.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name: "app-second" })),
    ).toBe(false);
    await adminApps.deleteApp("second");
    await waitFor(async () => (await app("second")) === undefined, 60_000, "second never released");
  });

  it("switching back to AUTOASSIGN removes the gateway and policy; the IPs show REMOVED", async () => {
    const current = (await app("web"))!;
    await adminApps.replaceApp("web", { ...current, spec: { ...current.spec, egress: { type: "AUTOASSIGN" } } });
    await waitFor(async () => !(await exists(gateway())), 30_000, "gateway not removed");
    expect(await exists(policy())).toBe(false);
    await waitFor(
      async () => (await app("web"))!.status.dedicated_ips.every((d: Json) => d.status === "REMOVED"),
      30_000,
      "not REMOVED",
    );
    expect(condition(await app("web"), "DedicatedEgress")).toBeUndefined();
  });

  it("two apps created at once: one gets two hosts, the other PoolExhausted; no host is ever in both gateways", async () => {
    const hostsOf = async (name: string): Promise<string[]> =>
      admin.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name }).then(
        (g) => ((g as Json).spec.static.instances as Json[]).map((i) => i.name as string),
        () => [],
      );
    await Promise.all(
      ["race-a", "race-b"].map((name) => adminApps.createApp(appObject({ ...example("payments.yaml"), name }))),
    );
    // Watched from the start: the two gateways never name the same host, at any moment.
    const deadline = Date.now() + 6_000;
    while (Date.now() < deadline) {
      const [a, b] = await Promise.all([hostsOf("app-race-a"), hostsOf("app-race-b")]);
      expect(a.filter((h) => b.includes(h))).toEqual([]);
      await new Promise((r) => setTimeout(r, 25));
    }
    // Both verdicts written (a loaded machine may take longer than the watch above).
    const verdicts = async () =>
      Promise.all(["race-a", "race-b"].map(async (n) => condition(await app(n), "DedicatedEgress")?.reason));
    await waitFor(
      async () => (await verdicts()).every((r) => r === "Assigning" || r === "PoolExhausted"),
      30_000,
      "the apps' DedicatedEgress conditions were never both written",
    );
    const reasons = await verdicts();
    expect([...reasons].sort()).toEqual(["Assigning", "PoolExhausted"]);
    const winner = reasons[0] === "Assigning" ? "race-a" : "race-b";
    expect((await hostsOf(`app-${winner}`)).sort()).toEqual(["gw-a", "gw-b"]);
    // Neither ever listed a host it did not keep (a REMOVED entry would say it had one).
    for (const n of ["race-a", "race-b"])
      expect(((await app(n))!.status.dedicated_ips ?? []).filter((d: Json) => d.status === "REMOVED")).toEqual([]);
    for (const n of ["race-a", "race-b"]) await adminApps.deleteApp(n);
    await waitFor(
      async () => (await app("race-a")) === undefined && (await app("race-b")) === undefined,
      60_000,
      "race apps never deleted",
    );
  });
});

describe("App: invalid", () => {
  it("the API server refuses unsupported parts, naming the field", async () => {
    const refused: [Json, string][] = [
      [
        { ...example("worker-only.yaml"), name: "sites", static_sites: [{ name: "docs" }] },
        "spec.static_sites: Forbidden: static sites are not run by static-egress",
      ],
      [
        {
          ...example("worker-only.yaml"),
          name: "built",
          workers: [{ name: "w", github: { repo: "digitalocean/sample-golang", branch: "main" } }],
        },
        "spec.workers[0].github: Forbidden: builds from source",
      ],
      [{ ...example("worker-only.yaml"), name: "Bad_Name" }, "spec.name"],
    ];
    for (const [spec, message] of refused) {
      const err = await adminApps.createApp(appObject(spec)).then(
        () => undefined,
        (e: { code?: number; body?: string }) => e,
      );
      expect(err?.code, spec.name as string).toBe(422);
      expect(err?.body).toContain(message);
    }
    // Unknown fields are refused too (Strict), not dropped.
    const err = await adminApps
      .createApp(appObject({ ...example("worker-only.yaml"), name: "typo", servces: [] }))
      .catch((e: { body?: string }) => e);
    expect((err as { body?: string }).body).toContain('unknown field \\"spec.servces\\"');
  });

  it("the API server refuses every part static-egress does not run, naming the field in the rule's words", async () => {
    for (const [part, spec, field, message] of APP_REFUSALS) {
      const err = await admin.custom
        .createClusterCustomObject({ ...GV, plural: "apps", body: appObject(structuredClone(spec)), dryRun: "All" })
        .then(
          () => undefined,
          (e: { code?: number; body?: string }) => e,
        );
      expect(err?.code, part).toBe(422);
      expect(err?.body, part).toContain(field);
      expect(err?.body, part).toContain(message);
    }
  });

  it("the reconciler refuses what the schema cannot, names the field, and creates nothing", async () => {
    // DOCR without a configured registry, and a bindable variable: valid for the API server.
    const spec = {
      name: "docr",
      workers: [
        {
          name: "job",
          image: { registry_type: "DOCR", repository: "worker" },
          envs: [{ key: "URL", value: "${api.PRIVATE_URL}" }],
        },
      ],
    };
    await adminApps.createApp(appObject(spec));
    await waitFor(
      async () => condition(await app("docr"), "Invalid")?.status === "True",
      30_000,
      "no Invalid condition",
    );
    const docr = (await app("docr"))!;
    expect(docr.status.phase).toBe("ERROR");
    expect(condition(docr, "Invalid")?.message).toContain(
      "spec.workers[0].image.registry_type: DOCR images need the controller's --apps-docr-registry",
    );
    expect(condition(docr, "Invalid")?.message).toContain("spec.workers[0].envs[0].value: bindable variables");
    expect(condition(docr, "Invalid")?.reason).toBe("InvalidSpecWorkersEnvsValue");
    expect(await exists(admin.core.readNamespace({ name: "app-docr" }))).toBe(false);
    const events = await admin.core.listNamespacedEvent({
      namespace: "default",
      fieldSelector: "involvedObject.kind=App,involvedObject.name=docr",
    });
    expect(events.items.some((e) => e.type === "Warning" && e.reason === "InvalidSpecWorkersEnvsValue")).toBe(true);
    await adminApps.deleteApp("docr");
    await waitFor(async () => (await app("docr")) === undefined, 30_000, "invalid app not released");
  });

  it("never takes over a namespace that is in the way", async () => {
    await api.ensureNamespace("app-taken", { team: "someone" });
    await adminApps.createApp(appObject({ ...example("worker-only.yaml"), name: "taken" }));
    await waitFor(
      async () => condition(await app("taken"), "Ready")?.reason === "NamespaceConflict",
      30_000,
      "no conflict reported",
    );
    const ns = await admin.core.readNamespace({ name: "app-taken" });
    expect(ns.metadata?.labels).toEqual(expect.objectContaining({ team: "someone" }));
    expect(ns.metadata?.labels?.["staticegress.io/app"]).toBeUndefined();
    expect((await appsV1().listNamespacedDeployment({ namespace: "app-taken" })).items).toEqual([]);
    await adminApps.deleteApp("taken");
    await waitFor(async () => (await app("taken")) === undefined, 30_000, "conflicting app not released");
    expect(await exists(admin.core.readNamespace({ name: "app-taken" }))).toBe(true);
  });
});

describe("App: delete", () => {
  it("removes everything it made, then the App", async () => {
    expect(await adminApps.deleteApp("web")).toBe(true);
    await waitFor(async () => (await app("web")) === undefined, 60_000, "web never released");
    expect(await exists(admin.core.readNamespace({ name: "app-web" }))).toBe(false);
    expect((await appsV1().listDeploymentForAllNamespaces({ labelSelector: "staticegress.io/app=web" })).items).toEqual(
      [],
    );
  });
});

describe("App reconciler under leader election (the controller's Lease)", () => {
  it("only the Lease holder reconciles; the standby takes over", async () => {
    controller.deactivate(); // the suite's controller stands aside for this test
    const replicas: { apps: AppController; elector: LeaderElector; leading: boolean }[] = [];
    try {
      for (const identity of ["apps-a", "apps-b"]) {
        const c = await api.clientFor("controller");
        const apps = new AppController({
          client: c,
          apps: new AppsClient(c),
          source: new AppSource(c, silentLogger),
          logger: silentLogger,
          resyncMs: 1_000,
          retryBaseMs: 200,
        });
        const r = { apps, elector: undefined as unknown as LeaderElector, leading: false };
        r.elector = new LeaderElector(
          c,
          {
            namespace: "static-egress",
            name: "static-egress-controller",
            identity,
            leaseDurationSeconds: 2,
            retryPeriodMs: 300,
          },
          silentLogger,
          {
            onStartedLeading: () => ((r.leading = true), apps.activate()),
            onStoppedLeading: () => ((r.leading = false), apps.deactivate()),
          },
        );
        await apps.startInformers();
        r.elector.start();
        replicas.push(r);
      }
      await waitFor(() => replicas.filter((r) => r.leading).length === 1, 20_000, "no leader");
      await adminApps.createApp(appObject({ ...example("worker-only.yaml"), name: "led" }));
      await waitFor(
        async () => exists(admin.core.readNamespace({ name: "app-led" })),
        30_000,
        "the leader did not reconcile",
      );
      // The leader steps down (releases the Lease); the standby carries on with the next change.
      const leader = replicas.find((r) => r.leading)!;
      await leader.elector.stop();
      await leader.apps.stop();
      await waitFor(() => replicas.some((r) => r !== leader && r.leading), 20_000, "no takeover");
      const current = (await app("led"))!;
      await adminApps.replaceApp("led", {
        ...current,
        spec: { ...current.spec, workers: [{ ...current.spec.workers[0], instance_count: 2 }] },
      });
      await waitFor(
        async () =>
          (await appsV1().readNamespacedDeployment({ namespace: "app-led", name: "fetch" })).spec?.replicas === 2,
        30_000,
        "the new leader did not reconcile",
      );
      await adminApps.deleteApp("led");
      await waitFor(async () => (await app("led")) === undefined, 60_000, "led never released");
    } finally {
      for (const r of replicas) {
        await r.elector.stop();
        await r.apps.stop();
      }
      controller.activate();
    }
  });
});

describe("App RBAC, proven by the API server", () => {
  it("the controller may write and delete Secrets but never read one; it may not create Apps", async () => {
    const mayI = async (verb: string, group: string, resource: string, namespace?: string) => {
      const r = await controllerClient.kubeconfig.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
        body: { spec: { resourceAttributes: { verb, group, resource, ...(namespace ? { namespace } : {}) } } },
      });
      return r.status?.allowed === true;
    };
    expect(await mayI("patch", "", "secrets", "app-any")).toBe(true);
    expect(await mayI("delete", "", "secrets", "app-any")).toBe(true);
    for (const verb of ["get", "list", "watch"]) expect(await mayI(verb, "", "secrets", "app-any"), verb).toBe(false);
    for (const verb of ["create", "update", "delete"])
      expect(await mayI(verb, "staticegress.io", "apps"), verb).toBe(false);
    for (const verb of ["create", "patch", "delete"])
      expect(await mayI(verb, "", "pods", "app-any"), `pods ${verb}`).toBe(false);
    expect(await mayI("update", "apps", "deployments", "app-any")).toBe(false);
    expect(await mayI("list", "", "configmaps", "app-any")).toBe(false);
  });
});

describe("static-egress apps (the CLI, built: dist/cli/main.js)", () => {
  const cli = join(packageRoot(), "dist", "cli", "main.js");
  let dir: string;
  // Asynchronously: the fault proxy the CLI talks to runs in this process.
  const run = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const r = await promisify(execFile)(process.execPath, [
        cli,
        "apps",
        ...args,
        ...(args[0] === "spec" ? [] : ["--kubeconfig", join(dir, "admin.kubeconfig")]),
      ]);
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return { code: err.code ?? -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
    }
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "se-apps-cli-"));
    writeFileSync(join(dir, "admin.kubeconfig"), api.adminKubeconfig(), { mode: 0o600 });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("create, get -o json (DigitalOcean's App shape), list, update keeping redacted secrets, delete", async () => {
    const spec = {
      ...example("payments.yaml"),
      services: [
        { ...example("payments.yaml").services[0], envs: [{ key: "API_KEY", type: "SECRET", value: "s3cr3t-value" }] },
      ],
    };
    writeFileSync(join(dir, "payments.yaml"), JSON.stringify(spec));
    const created = await run("create", "--spec", join(dir, "payments.yaml"));
    expect(created, created.stderr).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(/payments\s+\S+\s+DEDICATED_IP/);
    await waitFor(
      async () => (await app("payments"))?.status?.dedicated_ips?.length === 2,
      30_000,
      "payments never deployed",
    );

    const got = await run("get", "payments", "-o", "json");
    const shown = JSON.parse(got.stdout) as Json;
    // The pool's hosts web gave back are this app's now.
    expect(shown).toMatchObject({
      id: (await app("payments"))!.metadata.uid,
      phase: "DEPLOYING",
      dedicated_ips: [
        { ip: "203.0.113.10", id: "gw-a", status: "ASSIGNING" },
        { ip: "203.0.113.20", id: "gw-b", status: "ASSIGNING" },
      ],
      spec: { name: "payments", egress: { type: "DEDICATED_IP" } },
    });
    expect(shown.created_at).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(got.stdout).not.toContain("s3cr3t-value");
    expect(shown.spec.services[0].envs[0].value).toBe("**redacted**");

    expect((await run("list")).stdout).toContain("payments");

    // An update from `get` output: the redacted secret keeps its value, the count changes; the
    // App's own annotations (its choice for its IPs) and finalizer stay.
    await admin.custom.patchClusterCustomObject(
      {
        ...GV,
        plural: "apps",
        name: "payments",
        body: { metadata: { annotations: { "staticegress.io/dedicated-ips-on-removal": "keep" } } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    shown.spec.services[0].instance_count = 1;
    writeFileSync(join(dir, "update.json"), JSON.stringify(shown.spec));
    const updated = await run("update", "payments", "--spec", join(dir, "update.json"));
    expect(updated, updated.stderr).toMatchObject({ code: 0 });
    const stored = (await app("payments"))!;
    expect(stored.spec.services[0].envs[0].value).toBe("s3cr3t-value");
    expect(stored.metadata.annotations).toMatchObject({ "staticegress.io/dedicated-ips-on-removal": "keep" });
    expect(stored.metadata.finalizers).toContain(FINALIZER);
    await waitFor(
      async () =>
        (await appsV1().readNamespacedDeployment({ namespace: "app-payments", name: "checkout" })).spec?.replicas === 1,
      30_000,
      "update not applied",
    );

    const deleted = await run("delete", "payments");
    expect(deleted.code).toBe(0);
    await waitFor(async () => (await app("payments")) === undefined, 60_000, "payments never released");
    expect(await exists(admin.core.readNamespace({ name: "app-payments" }))).toBe(false);
  });

  it("`static-egress controller` (the composition root) reconciles Apps with its own token, the Lease and --apps-gateway-pool", async () => {
    writeFileSync(
      join(dir, "agent.yaml"),
      "clusterNetwork:\n  podCIDRs: [10.244.0.0/16]\n  serviceCIDRs: [10.96.0.0/12]\n  nodeCIDRs: [10.0.0.0/16]\n",
    );
    writeFileSync(
      join(dir, "pool.yaml"),
      `hosts:\n${POOL.map((h) => `  - {name: ${h.name}, address: ${h.address}, egressIP: ${h.egressIP}}`).join("\n")}\n`,
    );
    writeFileSync(join(dir, "controller.kubeconfig"), await api.kubeconfigFor("controller"), { mode: 0o600 });
    controller.deactivate(); // the suite's in-process reconciler stands aside
    const args = [
      "controller",
      "--kubeconfig",
      join(dir, "controller.kubeconfig"),
      "--config",
      join(dir, "agent.yaml"),
      "--identity",
      "cli-test",
      "--lease-seconds",
      "2",
      "--apps-gateway-pool",
      join(dir, "pool.yaml"),
    ];
    const proc = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      await adminApps.createApp(
        appObject({ ...example("worker-only.yaml"), name: "cmd", egress: { type: "DEDICATED_IP" } }),
      );
      await waitFor(
        async () => exists(admin.custom.getClusterCustomObject({ ...GV, plural: "egressgateways", name: "app-cmd" })),
        60_000,
        `the controller command did not reconcile: ${stderr.slice(-500)}`,
      );
      // The gateway and policy go first, the Deployment right after them.
      await waitFor(
        async () => exists(appsV1().readNamespacedDeployment({ namespace: "app-cmd", name: "fetch" })),
        30_000,
        "no Deployment from the controller command",
      );
      await adminApps.deleteApp("cmd");
      await waitFor(async () => (await app("cmd")) === undefined, 60_000, "cmd never released");
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
      controller.activate();
    }
  });

  it("an invalid spec: exit 2, each field named, nothing sent", async () => {
    writeFileSync(
      join(dir, "bad.yaml"),
      "name: bad-app\nstatic_sites:\n  - name: docs\nworkers:\n  - name: w1\n    github: {repo: a/b}\n",
    );
    for (const args of [
      ["spec", "validate", join(dir, "bad.yaml")],
      ["create", "--spec", join(dir, "bad.yaml")],
    ]) {
      const r = await run(...args);
      expect(r.code, args[0]).toBe(2);
      expect(r.stderr).toContain("spec.static_sites: static sites are not run by static-egress");
      expect(r.stderr).toContain("spec.workers[0].github: builds from source are not run by static-egress");
    }
    expect(await app("bad-app")).toBeUndefined();
    expect((await run("spec", "validate", join(examples, "web.yaml"))).code).toBe(0);
  });
});
