// The deployment: the kustomize base rendered by Debian's kubectl, its RBAC checked against
// KUBE_ACCESS (the code's own list of API calls), the node agent's privileges checked against
// docs/deploy.md, the init container's script run against temporary directories, the
// Dockerfile checked against the repository, and the whole install applied to a real kube-apiserver.
import {
  accessSync,
  constants,
  existsSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
  mkdirSync,
} from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { parseAgentConfig } from "../../src/agents/config.js";
import { GROUP } from "../../src/api/v1alpha1/common.js";
import { ALL_KINDS, crdName } from "../../src/api/v1alpha1/crd.js";
import { SERVED_KINDS } from "../../src/api/served-kinds.js";
import { STATIC_ROUTE_GROUP } from "../../src/api/digitalocean-v1/static-route.js";
import { DEFAULT_AGENT_SOCKET } from "../../src/cni/input.js";
import { KUBE_ACCESS, PLURALS, type Access } from "../../src/kube/client.js";
import { k8sBinary, startControlPlane, type ControlPlane } from "../../src/lab/control-plane/index.js";
import { CommandError, runCommand } from "../../src/util/exec.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const KUBECTL = "/usr/bin/kubectl";
const NAMESPACE = "static-egress";

type Component = Exclude<Access["component"], "user">;
const SERVICE_ACCOUNTS: Record<Component, string> = {
  controller: "static-egress-controller",
  "node-agent": "static-egress-node-agent",
  "gateway-agent": "static-egress-gateway",
};

// ---- the shapes of what is read (loosely: only the fields the checks use) ----

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
}
interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}
interface RoleObject extends K8sObject {
  rules?: PolicyRule[];
  aggregationRule?: unknown;
}
interface BindingObject extends K8sObject {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}
interface SecurityContext {
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  capabilities?: { add?: string[]; drop?: string[] };
  seccompProfile?: { type: string };
}
interface Probe {
  httpGet?: { path: string; port: number | string };
  tcpSocket?: { port: number | string };
}
interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name?: string; containerPort: number; protocol?: string }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface PodSpec {
  serviceAccountName?: string;
  hostNetwork?: boolean;
  priorityClassName?: string;
  tolerations?: { key?: string; operator?: string; effect?: string }[];
  securityContext?: SecurityContext;
  initContainers?: Container[];
  containers: Container[];
  volumes?: { name: string; hostPath?: { path: string; type?: string }; configMap?: { name: string } }[];
}
interface Workload extends K8sObject {
  spec: { replicas?: number; template: { spec: PodSpec } };
}
interface ConfigMapObject extends K8sObject {
  data?: Record<string, string>;
}

// ---- helpers ----

async function kustomize(dir: string): Promise<K8sObject[]> {
  const { stdout } = await runCommand(KUBECTL, ["kustomize", join(ROOT, dir)], { timeoutMs: 20_000 });
  return parseAllDocuments(stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

function find<T extends K8sObject>(objects: readonly K8sObject[], kind: string, name: string): T {
  const hit = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!hit) throw new Error(`${kind}/${name} is not in the rendered manifests`);
  return hit as T;
}

const triple = (apiGroup: string, resource: string, verb: string): string => `${apiGroup}|${resource}|${verb}`;

function expectedAccess(access: readonly Access[], component: Component): string[] {
  return [
    ...new Set(
      access
        .filter((a) => a.component === component)
        .flatMap((a) => a.verbs.map((v) => triple(a.apiGroup, a.resource, v))),
    ),
  ].sort();
}

/** What the component's ServiceAccount is granted through every binding that names it. */
function grantedAccess(objects: readonly K8sObject[], component: Component): string[] {
  const sa = SERVICE_ACCOUNTS[component];
  const out = new Set<string>();
  for (const b of objects.filter(
    (o): o is BindingObject => o.kind === "ClusterRoleBinding" || o.kind === "RoleBinding",
  )) {
    if (!(b.subjects ?? []).some((s) => s.kind === "ServiceAccount" && s.name === sa && s.namespace === NAMESPACE))
      continue;
    const role = objects.find(
      (o): o is RoleObject =>
        o.kind === b.roleRef.kind &&
        o.metadata.name === b.roleRef.name &&
        (o.kind === "ClusterRole" || o.metadata.namespace === b.metadata.namespace),
    );
    if (!role)
      throw new Error(
        `${b.kind}/${b.metadata.name} refers to ${b.roleRef.kind}/${b.roleRef.name}, which is not rendered`,
      );
    for (const r of role.rules ?? []) {
      for (const g of r.apiGroups ?? [])
        for (const res of r.resources ?? []) for (const v of r.verbs) out.add(triple(g, res, v));
    }
  }
  return [...out].sort();
}

function rbacDiff(
  objects: readonly K8sObject[],
  access: readonly Access[],
  component: Component,
): { missing: string[]; extra: string[] } {
  const want = expectedAccess(access, component);
  const have = grantedAccess(objects, component);
  return { missing: want.filter((t) => !have.includes(t)), extra: have.filter((t) => !want.includes(t)) };
}

/** Rows of the first Markdown table after `heading` whose first cell is a `code` value. */
function markdownTable(markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`docs/deploy.md has no heading ${JSON.stringify(heading)}`);
  const rows: string[][] = [];
  let inTable = false;
  for (const line of markdown.slice(start + heading.length + 2).split("\n")) {
    if (line.startsWith("|")) {
      inTable = true;
      const cells = line
        .slice(1, line.endsWith("|") ? -1 : undefined)
        .split("|")
        .map((c) => c.trim());
      if (/^`[^`]+`$/.test(cells[0] ?? "")) rows.push(cells.map((c) => c.replace(/^`([^`]*)`$/, "$1")));
    } else if (inTable) break;
  }
  return rows;
}

/** `--flag=value` and `--flag value` → the flags. */
function flagsOf(args: readonly string[]): string[] {
  return args.filter((a) => a.startsWith("--")).map((a) => a.split("=")[0] ?? a);
}

