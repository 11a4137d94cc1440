// The Helm chart (deploy/helm/static-egress) with the real helm (built from helm.sh/helm/v4, pinned in
// test/k8s-bin/helm/go.mod): `helm lint`, `helm template`, the same RBAC, admission policy and pod
// specs as the kustomize base, the CRDs identical to the generated ones, the metrics options, and
// every rendered object accepted by the real kube-apiserver (`kubectl apply --dry-run=server`) for
// the default values and for the DigitalOcean values file.
import { readFileSync, readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import { k8sBinary } from "../../src/lab/control-plane/index.js";
import { SERVED_KINDS } from "../../src/api/served-kinds.js";
import { runCommand } from "../../src/util/exec.js";
import { startTestKube, type TestKube } from "../support/kube.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const CHART = join(ROOT, "deploy/helm/static-egress");
const DO_VALUES = join(ROOT, "deploy/helm/values-digitalocean.yaml");
const NAMESPACE = "static-egress";

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
}

const docs = (text: string): Obj[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null && typeof o === "object");

// helm and kubectl run asynchronously: the API server's fault proxy runs in this process.
async function helm(args: string[]): Promise<string> {
  const { stdout } = await runCommand(k8sBinary("helm"), args, { timeoutMs: 60_000 });
  return stdout;
}
const template = async (...extra: string[]) =>
  docs(await helm(["template", "static-egress", CHART, "--namespace", NAMESPACE, ...extra]));
const kustomize = async () =>
  docs((await runCommand(k8sBinary("kubectl"), ["kustomize", join(ROOT, "deploy")], { timeoutMs: 60_000 })).stdout);

const RBAC_KINDS = new Set([
  "ServiceAccount",
  "ClusterRole",
  "ClusterRoleBinding",
  "Role",
  "RoleBinding",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
]);
/** CEL ignores whitespace; kustomize re-folds the policy's `>-` blocks (blank lines around more-indented ones). */
const celSpace = (v: unknown): unknown =>
  typeof v === "string"
    ? v.replace(/\s+/g, " ").trim()
    : Array.isArray(v)
      ? v.map(celSpace)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, celSpace(x)]))
        : v;
/** What grants access: everything but the labels (which differ: the chart adds Helm's). */
function grants(objs: Obj[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of objs.filter((x) => RBAC_KINDS.has(x.kind))) {
    const { metadata, ...rest } = o;
    out[`${o.kind}/${metadata.namespace ?? ""}/${metadata.name}`] = o.kind.startsWith("ValidatingAdmissionPolicy")
      ? celSpace(rest)
      : rest;
  }
  return out;
}

/** A workload's pod spec, with the image and pull policy left out (the chart makes them values). */
function podSpec(objs: Obj[], kind: string, name: string): unknown {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name) as
    (Obj & { spec: { template: { spec: Record<string, unknown> } } }) | undefined;
  expect(o, `${kind}/${name}`).toBeDefined();
  const spec = structuredClone(o!.spec.template.spec) as {
    containers: Record<string, unknown>[];
    initContainers?: Record<string, unknown>[];
  };
  for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
    delete c.image;
    delete c.imagePullPolicy;
  }
  return spec;
}

let defaults: Obj[];
let digitalocean: Obj[];
let base: Obj[];

beforeAll(async () => {
  [defaults, digitalocean, base] = await Promise.all([template(), template("-f", DO_VALUES), kustomize()]);
}, 120_000);

