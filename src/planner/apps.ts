import type {
  KubernetesObject,
  V1ObjectMeta,
  V1Deployment,
  V1Namespace,
  V1Probe,
  V1Secret,
  V1Service,
  V1EnvVar,
  V1OwnerReference,
} from "@kubernetes/client-node";
import { API_VERSION } from "../api/v1alpha1/common.js";
import { APP_LABEL, APPLIED_ANNOTATION, COMPONENT_LABEL, GENERATION_ANNOTATION } from "../api/keys.js";
import { digest } from "../util/digest.js";
import type { App, HealthCheck, ImageSource, ServiceSpec, WorkerSpec } from "../api/v1alpha1/app.js";

/**
 * What an App becomes in the cluster, as data (no I/O): its namespace, a Deployment per
 * component, a Service per service component, a Secret per component with SECRET variables, and
 * the NetworkPolicies that isolate it. The controller applies these (src/controller/apps) and
 * removes what it made that is no longer planned. docs/apps.md describes the model.
 */

export const MANAGED_BY = "app.kubernetes.io/managed-by";
export const MANAGER = "static-egress";
export { APP_LABEL, APPLIED_ANNOTATION, GENERATION_ANNOTATION };
const NAMESPACE_PREFIX = "app-";

/** The ingress side: namespaces carrying this label may reach services' http_port (docs/apps.md). */
const DEFAULT_INGRESS_LABEL = { key: "staticegress.io/apps-ingress", value: "true" } as const;

export interface AppPlanOptions {
  ingressLabel?: { key: string; value: string };
  /** DOCR's registry, e.g. `registry.digitalocean.com/acme`. */
  docrRegistry?: string;
}

export type ComponentKind = "service" | "worker";

/**
 * A NetworkPolicy as JSON: client-node's V1NetworkPolicy names `from` `_from` (its serializer
 * renames it), and these objects go to the API as they are (server-side apply).
 */
export type NetworkPolicyObject = KubernetesObject & { metadata: V1ObjectMeta; spec: Record<string, unknown> };

export interface AppPlan {
  namespace: V1Namespace;
  deployments: V1Deployment[];
  services: V1Service[];
  secrets: V1Secret[];
  networkPolicies: NetworkPolicyObject[];
  /** Each component and the name of its Secret (whether planned or not: a removed one is deleted). */
  components: { name: string; kind: ComponentKind; secret: string }[];
}

export function namespaceOf(appName: string): string {
  return `${NAMESPACE_PREFIX}${appName}`;
}

export function secretNameOf(component: string): string {
  return `${component}-env`;
}

/** The container image a component runs. */
export function imageRef(image: ImageSource, docrRegistry = ""): string {
  const host = { DOCKER_HUB: "docker.io", GHCR: "ghcr.io", DOCR: docrRegistry.replace(/\/+$/, "") }[
    image.registry_type
  ];
  const owner =
    image.registry_type === "DOCR" ? "" : image.registry || (image.registry_type === "DOCKER_HUB" ? "library" : "");
  const path = [host, owner, image.repository].filter((p) => p !== "").join("/");
  return image.digest ? `${path}@${image.digest}` : `${path}:${image.tag ?? "latest"}`;
}

/** CPU (cores) and memory (MiB) of a size slug: apps-s/d-<n>vcpu-<m>gb, or a legacy plan. */
export function instanceSize(slug: string | undefined): { cpu: number; memoryMiB: number; shared: boolean } {
  const m = /^apps-([sd])-(\d+)vcpu-([\d.]+)gb(-fixed)?$/.exec(slug ?? "apps-s-1vcpu-0.5gb");
  if (m) return { cpu: Number(m[2]), memoryMiB: Number(m[3]) * 1024, shared: m[1] === "s" };
  const legacy: Record<string, [number, number, boolean]> = {
    "basic-xxs": [1, 512, true],
    "basic-xs": [1, 1024, true],
    "basic-s": [1, 2048, true],
    "basic-m": [2, 4096, true],
    "professional-xs": [1, 1024, true],
    "professional-s": [1, 2048, true],
    "professional-m": [2, 4096, true],
    "professional-1l": [1, 4096, false],
    "professional-l": [2, 8192, false],
    "professional-xl": [4, 16384, false],
  };
  const [cpu, memoryMiB, shared] = legacy[slug ?? ""] ?? [1, 512, true];
  return { cpu, memoryMiB, shared };
}