/** Options per command as src/cli/main.ts declares them (`.command("x")` up to the next one). */
function cliOptions(): Map<string, { all: Set<string>; required: Set<string> }> {
  const text = readFileSync(join(ROOT, "src/cli/main.ts"), "utf8");
  const out = new Map<string, { all: Set<string>; required: Set<string> }>();
  for (const chunk of text.split('.command("').slice(1)) {
    const name = chunk.slice(0, chunk.indexOf('"'));
    const all = new Set(
      [...chunk.matchAll(/\.(?:requiredOption|option)\(\s*"(--[a-z-]+)/g)].map((m) => m[1] as string),
    );
    const required = new Set([...chunk.matchAll(/\.requiredOption\("(--[a-z-]+)/g)].map((m) => m[1] as string));
    out.set(name, { all, required });
  }
  return out;
}

function expectFlagsAccepted(command: string, args: readonly string[]): void {
  const options = cliOptions().get(command);
  expect(options, `command ${command} in src/cli/main.ts`).toBeDefined();
  const flags = flagsOf(args);
  expect(
    flags.filter((f) => !options?.all.has(f)),
    `flags of ${command} unknown to src/cli/main.ts`,
  ).toEqual([]);
  expect(
    [...(options?.required ?? [])].filter((f) => !flags.includes(f)),
    `required options of ${command} not passed`,
  ).toEqual([]);
}

function envFrom(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
}

/** Dockerfile instructions: continuations joined, comments and blank lines dropped. */
function dockerInstructions(text: string): { op: string; rest: string }[] {
  const out: { op: string; rest: string }[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || line === "") continue;
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    const full = pending + line;
    pending = "";
    const space = full.indexOf(" ");
    out.push({ op: full.slice(0, space).toUpperCase(), rest: full.slice(space + 1).trim() });
  }
  return out;
}

/** Whether .dockerignore keeps `path` (relative to the root) out of the build context. */
function dockerIgnored(path: string, patterns: readonly string[]): boolean {
  const toRegex = (p: string) =>
    new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]]/g, "\\$&")
        .replace(/\*\*\//g, "(?:.*/)?")
        .replace(/\*\*/g, ".*")
        .replace(/\*/g, "[^/]*")
        .replace(/\?/g, "[^/]")}$`,
    );
  const parts = path.split("/");
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  // As Docker reads them: in order, the last matching pattern decides, `!` re-includes.
  let ignored = false;
  for (const p of patterns) {
    const negated = p.startsWith("!");
    const re = toRegex(negated ? p.slice(1) : p);
    if (prefixes.some((prefix) => re.test(prefix))) ignored = !negated;
  }
  return ignored;
}

/** Bare packages reached through static imports from `entries` (relative `.js` imports followed to `.ts`). */
function importedPackages(entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(file, "utf8");
    const specifiers = [
      ...[...text.matchAll(/^\s*(?:import|export)\s+(?!type\s)[\w*{}\s,$]*?\bfrom\s+["']([^"']+)["']/gm)].map(
        (m) => m[1] as string,
      ),
      ...[...text.matchAll(/^\s*import\s+["']([^"']+)["']/gm)].map((m) => m[1] as string),
      ...[...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1] as string),
    ];
    for (const s of specifiers) {
      if (s.startsWith(".")) {
        const target = resolve(dirname(file), s.replace(/\.js$/, ".ts"));
        queue.push(existsSync(target) ? target : join(target.replace(/\.ts$/, ""), "index.ts"));
      } else if (!s.startsWith("node:") && !builtinModules.includes(s)) {
        packages.add(s.startsWith("@") ? s.split("/").slice(0, 2).join("/") : (s.split("/")[0] as string));
      }
    }
  }
  return packages;
}

/** Non-test TypeScript files under `dir`. */
function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts")) out.push(path);
  }
  return out;
}

// ---- rendering ----

let base: K8sObject[];
let install: K8sObject[];
const docs = readFileSync(join(ROOT, "docs/deploy.md"), "utf8");

beforeAll(async () => {
  [base, install] = await Promise.all([kustomize("deploy/kustomize"), kustomize("deploy")]);
});

const key = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata.name}`;

describe("kubectl kustomize", () => {
  it("renders deploy/kustomize: every in-cluster object, namespaced ones in static-egress", () => {
    expect(base.map(key).sort()).toEqual(
      [
        "Namespace/static-egress",
        "ServiceAccount/static-egress/static-egress-controller",
        "ServiceAccount/static-egress/static-egress-node-agent",
        "ServiceAccount/static-egress/static-egress-gateway",
        "ClusterRole/static-egress-controller",
        "ClusterRoleBinding/static-egress-controller",
        "Role/static-egress/static-egress-controller-leader-election",
        "RoleBinding/static-egress/static-egress-controller-leader-election",
        "ClusterRole/static-egress-node-agent",
        "ClusterRoleBinding/static-egress-node-agent",
        "ClusterRole/static-egress-gateway",
        "ClusterRoleBinding/static-egress-gateway",
        "ConfigMap/static-egress/static-egress-config",
        "Deployment/static-egress/static-egress-controller",
        "PodDisruptionBudget/static-egress/static-egress-controller",
        "DaemonSet/static-egress/static-egress-node-agent",
      ].sort(),
    );
    const apiVersions = Object.fromEntries(base.map((o) => [o.kind, o.apiVersion]));
    expect(apiVersions).toMatchObject({
      Deployment: "apps/v1",
      DaemonSet: "apps/v1",
      PodDisruptionBudget: "policy/v1",
      ClusterRole: "rbac.authorization.k8s.io/v1",
      Role: "rbac.authorization.k8s.io/v1",
    });
    for (const o of base) expect(o.metadata.labels?.["app.kubernetes.io/part-of"], key(o)).toBe("static-egress");
  });

  it("renders deploy: the base plus the generated CRDs, exactly as generated, one per kind, and the admission policy", () => {
    const crds = install.filter((o) => o.kind === "CustomResourceDefinition");
    // Listed beside the CRDs, out of the base's namespace transformer (cluster-scoped; enforced by the API server in access.test.ts).
    const admission = install.filter((o) => o.apiVersion === "admissionregistration.k8s.io/v1");
    expect(admission.map(key).sort()).toEqual([
      "ValidatingAdmissionPolicy/static-egress-node-agent-own-node",
      "ValidatingAdmissionPolicyBinding/static-egress-node-agent-own-node",
    ]);
    for (const o of admission) expect(o.metadata.namespace, key(o)).toBeUndefined();
    expect(install.filter((o) => o.kind !== "CustomResourceDefinition" && !admission.includes(o))).toEqual(base);
    const files = readdirSync(join(ROOT, "deploy/crds")).filter((f) => f.endsWith(".yaml"));
    expect(crds.map((c) => c.metadata.name).sort()).toEqual(SERVED_KINDS.map(crdName).sort());
    expect(crds).toHaveLength(files.length);
    for (const f of files) {
      const generated = parse(readFileSync(join(ROOT, "deploy/crds", f), "utf8")) as K8sObject;
      expect(
        crds.find((c) => c.metadata.name === generated.metadata.name),
        f,
      ).toEqual(generated);
    }
  });

  it("sets the image on every container", () => {
    for (const w of base.filter((o): o is Workload => o.kind === "Deployment" || o.kind === "DaemonSet")) {
      for (const c of [...(w.spec.template.spec.initContainers ?? []), ...w.spec.template.spec.containers])
        expect(c.image, `${key(w)} ${c.name}`).toMatch(/^static-egress:\d+\.\d+\.\d+$/);
    }
  });
});

describe("RBAC matches src/kube/client.ts (KUBE_ACCESS) exactly", () => {
  it.each(Object.keys(SERVICE_ACCOUNTS) as Component[])(
    "%s: granted (apiGroup, resource, verb) = KUBE_ACCESS",
    (component) => {
      expect(expectedAccess(KUBE_ACCESS, component).length).toBeGreaterThan(0);
      expect(rbacDiff(base, KUBE_ACCESS, component)).toEqual({ missing: [], extra: [] });
    },
  );

  it("the check catches widened RBAC and access without RBAC", () => {
    const widened = structuredClone(base);
    find<RoleObject>(widened, "ClusterRole", "static-egress-node-agent").rules?.push({
      apiGroups: [""],
      resources: ["secrets"],
      verbs: ["get"],
    });
    expect(rbacDiff(widened, KUBE_ACCESS, "node-agent").extra).toEqual([triple("", "secrets", "get")]);
    const moreCalls: Access[] = [
      ...KUBE_ACCESS,
      { component: "controller", apiGroup: "", resource: "pods", verbs: ["delete"] },
    ];
    expect(rbacDiff(base, moreCalls, "controller").missing).toEqual([triple("", "pods", "delete")]);
  });

  it("grants no wildcards, no non-resource URLs, no aggregation, only to our service accounts", () => {
    const roles = base.filter((o): o is RoleObject => o.kind === "ClusterRole" || o.kind === "Role");
    expect(roles.length).toBeGreaterThan(0);
    for (const r of roles) {
      expect(r.aggregationRule, key(r)).toBeUndefined();
      for (const rule of r.rules ?? []) {
        expect(rule.nonResourceURLs, key(r)).toBeUndefined();
        for (const v of [
          ...(rule.apiGroups ?? []),
          ...(rule.resources ?? []),
          ...rule.verbs,
          ...(rule.resourceNames ?? []),
        ])
          expect(v, key(r)).not.toContain("*");
      }
    }
    for (const b of base.filter(
      (o): o is BindingObject => o.kind === "ClusterRoleBinding" || o.kind === "RoleBinding",
    )) {
      expect(b.subjects?.length, key(b)).toBeGreaterThan(0);
      for (const s of b.subjects ?? []) {
        expect(s, key(b)).toMatchObject({ kind: "ServiceAccount", namespace: NAMESPACE });
        expect(Object.values(SERVICE_ACCOUNTS)).toContain(s.name);
      }
    }
    for (const sa of Object.values(SERVICE_ACCOUNTS)) find(base, "ServiceAccount", sa);
  });

  it("leases only through a Role in static-egress, get/update only of the controller's Lease", () => {
    const leaseRules = base
      .filter((o): o is RoleObject => o.kind === "ClusterRole" || o.kind === "Role")
      .flatMap((r) =>
        (r.rules ?? []).filter((rule) => rule.resources?.includes("leases")).map((rule) => ({ role: r, rule })),
      );
    expect(leaseRules.length).toBeGreaterThan(0);
    for (const { role, rule } of leaseRules) {
      expect(role.kind).toBe("Role");
      expect(role.metadata.namespace).toBe(NAMESPACE);
      if (rule.verbs.some((v) => v !== "create")) expect(rule.resourceNames).toEqual(["static-egress-controller"]);
    }
  });

  it("KUBE_ACCESS covers every client-node call in src/kube, and lists nothing the code does not call", () => {
    // client-node method → (apiGroup, resource, verb); CUSTOM stands for each of our plurals.
    const CUSTOM = "<custom>";
    const methods: Record<string, [string, string, string]> = {
      listPodForAllNamespaces: ["", "pods", "list"],
      listNode: ["", "nodes", "list"],
      listNamespace: ["", "namespaces", "list"],
      patchNode: ["", "nodes", "patch"],
      listServiceForAllNamespaces: ["", "services", "list"],
      patchNamespacedService: ["", "services", "patch"],
      createNamespacedEvent: ["", "events", "create"],
      readNamespacedEndpoints: ["", "endpoints", "get"],
      readNamespacedLease: ["coordination.k8s.io", "leases", "get"],
      createNamespacedLease: ["coordination.k8s.io", "leases", "create"],
      replaceNamespacedLease: ["coordination.k8s.io", "leases", "update"],
      listClusterCustomObject: [GROUP, CUSTOM, "list"],
      getClusterCustomObject: [GROUP, CUSTOM, "get"], // each call names its plural: KubeClient.readGateway, AppsClient.getApp
      patchNamespacedCustomObject: [GROUP, CUSTOM, "patch"],
      patchClusterCustomObject: [GROUP, CUSTOM, "patch"],
      patchNamespacedCustomObjectStatus: [GROUP, `${CUSTOM}/status`, "patch"],
      patchClusterCustomObjectStatus: [GROUP, `${CUSTOM}/status`, "patch"],
      // Apps (src/kube/apps.ts): what an App is made of, and the CLI's calls.
      patchNamespace: ["", "namespaces", "patch"],
      deleteNamespace: ["", "namespaces", "delete"],
      deleteNamespacedService: ["", "services", "delete"],
      patchNamespacedSecret: ["", "secrets", "patch"],
      deleteNamespacedSecret: ["", "secrets", "delete"],
      patchNamespacedDeployment: ["apps", "deployments", "patch"],
      deleteNamespacedDeployment: ["apps", "deployments", "delete"],
      patchNamespacedNetworkPolicy: ["networking.k8s.io", "networkpolicies", "patch"],
      deleteNamespacedNetworkPolicy: ["networking.k8s.io", "networkpolicies", "delete"],
      createClusterCustomObject: [GROUP, CUSTOM, "create"],
      replaceClusterCustomObject: [GROUP, CUSTOM, "update"],
      deleteClusterCustomObject: [GROUP, CUSTOM, "delete"],
      deleteNamespacedCustomObject: [GROUP, CUSTOM, "delete"],
    };
    // Server-side apply is a patch that creates a missing object: the API server asks for both.
    const applyCreates = new Set([
      "patchNamespace",
      "patchNamespacedSecret",
      "patchNamespacedService",
      "patchNamespacedDeployment",
      "patchNamespacedNetworkPolicy",
      "patchClusterCustomObject",
      "patchNamespacedCustomObject",
    ]);
    const called = new Set<string>();
    const unknown: string[] = [];
    for (const file of sourceFiles(join(ROOT, "src/kube"))) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/\b(?:core|custom|coordination|appsApi|networking)\.(\w+)\(([^;]*)/g)) {
        const access = methods[m[1] as string];
        if (!access) {
          unknown.push(`${relative(ROOT, file)}: ${m[1]}`);
          continue;
        }
        const [group, listed, verb] = access;
        // A call on DigitalOcean's StaticRoute names its group and plural in its arguments.
        const foreign = listed.includes(CUSTOM)
          ? /^\(\s*\{\s*group: STATIC_ROUTE_GROUP\b[^}]*plural: "(\w+)"/.exec(`(${m[2] ?? ""}`)
          : null;
        if (foreign) {
          called.add(triple(STATIC_ROUTE_GROUP, listed.replace(CUSTOM, foreign[1] as string), verb));
          continue;
        }
        // A custom-object call naming its plural (APPS_PLURAL, PLURALS.<Kind>) is about that kind only.
        const named = /plural: (APPS_PLURAL|PLURALS\.(\w+))/.exec(m[2] ?? "");
        const plural = named
          ? named[1] === "APPS_PLURAL"
            ? "apps"
            : PLURALS[named[2] as keyof typeof PLURALS]
          : undefined;
        const resource = plural ? listed.replace(CUSTOM, plural) : listed;
        if (/,\s*apply,?\s*\)/.test(m[2] ?? "") && applyCreates.has(m[1] as string))
          called.add(triple(group, resource, "create"));
        for (const r of resource.includes(CUSTOM)
          ? Object.values(PLURALS).map((p) => resource.replace(CUSTOM, p))
          : [resource])
          called.add(triple(group, r, verb));
      }
      // Informers list (page by page, KubeClient.listPage) and watch these paths (ListWatch).
      for (const m of text.matchAll(
        new RegExp(
          "path: (?:" +
            [
              /"\/api\/v1\/([a-z]+)"/.source,
              /`\/apis\/\$\{GROUP\}\/\$\{VERSION\}\/([a-z]+)`/.source,
              /"\/apis\/([a-z0-9.]+)\/v1\/([a-z]+)"/.source,
              /`\/apis\/\$\{STATIC_ROUTE_API_VERSION\}\/([a-z]+)`/.source,
            ].join("|") +
            ")",
          "g",
        ),
      )) {
        for (const verb of ["list", "watch"])
          called.add(
            m[1]
              ? triple("", m[1], verb)
              : m[2]
                ? triple(GROUP, m[2], verb)
                : m[3]
                  ? triple(m[3], m[4] as string, verb)
                  : triple(STATIC_ROUTE_GROUP, m[5] as string, verb),
          );
      }
    }
    expect(unknown, "client-node calls this test does not know: add them to `methods` here and to KUBE_ACCESS").toEqual(
      [],
    );
    const listed = [
      ...new Set(KUBE_ACCESS.flatMap((a) => a.verbs.map((v) => triple(a.apiGroup, a.resource, v)))),
    ].sort();
    expect([...called].sort()).toEqual(listed);
  });

  it("no code outside src/kube makes Kubernetes API clients", () => {
    const offenders = sourceFiles(join(ROOT, "src"))
      .filter((f) => !f.startsWith(join(ROOT, "src/kube/")) && !f.startsWith(join(ROOT, "src/lab/")))
      .filter((f) =>
        new RegExp(
          /makeApiClient|new (?:Watch|ListWatch|KubernetesObjectApi)\b|/.source +
            /\b(?:CoreV1Api|CustomObjectsApi|CoordinationV1Api|AppsV1Api|RbacAuthorizationV1Api|EventsV1Api)\b/.source,
        ).test(readFileSync(f, "utf8")),
      )
      .map((f) => relative(ROOT, f));
    expect(offenders).toEqual([]);
  });
});

describe("the controller Deployment", () => {
  it("runs two leader-elected replicas, non-root, read-only, without capabilities", () => {
    const d = find<Workload>(base, "Deployment", "static-egress-controller");
    const pod = d.spec.template.spec;
    expect(d.spec.replicas).toBe(2);
    expect(pod.serviceAccountName).toBe(SERVICE_ACCOUNTS.controller);
    expect(pod.hostNetwork).toBeFalsy();
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(pod.containers).toHaveLength(1);
    const c = pod.containers[0] as Container;
    expect(c.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      privileged: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(c.resources?.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(c.resources?.limits).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(c.args?.[0]).toBe("controller");
    expectFlagsAccepted("controller", c.args?.slice(1) ?? []);
    // Identity and the Lease's namespace from the downward API.
    expect(envFrom(c, "POD_NAME")).toBe("metadata.name");
    expect(envFrom(c, "POD_NAMESPACE")).toBe("metadata.namespace");
    expect(c.args).toContain("--namespace=$(POD_NAMESPACE)");
  });

  it("serves metrics on the declared port, and is probed on /healthz and /readyz there", () => {
    const c = find<Workload>(base, "Deployment", "static-egress-controller").spec.template.spec
      .containers[0] as Container;
    const port = Number(c.args?.find((a) => a.startsWith("--metrics-port="))?.split("=")[1]);
    expect(port).toBeGreaterThan(1023);
    expect(c.ports).toEqual([{ name: "metrics", containerPort: port, protocol: "TCP" }]);
    expect(c.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(c.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "metrics" });
  });
});

describe("the node agent DaemonSet", () => {
  const daemonSet = () => find<Workload>(base, "DaemonSet", "static-egress-node-agent");
  const allContainers = () => [
    ...(daemonSet().spec.template.spec.initContainers ?? []),
    ...daemonSet().spec.template.spec.containers,
  ];
  const agent = () => daemonSet().spec.template.spec.containers.find((c) => c.name === "agent") as Container;

  it("hostNetwork, on every node, system-node-critical, its own service account", () => {
    const pod = daemonSet().spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(pod.tolerations).toEqual([{ operator: "Exists" }]);
    expect(pod.serviceAccountName).toBe(SERVICE_ACCOUNTS["node-agent"]);
    expect(pod.securityContext).toMatchObject({ runAsUser: 0, seccompProfile: { type: "RuntimeDefault" } });
  });

  it("is not privileged: capabilities exactly as documented, no SYS_ADMIN, all else dropped", () => {
    const documented = markdownTable(docs, "### Capabilities").map((row) => ({
      capability: row[0],
      container: row[1],
    }));
    expect(documented.length).toBeGreaterThan(0);
    const granted = allContainers().flatMap((c) =>
      (c.securityContext?.capabilities?.add ?? []).map((capability) => ({ capability, container: c.name })),
    );
    const order = (xs: { capability?: string; container?: string }[]) =>
      xs.map((x) => `${x.container}:${x.capability}`).sort();
    expect(order(granted)).toEqual(order(documented));
    for (const c of allContainers()) {
      expect(c.securityContext, c.name).toMatchObject({
        privileged: false,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ["ALL"] },
      });
      expect(c.securityContext?.capabilities?.add ?? [], c.name).not.toContain("SYS_ADMIN");
      expect(c.securityContext?.capabilities?.add ?? [], c.name).not.toContain("ALL");
    }
    expect(daemonSet().spec.template.spec.securityContext?.privileged).toBeUndefined();
  });

  it("mounts host paths exactly as documented", () => {
    const pod = daemonSet().spec.template.spec;
    const documented = markdownTable(docs, "### Host paths").map(
      ([host, mount, container]) => `${container} ${host} -> ${mount}`,
    );
    const mounted = allContainers().flatMap((c) =>
      (c.volumeMounts ?? []).flatMap((m) => {
        const host = pod.volumes?.find((v) => v.name === m.name)?.hostPath?.path;
        return host ? [`${c.name} ${host} -> ${m.mountPath}`] : [];
      }),
    );
    expect(mounted.sort()).toEqual(documented.sort());
    // Every hostPath volume is mounted somewhere (none lies around unused).
    const used = new Set(allContainers().flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name)));
    for (const v of pod.volumes ?? []) if (v.hostPath) expect(used.has(v.name), v.name).toBe(true);
  });

  it("passes --node and --address from the downward API, and flags the command accepts", () => {
    const c = agent();
    expect(c.args?.slice(0, 2)).toEqual(["agent", "node"]);
    expectFlagsAccepted("node", c.args?.slice(2) ?? []);
    expect(c.args).toContain("--node=$(NODE_NAME)");
    expect(c.args).toContain("--address=$(HOST_IP)");
    expect(c.args).toContain("--source=kubernetes");
    expect(envFrom(c, "NODE_NAME")).toBe("spec.nodeName");
    expect(envFrom(c, "HOST_IP")).toBe("status.hostIP");
  });

  it("serves the CNI socket where the plugin looks by default, on a host path", () => {
    const c = agent();
    const socket = c.args?.find((a) => a.startsWith("--cni-socket="))?.split("=")[1];
    expect(socket).toBe(DEFAULT_AGENT_SOCKET);
    const mount = c.volumeMounts?.find((m) => m.mountPath === dirname(DEFAULT_AGENT_SOCKET));
    const volume = daemonSet().spec.template.spec.volumes?.find((v) => v.name === mount?.name);
    // Same path on the host: the plugin runs there.
    expect(volume?.hostPath?.path).toBe(dirname(DEFAULT_AGENT_SOCKET));
  });

  it("declares the metrics port it serves, and the BFD port", () => {
    const c = agent();
    const port = Number(c.args?.find((a) => a.startsWith("--metrics-port="))?.split("=")[1]);
    expect(c.ports).toEqual(
      expect.arrayContaining([
        { name: "metrics", containerPort: port, protocol: "TCP" },
        { name: "bfd", containerPort: 3784, protocol: "UDP" },
      ]),
    );
    // Metrics only on the node's own address (hostNetwork), probed where they are served.
    expect(c.args).toContain("--metrics-address=$(HOST_IP)");
    expect(c.readinessProbe?.httpGet).toEqual({ path: "/readyz", port });
  });
});

describe("the agent config", () => {
  it("parses as an agent config with every clusterNetwork list filled in", () => {
    const cm = find<ConfigMapObject>(base, "ConfigMap", "static-egress-config");
    const config = parseAgentConfig(cm.data?.["config.yaml"] ?? "", "ConfigMap static-egress-config");
    expect(config.clusterNetwork.podCIDRs.length).toBeGreaterThan(0);
    expect(config.clusterNetwork.serviceCIDRs.length).toBeGreaterThan(0);
    expect(config.clusterNetwork.nodeCIDRs.length).toBeGreaterThan(0);
  });

  it("is mounted where --config points, in the controller and the node agent", () => {
    for (const [kind, name] of [
      ["Deployment", "static-egress-controller"],
      ["DaemonSet", "static-egress-node-agent"],
    ] as const) {
      const w = find<Workload>(base, kind, name);
      const volume = w.spec.template.spec.volumes?.find((v) => v.configMap?.name === "static-egress-config");
      const c = w.spec.template.spec.containers[0] as Container;
      const mount = c.volumeMounts?.find((m) => m.name === volume?.name);
      expect(mount?.readOnly, name).toBe(true);
      expect(c.args, name).toContain(`--config=${mount?.mountPath}/config.yaml`);
    }
  });
});

describe("the install-cni init container", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "se-deploy-"));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const init = () =>
    find<Workload>(base, "DaemonSet", "static-egress-node-agent").spec.template.spec.initContainers?.find(
      (c) => c.name === "install-cni",
    ) as Container;

  /** A stand-in for the image's /app whose CLI records how it was run. */
  function fakeApp(path: string, buildId: string): void {
    mkdirSync(join(path, "dist/cli"), { recursive: true });
    mkdirSync(join(path, "dist/cni"), { recursive: true });
    mkdirSync(join(path, "node_modules/dep"), { recursive: true });
    writeFileSync(join(path, "BUILD_ID"), `${buildId}\n`);
    writeFileSync(join(path, "package.json"), "{}\n");
    writeFileSync(join(path, "node_modules/dep/index.js"), "");
    writeFileSync(join(path, "dist/cni/main.js"), "");
    writeFileSync(
      join(path, "dist/cli/main.js"),
      `require("node:fs").writeFileSync(process.env.RECORD, JSON.stringify({ execPath: process.execPath, argv: process.argv.slice(2) }));\n`,
    );
  }

  async function runScript(app: string, extraEnv: Record<string, string> = {}): Promise<void> {
    const c = init();
    expect(c.command?.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? ""]));
    expect(Object.keys(env).sort()).toEqual(["APP_DIR", "CNI_BIN_DIR", "HOST_LIB_DIR"]);
    await runCommand("/bin/sh", ["-c", c.command?.[2] ?? ""], {
      timeoutMs: 20_000,
      env: {
        APP_DIR: app,
        HOST_LIB_DIR: join(dir, "host/opt/static-egress"),
        CNI_BIN_DIR: join(dir, "host/opt/cni/bin"),
        RECORD: join(dir, "record.json"),
        ...extraEnv,
      },
    });
  }

  it("mounts the host library at the same path, and runs `cni install` with flags it accepts", () => {
    const c = init();
    const libMount = c.volumeMounts?.find((m) => m.mountPath === "/opt/static-egress");
    const volume = find<Workload>(base, "DaemonSet", "static-egress-node-agent").spec.template.spec.volumes?.find(
      (v) => v.name === libMount?.name,
    );
    expect(volume?.hostPath?.path).toBe("/opt/static-egress");
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
    expect(env.HOST_LIB_DIR).toBe("/opt/static-egress");
    expect(c.volumeMounts?.map((m) => m.mountPath)).toContain(env.CNI_BIN_DIR);
    const call = /cni install (.*)$/m.exec(c.command?.[2] ?? "")?.[1] ?? "";
    expectFlagsAccepted("install", call.split(/\s+/));
  });

  it("copies a release to the host, runs `cni install` from it with host paths, reuses it, prunes old ones", async () => {
    const app = join(dir, "app");
    fakeApp(app, "0123456789abcdef");
    await runScript(app);
    const release = join(dir, "host/opt/static-egress/releases/0123456789abcdef");
    for (const f of [".complete", "package.json", "dist/cli/main.js", "dist/cni/main.js", "node_modules/dep/index.js"])
      expect(existsSync(join(release, f)), f).toBe(true);
    accessSync(join(release, "node"), constants.X_OK);
    const record = JSON.parse(readFileSync(join(dir, "record.json"), "utf8")) as { execPath: string; argv: string[] };
    // The wrapper will exec these paths on the host: the release's own Node, not the image's.
    expect(record).toEqual({
      execPath: join(release, "node"),
      argv: ["cni", "install", "--bin-dir", join(dir, "host/opt/cni/bin"), "--node", join(release, "node")],
    });

    // Same build again: the release is whole, nothing is copied over it.
    const copiedAt = statSync(join(release, "dist/cli/main.js")).mtimeMs;
    await writeFile(join(app, "dist/cli/main.js"), "changed but same build id");
    await runScript(app);
    expect(statSync(join(release, "dist/cli/main.js")).mtimeMs).toBe(copiedAt);

    // A new build replaces it.
    const next = join(dir, "app2");
    fakeApp(next, "fedcba9876543210");
    await runScript(next);
    expect(readdirSync(join(dir, "host/opt/static-egress/releases"))).toEqual(["fedcba9876543210"]);
  });

  it("refuses a build id that is not a hex string", async () => {
    const app = join(dir, "bad");
    fakeApp(app, "../escape");
    const err = await runScript(app).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toContain("bad build id");
    expect(existsSync(join(dir, "host/opt/static-egress/escape"))).toBe(false);
  });
});

