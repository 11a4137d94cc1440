import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { Condition, type CelRule, type KindDefinition, type Resource } from "./common.js";

/**
 * The App kind: its `spec` is a DigitalOcean App Platform app spec (the file `doctl apps create
 * --spec` reads), for the parts static-egress runs. Names, lengths, patterns, enums and bounds
 * are DigitalOcean's (reference/digitalocean-apps/models/*.yml; app.test.ts compares them, so
 * they cannot drift). Parts we do not run stay in the schema, loosely typed, so that the API
 * server does not prune them away unseen: a CEL rule refuses each, naming the field (docs/apps.md).
 */

/** Component and app names: DigitalOcean's `name` of app_spec.yml and app_component_base.yml. */
const APP_NAME_PATTERN = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$";
/** Says what a name must be: the validator quotes it ("must be ...") when the pattern fails. */
const NAME_SHAPE =
  "2 to 32 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit";
const AppName = (what: string) =>
  Type.String({ minLength: 2, maxLength: 32, pattern: APP_NAME_PATTERN, description: `${NAME_SHAPE} (${what})` });

/**
 * Our own bounds (DigitalOcean states none): the API server prices every CEL rule at the lists'
 * `maxItems`, and an unbounded list of components would make the rules too costly to install.
 */
const APP_LIMITS = { components: 64, envs: 256, internalPorts: 16, refusedItems: 64 } as const;

/** Rule for an unsupported field: absent, or (a list) empty, or (a flag) false. */
function refuse(field: string, kind: "present" | "list" | "true", message: string): CelRule {
  const rule =
    kind === "list"
      ? `!has(self.${field}) || size(self.${field}) == 0`
      : kind === "true"
        ? `!has(self.${field}) || !self.${field}`
        : `!has(self.${field})`;
  return { rule, message, fieldPath: `.${field}`, reason: "FieldValueForbidden" };
}

/** A field kept only to be refused: any object, not pruned. */
const Opaque = () => Type.Object({}, { "x-kubernetes-preserve-unknown-fields": true });
const OpaqueList = () => Type.Array(Opaque(), { maxItems: APP_LIMITS.refusedItems });

const RegistryType = Type.Union([Type.Literal("DOCKER_HUB"), Type.Literal("DOCR"), Type.Literal("GHCR")]);
export type RegistryType = Static<typeof RegistryType>;

export const ImageSource = Type.Object(
  {
    registry: Type.Optional(
      Type.String({
        maxLength: 255,
        description:
          "The registry name (Docker Hub or GHCR user or organization). Must be left empty for the DOCR registry type",
      }),
    ),
    registry_type: RegistryType,
    registry_credentials: Type.Optional(Type.String({ maxLength: 4096 })),
    repository: Type.String({ minLength: 1, maxLength: 255, description: "The repository name" }),
    tag: Type.Optional(
      Type.String({ minLength: 1, maxLength: 128, description: "The repository tag (default latest)" }),
    ),
    digest: Type.Optional(
      Type.String({ minLength: 1, maxLength: 255, description: "The image digest, e.g. sha256:795e..." }),
    ),
    deploy_on_push: Type.Optional(
      Type.Object({ enabled: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
    ),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: "!(has(self.tag) && has(self.digest))",
        message: "cannot be specified if digest is provided",
        fieldPath: ".tag",
        reason: "FieldValueForbidden",
      },
      {
        rule: "self.registry_type != 'DOCR' || !has(self.registry) || self.registry == ''",
        message: "must be left empty for the DOCR registry type",
        fieldPath: ".registry",
        reason: "FieldValueForbidden",
      },
      refuse(
        "registry_credentials",
        "present",
        "private registry credentials are not supported by static-egress (pull secrets are a later step)",
      ),
      {
        rule: "!has(self.deploy_on_push) || !has(self.deploy_on_push.enabled) || !self.deploy_on_push.enabled",
        message: "deploy on push is not run by static-egress (update the app to roll a new image)",
        fieldPath: ".deploy_on_push.enabled",
        reason: "FieldValueForbidden",
      },
    ] satisfies CelRule[],
  },
);
export type ImageSource = Static<typeof ImageSource>;

