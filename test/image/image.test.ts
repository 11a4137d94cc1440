// The container image, built here without a Docker engine or a registry (scripts/build-image.sh:
// debootstrap + Node.js from the npm registry + buildah) and run with podman: the controller, the
// node agent and the gateway agent start from it and answer /healthz, and the controller and the
// node agent become ready against the real kube-apiserver.
//
// Network: the containers share one network namespace that has only loopback (`--network none`).
// The API server (on this machine's loopback, behind the test's fault proxy) is reached through a
// unix socket: a relay in this process (socket -> API) and one in the containers' namespace
// (127.0.0.1:<port> -> socket), the lab's own relay (`static-egress lab relay`) from the image.
// Root only (podman, buildah); run by scripts/test.sh as its own tier (vitest.image.config.ts).
import { mkdtemp, rm, writeFile, chmod } from "node:fs/promises";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { startRelay } from "../../src/lab/relay.js";
import { runCommand } from "../../src/util/exec.js";
import { startTestKube, type TestKube } from "../support/kube.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const TAG = `localhost/static-egress:image-test-${process.pid}`;
const PREFIX = `se-image-${process.pid}`;
// Debian's podman with runc: crun refuses this machine's hybrid cgroup layout. The rlimits are set
// explicitly below the machine's own (podman's defaults for root are above them, and raising them is
// refused here).
const PODMAN_RUN = ["--runtime", "runc", "run", "-d", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

const podman = (args: string[], timeoutMs = 60_000) => runCommand("podman", args, { timeoutMs });

let kube: TestKube;
let dir: string;
let relay: Server | undefined;
let build: { seconds: number; sizeBytes: number; output: string };
const started: string[] = [];

async function run(
  name: string,
  args: string[],
  opts: { user?: string; caps?: string[]; network: string },
): Promise<void> {
  const full = `${PREFIX}-${name}`;
  started.push(full);
  await podman([
    ...PODMAN_RUN,
    "--name",
    full,
    "--network",
    opts.network,
    "--read-only",
    // As Kubernetes' readOnlyRootFilesystem: no writable /tmp or /run either (podman mounts them by default).
    "--read-only-tmpfs=false",
    "--security-opt",
    "no-new-privileges",
    "--cap-drop",
    "all",
    ...(opts.caps ?? []).flatMap((c) => ["--cap-add", c]),
    ...(opts.user ? ["--user", opts.user] : []),
    "-v",
    `${dir}:/se:ro`,
    TAG,
    ...args,
  ]);
}

/** GET http://127.0.0.1:<port><path> from inside the containers' network namespace (node in the image). */
async function get(port: number, path: string): Promise<{ status: number; body: string } | undefined> {
  const script =
    `fetch("http://127.0.0.1:${port}${path}").then(async (r) => console.log(JSON.stringify({ ` +
    `status: r.status, body: await r.text() })), () => console.log("null"))`;
  const { stdout } = await podman(["exec", `${PREFIX}-relay`, "node", "-e", script]);
  return JSON.parse(stdout.trim()) ?? undefined;
}

/** Polls until the endpoint answers 200, for at most `attempts` tries a second apart; the last answer. */
async function until200(
  port: number,
  path: string,
  attempts = 90,
): Promise<{ status: number; body: string } | undefined> {
  let last: { status: number; body: string } | undefined;
  for (let i = 0; i < attempts; i++) {
    last = await get(port, path);
    if (last?.status === 200) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return last;
}

async function logs(name: string): Promise<string> {
  return (await podman(["logs", `${PREFIX}-${name}`]).catch((e: Error) => ({ stdout: "", stderr: e.message }))).stderr;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("the image tier needs root (buildah, podman)");
  const start = Date.now();
  const out = await runCommand(join(ROOT, "scripts/build-image.sh"), ["--tag", TAG], { timeoutMs: 20 * 60_000 });
  const { stdout: size } = await podman(["image", "inspect", "--format", "{{.Size}}", TAG]);
  build = {
    seconds: Math.round((Date.now() - start) / 1000),
    sizeBytes: Number(size.trim()),
    output: out.stdout.trim(),
  };
  console.log(`image: ${build.output} (test build ${build.seconds} s, ${(build.sizeBytes / 1e6).toFixed(0)} MB)`);

  kube = await startTestKube();
  await kube.createNode({ name: "n1", internalIP: "10.0.0.11", podCIDR: "10.244.1.0/24" });
  dir = await mkdtemp(join(tmpdir(), "se-image-"));
  await chmod(dir, 0o755);
  const apiPort = Number(new URL(kube.cluster.url).port);
  const sock = join(dir, "api.sock");
  relay = await startRelay({ unix: sock }, { tcp: { host: "127.0.0.1", port: apiPort } });
  await chmod(sock, 0o666);
  const kubeconfig = async (file: string, text: Promise<string>) => {
    const kc = parse(await text) as { clusters: { cluster: { server: string } }[] };
    // The same address inside the containers' namespace: the relay there listens on that port.
    for (const c of kc.clusters) expect(new URL(c.cluster.server).port).toBe(String(apiPort));
    await writeFile(join(dir, file), stringify(kc), { mode: 0o644 });
  };
  await kubeconfig("controller.kubeconfig", kube.kubeconfigFor("controller"));
  await kubeconfig("node.kubeconfig", kube.kubeconfigFor("node-agent", "n1"));
  await kubeconfig("gateway.kubeconfig", kube.kubeconfigFor("gateway-agent"));
  await writeFile(
    join(dir, "config.yaml"),
    stringify({
      clusterNetwork: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/16"] },
      resyncSeconds: 30,
    }),
    { mode: 0o644 },
  );

  // The namespace: loopback only. The relay to the API socket holds it; the others join it.
  await run("relay", ["lab", "relay", "--listen", `tcp:127.0.0.1:${apiPort}`, "--to", "unix:/se/api.sock"], {
    network: "none",
  });
  const net = `container:${PREFIX}-relay`;
  await run(
    "controller",
    [
      "controller",
      "--kubeconfig",
      "/se/controller.kubeconfig",
      "--config",
      "/se/config.yaml",
      "--namespace",
      "static-egress",
      "--identity",
      "image-test",
      "--metrics-port",
      "9741",
      "--metrics-address",
      "127.0.0.1",
    ],
    { network: net },
  );
  // As the DaemonSet runs it: root with NET_ADMIN only (its nftables table is this namespace's).
  await run(
    "node-agent",
    [
      "agent",
      "node",
      "--node",
      "n1",
      "--source",
      "kubernetes",
      "--kubeconfig",
      "/se/node.kubeconfig",
      "--config",
      "/se/config.yaml",
      "--metrics-port",
      "9740",
    ],
    { network: net, user: "0", caps: ["NET_ADMIN"] },
  );
  await run(
    "gateway-agent",
    [
      "agent",
      "gateway",
      "--instance",
      "gw/0",
      "--source",
      "kubernetes",
      "--kubeconfig",
      "/se/gateway.kubeconfig",
      "--config",
      "/se/config.yaml",
      "--metrics-port",
      "9742",
    ],
    { network: net, user: "0", caps: ["NET_ADMIN"] },
  );
}, 25 * 60_000);

afterAll(async () => {
  for (const name of started.reverse()) await podman(["rm", "-f", "-t", "2", name]).catch(() => undefined);
  await podman(["rmi", "-f", TAG]).catch(() => undefined);
  await new Promise<void>((r) => (relay ? relay.close(() => r()) : r()));
  await kube?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

describe("the image, run with podman", () => {
  it("is an OCI image of the project's Node.js, entering at dist/cli/main.js as a non-root user", async () => {
    const { stdout } = await podman(["image", "inspect", TAG]);
    const [image] = JSON.parse(stdout) as {
      Config: { Entrypoint: string[]; User: string; Env: string[]; Labels: Record<string, string> };
      Architecture: string;
    }[];
    expect(image!.Config.Entrypoint).toEqual(["node", "/app/dist/cli/main.js"]);
    expect(image!.Config.User).toBe("1000:1000");
    expect(image!.Config.Env).toContain("NODE_ENV=production");
    const nodeEnv = (
      await runCommand("bash", ["-c", `. ${join(ROOT, "scripts/node-env.sh")} && echo $STATIC_EGRESS_NODE_VERSION`])
    ).stdout.trim();
    expect(image!.Config.Labels["io.static-egress.node-version"]).toBe(nodeEnv);
    const version = await podman(["exec", `${PREFIX}-relay`, "node", "--version"]);
    expect(version.stdout.trim()).toBe(`v${nodeEnv}`);
    // What the agents exec is installed; no test file ships.
    const tools = await podman([
      "exec",
      `${PREFIX}-relay`,
      "sh",
      "-c",
      "for t in nft ip conntrack sysctl; do command -v $t || echo missing $t; done; find /app/dist -name '*.test.js' | wc -l",
    ]);
    const lines = tools.stdout.trim().split("\n");
    expect(lines.slice(0, 4).map((l) => l.split("/").at(-1))).toEqual(["nft", "ip", "conntrack", "sysctl"]);
    expect(lines.slice(0, 4).every((l) => l.startsWith("/usr/"))).toBe(true);
    expect(lines[4]).toBe("0");
    expect(build.sizeBytes).toBeGreaterThan(0);
  });

  it("ships Node's compile cache of the bundled CLI, accepted as root (node agent) and as uid 1000 (controller, gateway agent)", async () => {
    const { stdout } = await podman(["image", "inspect", TAG]);
    const [image] = JSON.parse(stdout) as { Config: { Env: string[] } }[];
    expect(image!.Config.Env).toEqual(
      expect.arrayContaining(["NODE_COMPILE_CACHE=/app/.compile-cache", "NODE_COMPILE_CACHE_PORTABLE=1"]),
    );
    for (const user of ["0", "1000"]) {
      // On the read-only root file system the containers run with: read, never written.
      const r = await podman([
        "exec",
        "--user",
        user,
        "--env",
        "NODE_DEBUG_NATIVE=COMPILE_CACHE",
        `${PREFIX}-relay`,
        "node",
        "/app/dist/cli/main.js",
        "agent",
        "node",
        "--help",
      ]);
      expect(r.stderr, `uid ${user}`).toMatch(/V8 code cache for ESM file:\/\/\/app\/dist\/cli\/main\.js was accepted/);
    }
  });

  it("runs the containers in a network namespace with loopback only", async () => {
    const { stdout } = await podman(["exec", `${PREFIX}-relay`, "ip", "-o", "link"]);
    expect(
      stdout
        .trim()
        .split("\n")
        .map((l) => l.split(":")[1]?.trim()),
    ).toEqual(["lo"]);
  });

  it("the controller answers /healthz, becomes ready against the real API server and takes the lease", async () => {
    const health = await until200(9741, "/healthz");
    expect(health?.status, await logs("controller")).toBe(200);
    const ready = await until200(9741, "/readyz");
    expect(ready?.status, await logs("controller")).toBe(200);
    const lease = await kube.admin.coordination.readNamespacedLease({
      namespace: "static-egress",
      name: "static-egress-controller",
    });
    expect(lease.spec?.holderIdentity).toBe("image-test");
  });

  it("the node agent answers /healthz and becomes ready (its informers listed the API through its own token)", async () => {
    const health = await until200(9740, "/healthz");
    expect(health?.status, await logs("node-agent")).toBe(200);
    const ready = await until200(9740, "/readyz");
    expect(ready?.status, await logs("node-agent")).toBe(200);
  });

  it("the gateway agent answers /healthz", async () => {
    const health = await until200(9742, "/healthz");
    expect(health?.status, await logs("gateway-agent")).toBe(200);
  });
});
