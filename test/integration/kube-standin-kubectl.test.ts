// The Kubernetes API stand-in driven by Debian's real kubectl (client 1.32).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKubeStandin, type KubeStandin } from "../../src/lab/kube-standin/index.js";
import { CommandError, runCommand } from "../../src/util/exec.js";

const KUBECTL = "/usr/bin/kubectl";

const NAMESPACE = `apiVersion: v1
kind: Namespace
metadata:
  name: team-a
`;

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team-a
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: main
    image: nginx:1.27
`;

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: egresspolicies.staticegress.io
spec:
  group: staticegress.io
  scope: Namespaced
  names: {plural: egresspolicies, singular: egresspolicy, kind: EgressPolicy, shortNames: [egp], categories: [staticegress]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Gateway, type: string, jsonPath: .spec.gateway}
    - {name: Egress IPs, type: string, jsonPath: .status.egressIPs}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [gateway]
            properties:
              gateway: {type: string, minLength: 1}
              destinations: {type: array, items: {type: string, format: cidr}}
              fallback: {type: string, enum: [drop, nodeIP], default: drop}
          status:
            type: object
            properties:
              egressIPs: {type: array, items: {type: string}}
              conditions:
                type: array
                items: {type: object, properties: {type: {type: string}, status: {type: string}}}
`;

const policy = (name: string, destination: string, extra = ""): string => `apiVersion: staticegress.io/v1alpha1
kind: EgressPolicy
metadata:
  name: ${name}
  namespace: team-a
spec:
  gateway: gw-1
  destinations: ["${destination}"]
${extra}`;

/** Parsed JSON, read loosely in assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

let standin: KubeStandin;
let dir: string;
const children: ChildProcess[] = [];

async function kubectl(args: string[], input?: string): Promise<string> {
  const { stdout } = await runCommand(KUBECTL, ["--kubeconfig", join(dir, "kubeconfig"), "--cache-dir", join(dir, "cache"), ...args], {
    timeoutMs: 20_000,
    ...(input !== undefined ? { input } : {}),
  });
  return stdout;
}

/** Runs kubectl expecting it to fail; returns what it printed on stderr. */
async function kubectlFails(args: string[], input?: string): Promise<string> {
  try {
    await kubectl(args, input);
  } catch (e) {
    if (e instanceof CommandError) return e.stderr;
    throw e;
  }
  throw new Error(`kubectl ${args.join(" ")} succeeded unexpectedly`);
}