describe("the Dockerfile", () => {
  const instructions = dockerInstructions(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
  const stages = (() => {
    const out: { from: string; name: string | undefined; body: { op: string; rest: string }[] }[] = [];
    for (const i of instructions) {
      if (i.op === "FROM") {
        const [from, as, name] = i.rest.split(/\s+/);
        out.push({ from: from as string, name: as?.toUpperCase() === "AS" ? name : undefined, body: [] });
      } else out.at(-1)?.body.push(i);
    }
    return out;
  })();
  const runtime = () => stages.at(-1) as (typeof stages)[number];
  const workdir = (stage: (typeof stages)[number]) => stage.body.filter((i) => i.op === "WORKDIR").at(-1)?.rest;

  it("is multi-stage on the Node.js major the scripts, the buildah image and package.json's engines use", () => {
    const version = /^STATIC_EGRESS_NODE_VERSION=(\d+)\.\d+\.\d+$/m.exec(
      readFileSync(join(ROOT, "scripts/node-env.sh"), "utf8"),
    )?.[1];
    expect(version).toBeDefined();
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      engines: { node: string };
      devDependencies: Record<string, string>;
    };
    expect(pkg.engines.node).toBe(`>=${version}`);
    expect(pkg.devDependencies["@types/node"]).toMatch(new RegExp(`^\\^${version}\\.`));
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages.filter((x) => x.name !== "cni-shim")) expect(s.from).toBe(`node:${version}-bookworm-slim`);
  });

  it("builds the CNI shim with the Go toolchain cni-shim/go.mod pins", () => {
    const toolchain = /^toolchain go(\S+)$/m.exec(readFileSync(join(ROOT, "cni-shim/go.mod"), "utf8"))?.[1];
    expect(toolchain).toBeDefined();
    expect(stages.find((s) => s.name === "cni-shim")?.from).toBe(`golang:${toolchain}-bookworm`);
  });

  it("copies only what exists and is in the build context; --from names an earlier stage's output", () => {
    const ignore = readFileSync(join(ROOT, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    for (const [index, stage] of stages.entries()) {
      for (const copy of stage.body.filter((i) => i.op === "COPY")) {
        const tokens = copy.rest.split(/\s+/);
        const from = tokens.find((t) => t.startsWith("--from="))?.slice("--from=".length);
        const sources = tokens.filter((t) => !t.startsWith("--")).slice(0, -1);
        expect(sources.length, copy.rest).toBeGreaterThan(0);
        if (from === undefined) {
          for (const s of sources) {
            expect(existsSync(join(ROOT, s)), `COPY ${s}: missing`).toBe(true);
            expect(dockerIgnored(s, ignore), `COPY ${s}: excluded by .dockerignore`).toBe(false);
          }
          continue;
        }
        const source = stages.slice(0, index).find((s) => s.name === from);
        expect(source, `COPY --from=${from}: no earlier stage of that name`).toBeDefined();
        if (!source) continue;
        // What that stage has in its WORKDIR: files it copied, node_modules (npm ci), dist (npm run build), files a RUN writes.
        const dir = workdir(source) ?? "/";
        if (source.name === "cni-shim") {
          // The Go stage produces what `go build -o` names.
          const outputs = source.body
            .filter((i) => i.op === "RUN")
            .flatMap((i) => [...i.rest.matchAll(/\bgo build\b.*-o\s+(\S+)/g)].map((m) => m[1] as string));
          for (const s of sources) expect(outputs, `COPY --from=${from} ${s}`).toContain(relative(dir, s));
          continue;
        }
        const produced = new Set<string>(["node_modules", "dist"]);
        for (const i of source.body) {
          if (i.op === "COPY")
            i.rest
              .split(/\s+/)
              .filter((t) => !t.startsWith("--"))
              .slice(0, -1)
              .forEach((t) => produced.add(t));
          if (i.op === "RUN") for (const m of i.rest.matchAll(/>\s*([\w.-]+)/g)) produced.add(m[1] as string);
        }
        expect(
          source.body.some((i) => i.op === "RUN" && /\bnpm ci\b/.test(i.rest)),
          "npm ci",
        ).toBe(true);
        expect(
          source.body.some(
            (i) => i.op === "RUN" && /\bnpm run build\b/.test(i.rest) && /npm prune --omit=dev/.test(i.rest),
          ),
          "build, then prune",
        ).toBe(true);
        for (const s of sources) expect(produced.has(relative(dir, s)), `COPY --from=${from} ${s}`).toBe(true);
      }
    }
  });

  it("enters at dist/cli/main.js, which `npm run build` makes from src/cli/main.ts (tsc, then one bundled file)", () => {
    const entrypoint = JSON.parse(
      runtime()
        .body.filter((i) => i.op === "ENTRYPOINT")
        .at(-1)?.rest ?? "null",
    ) as string[];
    expect(entrypoint).toEqual(["node", `${workdir(runtime())}/dist/cli/main.js`]);
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
      bin: Record<string, string>;
    };
    expect(pkg.scripts.build).toBe("tsc -p tsconfig.build.json && node scripts/bundle.ts");
    expect(pkg.bin["static-egress"]).toBe("dist/cli/main.js");
    const build = parse(readFileSync(join(ROOT, "tsconfig.build.json"), "utf8")) as {
      compilerOptions: { rootDir: string; outDir: string };
    };
    expect(build.compilerOptions).toMatchObject({ rootDir: "src", outDir: "dist" });
    expect(existsSync(join(ROOT, "src/cli/main.ts"))).toBe(true);
    // The CNI plugin's entry, which the wrapper runs.
    expect(existsSync(join(ROOT, "src/cni/main.ts"))).toBe(true);
  });

  it("installs a Debian package for every command the agents exec", () => {
    const packageOf: Record<string, string> = {
      nft: "nftables",
      ip: "iproute2",
      conntrack: "conntrack",
      sysctl: "procps",
      sh: "dash",
    };
    // Essential packages are in every Debian image: nothing to install.
    const essential = new Set(["dash"]);
    const commands = new Set<string>();
    for (const f of sourceFiles(join(ROOT, "src")).filter((f) => !f.startsWith(join(ROOT, "src/lab/")))) {
      for (const m of readFileSync(f, "utf8").matchAll(/\.run\("([\w-]+)"/g)) commands.add(m[1] as string);
    }
    expect(commands.size).toBeGreaterThan(0);
    const install = runtime().body.find((i) => i.op === "RUN" && i.rest.includes("apt-get install"))?.rest ?? "";
    const installed =
      (install.split("apt-get install")[1] ?? "")
        .split("&&")[0]
        ?.split(/\s+/)
        .filter((t) => t !== "" && !t.startsWith("-")) ?? [];
    for (const c of commands) {
      expect(packageOf[c], `which Debian package provides \`${c}\`?`).toBeDefined();
      if (!essential.has(packageOf[c]!)) expect(installed, c).toContain(packageOf[c]);
    }
  });

  it("runs as a numeric non-root user, the controller's; the node agent overrides to root", () => {
    const user =
      runtime()
        .body.filter((i) => i.op === "USER")
        .at(-1)?.rest ?? "";
    expect(user).toMatch(/^[1-9]\d*:\d+$/);
    const [uid, gid] = user.split(":").map(Number);
    expect(
      find<Workload>(base, "Deployment", "static-egress-controller").spec.template.spec.securityContext,
    ).toMatchObject({ runAsUser: uid, runAsGroup: gid });
    expect(
      find<Workload>(base, "DaemonSet", "static-egress-node-agent").spec.template.spec.securityContext,
    ).toMatchObject({ runAsUser: 0 });
  });

  it("builds the same image as scripts/build-image.sh (buildah): packages, Node.js at /usr/local/bin, app dir, user, entrypoint", () => {
    const script = readFileSync(join(ROOT, "scripts/build-image.sh"), "utf8");
    const scriptPackages = (/^packages=\(([^)]*)\)/m.exec(script)?.[1] ?? "").split(/\s+/).filter(Boolean).sort();
    const install = runtime().body.find((i) => i.op === "RUN" && i.rest.includes("apt-get install"))?.rest ?? "";
    const dockerPackages = ((install.split("apt-get install")[1] ?? "").split("&&")[0] ?? "")
      .split(/\s+/)
      .filter((t) => t !== "" && !t.startsWith("-"))
      .sort();
    expect(scriptPackages.length).toBeGreaterThan(0);
    expect(scriptPackages).toEqual(dockerPackages);
    // node:*-bookworm-slim has node at /usr/local/bin/node (the gateway user data copies it from there).
    expect(script).toContain('"$node_dir/bin/node" /usr/local/bin/node');
    expect(script).toContain(`--workingdir ${workdir(runtime())}`);
    expect(script).toContain(
      `--user ${
        runtime()
          .body.filter((i) => i.op === "USER")
          .at(-1)?.rest
      }`,
    );
    const entrypoint =
      runtime()
        .body.filter((i) => i.op === "ENTRYPOINT")
        .at(-1)?.rest ?? "";
    expect(script).toContain(`--entrypoint '${entrypoint}'`);
    expect(script).toMatch(/buildah copy "\$ctr" "\$app\/package.json" "\$app\/BUILD_ID" \/app\//);
  });

  it("ships BUILD_ID in the app directory the init container reads", () => {
    const init = find<Workload>(base, "DaemonSet", "static-egress-node-agent").spec.template.spec.initContainers?.[0];
    expect(init?.env?.find((e) => e.name === "APP_DIR")?.value).toBe(workdir(runtime()));
    expect(runtime().body.some((i) => i.op === "COPY" && i.rest.includes("BUILD_ID"))).toBe(true);
  });

  it("the code the image runs imports only `dependencies` (safe after npm prune --omit=dev)", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
    };
    const used = importedPackages([join(ROOT, "src/cli/main.ts"), join(ROOT, "src/cni/main.ts")]);
    expect(used.size).toBeGreaterThan(0);
    expect([...used].filter((p) => !(p in pkg.dependencies))).toEqual([]);
  });
});