const VariableDefinition = Type.Object(
  {
    key: Type.String({
      minLength: 1,
      maxLength: 255,
      pattern: "^[_A-Za-z][_A-Za-z0-9]*$",
      description: "A variable name: a letter or '_', then letters, digits and '_'",
    }),
    scope: Type.Optional(
      Type.Union(
        [
          Type.Literal("UNSET"),
          Type.Literal("RUN_TIME"),
          Type.Literal("BUILD_TIME"),
          Type.Literal("RUN_AND_BUILD_TIME"),
        ],
        {
          default: "RUN_AND_BUILD_TIME",
          "x-kubernetes-validations": [
            {
              rule: "self != 'BUILD_TIME'",
              message: "BUILD_TIME variables are for builds from source, which static-egress does not run",
              reason: "FieldValueForbidden",
            },
          ] satisfies CelRule[],
        },
      ),
    ),
    type: Type.Optional(Type.Union([Type.Literal("GENERAL"), Type.Literal("SECRET")], { default: "GENERAL" })),
    value: Type.Optional(Type.String({ maxLength: 65_536 })),
  },
  { additionalProperties: false },
);
export type VariableDefinition = Static<typeof VariableDefinition>;

const int32 = (min: number | undefined, max: number | undefined, description: string) =>
  Type.Integer({
    ...(min !== undefined ? { minimum: min } : {}),
    ...(max !== undefined ? { maximum: max } : {}),
    description,
  });

/** app_service_spec_health_check.yml: the service's readiness check (no bounds but the port's). */
const ServiceHealthCheck = Type.Object(
  {
    failure_threshold: Type.Optional(int32(undefined, undefined, "Failed checks before considered unhealthy")),
    port: Type.Optional(int32(1, 65535, "Port of the check (default: http_port)")),
    http_path: Type.Optional(
      Type.String({ maxLength: 1024, description: "HTTP path of the check; absent: a TCP check" }),
    ),
    initial_delay_seconds: Type.Optional(int32(undefined, undefined, "Seconds before the first check")),
    period_seconds: Type.Optional(int32(undefined, undefined, "Seconds between checks")),
    success_threshold: Type.Optional(int32(undefined, undefined, "Successful checks before considered healthy")),
    timeout_seconds: Type.Optional(int32(undefined, undefined, "Seconds after which a check times out")),
  },
  { additionalProperties: false },
);

/** app_health_check_spec.yml: the liveness check, with DigitalOcean's bounds. */
export const HealthCheck = Type.Object(
  {
    failure_threshold: Type.Optional(int32(1, 50, "Failed checks before considered unhealthy")),
    port: Type.Optional(int32(1, 65535, "Port of the check")),
    http_path: Type.Optional(
      Type.String({ maxLength: 1024, description: "HTTP path of the check; absent: a TCP check" }),
    ),
    initial_delay_seconds: Type.Optional(int32(0, 3600, "Seconds before the first check")),
    period_seconds: Type.Optional(int32(1, 300, "Seconds between checks")),
    success_threshold: Type.Optional(int32(1, 1, "Successful checks before considered healthy")),
    timeout_seconds: Type.Optional(int32(1, 120, "Seconds after which a check times out")),
  },
  { additionalProperties: false },
);
export type HealthCheck = Static<typeof HealthCheck>;

const INSTANCE_SIZE_SLUGS = [
  "apps-s-1vcpu-0.5gb",
  "apps-s-1vcpu-1gb-fixed",
  "apps-s-1vcpu-1gb",
  "apps-s-1vcpu-2gb",
  "apps-s-2vcpu-4gb",
  "apps-d-1vcpu-0.5gb",
  "apps-d-1vcpu-1gb",
  "apps-d-1vcpu-2gb",
  "apps-d-1vcpu-4gb",
  "apps-d-2vcpu-4gb",
  "apps-d-2vcpu-8gb",
  "apps-d-4vcpu-8gb",
  "apps-d-4vcpu-16gb",
  "apps-d-8vcpu-32gb",
] as const;
/** Deprecated slugs of legacy plans, still accepted by DigitalOcean. */
const LEGACY_INSTANCE_SIZE_SLUGS = [
  "basic-xxs",
  "basic-xs",
  "basic-s",
  "basic-m",
  "professional-xs",
  "professional-s",
  "professional-m",
  "professional-1l",
  "professional-l",
  "professional-xl",
] as const;

const literals = <T extends readonly string[]>(values: T, options: Record<string, unknown> = {}) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    options,
  );