describe("helm lint", () => {
  it("passes for the default values and for the DigitalOcean values file", async () => {
    const out = await helm(["lint", "--strict", CHART]);
    expect(out).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    const out2 = await helm(["lint", "--strict", CHART, "-f", DO_VALUES]);
    expect(out2).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("refuses a cloud provider it does not know and a provider without a cluster id", async () => {
    await expect(template("--set", "cloud.provider=aws", "--set", "cloud.clusterId=x")).rejects.toThrow(
      /only "digitalocean" is supported/,
    );
    await expect(template("--set", "cloud.provider=digitalocean")).rejects.toThrow(/cloud.clusterId is required/);
  });
});

describe("the chart and the kustomize base", () => {
  it("render the same service accounts, RBAC and admission policy", () => {
    const chart = grants(defaults);
    expect(Object.keys(chart).length).toBe(Object.keys(grants(base)).length);
    expect(chart).toEqual(grants(base));
    // Not vacuous: the controller's ClusterRole and the node agent's policy are there.
    expect(Object.keys(chart)).toContain("ClusterRole//static-egress-controller");
    expect(Object.keys(chart)).toContain("ValidatingAdmissionPolicy//static-egress-node-agent-own-node");
  });

  it("in another namespace, binds the accounts of that namespace and the policy names that namespace's agent", async () => {
    const other = grants(await template("--namespace", "egress-system"));
    const policy = other["ValidatingAdmissionPolicy//static-egress-node-agent-own-node"] as {
      spec: { matchConditions: { expression: string }[] };
    };
    expect(policy.spec.matchConditions[0]!.expression).toContain(
      "system:serviceaccount:egress-system:static-egress-node-agent",
    );
    const binding = other["ClusterRoleBinding//static-egress-node-agent"] as { subjects: { namespace: string }[] };
    expect(binding.subjects[0]!.namespace).toBe("egress-system");
  });

  it("render the same controller and node-agent pod specs and the same agent config with the default values", () => {
    expect(podSpec(defaults, "Deployment", "static-egress-controller")).toEqual(
      podSpec(base, "Deployment", "static-egress-controller"),
    );
    expect(podSpec(defaults, "DaemonSet", "static-egress-node-agent")).toEqual(
      podSpec(base, "DaemonSet", "static-egress-node-agent"),
    );
    const config = (objs: Obj[]) =>
      (objs.find((o) => o.kind === "ConfigMap") as Obj & { data: Record<string, string> }).data["config.yaml"];
    expect(docs(config(defaults)!)).toEqual(docs(config(base)!));
  });

  it("ships the generated CRDs unchanged (deploy/crds, from `static-egress crds`)", () => {
    const generated = readdirSync(join(ROOT, "deploy/crds")).sort();
    expect(readdirSync(join(CHART, "crds")).sort()).toEqual(generated);
    for (const f of generated)
      expect(readFileSync(join(CHART, "crds", f), "utf8"), f).toBe(readFileSync(join(ROOT, "deploy/crds", f), "utf8"));
  });
});

describe("values", () => {
  it("DigitalOcean: the controller runs the plugin with the token from the referenced Secret, mounted read-only", () => {
    const d = digitalocean.find((o) => o.kind === "Deployment") as Obj & {
      spec: {
        template: {
          spec: {
            containers: { args: string[]; volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }[];
            volumes: { name: string; secret?: { secretName: string } }[];
          };
        };
      };
    };
    const pod = d.spec.template.spec;
    const args = pod.containers[0]!.args;
    expect(args).toContain("--cloud=digitalocean");
    expect(args).toContain("--cluster-id=00000000-0000-0000-0000-000000000000");
    const tokenArg = args.find((a) => a.startsWith("--digitalocean-token-file="))!;
    const mount = pod.containers[0]!.volumeMounts.find((m) =>
      tokenArg.slice("--digitalocean-token-file=".length).startsWith(`${m.mountPath}/`),
    );
    expect(mount?.readOnly).toBe(true);
    expect(pod.volumes.find((v) => v.name === mount!.name)?.secret?.secretName).toBe("digitalocean-token");
    // No Secret is rendered: the chart never holds the token.
    expect(digitalocean.filter((o) => o.kind === "Secret")).toEqual([]);
    // Without a provider, none of it.
    const plain = defaults.find((o) => o.kind === "Deployment") as typeof d;
    expect(
      plain.spec.template.spec.containers[0]!.args.filter(
        (a) => a.startsWith("--cloud") || a.startsWith("--digitalocean"),
      ),
    ).toEqual([]);
  });

  it("live view and Grafana dashboard: off by default; the controller's view flags and the dashboard ConfigMap when enabled", async () => {
    type Deployment = Obj & { spec: { template: { spec: { containers: { args: string[] }[] } } } };
    const args = (objs: Obj[]) =>
      (objs.find((o) => o.kind === "Deployment" && o.metadata.name === "static-egress-controller") as Deployment).spec
        .template.spec.containers[0]!.args;
    const dashboards = (objs: Obj[]) =>
      objs.filter((o) => o.kind === "ConfigMap" && o.metadata.name === "static-egress-grafana-dashboard");
    expect(args(defaults).filter((a) => a.startsWith("--view"))).toEqual([]);
    expect(dashboards(defaults)).toEqual([]);
    const on = await template(
      "--set",
      "controller.view.enabled=true",
      "--set",
      "metrics.grafanaDashboard.enabled=true",
      "--set",
      "metrics.grafanaDashboard.namespace=monitoring",
    );
    expect(args(on).filter((a) => a.startsWith("--view"))).toEqual(["--view-port=9742", "--view-address=127.0.0.1"]);
    const [cm] = dashboards(on) as (Obj & { data: Record<string, string> })[];
    expect(cm!.metadata.namespace).toBe("monitoring");
    expect(cm!.metadata.labels?.grafana_dashboard).toBe("1");
    // The shipped dashboard itself (files/grafana-dashboard.json), whole.
    expect(JSON.parse(cm!.data["static-egress.json"]!)).toEqual(
      JSON.parse(readFileSync(join(ROOT, "deploy/helm/static-egress/files/grafana-dashboard.json"), "utf8")),
    );
    expect(dashboards(digitalocean)).toHaveLength(1);
  });

  it("metrics: ServiceMonitor and PodMonitor only when enabled; the shipped alert rules (on metrics the code exports) and yours when enabled", async () => {
    const kinds = (objs: Obj[]) => objs.map((o) => o.kind);
    expect(kinds(defaults)).not.toContain("ServiceMonitor");
    expect(kinds(defaults)).not.toContain("PodMonitor");
    expect(kinds(digitalocean)).toEqual(expect.arrayContaining(["ServiceMonitor", "PodMonitor", "Service"]));
    const pm = digitalocean.find((o) => o.kind === "PodMonitor") as Obj & {
      spec: { podMetricsEndpoints: { port: string }[] };
    };
    const ds = digitalocean.find((o) => o.kind === "DaemonSet") as Obj & {
      spec: { template: { spec: { containers: { ports: { name: string }[] }[] } } };
    };
    expect(ds.spec.template.spec.containers[0]!.ports.map((p) => p.name)).toContain(
      pm.spec.podMetricsEndpoints[0]!.port,
    );
    // The shipped alert rules: rendered when enabled, and every metric they name is one the code exports.
    type Rule = Obj & { spec: { groups: { name: string; rules: { alert: string; expr: string }[] }[] } };
    const shipped = (await template("--set", "metrics.prometheusRule.enabled=true")).find(
      (o) => o.kind === "PrometheusRule",
    ) as Rule;
    const alerts = shipped.spec.groups.flatMap((g) => g.rules);
    expect(alerts.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        "StaticEgressInstanceDown",
        "StaticEgressPolicyUnavailable",
        "StaticEgressFailClosedDrops",
        "StaticEgressNoControllerLeader",
      ]),
    );
    const exported = new Set<string>();
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts"))
          for (const m of readFileSync(join(d, e.name), "utf8").matchAll(/name: "(static_egress_[a-z_]+)"/g))
            exported.add(m[1]!);
      }
    };
    walk(join(ROOT, "src"));
    const named = alerts.flatMap((r) => [...r.expr.matchAll(/static_egress_[a-z_]+/g)].map((m) => m[0]));
    expect(named.length).toBeGreaterThan(alerts.length - 1);
    expect(named.filter((n) => !exported.has(n))).toEqual([]);
    // Without the shipped rules and without yours, nothing; yours come after the shipped ones.
    expect(
      kinds(
        await template(
          "--set",
          "metrics.prometheusRule.enabled=true",
          "--set",
          "metrics.prometheusRule.defaultRules=false",
        ),
      ),
    ).not.toContain("PrometheusRule");
    const dir = await mkdtemp(join(tmpdir(), "se-helm-"));
    try {
      const rules = {
        metrics: {
          prometheusRule: {
            enabled: true,
            groups: [{ name: "mine", rules: [{ alert: "NodeAgentDown", expr: 'up{job="x"} == 0' }] }],
          },
        },
      };
      await writeFile(join(dir, "rules.yaml"), stringify(rules));
      const rule = (await template("-f", join(dir, "rules.yaml"))).find((o) => o.kind === "PrometheusRule") as Rule;
      expect(rule.spec.groups.map((g) => g.name)).toEqual([...shipped.spec.groups.map((g) => g.name), "mine"]);
      expect(rule.spec.groups.at(-1)).toEqual(rules.metrics.prometheusRule.groups[0]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("accepted by the real API server (--dry-run=server)", () => {
  let kube: TestKube;
  let dir: string;
  const kubectl = async (...args: string[]) =>
    (
      await runCommand(
        k8sBinary("kubectl"),
        ["--kubeconfig", join(dir, "kubeconfig"), "--cache-dir", join(dir, "cache"), ...args],
        { timeoutMs: 120_000 },
      )
    ).stdout;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "se-helm-kube-"));
    kube = await startTestKube();
    await writeFile(join(dir, "kubeconfig"), kube.adminKubeconfig(), { mode: 0o600 });
    await kube.ensureNamespace(NAMESPACE, { "pod-security.kubernetes.io/enforce": "privileged" });
    // prometheus-operator's kinds, as structural stand-ins (its real CRDs are not in any registry this
    // project reaches): only so that the API server knows the ServiceMonitor and PodMonitor kinds.
    const monitoringCrd = (kind: string, plural: string) => ({
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: `${plural}.monitoring.coreos.com` },
      spec: {
        group: "monitoring.coreos.com",
        scope: "Namespaced",
        names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } },
          },
        ],
      },
    });
    await writeFile(
      join(dir, "monitoring-crds.yaml"),
      [monitoringCrd("ServiceMonitor", "servicemonitors"), monitoringCrd("PodMonitor", "podmonitors")]
        .map((o) => stringify(o))
        .join("---\n"),
    );
    await kubectl("apply", "-f", join(dir, "monitoring-crds.yaml"));
    await kubectl(
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      "crd/servicemonitors.monitoring.coreos.com",
      "crd/podmonitors.monitoring.coreos.com",
    );
  }, 180_000);

  afterAll(async () => {
    await kube?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const [name, values] of [
    ["the default values", [] as string[]],
    ["the DigitalOcean values file", ["-f", DO_VALUES]],
  ] as const) {
    it(`${name}: the CRDs and every object`, async () => {
      const rendered = await helm([
        "template",
        "static-egress",
        CHART,
        "--namespace",
        NAMESPACE,
        "--include-crds",
        ...values,
      ]);
      const file = join(dir, "rendered.yaml");
      await writeFile(file, rendered);
      const objs = docs(rendered);
      expect(objs.filter((o) => o.kind === "CustomResourceDefinition")).toHaveLength(SERVED_KINDS.length);
      // startTestKube installed the CRDs already (from deploy/crds, which the chart's crds/ equal).
      const out = await kubectl("apply", "--dry-run=server", "-o", "name", "-f", file);
      const accepted = out.trim().split("\n").sort();
      const expected = objs
        .map((o) =>
          `${o.kind.toLowerCase()}.${o.apiVersion.includes("/") ? o.apiVersion.split("/")[0] : ""}/${o.metadata.name}`.replace(
            "./",
            "/",
          ),
        )
        .sort();
      expect(accepted).toEqual(expected);
    }, 180_000);
  }
});
