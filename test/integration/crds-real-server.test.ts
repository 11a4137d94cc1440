import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { SpecValidator } from "../../src/api/v1alpha1/validate.js";
import { Controller } from "../../src/controller/controller.js";
import { KubeSource } from "../../src/kube/source.js";
import { k8sBinary } from "../../src/lab/control-plane/index.js";
import { waitFor } from "../../src/lab/lab.js";
import { packageRoot } from "../../src/lab/paths.js";
import { silentLogger } from "../../src/util/log.js";
import { REFUSALS } from "../support/crd-refusals.js";
import { startTestKube, type TestKube } from "../support/kube.js";

// The CRDs of deploy/crds as a real kube-apiserver sees them, through kubectl: what it refuses at
// once (schema, list types, CEL rules), naming the same fields our validator names; pruning and
// defaults; explain, server-side apply, diff; and `kubectl wait` on the status a controller (its
// own service-account token) writes. `kubectl auth can-i` for our service accounts is covered by
// test/integration/access.test.ts.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const root = packageRoot();
const API_VERSION = "staticegress.io/v1alpha1";
const EXAMPLES = join(root, "examples", "policies.yaml");

let api: TestKube;
let dir: string;
let kubeconfig: string;
let controller: Controller | undefined;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs kubectl as the admin (asynchronously: the fault proxy it talks to runs in this process). */
function kubectl(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      k8sBinary("kubectl"),
      ["--kubeconfig", kubeconfig, ...args],
      { timeout: 90_000 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === "number"
            ? (err as { code: number }).code
            : -1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(input ?? "");
  });
}