/** A long-running kubectl (get --watch) whose output lines are collected as they come. */
function kubectlStream(args: string[]): { lines: string[]; waitFor: (pred: (l: string) => boolean, what: string) => Promise<string>; stop: () => void } {
  const child = spawn(KUBECTL, ["--kubeconfig", join(dir, "kubeconfig"), "--cache-dir", join(dir, "cache"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let partial = "";
  child.stdout?.on("data", (b: Buffer) => {
    partial += b.toString();
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts.filter((l) => l.trim() !== ""));
    waiters.splice(0).forEach((w) => w());
  });
  const waitFor = (pred: (l: string) => boolean, what: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; got:\n${lines.join("\n")}`)), 10_000);
      const check = (): void => {
        const hit = lines.find(pred);
        if (hit !== undefined) {
          clearTimeout(timer);
          resolve(hit);
        } else waiters.push(check);
      };
      check();
    });
  return { lines, waitFor, stop: () => child.kill("SIGKILL") };
}

beforeAll(async () => {
  standin = await startKubeStandin();
  dir = await mkdtemp(join(tmpdir(), "se-kubectl-"));
  await writeFile(join(dir, "kubeconfig"), standin.kubeconfig());
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.pid !== undefined) c.kill("SIGKILL");
  await standin?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("kubectl against the stand-in", () => {
  it("discovers the server and its resources", async () => {
    expect(await kubectl(["version", "-o", "json"])).toContain('"gitVersion": "v1.32.0-standin"');
    const resources = await kubectl(["api-resources", "--no-headers"]);
    expect(resources).toMatch(/^pods\s+po\s+v1\s+true\s+Pod$/m);
    expect(resources).toMatch(/^leases\s+coordination.k8s.io\/v1\s+true\s+Lease$/m);
    expect(resources).toMatch(/^customresourcedefinitions\s+crd,crds\s+apiextensions.k8s.io\/v1\s+false\s+CustomResourceDefinition$/m);
  });

  it("creates a namespace, a pod, a CRD and a custom resource from files", async () => {
    expect(await kubectl(["create", "-f", "-"], NAMESPACE)).toContain("namespace/team-a created");
    expect(await kubectl(["create", "-f", "-"], POD)).toContain("pod/web created");
    expect(await kubectl(["create", "-f", "-"], CRD)).toContain("customresourcedefinition.apiextensions.k8s.io/egresspolicies.staticegress.io created");
    expect(await kubectl(["create", "-f", "-"], policy("bank", "203.0.113.0/24"))).toContain("egresspolicy.staticegress.io/bank created");
    expect(await kubectl(["api-resources", "--api-group", "staticegress.io", "--no-headers"])).toMatch(/^egresspolicies\s+egp\s+staticegress.io\/v1alpha1\s+true\s+EgressPolicy$/m);

    const obj = JSON.parse(await kubectl(["get", "egp", "bank", "-n", "team-a", "-o", "json"])) as Record<string, Json>;
    expect(obj.spec).toEqual({ gateway: "gw-1", destinations: ["203.0.113.0/24"], fallback: "drop" });
    expect(obj.metadata).toMatchObject({ name: "bank", namespace: "team-a", generation: 1 });
    expect(obj.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    const pod = JSON.parse(await kubectl(["get", "pod", "web", "-n", "team-a", "-o", "json"])) as Record<string, Json>;
    expect(pod.status.phase).toBe("Pending");
    expect(pod.spec.containers[0].image).toBe("nginx:1.27");
  });

  it("rejects an invalid custom resource with a message naming the field", async () => {
    const invalid = await kubectlFails(["create", "-f", "-"], policy("bad", "not-a-cidr"));
    expect(invalid).toContain('The EgressPolicy "bad" is invalid: spec.destinations[0]: Invalid value: "not-a-cidr": spec.destinations[0] in body must be of type cidr: "not-a-cidr"');
    const unknown = await kubectlFails(["create", "-f", "-"], policy("bad", "10.0.0.0/8", "  surprise: 1\n"));
    expect(unknown).toContain('strict decoding error: unknown field "spec.surprise"');
  });

  it("prints custom resources with their additionalPrinterColumns", async () => {
    await kubectl(["patch", "egp", "bank", "-n", "team-a", "--subresource=status", "--type=merge", "-p", '{"status":{"egressIPs":["198.51.100.7"],"conditions":[{"type":"Ready","status":"True"}]}}']);
    const table = await kubectl(["get", "egp", "-n", "team-a"]);
    const [header, row] = table.trim().split("\n");
    expect(header?.split(/\s{2,}/)).toEqual(["NAME", "GATEWAY", "EGRESS IPS", "READY", "AGE"]);
    expect(row).toMatch(/^bank\s+gw-1\s+\["198\.51\.100\.7"\]\s+True\s+\d+s$/);
    expect(await kubectl(["get", "pods", "-A", "-o", "wide"])).toMatch(/^team-a\s+web\s+0\/1\s+Pending\s+0\s+\d+s\s+<none>\s+node-1\s/m);
    expect(await kubectl(["get", "crd"])).toMatch(/^egresspolicies\.staticegress\.io\s+\d{4}-\d\d-\d\dT/m);
  });

  it("labels, selects and applies", async () => {
    expect(await kubectl(["label", "pod", "web", "-n", "team-a", "tier=front"])).toContain("pod/web labeled");
    expect(await kubectl(["get", "pods", "-n", "team-a", "-l", "tier in (front,back),app", "-o", "name"])).toBe("pod/web\n");
    expect(await kubectl(["get", "pods", "-A", "--field-selector", "spec.nodeName=node-1", "-o", "name"])).toBe("pod/web\n");
    expect(await kubectl(["get", "pods", "-A", "--field-selector", "spec.nodeName=node-2", "-o", "name"])).toBe("");
    expect(await kubectlFails(["get", "pods", "--field-selector", "spec.bogus=1"])).toContain("field label not supported: spec.bogus");

    expect(await kubectl(["apply", "-f", "-"], policy("applied", "10.0.0.0/8"))).toContain("egresspolicy.staticegress.io/applied created");
    expect(await kubectl(["apply", "-f", "-"], policy("applied", "10.1.0.0/16"))).toContain("egresspolicy.staticegress.io/applied configured");
    const applied = JSON.parse(await kubectl(["get", "egp", "applied", "-n", "team-a", "-o", "json"])) as Record<string, Json>;
    expect(applied.spec.destinations).toEqual(["10.1.0.0/16"]);
    expect(applied.metadata.generation).toBe(2);

    // Built-in kinds get a strategic merge patch from kubectl apply ($setElementOrder, merge by container name).
    const appliedPod = POD.replace("name: web", "name: applied-pod").replace("nodeName: node-1", "nodeName: node-3");
    await kubectl(["apply", "-f", "-"], appliedPod);
    expect(await kubectl(["apply", "-f", "-"], appliedPod.replace("nginx:1.27", "nginx:1.28"))).toContain("pod/applied-pod configured");
    const pod = JSON.parse(await kubectl(["get", "pod", "applied-pod", "-n", "team-a", "-o", "json"])) as Record<string, Json>;
    expect(pod.spec.containers.map((c: Json) => `${c.name}=${c.image}`)).toEqual(["main=nginx:1.28"]);
    expect(pod.metadata.annotations).toHaveProperty(["kubectl.kubernetes.io/last-applied-configuration"]);
  });

  it("streams changes to `get --watch` until killed", async () => {
    const w = kubectlStream(["get", "egp", "-n", "team-a", "--watch", "--output-watch-events"]);
    try {
      await w.waitFor((l) => /^ADDED\s+bank\s+gw-1/.test(l), "the initial row");
      await kubectl(["label", "egp", "bank", "-n", "team-a", "watched=yes"]);
      await w.waitFor((l) => /^MODIFIED\s+bank\s/.test(l), "the label change");
      await kubectl(["delete", "egp", "bank", "-n", "team-a"]);
      await w.waitFor((l) => /^DELETED\s+bank\s/.test(l), "the deletion");
      expect(w.lines[0]?.split(/\s{2,}/)).toEqual(["EVENT", "NAME", "GATEWAY", "EGRESS IPS", "READY", "AGE"]);
    } finally {
      w.stop();
    }
  });

  it("deletes, and waits for finalizers before the object goes", async () => {
    expect(await kubectl(["delete", "pod", "web", "-n", "team-a"])).toContain('pod "web" deleted');
    expect(await kubectlFails(["get", "pod", "web", "-n", "team-a"])).toContain('Error from server (NotFound): pods "web" not found');

    await kubectl(["create", "-f", "-"], policy("held", "10.0.0.0/8").replace("  namespace: team-a\n", "  namespace: team-a\n  finalizers: [staticegress.io/cleanup]\n"));
    await kubectl(["delete", "egp", "held", "-n", "team-a", "--wait=false"]);
    const held = JSON.parse(await kubectl(["get", "egp", "held", "-n", "team-a", "-o", "json"])) as Record<string, Json>;
    expect(held.metadata.deletionTimestamp).toMatch(/Z$/);
    await kubectl(["patch", "egp", "held", "-n", "team-a", "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]']);
    expect(await kubectlFails(["get", "egp", "held", "-n", "team-a"])).toContain("NotFound");
  });

  it("accepts the protobuf bodies of kubectl's generator commands", async () => {
    expect(await kubectl(["create", "namespace", "gen"])).toContain("namespace/gen created");
    await kubectl(["create", "configmap", "cfg", "-n", "gen", "--from-literal=mode=fast"]);
    await kubectl(["create", "secret", "generic", "sec", "-n", "gen", "--from-literal=token=s3cret"]);
    await kubectl(["create", "service", "clusterip", "svc", "-n", "gen", "--tcp=80:8080"]);
    const cfg = JSON.parse(await kubectl(["get", "configmap", "cfg", "-n", "gen", "-o", "json"])) as Record<string, Json>;
    expect(cfg.data).toEqual({ mode: "fast" });
    const sec = JSON.parse(await kubectl(["get", "secret", "sec", "-n", "gen", "-o", "json"])) as Record<string, Json>;
    expect(Buffer.from(sec.data.token as string, "base64").toString()).toBe("s3cret");
    const svc = JSON.parse(await kubectl(["get", "service", "svc", "-n", "gen", "-o", "json"])) as Record<string, Json>;
    expect(svc.spec).toMatchObject({ type: "ClusterIP", selector: { app: "svc" }, ports: [{ port: 80, targetPort: 8080, protocol: "TCP" }] });
    expect(svc.spec.clusterIP).toMatch(/^10\.96\./);
  });

  it("stops serving a resource when its CRD is deleted", async () => {
    await kubectl(["delete", "crd", "egresspolicies.staticegress.io"]);
    // kubectl's discovery cache still maps egp, so the server's 404 is what it reports (as with a real cluster).
    expect(await kubectlFails(["get", "egp", "-n", "team-a"])).toContain("the server could not find the requested resource");
    expect(await kubectl(["api-resources", "--api-group", "staticegress.io", "--no-headers"])).toBe("");
    expect(await kubectl(["delete", "namespace", "team-a"])).toContain('namespace "team-a" deleted');
    expect(await kubectl(["get", "ns", "-o", "name"])).not.toContain("team-a");
  });
});
