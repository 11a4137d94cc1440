// App specs the API server refuses at once (CEL rules in deploy/crds/apps.yaml), one per part
// static-egress does not run, each with the field named and words of the message.
// src/api/v1alpha1/app.test.ts runs them through our validator and the committed CRD;
// test/integration/apps.test.ts through a real kube-apiserver.
type Spec = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const base = (): Spec => ({
  name: "shop",
  services: [{ name: "api", image: { registry_type: "DOCKER_HUB", repository: "nginx" } }],
});
export const withService = (extra: Spec): Spec => {
  const s = base();
  Object.assign(s.services[0], extra);
  return s;
};

export const APP_REFUSALS: [part: string, spec: Spec, field: string, message: string][] = [
  [
    "static sites",
    { ...base(), static_sites: [{ name: "docs" }] },
    "spec.static_sites",
    "static sites are not run by static-egress",
  ],
  [
    "databases",
    { ...base(), databases: [{ name: "db", engine: "PG" }] },
    "spec.databases",
    "databases are not run by static-egress",
  ],
  ["functions", { ...base(), functions: [{ name: "fn" }] }, "spec.functions", "functions are not run by static-egress"],
  ["jobs", { ...base(), jobs: [{ name: "migrate" }] }, "spec.jobs", "jobs are not run by static-egress"],
  ["domains", { ...base(), domains: [{ domain: "example.com" }] }, "spec.domains", "domains are not run"],
  ["ingress rules", { ...base(), ingress: { rules: [] } }, "spec.ingress", "ingress rules are not run"],
  ["alerts", { ...base(), alerts: [{ rule: "DEPLOYMENT_FAILED" }] }, "spec.alerts", "alerts are not run"],
  ["maintenance", { ...base(), maintenance: { enabled: true } }, "spec.maintenance", "maintenance mode is not run"],
  ["vpc", { ...base(), vpc: { id: "c22d8f48-4bc4-49f5-8ca0-58e7164427ac" } }, "spec.vpc", "VPC attachment is not run"],
  ["edge cache", { ...base(), disable_edge_cache: true }, "spec.disable_edge_cache", "edge caching (CDN)"],
  [
    "email obfuscation",
    { ...base(), disable_email_obfuscation: true },
    "spec.disable_email_obfuscation",
    "email obfuscation",
  ],
  [
    "threat control",
    { ...base(), enhanced_threat_control_enabled: true },
    "spec.enhanced_threat_control_enabled",
    "threat control",
  ],
  [
    "git source",
    withService({ git: { repo_clone_url: "https://example.com/a.git" } }),
    "spec.services[0].git",
    "builds from source",
  ],
  ["github source", withService({ github: { repo: "a/b" } }), "spec.services[0].github", "builds from source"],
  ["gitlab source", withService({ gitlab: { repo: "a/b" } }), "spec.services[0].gitlab", "builds from source"],
  ["bitbucket source", withService({ bitbucket: { repo: "a/b" } }), "spec.services[0].bitbucket", "builds from source"],
  [
    "dockerfile",
    withService({ dockerfile_path: "Dockerfile" }),
    "spec.services[0].dockerfile_path",
    "builds from source",
  ],
  [
    "build command",
    withService({ build_command: "npm run build" }),
    "spec.services[0].build_command",
    "builds from source",
  ],
  ["source dir", withService({ source_dir: "api" }), "spec.services[0].source_dir", "builds from source"],
  [
    "buildpack",
    withService({ environment_slug: "node-js" }),
    "spec.services[0].environment_slug",
    "builds from source",
  ],
  [
    "log forwarding",
    withService({ log_destinations: [{ name: "papertrail" }] }),
    "spec.services[0].log_destinations",
    "log forwarding",
  ],
  [
    "autoscaling",
    withService({ autoscaling: { min_instance_count: 1, max_instance_count: 3 } }),
    "spec.services[0].autoscaling",
    "autoscaling is not run",
  ],
  ["cors", withService({ cors: { allow_origins: [] } }), "spec.services[0].cors", "CORS"],
  ["routes", withService({ routes: [{ path: "/api" }] }), "spec.services[0].routes", "HTTP routes"],
  [
    "registry credentials",
    withService({ image: { registry_type: "GHCR", registry: "a", repository: "b", registry_credentials: "u:t" } }),
    "spec.services[0].image.registry_credentials",
    "credentials",
  ],
  [
    "deploy on push",
    withService({ image: { registry_type: "DOCR", repository: "b", deploy_on_push: { enabled: true } } }),
    "spec.services[0].image.deploy_on_push.enabled",
    "deploy on push",
  ],
  [
    "build-time variables",
    withService({ envs: [{ key: "NPM_TOKEN", scope: "BUILD_TIME", value: "x" }] }),
    "spec.services[0].envs[0].scope",
    "BUILD_TIME variables",
  ],
];