describe("applied to a real kube-apiserver with kubectl apply --server-side -k deploy", () => {
  // A control plane with nothing installed: this apply is what installs static-egress, every
  // kind of it (the workloads are admitted, not run: no controller manager, no kubelet).
  let cp: ControlPlane;
  let dir: string;
  const kubectl = async (args: string[]): Promise<string> =>
    (
      await runCommand(
        k8sBinary("kubectl"),
        ["--kubeconfig", join(dir, "kubeconfig"), "--cache-dir", join(dir, "cache"), ...args],
        { timeoutMs: 60_000 },
      )
    ).stdout;
  const deployDir = join(ROOT, "deploy");
  /** Every object of the install as the server has it: key -> resourceVersion. */
  const live = async (): Promise<Map<string, string>> => {
    const list = JSON.parse(await kubectl(["get", "-k", deployDir, "-o", "json"])) as {
      items: (K8sObject & { metadata: { resourceVersion: string } })[];
    };
    return new Map(list.items.map((o) => [key(o), o.metadata.resourceVersion]));
  };

  beforeAll(async () => {
    cp = await startControlPlane({ install: false, controllerManager: false });
    dir = await mkdtemp(join(tmpdir(), "se-deploy-kubectl-"));
    await writeFile(join(dir, "kubeconfig"), cp.adminKubeconfig(), { mode: 0o600 });
  }, 120_000);
  afterAll(async () => {
    await cp?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("accepts every object of every kind; the CRDs serve our kinds; the config and namespace are as rendered", async () => {
    const out = await kubectl(["apply", "--server-side", "-k", deployDir]);
    const lines = out.trim().split("\n");
    expect(
      lines.every((l) => l.endsWith(" serverside-applied")),
      out,
    ).toBe(true);
    expect(lines).toHaveLength(install.length);
    // Everything the install has is on the server, every kind of it.
    const objects = await live();
    expect([...objects.keys()].sort()).toEqual(install.map(key).sort());
    expect([...new Set(install.map((o) => o.kind))].sort()).toEqual(
      [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
      ].sort(),
    );

    await kubectl([
      "wait",
      "--for=condition=Established",
      "--timeout=30s",
      ...SERVED_KINDS.map((k) => `customresourcedefinition/${crdName(k)}`),
    ]);
    const kinds = (await kubectl(["api-resources", "--api-group", GROUP, "--no-headers"]))
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s+/).at(-1));
    expect(kinds.sort()).toEqual(ALL_KINDS.map((k) => k.kind).sort());
    const cm = JSON.parse(
      await kubectl(["get", "configmap", "static-egress-config", "-n", NAMESPACE, "-o", "json"]),
    ) as ConfigMapObject;
    expect(cm.data).toEqual(find<ConfigMapObject>(install, "ConfigMap", "static-egress-config").data);
    const ns = JSON.parse(await kubectl(["get", "namespace", NAMESPACE, "-o", "json"])) as K8sObject;
    expect(ns.metadata.labels).toMatchObject({ "pod-security.kubernetes.io/enforce": "privileged" });
  });

  it("applied again changes nothing, and kubectl diff shows no difference", async () => {
    const before = await live();
    await kubectl(["apply", "--server-side", "-k", deployDir]);
    expect(await live()).toEqual(before);
    // Exit 0 and no output: the server's dry-run of the install equals what it has.
    expect(await kubectl(["diff", "--server-side", "-k", deployDir])).toBe("");
  });
});
