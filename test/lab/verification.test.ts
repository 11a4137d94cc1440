import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { parseLabConfig } from "../../src/lab/config.js";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";

// Issue #14, outcome 7 (docs/policies.md "Verification"): a policy with spec.verification is
// probed from the nodes that run its pods, through the gateway instance they use, against the
// lab Internet's echo service. Verified=True while the echo service sees the policy's egress IP;
// a gateway whose SNAT is changed behind the agent's back makes the far side really see another
// address: Verified=False (SourceMismatch, naming the node and the source), the mismatch metric,
// then True again once repaired. Only the agent's own socket takes the probe's path.
const CHECKOUT_IPS = ["192.0.2.10", "192.0.2.20"];
const ECHO = LAB_NETWORK.echoService;
const POLICY = "EgressPolicy/payments/checkout";
const ROGUE_TABLE = "rogue_snat";

const policy = {
  apiVersion: "staticegress.io/v1alpha1",
  kind: "EgressPolicy",
  metadata: { name: "checkout", namespace: "payments" },
  spec: {
    podSelector: { matchLabels: { app: "checkout" } },
    gatewayName: "shared",
    egressIPs: CHECKOUT_IPS,
    destinationCIDRs: ["198.51.100.0/24"],
    verification: { url: `http://${ECHO}/`, intervalSeconds: 10, timeoutSeconds: 3 },
  },
};

let lab: Lab;

function kubectl(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(k8sBinary("kubectl"), ["--kubeconfig", lab.kubeconfigPath, ...args], { input, encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function host(name: string) {
  return [...lab.topology.nodes, ...lab.topology.gatewayHosts].find((h) => h.name === name)!;
}

/** What the last read saw: the status, or kubectl's error (for a failure's message). */
let lastRead = "";

function verified(): { status: string; reason: string; message: string } | undefined {
  const r = kubectl(["get", "egresspolicy", "checkout", "-n", "payments", "-o", "json"]);
  if (r.status !== 0) {
    lastRead = `kubectl: ${r.stderr.trim()}`;
    return undefined;
  }
  const obj = JSON.parse(r.stdout) as {
    status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
  };
  lastRead = JSON.stringify(obj.status ?? null);
  return obj.status?.conditions?.find((c) => c.type === "Verified");
}

async function waitVerified(status: string, reason: string, timeoutMs = 60_000) {
  let last: ReturnType<typeof verified>;
  await waitFor(
    async () => {
      last = verified();
      return last?.status === status && last.reason === reason;
    },
    timeoutMs,
    `Verified did not become ${status}/${reason}`,
    500,
  ).catch((e: Error) => {
    // What node1's agent and the controller said about verification: why no condition came.
    const said = (name: string) =>
      lab
        .logTail(name, 400)
        .split("\n")
        .filter((l) => /verif|report|probe|error|warn/i.test(l))
        .slice(-15)
        .join("\n");
    throw new Error(
      `${e.message}; last: ${JSON.stringify(last)}; status: ${lastRead}\n--- agent-node1:\n${said("agent-node1")}\n--- controller:\n${said("controller")}`,
      { cause: e },
    );
  });
  return last!;
}

/** A node agent's metric value for the policy (NaN when absent). */
async function metric(node: string, name: string, labels = ""): Promise<number> {
  const text = await lab.agentMetrics(node);
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`${name}{`) && l.includes(`policy="${POLICY}"`) && l.includes(labels));
  return line ? Number(line.split(" ").at(-1)) : NaN;
}

/** The policy's probe source port as node1's datapath has it. */
async function probePort(): Promise<number> {
  const out = JSON.parse(
    await execIn(host("node1").netns, "nft", ["-j", "list", "map", "ip", "static_egress", "probe_divert"]),
  ) as { nftables: { map?: { elem?: [{ concat: [string, number, number] }, unknown][] } }[] };
  const elem = out.nftables.find((e) => e.map)?.map?.elem?.[0];
  if (!elem) throw new Error("node1 has no probe in its probe_divert map");
  return elem[0].concat[1];
}

/** Behind the agent's back: the gateway SNATs TCP to the echo service to its own public address first. */
async function breakSnat(gw: string): Promise<void> {
  const script =
    `table ip ${ROGUE_TABLE} {\n  chain post {\n    type nat hook postrouting priority srcnat - 20; policy accept;\n` +
    `    ip daddr ${ECHO} tcp dport 80 snat ip to ${host(gw).publicIP}\n  }\n}\n`;
  await execIn(host(gw).netns, "nft", ["-f", "-"], script);
}

async function repairSnat(gw: string): Promise<void> {
  await execIn(host(gw).netns, "nft", ["delete", "table", "ip", ROGUE_TABLE]).catch(() => undefined);
}

beforeAll(async () => {
  const cfg = parseLabConfig(
    stringify({
      nodes: [{ name: "node1" }, { name: "node2" }],
      gateways: [
        {
          name: "shared",
          grants: [
            {
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "payments" } },
              egressIPs: CHECKOUT_IPS,
            },
          ],
          instances: [
            { name: "gw-a", egressIPs: [CHECKOUT_IPS[0]] },
            { name: "gw-b", egressIPs: [CHECKOUT_IPS[1]] },
          ],
        },
      ],
      pods: [
        { name: "pay-1", namespace: "payments", node: "node1", labels: { app: "checkout" } },
        { name: "web-1", namespace: "web", node: "node2", labels: { app: "frontend" } },
      ],
    }),
    "verification lab",
  );
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  await waitFor(() => lab.allInstancesUp(), 30_000, "instances not up");
}, 240_000);