/** Fields every component shares (app_component_base.yml, app_component_instance_base.yml). */
const componentFields = {
  name: AppName("unique across the components of the app"),
  image: Type.Optional(ImageSource),
  run_command: Type.Optional(
    Type.String({ maxLength: 4096, description: "Overrides the image's command; run by /bin/sh -c" }),
  ),
  envs: Type.Optional(
    Type.Array(VariableDefinition, {
      maxItems: APP_LIMITS.envs,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["key"],
      description: "Environment variables of the component",
    }),
  ),
  instance_count: Type.Optional(
    Type.Integer({ minimum: 1, default: 1, description: "Instances (Deployment replicas). Default: 1" }),
  ),
  instance_size_slug: Type.Optional(
    literals([...INSTANCE_SIZE_SLUGS, ...LEGACY_INSTANCE_SIZE_SLUGS], {
      description: "CPU and memory of each instance (limits of its container)",
    }),
  ),
  // Refused: builds from source, log forwarding, autoscaling.
  git: Type.Optional(Opaque()),
  github: Type.Optional(Opaque()),
  gitlab: Type.Optional(Opaque()),
  bitbucket: Type.Optional(Opaque()),
  dockerfile_path: Type.Optional(Type.String({ maxLength: 4096 })),
  build_command: Type.Optional(Type.String({ maxLength: 4096 })),
  source_dir: Type.Optional(Type.String({ maxLength: 4096 })),
  environment_slug: Type.Optional(Type.String({ maxLength: 255 })),
  log_destinations: Type.Optional(OpaqueList()),
  autoscaling: Type.Optional(Opaque()),
};

const BUILD = "builds from source are not run by static-egress (give a container image in image)";
const componentRules: CelRule[] = [
  {
    rule: "has(self.image)",
    message: "required: static-egress runs components from container images",
    fieldPath: ".image",
    reason: "FieldValueRequired",
  },
  ...(
    [
      "git",
      "github",
      "gitlab",
      "bitbucket",
      "dockerfile_path",
      "build_command",
      "source_dir",
      "environment_slug",
    ] as const
  ).map((f) => refuse(f, "present", BUILD)),
  refuse("log_destinations", "list", "log forwarding is not run by static-egress"),
  refuse("autoscaling", "present", "autoscaling is not run by static-egress (set instance_count)"),
];

export const ServiceSpec = Type.Object(
  {
    ...componentFields,
    http_port: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        default: 8080,
        description: "The port the service listens on (Default: 8080); PORT is set to it unless envs has PORT",
      }),
    ),
    internal_ports: Type.Optional(
      Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), {
        maxItems: APP_LIMITS.internalPorts,
        "x-kubernetes-list-type": "set",
        description: "Ports reachable only from within the app",
      }),
    ),
    protocol: Type.Optional(
      Type.Union([Type.Literal("HTTP"), Type.Literal("HTTP2")], {
        description: "HTTP (default) or HTTP2 (h2c) on http_port",
      }),
    ),
    health_check: Type.Optional(ServiceHealthCheck),
    liveness_health_check: Type.Optional(HealthCheck),
    termination: Type.Optional(
      Type.Object(
        {
          drain_seconds: Type.Optional(
            int32(1, 110, "Seconds between being taken out of the Service and TERM (default 15)"),
          ),
          grace_period_seconds: Type.Optional(int32(1, 600, "Seconds between TERM and KILL (default 120)")),
        },
        { additionalProperties: false },
      ),
    ),
    cors: Type.Optional(Opaque()),
    routes: Type.Optional(OpaqueList()),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      ...componentRules,
      refuse("cors", "present", "CORS is an ingress rule, which static-egress does not run"),
      refuse(
        "routes",
        "list",
        "HTTP routes are ingress rules, which static-egress does not run (the service is reached through its Service; docs/apps.md)",
      ),
    ] satisfies CelRule[],
  },
);
export type ServiceSpec = Static<typeof ServiceSpec>;

