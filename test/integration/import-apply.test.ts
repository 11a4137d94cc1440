import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { packageRoot } from "../../src/lab/paths.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// `static-egress import --apply` as a person runs it (the built CLI: `npm run build` first),
// against a real kube-apiserver with our CRDs.
const root = packageRoot();
const cli = join(root, "dist", "cli", "main.js");
const testdata = join(root, "src", "importers", "testdata");
let api: TestKube;
let dir: string;
let kubeconfig: string;

const GROUP = { group: "staticegress.io", version: "v1alpha1" };

/**
 * Runs `import` on documents (written to a file); resolves to exit code, stdout, stderr. Not
 * spawnSync: the API server's fault proxy runs in this process and must keep answering.
 */
function importDocs(
  docs: string,
  ...flags: string[]
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = join(dir, `input-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, docs);
  const child = spawn(process.execPath, [cli, "import", "-f", file, "--kubeconfig", kubeconfig, ...flags], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

const cilium = readFileSync(join(testdata, "cilium-egress-sample.yaml"), "utf8");
/** nirmata's README example, in namespace shop (with its Service). */
const nirmata = readFileSync(join(testdata, "nirmata-readme.yaml"), "utf8")
  .replace("name: eip\n", "name: eip\n  namespace: shop\n")
  .replace("namespace: default", "namespace: shop");
const ciliumPolicy = (name: string, egressIP: string) =>
  stringify({
    apiVersion: "cilium.io/v2",
    kind: "CiliumEgressGatewayPolicy",
    metadata: { name },
    spec: {
      selectors: [{ podSelector: { matchLabels: { app: name } } }],
      destinationCIDRs: ["198.51.100.0/24"],
      egressGateway: { nodeSelector: { matchLabels: { gw: "a" } }, egressIP },
    },
  });

/** A list, retried while a loaded API server answers 429 ("storage is (re)initializing"). */
async function list(
  plural: string,
): Promise<{ items: { kind: string; metadata: { name: string; namespace?: string; resourceVersion: string } }[] }> {
  for (let i = 0; ; i++) {
    try {
      return (await api.admin.custom.listClusterCustomObject({ ...GROUP, plural })) as Awaited<ReturnType<typeof list>>;
    } catch (e) {
      if ((e as { code?: number }).code !== 429 || i > 10) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
async function all(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const plural of ["egressgateways", "clusteregresspolicies", "egresspolicies"]) {
    const list_ = await list(plural);
    for (const o of list_.items)
      out.set(
        `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ""}${o.metadata.name}`,
        o.metadata.resourceVersion,
      );
  }
  return out;
}

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` first`);
  api = await startTestKube();
  dir = mkdtempSync(join(tmpdir(), "se-import-"));
  kubeconfig = join(dir, "admin.kubeconfig");
  writeFileSync(kubeconfig, api.adminKubeconfig());
  await api.ensureNamespace("shop");
}, 120_000);

afterAll(async () => {
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("static-egress import --apply", () => {
  it("creates what it made from a Cilium and a nirmata object, as printed", async () => {
    const r = await importDocs(`${cilium}---\n${nirmata}`, "--apply");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(""); // with --apply, objects are printed only with -o
    const created = r.stderr.split("\n").filter((l) => l.startsWith("created"));
    expect(created.map((l) => l.split(/\s+/)[1]).sort()).toEqual([
      "ClusterEgressPolicy/egress-sample",
      expect.stringMatching(/^EgressGateway\/cilium-[0-9a-f]{10}$/),
      "EgressGateway/nirmata-gateway",
      "EgressPolicy/shop/eip",
    ]);
    const policy = (await api.admin.custom.getNamespacedCustomObject({
      ...GROUP,
      namespace: "shop",
      plural: "egresspolicies",
      name: "eip",
    })) as {
      spec: unknown;
      metadata: { managedFields: { manager: string; operation: string }[] };
    };
    expect(policy.spec).toMatchObject({
      podSelector: { matchLabels: { app: "guestbook", tier: "frontend" } },
      destinationCIDRs: ["4.2.2.2/32"],
      gatewayName: "nirmata-gateway",
      egressIPs: ["100.137.146.100"],
    });
    expect(policy.metadata.managedFields).toContainEqual(
      expect.objectContaining({ manager: "static-egress-import", operation: "Apply" }),
    );
  });

  it("a re-run changes nothing", async () => {
    const before = await all();
    const r = await importDocs(`${cilium}---\n${nirmata}`, "--apply");
    expect(r.code, r.stderr).toBe(0);
    expect(
      r.stderr
        .split("\n")
        .filter((l) => /^(created|configured|unchanged)/.test(l))
        .map((l) => l.split(/\s+/)[0]),
    ).toEqual(["unchanged", "unchanged", "unchanged", "unchanged"]);
    expect(await all()).toEqual(before);
  });

  it("one object the API server refuses (its namespace does not exist): reported with the server's reason, none applied", async () => {
    const before = await all();
    const ghost = nirmata.replace(/namespace: shop/g, "namespace: ghost");
    const r = await importDocs(`${ciliumPolicy("newcomer", "10.0.0.7")}---\n${ghost}`, "--apply");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^refused\s+EgressPolicy\/ghost\/eip: namespaces "ghost" not found \(HTTP 404\)$/m);
    expect(r.stderr).toMatch(/^nothing applied: the API server refused 1 of 4$/m);
    // The valid newcomer was not applied either: all or none.
    expect((await list("clusteregresspolicies")).items.map((p) => p.metadata.name)).not.toContain("newcomer");
    expect(await all()).toEqual(before);
  });

  it("an object of the same name that import did not make: refused, none applied; it stays as it was", async () => {
    // Someone made a policy of that name by hand: apply would merge into it (egressIPs is a set).
    await api.admin.custom.createClusterCustomObject({
      ...GROUP,
      plural: "clusteregresspolicies",
      body: {
        apiVersion: "staticegress.io/v1alpha1",
        kind: "ClusterEgressPolicy",
        metadata: { name: "taken" },
        spec: { podSelector: {}, namespaceSelector: {}, gatewayName: "x", egressIPs: ["10.0.0.8"] },
      },
    });
    const before = await all();
    const r = await importDocs(
      `${ciliumPolicy("taken", "10.0.0.9")}---\n${ciliumPolicy("fresh", "10.0.0.10")}`,
      "--apply",
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^refused\s+ClusterEgressPolicy\/taken: already exists, managed by [^,]+, not made by import/m,
    );
    expect(await all()).toEqual(before);
  });

  it("a field another manager took over on an imported object: the server's conflict names it, none applied", async () => {
    // Someone edits the imported policy's gateway with their own apply.
    await api.admin.custom.patchNamespacedCustomObject(
      {
        ...GROUP,
        namespace: "shop",
        plural: "egresspolicies",
        name: "eip",
        body: {
          apiVersion: "staticegress.io/v1alpha1",
          kind: "EgressPolicy",
          metadata: { name: "eip", namespace: "shop" },
          spec: { gatewayName: "other" },
        },
        fieldManager: "someone",
        force: true,
      },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
    const before = await all();
    const r = await importDocs(`${cilium}---\n${nirmata}`, "--apply");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^refused\s+EgressPolicy\/shop\/eip: \.spec\.gatewayName: conflict with "someone".*\(HTTP 409\)$/m,
    );
    expect(await all()).toEqual(before);
  });

  it("a source field that cannot be mapped: nothing applied, the refusal names it", async () => {
    const before = await all();
    const noIP = ciliumPolicy("no-ip", "10.0.0.11").replace(/ {4}egressIP: 10\.0\.0\.11\n/, "    interface: eth1\n");
    const r = await importDocs(`${noIP}---\n${ciliumPolicy("fine", "10.0.0.12")}`, "--apply");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^refused\s+CiliumEgressGatewayPolicy\/no-ip\s+spec\.egressGateway\.egressIP: missing: Cilium takes the first IPv4 of interface "eth1"/m,
    );
    expect(r.stderr).toMatch(/^nothing applied: 1 refused/m);
    expect(await all()).toEqual(before);
  });

  it("DigitalOcean's StaticRoutes (the operator's examples): applied as they are, a re-run changes nothing", async () => {
    const examples = readFileSync(join(root, "examples", "static-route-digitalocean.yaml"), "utf8");
    const names = [...examples.matchAll(/^ {2}name: (\S+)$/gm)].map((m) => m[1] as string);
    const first = await importDocs(examples, "--apply");
    expect(first.code, first.stderr).toBe(0);
    for (const name of names)
      expect(first.stderr).toMatch(new RegExp(`^created\\s+StaticRoute/${name.replace(/\./g, "\\.")}$`, "m"));
    const read = async () =>
      (await api.admin.custom.listClusterCustomObject({
        group: "networking.digitalocean.com",
        version: "v1",
        plural: "staticroutes",
      })) as {
        items: { metadata: { name: string; resourceVersion: string }; spec: unknown }[];
      };
    const applied = await read();
    expect(applied.items.map((o) => o.metadata.name).sort()).toEqual([...names].sort());
    const again = await importDocs(examples, "--apply");
    expect(again.code, again.stderr).toBe(0);
    expect((await read()).items.map((o) => o.metadata.resourceVersion)).toEqual(
      applied.items.map((o) => o.metadata.resourceVersion),
    );
  });
});