afterAll(async () => {
  if (lab) for (const gw of ["gw-a", "gw-b"]) await repairSnat(gw);
  await lab?.down();
});

describe("continuous verification (spec.verification) against the lab's echo service", () => {
  it("is Verified=True once node1 (which runs the policy's pod) saw the egress IP of the instance it uses", async () => {
    const r = kubectl(["apply", "-f", "-"], stringify(policy));
    expect(r.status, r.stderr).toBe(0);
    const c = await waitVerified("True", "SourceMatches");
    // Only node1 runs a checkout pod: only it probes.
    expect(c.message).toMatch(/^the echo service saw 192\.0\.2\.(10|20) from 1 node\(s\): node1$/);
    expect(await metric("node1", "static_egress_verification_total", 'result="ok"')).toBeGreaterThan(0);
    expect(await metric("node1", "static_egress_verification_mismatch")).toBe(0);
    expect(await metric("node2", "static_egress_verification_mismatch")).toBeNaN();
  });

  it("turns False with the node and the source the echo service really saw when a gateway SNATs to another address, and True again once repaired", async () => {
    const mismatches = await metric("node1", "static_egress_verification_total", 'result="mismatch"');
    await breakSnat("gw-a");
    await breakSnat("gw-b");
    try {
      const c = await waitVerified("False", "SourceMismatch");
      expect(c.message).toMatch(
        /^node1 saw source 203\.0\.113\.10[12] through shared\/gw-[ab] \(expected 192\.0\.2\.(10|20)\)$/,
      );
      // The instance named is the one whose public address the echo service saw, and the IP expected is that instance's.
      const [, seen, instance, expected] = /source (\S+) through shared\/(\S+) \(expected (\S+)\)/.exec(c.message)!;
      expect(seen).toBe(host(instance!).publicIP);
      expect(expected).toBe(instance === "gw-a" ? CHECKOUT_IPS[0] : CHECKOUT_IPS[1]);
      await waitFor(
        async () => (await metric("node1", "static_egress_verification_mismatch")) === 1,
        15_000,
        "mismatch gauge not 1",
      );
      expect(await metric("node1", "static_egress_verification_total", 'result="mismatch"')).toBeGreaterThan(
        Number.isNaN(mismatches) ? 0 : mismatches,
      );
    } finally {
      await repairSnat("gw-a");
      await repairSnat("gw-b");
    }
    await waitVerified("True", "SourceMatches");
    expect(await metric("node1", "static_egress_verification_mismatch")).toBe(0);
  });

  it("lets no other user's socket take the probe's path: from the probe port it leaves with the node's own IP", async () => {
    // (root's, the agent's user's, does leave with the egress IP: the match is by user and port)
    const port = await probePort();
    // Each from its own local address: a closed connection's TIME_WAIT blocks the same address and port for a minute.
    const seen = async (asUser: boolean): Promise<string> => {
      const curl = ["curl", "-s", "--max-time", "3", "--local-port", String(port), `http://${ECHO}/`];
      const cmd = asUser
        ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...curl]
        : [...curl, "--interface", host("node1").vpcIP];
      for (let attempt = 0; attempt < 5; attempt++) {
        // The agent's own probe may hold the port for a moment.
        const out = await execIn(host("node1").netns, cmd[0]!, cmd.slice(1)).catch(() => "");
        const source = (/"source":"([\d.]+)"/.exec(out) ?? [])[1];
        if (source) return source;
        await new Promise((r) => setTimeout(r, 500));
      }
      return "";
    };
    expect(await seen(true)).toBe(host("node1").publicIP);
    // The path is there for the agent's user (root on the node is trusted: it could rewrite the tables anyway).
    expect(CHECKOUT_IPS).toContain(await seen(false));
  });

  it("stops probing when the policy no longer asks for it", async () => {
    const { verification: _, ...spec } = policy.spec;
    expect(kubectl(["apply", "-f", "-"], stringify({ ...policy, spec })).status).toBe(0);
    await waitFor(async () => verified() === undefined, 30_000, "Verified condition still there");
    await waitFor(
      async () => Number.isNaN(await metric("node1", "static_egress_verification_mismatch")),
      15_000,
      "node1 still probes",
    );
    const map = await execIn(host("node1").netns, "nft", ["list", "map", "ip", "static_egress", "probe_divert"]);
    expect(map).not.toMatch(/elements/);
  });
});
