import { describe, expect, it } from "vitest";
import type { App } from "../api/v1alpha1/app.js";
import { validateAppSpec } from "../api/v1alpha1/app-validate.js";
import { APPLIED_ANNOTATION, GENERATION_ANNOTATION, imageRef, instanceSize, planApp } from "./apps.js";

function app(spec: Record<string, unknown>, generation = 1): App {
  const copy = structuredClone(spec);
  expect(validateAppSpec(copy)).toEqual([]); // planned only after validation, with defaults filled
  return {
    apiVersion: "staticegress.io/v1alpha1",
    kind: "App",
    metadata: { name: copy.name as string, uid: "uid-1", generation },
    spec: copy as App["spec"],
  };
}

const shop = {
  name: "shop",
  services: [
    {
      name: "api",
      image: { registry_type: "GHCR", registry: "acme", repository: "api", tag: "2" },
      http_port: 3000,
      internal_ports: [3000, 9000],
      protocol: "HTTP2",
      instance_count: 3,
      instance_size_slug: "apps-d-2vcpu-4gb",
      envs: [
        { key: "MODE", value: "prod" },
        { key: "TOKEN", type: "SECRET", value: "hunter2" },
      ],
      health_check: { http_path: "/ready", period_seconds: 5 },
      liveness_health_check: { port: 9000 },
      termination: { drain_seconds: 10, grace_period_seconds: 40 },
    },
  ],
  workers: [
    {
      name: "jobs",
      image: { registry_type: "DOCKER_HUB", repository: "busybox" },
      run_command: "sleep 1d",
      envs: [{ key: "PORT", value: "1" }],
    },
  ],
};

describe("imageRef", () => {
  it.each([
    [{ registry_type: "DOCKER_HUB", repository: "nginx" }, "", "docker.io/library/nginx:latest"],
    [
      { registry_type: "DOCKER_HUB", registry: "bitnami", repository: "redis", tag: "7" },
      "",
      "docker.io/bitnami/redis:7",
    ],
    [
      { registry_type: "GHCR", registry: "acme", repository: "api", digest: "sha256:ab" },
      "",
      "ghcr.io/acme/api@sha256:ab",
    ],
    [
      { registry_type: "DOCR", repository: "api", tag: "1" },
      "registry.digitalocean.com/acme/",
      "registry.digitalocean.com/acme/api:1",
    ],
  ] as const)("%j -> %s", (image, docr, want) => {
    expect(imageRef(image, docr)).toBe(want);
  });
});

describe("instanceSize", () => {
  it.each([
    [undefined, { cpu: 1, memoryMiB: 512, shared: true }],
    ["apps-s-1vcpu-1gb-fixed", { cpu: 1, memoryMiB: 1024, shared: true }],
    ["apps-d-8vcpu-32gb", { cpu: 8, memoryMiB: 32768, shared: false }],
    ["professional-xl", { cpu: 4, memoryMiB: 16384, shared: false }],
  ])("%s", (slug, want) => expect(instanceSize(slug)).toEqual(want));
});