function probe(check: HealthCheck | undefined, defaultPort: number | undefined): V1Probe | undefined {
  if (!check) return undefined;
  const port = check.port ?? defaultPort;
  if (port === undefined) return undefined;
  return {
    ...(check.http_path ? { httpGet: { path: check.http_path, port } } : { tcpSocket: { port } }),
    ...(check.initial_delay_seconds !== undefined ? { initialDelaySeconds: check.initial_delay_seconds } : {}),
    ...(check.period_seconds !== undefined ? { periodSeconds: check.period_seconds } : {}),
    ...(check.timeout_seconds !== undefined ? { timeoutSeconds: check.timeout_seconds } : {}),
    ...(check.success_threshold !== undefined ? { successThreshold: check.success_threshold } : {}),
    ...(check.failure_threshold !== undefined ? { failureThreshold: check.failure_threshold } : {}),
  };
}

function stamped<T extends { metadata?: V1ObjectMeta }>(o: T): T {
  const d = digest(o);
  return { ...o, metadata: { ...o.metadata, annotations: { ...o.metadata?.annotations, [APPLIED_ANNOTATION]: d } } };
}

/**
 * The objects of a valid App (validate first: src/api/v1alpha1/app-validate.ts). Sorted by
 * name, deterministic. Secret values go into the Secrets only (Deployments refer to them).
 */