export const WorkerSpec = Type.Object(
  {
    ...componentFields,
    liveness_health_check: Type.Optional(HealthCheck),
    termination: Type.Optional(
      Type.Object(
        { grace_period_seconds: Type.Optional(int32(1, 600, "Seconds between TERM and KILL (default 120)")) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, "x-kubernetes-validations": componentRules },
);
export type WorkerSpec = Static<typeof WorkerSpec>;

const EgressType = Type.Union([Type.Literal("AUTOASSIGN"), Type.Literal("DEDICATED_IP")], {
  default: "AUTOASSIGN",
  description: "AUTOASSIGN: the node's IP; DEDICATED_IP: the app's own IPs",
});
export type EgressType = Static<typeof EgressType>;

const REGIONS = ["atl", "nyc", "sfo", "tor", "ams", "fra", "lon", "blr", "sgp", "syd"] as const;

const components = <T extends TSchema>(items: T, description: string) =>
  Type.Array(items, {
    maxItems: APP_LIMITS.components,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
    description,
  });

export const AppSpec = Type.Object(
  {
    name: AppName("the app's name, also its metadata.name"),
    region: Type.Optional(
      literals(REGIONS, {
        description: "DigitalOcean's region slug; recorded, not used (the app runs in this cluster)",
      }),
    ),
    services: Type.Optional(components(ServiceSpec, "Workloads which expose HTTP services")),
    workers: Type.Optional(components(WorkerSpec, "Workloads which do not expose HTTP services")),
    egress: Type.Optional(Type.Object({ type: Type.Optional(EgressType) }, { additionalProperties: false })),
    // Refused: what static-egress does not run.
    disable_edge_cache: Type.Optional(Type.Boolean({ default: false })),
    disable_email_obfuscation: Type.Optional(Type.Boolean({ default: false })),
    enhanced_threat_control_enabled: Type.Optional(Type.Boolean({ default: false })),
    domains: Type.Optional(OpaqueList()),
    static_sites: Type.Optional(OpaqueList()),
    jobs: Type.Optional(OpaqueList()),
    functions: Type.Optional(OpaqueList()),
    databases: Type.Optional(OpaqueList()),
    ingress: Type.Optional(Opaque()),
    maintenance: Type.Optional(Opaque()),
    vpc: Type.Optional(Opaque()),
    alerts: Type.Optional(OpaqueList()),
  },
  {
    additionalProperties: false,
    "x-kubernetes-validations": [
      {
        rule: "(has(self.services) ? size(self.services) : 0) + (has(self.workers) ? size(self.workers) : 0) > 0",
        message: "an app needs at least one service or worker",
        fieldPath: ".services",
        reason: "FieldValueRequired",
      },
      {
        rule: "!has(self.services) || !has(self.workers) || self.services.all(s, self.workers.all(w, w.name != s.name))",
        message: "component names must be unique across services and workers",
        fieldPath: ".workers",
        reason: "FieldValueDuplicate",
      },
      refuse("static_sites", "list", "static sites are not run by static-egress"),
      refuse("databases", "list", "databases are not run by static-egress"),
      refuse("functions", "list", "functions are not run by static-egress"),
      refuse("jobs", "list", "jobs are not run by static-egress"),
      refuse(
        "domains",
        "list",
        "domains are not run by static-egress (the services are reached through their Services; docs/apps.md)",
      ),
      refuse(
        "ingress",
        "present",
        "ingress rules are not run by static-egress (the ingress side reaches services through their Services; docs/apps.md)",
      ),
      refuse("alerts", "list", "alerts are not run by static-egress"),
      refuse("maintenance", "present", "maintenance mode is not run by static-egress"),
      refuse("vpc", "present", "VPC attachment is not run by static-egress (the app runs in the cluster's network)"),
      refuse("disable_edge_cache", "true", "edge caching (CDN) is not run by static-egress"),
      refuse("disable_email_obfuscation", "true", "email obfuscation (CDN) is not run by static-egress"),
      refuse("enhanced_threat_control_enabled", "true", "threat control (CDN) is not run by static-egress"),
    ] satisfies CelRule[],
  },
);
export type AppSpec = Static<typeof AppSpec>;

/** apps_dedicated_egress_ip_status.yml */
const DEDICATED_IP_STATUSES = ["UNKNOWN", "ASSIGNING", "ASSIGNED", "REMOVED"] as const;

/** apps_deployment_phase.yml: the phases an app moves through here (no builds). */
export const APP_PHASES = [
  "UNKNOWN",
  "PENDING_BUILD",
  "BUILDING",
  "PENDING_DEPLOY",
  "DEPLOYING",
  "ACTIVE",
  "SUPERSEDED",
  "ERROR",
  "CANCELED",
] as const;
export type AppPhase = (typeof APP_PHASES)[number];

export const DedicatedIP = Type.Object({
  ip: Type.String({ description: "The dedicated egress IP" }),
  id: Type.String({ description: "Its id (the reserved IP or gateway instance it is)" }),
  status: literals(DEDICATED_IP_STATUSES, { default: "UNKNOWN" }),
});
export type DedicatedIP = Static<typeof DedicatedIP>;

export const ComponentStatus = Type.Object({
  name: Type.String(),
  kind: Type.Union([Type.Literal("service"), Type.Literal("worker")]),
  replicas: Type.Integer(),
  availableReplicas: Type.Integer(),
});
export type ComponentStatus = Static<typeof ComponentStatus>;

/** The last value seen of one gateway counter of an IP (bookkeeping: a counter's value is absolute, never added twice). */
const CounterSeen = Type.Object({
  instance: Type.String({ description: "<gateway>/<instance> that counted" }),
  since: Type.String({ description: 'When its kernel counter was created ("" unknown); a new one starts at 0' }),
  bytes: Type.Integer({ minimum: 0 }),
  packets: Type.Integer({ minimum: 0 }),
});

export const IPUsage = Type.Object({
  ip: Type.String({ description: "One of the app's dedicated IPs (now or before)" }),
  bytes: Type.Integer({ minimum: 0, description: "Bytes (IP packets, headers included) that left through it" }),
  packets: Type.Integer({ minimum: 0 }),
  since: Type.String({ description: "When counting began for this app and IP" }),
  counters: Type.Optional(Type.Array(CounterSeen, { maxItems: 64 })),
});
export type IPUsage = Static<typeof IPUsage>;

/**
 * What left through the app's dedicated IPs, counted by the gateways' kernels (docs/apps.md#usage):
 * what a bill or a quota reads. Totals only grow; DigitalOcean reports an app's `bandwidth_bytes`.
 */
export const AppUsage = Type.Object({
  bytes: Type.Integer({ minimum: 0 }),
  packets: Type.Integer({ minimum: 0 }),
  since: Type.String({ description: "When counting began for this app" }),
  updated_at: Type.String({ description: "When a gateway's count last changed it" }),
  ips: Type.Array(IPUsage, { maxItems: 64 }),
});
export type AppUsage = Static<typeof AppUsage>;

export const AppStatus = Type.Object({
  phase: Type.Optional(literals(APP_PHASES)),
  /** The namespace the app runs in. */
  namespace: Type.Optional(Type.String()),
  observedGeneration: Type.Optional(Type.Integer()),
  /** When the spec last changed as the controller saw it (DigitalOcean's updated_at). */
  updated_at: Type.Optional(Type.String()),
  components: Type.Optional(Type.Array(ComponentStatus)),
  /** app.yml's dedicated_ips: each IP of a DEDICATED_IP app's gateway and whether it carries the app's traffic (docs/apps.md). */
  dedicated_ips: Type.Optional(Type.Array(DedicatedIP)),
  /** DigitalOcean: reserved IPs REMOVED from the app and kept for its next DEDICATED_IP (docs/apps.md). */
  kept_ips: Type.Optional(Type.Array(Type.String())),
  usage: Type.Optional(AppUsage),
  conditions: Type.Optional(Type.Array(Condition)),
});
export type AppStatus = Static<typeof AppStatus>;

export type App = Resource<"App", AppSpec, AppStatus>;

export const AppKind: KindDefinition = {
  kind: "App",
  plural: "apps",
  singular: "app",
  shortNames: ["seapp"],
  scope: "Cluster",
  spec: AppSpec,
  status: AppStatus,
  printerColumns: [
    { name: "Phase", type: "string", jsonPath: ".status.phase" },
    { name: "Egress", type: "string", jsonPath: ".spec.egress.type" },
    { name: "Dedicated-IPs", type: "string", jsonPath: ".status.dedicated_ips[*].ip" },
    { name: "Namespace", type: "string", jsonPath: ".status.namespace", priority: 1 },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
  ],
  rootValidations: [
    {
      rule: "self.metadata.name == self.spec.name",
      message: "metadata.name must equal spec.name (the app's name)",
      reason: "FieldValueInvalid",
    },
  ],
};