describe("planApp", () => {
  const plan = planApp(app(shop), { docrRegistry: "" });

  it("one namespace, a Deployment per component, a Service per service, a Secret per component with SECRET variables", () => {
    expect(plan.namespace.metadata?.name).toBe("app-shop");
    expect(plan.deployments.map((d) => d.metadata?.name)).toEqual(["api", "jobs"]);
    expect(plan.services.map((s) => s.metadata?.name)).toEqual(["api"]);
    expect(plan.secrets.map((s) => [s.metadata?.name, Object.keys(s.data ?? {})])).toEqual([["api-env", ["TOKEN"]]]);
    expect(plan.networkPolicies.map((p) => p.metadata.name)).toEqual(["app-internal", "ingress-api"]);
    for (const o of [plan.namespace, ...plan.deployments, ...plan.services, ...plan.secrets, ...plan.networkPolicies]) {
      expect(o.metadata?.labels).toMatchObject({
        "app.kubernetes.io/managed-by": "static-egress",
        "staticegress.io/app": "shop",
      });
      expect(o.metadata?.ownerReferences).toEqual([
        { apiVersion: "staticegress.io/v1alpha1", kind: "App", name: "shop", uid: "uid-1", controller: true },
      ]);
      expect(o.metadata?.annotations?.[APPLIED_ANNOTATION]).toMatch(/^[0-9a-f]{20}$/);
    }
  });

  it("the service's container: image, replicas, env (secrets by reference, PORT added), probes, size, drain", () => {
    const d = plan.deployments[0]!;
    expect(d.spec?.replicas).toBe(3);
    const pod = d.spec!.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.terminationGracePeriodSeconds).toBe(40);
    const c = pod.containers[0]!;
    expect(c.image).toBe("ghcr.io/acme/api:2");
    expect(c.env).toEqual([
      { name: "MODE", value: "prod" },
      { name: "TOKEN", valueFrom: { secretKeyRef: { name: "api-env", key: "TOKEN" } } },
      { name: "PORT", value: "3000" },
    ]);
    expect(JSON.stringify(d)).not.toContain("hunter2");
    expect(c.ports).toEqual([
      { name: "http", containerPort: 3000, protocol: "TCP" },
      { name: "internal-9000", containerPort: 9000, protocol: "TCP" },
    ]);
    expect(c.readinessProbe).toEqual({ httpGet: { path: "/ready", port: 3000 }, periodSeconds: 5 });
    expect(c.livenessProbe).toEqual({ tcpSocket: { port: 9000 } });
    expect(c.resources).toEqual({ limits: { cpu: "2", memory: "4096Mi" }, requests: { cpu: "2", memory: "4096Mi" } });
    expect(c.lifecycle).toEqual({ preStop: { sleep: { seconds: 10 } } });
    expect(plan.services[0]!.spec?.ports?.[0]).toMatchObject({
      name: "http",
      port: 3000,
      appProtocol: "kubernetes.io/h2c",
    });
  });

  it("the worker: run_command through a shell, its own PORT kept, no Service, no ingress policy", () => {
    const c = plan.deployments[1]!.spec!.template.spec!.containers[0]!;
    expect(c.command).toEqual(["/bin/sh", "-c", "sleep 1d"]);
    expect(c.env).toEqual([{ name: "PORT", value: "1" }]);
    expect(c.ports).toEqual([]);
  });

  it("isolation: the app's pods admit their own app; the ingress side reaches only http_port", () => {
    const [internal, ingress] = plan.networkPolicies;
    expect(internal!.spec).toEqual({
      podSelector: {},
      policyTypes: ["Ingress"],
      ingress: [{ from: [{ podSelector: {} }] }],
    });
    expect(ingress!.spec).toEqual({
      podSelector: { matchLabels: { "staticegress.io/app": "shop", "staticegress.io/component": "api" } },
      policyTypes: ["Ingress"],
      ingress: [
        {
          from: [
            {
              namespaceSelector: {
                matchLabels: { "staticegress.io/apps-ingress": "true" },
                matchExpressions: [{ key: "staticegress.io/app", operator: "DoesNotExist" }],
              },
            },
          ],
          ports: [{ port: 3000, protocol: "TCP" }],
        },
      ],
    });
    const custom = planApp(app(shop), { ingressLabel: { key: "example.com/edge", value: "yes" } });
    expect(JSON.stringify(custom.networkPolicies[1]!.spec)).toContain('"example.com/edge":"yes"');
  });

  it("a new generation changes every pod template (the app rolls); the same spec plans the same objects", () => {
    const again = planApp(app(shop), { docrRegistry: "" });
    expect(again).toEqual(plan);
    const next = planApp(app(shop, 2), { docrRegistry: "" });
    expect(next.deployments[0]!.spec!.template.metadata!.annotations![GENERATION_ANNOTATION]).toBe("2");
    expect(next.deployments[0]!.metadata!.annotations![APPLIED_ANNOTATION]).not.toBe(
      plan.deployments[0]!.metadata!.annotations![APPLIED_ANNOTATION],
    );
    expect(next.services).toEqual(plan.services); // only what changed is written again
  });
});