async function kubectlOk(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function object(kind: string, name: string, spec: Json, namespace = "crd-checks"): Json {
  return { apiVersion: API_VERSION, kind, metadata: { name, ...(kind === "EgressPolicy" ? { namespace } : {}) }, spec };
}

/**
 * The fields a refusal names: `The X "n" is invalid: <field>: ...` or, for several, one
 * `* <field>: ...` line each. `<nil>` is the server's note that it skipped the CEL rules because
 * of an error it already reported (a missing or mistyped field).
 */
function fieldsNamed(stderr: string): string[] {
  const fields = [...stderr.matchAll(/(?:is invalid: |^\* )(\S+?): /gm)].map((m) => m[1]!).filter((f) => f !== "<nil>");
  return [...new Set(fields)].sort();
}

beforeAll(async () => {
  api = await startTestKube();
  dir = mkdtempSync(join(tmpdir(), "crds-real-server-"));
  kubeconfig = join(dir, "admin.kubeconfig");
  writeFileSync(kubeconfig, api.adminKubeconfig());
  // The CRDs as a user installs them. (The control plane's own install sends them through the
  // client library's typed CRD model, which drops the x-kubernetes-* keywords below `properties`:
  // no list types, no CEL rules there.)
  await kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", join(root, "deploy", "crds")]);
  await api.ensureNamespace("crd-checks");
  await api.ensureNamespace("payments");
  // The API server serves the updated schema once its CRD handler has seen the update.
  const probe = JSON.stringify(object("EgressPolicy", "probe", { ...REFUSALS[0]!.spec }));
  await waitFor(
    async () => (await kubectl(["create", "--dry-run=server", "-f", "-"], probe)).code !== 0,
    20_000,
    "the CRDs' list types are not enforced",
  );
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the CRDs on a real API server", () => {
  it("are deploy/crds as committed: list types and CEL rules included", async () => {
    for (const plural of ["egressgateways", "egresspolicies", "clusteregresspolicies"]) {
      const live = JSON.parse(await kubectlOk(["get", "crd", `${plural}.staticegress.io`, "-o", "json"])) as Json;
      const committed = parse(readFileSync(join(root, "deploy", "crds", `${plural}.yaml`), "utf8")) as Json;
      expect(live.spec.versions[0].schema).toEqual(committed.spec.versions[0].schema);
    }
  });

  it.each(REFUSALS.map((r, i) => [r.kind, r.name, i] as const))(
    "kubectl create refuses a %s with %s, naming the fields our validator names",
    async (kind, _name, i) => {
      const r = REFUSALS[i]!;
      const name = `bad-${i}`;
      const run = await kubectl(["create", "-f", "-"], JSON.stringify(object(kind, name, structuredClone(r.spec))));
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`The ${kind} "${name}" is invalid`);
      expect(fieldsNamed(run.stderr)).toEqual([...r.fields].sort());
      const ours = [...new Set(new SpecValidator().check(kind, structuredClone(r.spec)).map((e) => e.field))].sort();
      expect(ours).toEqual(fieldsNamed(run.stderr));
    },
  );

  it("says what a CEL rule or a list type found, in the rule's own words", async () => {
    const refusal = async (name: string, i: number) =>
      (await kubectl(["create", "-f", "-"], JSON.stringify(object(REFUSALS[i]!.kind, name, REFUSALS[i]!.spec)))).stderr;
    expect(await refusal("dup", 0)).toContain('spec.egressIPs[2]: Duplicate value: "192.0.2.10"');
    expect(
      await refusal(
        "in",
        REFUSALS.findIndex((r) => r.name === "operator In without values"),
      ),
    ).toContain("spec.podSelector.matchExpressions[1].values: Required value: must be non-empty when operator is In");
    expect(
      await refusal(
        "src",
        REFUSALS.findIndex((r) => r.name === "two instance sources"),
      ),
    ).toContain("spec: Invalid value: exactly one instance source must be set (static, nodes or digitalocean)");
    expect(
      await refusal(
        "name",
        REFUSALS.findIndex((r) => r.name === "a repeated instance name"),
      ),
    ).toContain('spec.static.instances[1]: Duplicate value: {"name":"gw-a"}');
  });

  it("refuses unknown fields under kubectl's strict validation (its default), and prunes them when asked not to validate", async () => {
    const spec = {
      podSelector: {},
      gatewayName: "shared",
      egressIPs: ["192.0.2.10"],
      destinationCIDR: ["198.51.100.0/24"],
    };
    for (const flags of [[], ["--validate=strict"]]) {
      const run = await kubectl(["create", ...flags, "-f", "-"], JSON.stringify(object("EgressPolicy", "typo", spec)));
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('unknown field "spec.destinationCIDR"');
    }
    await kubectlOk(["create", "--validate=false", "-f", "-"], JSON.stringify(object("EgressPolicy", "typo", spec)));
    const gateway = {
      static: { instances: [{ name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10"], zone: "a" }] },
      colour: "blue",
    };
    await kubectlOk(
      ["create", "--validate=false", "-f", "-"],
      JSON.stringify(object("EgressGateway", "pruned", gateway)),
    );
    const policy = JSON.parse(
      await kubectlOk(["get", "egresspolicy", "typo", "-n", "crd-checks", "-o", "json"]),
    ) as Json;
    expect(policy.spec).not.toHaveProperty("destinationCIDR");
    const gw = JSON.parse(await kubectlOk(["get", "egressgateway", "pruned", "-o", "json"])) as Json;
    expect(gw.spec).not.toHaveProperty("colour");
    expect(gw.spec.static.instances[0]).toEqual({ name: "gw-a", address: "10.0.0.101", egressIPs: ["192.0.2.10"] });
    await kubectlOk(["delete", "egressgateway", "pruned"]);
  });

  it("fills in the documented defaults, the same ones our validator fills", async () => {
    const cases: [string, string, Json][] = [
      ["EgressPolicy", "defaults", { podSelector: {}, gatewayName: "shared", egressIPs: ["192.0.2.10"] }],
      [
        "EgressGateway",
        "defaults-nodes",
        { nodes: { nodeSelector: {} }, health: {}, grants: [{ namespaceSelector: {} }] },
      ],
      [
        "EgressGateway",
        "defaults-do",
        { digitalocean: { region: "ams3", size: "s-1vcpu-1gb", nodeTag: "k8s-worker" } },
      ],
    ];
    const filled = new Map<string, Json>();
    for (const [kind, name, spec] of cases) {
      await kubectlOk(["create", "-f", "-"], JSON.stringify(object(kind, name, spec)));
      const live = JSON.parse(
        await kubectlOk([
          "get",
          kind.toLowerCase(),
          name,
          ...(kind === "EgressPolicy" ? ["-n", "crd-checks"] : []),
          "-o",
          "json",
        ]),
      ) as Json;
      const ours = structuredClone(spec);
      expect(new SpecValidator().check(kind, ours)).toEqual([]);
      expect(live.spec).toEqual(ours);
      filled.set(name, live.spec);
    }
    expect(filled.get("defaults")).toMatchObject({ failurePolicy: "Drop", priority: 100 });
    expect(filled.get("defaults-nodes")).toMatchObject({
      nodes: { count: 2 },
      health: { intervalMs: 100, multiplier: 3, holdDownMs: 5_000 },
      grants: [{ outrankClusterPolicies: false }],
    });
    expect(filled.get("defaults-do")).toMatchObject({
      digitalocean: { image: "debian-12-x64", count: 2, allocateReservedIPs: true },
    });
    await kubectlOk(["delete", "egressgateway", "defaults-nodes", "defaults-do"]);
  });

  it("kubectl explain shows our descriptions", async () => {
    const text = (await kubectlOk(["explain", "egresspolicy.spec.egressIPs"])).replace(/\s+/g, " ");
    expect(text).toContain("FIELD: egressIPs <[]string>");
    expect(text).toContain(
      "This application's own egress IPs: one per gateway instance that may carry it, or several on one instance",
    );
    const failure = (await kubectlOk(["explain", "egresspolicy.spec.failurePolicy"])).replace(/\s+/g, " ");
    expect(failure).toContain("With no healthy instance: Drop (fail-closed) or leave with the node's IP");
    expect(failure).toMatch(/ENUM: Drop FallbackToNodeIP/);
  });
});

describe("examples/policies.yaml with kubectl", () => {
  const versions = async (file: string): Promise<string[]> => {
    const list = JSON.parse(await kubectlOk(["get", "-f", file, "-o", "json"])) as { items: Json[] };
    return list.items.map((o) => `${o.kind}/${o.metadata.name}@${o.metadata.resourceVersion}`);
  };

  it("apply --server-side creates every object, and a second apply changes nothing", async () => {
    const first = await kubectlOk(["apply", "--server-side", "-f", EXAMPLES]);
    expect(first.match(/serverside-applied/g)).toHaveLength(4);
    const before = await versions(EXAMPLES);
    const again = await kubectlOk(["apply", "--server-side", "-f", EXAMPLES]);
    expect(again.match(/serverside-applied/g)).toHaveLength(4);
    expect(await versions(EXAMPLES)).toEqual(before);
  });

  it("diff shows nothing for the applied file (exit 0) and the change for an edited one (exit 1)", async () => {
    const same = await kubectl(["diff", "--server-side", "-f", EXAMPLES]);
    expect(same).toMatchObject({ code: 0, stdout: "" });
    const edited = join(dir, "policies-edited.yaml");
    const text = readFileSync(EXAMPLES, "utf8");
    expect(text).toContain("priority: 200");
    writeFileSync(edited, text.replace("priority: 200", "priority: 300"));
    const changed = await kubectl(["diff", "--server-side", "-f", edited]);
    expect(changed.code).toBe(1);
    expect(changed.stdout).toMatch(/^-\s+priority: 200$/m);
    expect(changed.stdout).toMatch(/^\+\s+priority: 300$/m);
    expect(changed.stdout).not.toMatch(/egressIPs/); // only the change
    // diff changes nothing; and an edit the server refuses is an error (exit > 1), not a diff.
    expect(
      (JSON.parse(await kubectlOk(["get", "clusteregresspolicy", "exporters", "-o", "json"])) as Json).spec.priority,
    ).toBe(200);
    const checkoutIPs = "gatewayName: shared\n  egressIPs: [192.0.2.10, 192.0.2.20]";
    expect(text).toContain(checkoutIPs);
    writeFileSync(edited, text.replace(checkoutIPs, "gatewayName: shared\n  egressIPs: [192.0.2.10, 192.0.2.10]"));
    const refused = await kubectl(["diff", "--server-side", "-f", edited]);
    expect(refused.code).toBeGreaterThan(1);
    expect(refused.stdout).toBe("");
    // Server-side apply refuses a repeated item of a set before validation, in its own words.
    expect(refused.stderr).toContain('.spec.egressIPs: duplicate entries for key [="192.0.2.10"]');
  });

  it("kubectl wait --for=condition=Ready returns once the controller has judged a policy; what only the controller can check shows as Invalid", async () => {
    const c = await api.clientFor("controller");
    const network = { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] };
    controller = new Controller({
      client: c,
      source: new KubeSource(c, silentLogger),
      network,
      logger: silentLogger,
      resyncMs: 1_000,
      stepTimeoutMs: 1_000,
    });
    await controller.startInformers();
    controller.activate();
    const ready = await kubectlOk([
      "wait",
      "--for=condition=Ready",
      "--timeout=60s",
      "egresspolicy/checkout",
      "-n",
      "payments",
    ]);
    expect(ready).toContain("egresspolicy.staticegress.io/checkout condition met");
    await kubectlOk(["wait", "--for=condition=Ready", "--timeout=60s", "clusteregresspolicy/exporters"]);
    // Valid to the API server, but what only the controller can see across objects: 192.0.2.99 is
    // no egress IP of the gateway, and it is not granted to the namespace either.
    const judged = async (kind: string, name: string, namespace?: string): Promise<Json> => {
      const ns = namespace ? ["-n", namespace] : [];
      await kubectlOk(["wait", "--for=condition=Invalid", "--timeout=60s", `${kind}/${name}`, ...ns]);
      return (JSON.parse(await kubectlOk(["get", kind, name, ...ns, "-o", "json"])) as Json).status as Json;
    };
    await kubectlOk(
      ["create", "-f", "-"],
      JSON.stringify(
        object("ClusterEgressPolicy", "stray", {
          podSelector: {},
          namespaceSelector: {},
          gatewayName: "shared",
          egressIPs: ["192.0.2.99"],
        }),
      ),
    );
    await kubectlOk(
      ["create", "-f", "-"],
      JSON.stringify(
        object(
          "EgressPolicy",
          "stray",
          { podSelector: {}, gatewayName: "shared", egressIPs: ["192.0.2.99"] },
          "payments",
        ),
      ),
    );
    const cluster = await judged("clusteregresspolicy", "stray");
    const namespaced = await judged("egresspolicy", "stray", "payments");
    const invalid = (s: Json) => (s.conditions as Json[]).find((x) => x.type === "Invalid")!;
    expect(invalid(cluster)).toMatchObject({ status: "True", reason: "InvalidSpecEgressIPs" });
    expect(invalid(cluster).message).toContain(
      "spec.egressIPs[0]: 192.0.2.99 is not an egress IP of any instance of EgressGateway shared",
    );
    expect(invalid(namespaced).message).toContain(
      'spec.egressIPs[0]: 192.0.2.99 is not granted to namespace "payments"',
    );
    const status = namespaced;
    expect((status.conditions as Json[]).find((x) => x.type === "Ready")).toMatchObject({
      status: "False",
      reason: "Invalid",
    });
  });
});