export function planApp(app: App, opts: AppPlanOptions = {}): AppPlan {
  const name = app.metadata.name;
  const ns = namespaceOf(name);
  const ingress = opts.ingressLabel ?? DEFAULT_INGRESS_LABEL;
  const owner: V1OwnerReference = {
    apiVersion: API_VERSION,
    kind: "App",
    name,
    uid: app.metadata.uid ?? "",
    controller: true,
  };
  const appLabels = { [MANAGED_BY]: MANAGER, [APP_LABEL]: name };
  const meta = (objName: string, extra: Record<string, string> = {}) => ({
    name: objName,
    namespace: ns,
    labels: { ...appLabels, ...extra },
    ownerReferences: [owner],
  });

  const namespace: V1Namespace = stamped({
    apiVersion: "v1",
    kind: "Namespace",
    // Apps may run as root (images from anywhere) but not privileged: the baseline profile.
    metadata: {
      name: ns,
      labels: { ...appLabels, "pod-security.kubernetes.io/enforce": "baseline" },
      ownerReferences: [owner],
    },
  });

  const deployments: V1Deployment[] = [];
  const services: V1Service[] = [];
  const secrets: V1Secret[] = [];
  const networkPolicies: NetworkPolicyObject[] = [];
  const components: AppPlan["components"] = [];

  const all: [ComponentKind, ServiceSpec | WorkerSpec][] = [
    ...(app.spec.services ?? []).map((c) => ["service", c] as [ComponentKind, ServiceSpec]),
    ...(app.spec.workers ?? []).map((c) => ["worker", c] as [ComponentKind, WorkerSpec]),
  ];
  for (const [kind, c] of all) {
    const labels = { [COMPONENT_LABEL]: c.name };
    const secretName = secretNameOf(c.name);
    components.push({ name: c.name, kind, secret: secretName });
    const svc = kind === "service" ? (c as ServiceSpec) : undefined;
    const httpPort = svc ? (svc.http_port ?? 8080) : undefined;
    const env: V1EnvVar[] = [];
    const secretData: Record<string, string> = {};
    for (const e of c.envs ?? []) {
      if (e.type === "SECRET") {
        secretData[e.key] = Buffer.from(e.value ?? "").toString("base64");
        env.push({ name: e.key, valueFrom: { secretKeyRef: { name: secretName, key: e.key } } });
      } else {
        env.push({ name: e.key, value: e.value ?? "" });
      }
    }
    // DigitalOcean: PORT is set to http_port unless the spec sets it.
    if (httpPort !== undefined && !env.some((e) => e.name === "PORT"))
      env.push({ name: "PORT", value: String(httpPort) });
    if (Object.keys(secretData).length > 0) {
      secrets.push(
        stamped({
          apiVersion: "v1",
          kind: "Secret",
          metadata: meta(secretName, labels),
          type: "Opaque",
          data: secretData,
        }),
      );
    }
    const size = instanceSize(c.instance_size_slug);
    const ports = svc ? [...new Set([httpPort!, ...(svc.internal_ports ?? [])])] : [];
    const drain = svc?.termination?.drain_seconds;
    deployments.push(
      stamped({
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: meta(c.name, labels),
        spec: {
          replicas: c.instance_count ?? 1,
          selector: { matchLabels: { [APP_LABEL]: name, [COMPONENT_LABEL]: c.name } },
          template: {
            metadata: {
              labels: { ...appLabels, ...labels },
              annotations: { [GENERATION_ANNOTATION]: String(app.metadata.generation ?? 0) },
            },
            spec: {
              // Apps do not talk to the Kubernetes API: no token in their pods.
              automountServiceAccountToken: false,
              enableServiceLinks: false,
              ...(c.termination?.grace_period_seconds !== undefined
                ? { terminationGracePeriodSeconds: c.termination.grace_period_seconds }
                : {}),
              containers: [
                {
                  name: c.name,
                  image: imageRef(c.image!, opts.docrRegistry),
                  ...(c.run_command ? { command: ["/bin/sh", "-c", c.run_command] } : {}),
                  env,
                  ports: ports.map((p) => ({
                    name: p === httpPort ? "http" : `internal-${p}`,
                    containerPort: p,
                    protocol: "TCP",
                  })),
                  resources: {
                    limits: { cpu: String(size.cpu), memory: `${size.memoryMiB}Mi` },
                    // Shared-CPU sizes are guaranteed a tenth of their CPU; memory is guaranteed.
                    requests: {
                      cpu: size.shared ? `${size.cpu * 100}m` : String(size.cpu),
                      memory: `${size.memoryMiB}Mi`,
                    },
                  },
                  ...(svc?.health_check ? { readinessProbe: probe(svc.health_check as HealthCheck, httpPort) } : {}),
                  ...(c.liveness_health_check ? { livenessProbe: probe(c.liveness_health_check, httpPort) } : {}),
                  ...(drain !== undefined ? { lifecycle: { preStop: { sleep: { seconds: drain } } } } : {}),
                },
              ],
            },
          },
        },
      }),
    );
    if (svc) {
      services.push(
        stamped({
          apiVersion: "v1",
          kind: "Service",
          metadata: meta(c.name, labels),
          spec: {
            type: "ClusterIP",
            selector: { [APP_LABEL]: name, [COMPONENT_LABEL]: c.name },
            ports: ports.map((p) => ({
              name: p === httpPort ? "http" : `internal-${p}`,
              port: p,
              targetPort: p,
              protocol: "TCP",
              ...(p === httpPort ? { appProtocol: svc.protocol === "HTTP2" ? "kubernetes.io/h2c" : "http" } : {}),
            })),
          },
        }),
      );
      // The ingress side reaches the service's http_port, and nothing else of the app.
      networkPolicies.push(
        stamped({
          apiVersion: "networking.k8s.io/v1",
          kind: "NetworkPolicy",
          metadata: meta(`ingress-${c.name}`, labels),
          spec: {
            podSelector: { matchLabels: { [APP_LABEL]: name, [COMPONENT_LABEL]: c.name } },
            policyTypes: ["Ingress"],
            ingress: [
              {
                from: [
                  {
                    // An app's own namespace never counts as the ingress side, even if labelled so.
                    namespaceSelector: {
                      matchLabels: { [ingress.key]: ingress.value },
                      matchExpressions: [{ key: APP_LABEL, operator: "DoesNotExist" }],
                    },
                  },
                ],
                ports: [{ port: httpPort!, protocol: "TCP" }],
              },
            ],
          },
        }),
      );
    }
  }
  // Every pod of the app is isolated for ingress and admits its own app's pods only; the
  // ingress-<service> policies add the ingress side. Other apps match neither.
  networkPolicies.push(
    stamped({
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: meta("app-internal"),
      spec: { podSelector: {}, policyTypes: ["Ingress"], ingress: [{ from: [{ podSelector: {} }] }] },
    }),
  );
  const byName = <T extends { metadata?: { name?: string } }>(a: T, b: T) =>
    (a.metadata?.name ?? "") < (b.metadata?.name ?? "") ? -1 : 1;
  return {
    namespace,
    deployments: deployments.sort(byName),
    services: services.sort(byName),
    secrets: secrets.sort(byName),
    networkPolicies: networkPolicies.sort(byName),
    components,
  };
}

export { digest };
