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

describe("trace", () => {
  it("timeline", async () => {
    const t0 = Date.now();
    const r = kubectl(["apply", "-f", "-"], stringify(policy));
    expect(r.status, r.stderr).toBe(0);
    let prev = "";
    let prevRep = "";
    for (let i = 0; i < 100; i++) {
      const v = verified();
      const s = lastRead;
      if (s !== prev) { console.log(`${Date.now() - t0} ms status ${s}`); prev = s; }
      const n = kubectl(["get", "node", "node1", "-o", "jsonpath={.metadata.annotations.staticegress\\.io/report}"]);
      if (n.stdout !== prevRep) { console.log(`${Date.now() - t0} ms report ${n.stdout.slice(0, 400)}`); prevRep = n.stdout;
        if (n.stdout.includes('"error"')) {
          for (const h of ["node1", "gw-a", "gw-b"]) {
            const ct = await execIn(host(h).netns, "conntrack", ["-L"]).catch((e) => String(e));
            console.log(`--- conntrack ${h}\n${ct}`);
          }
          console.log(await execIn(host("node1").netns, "nft", ["list", "table", "ip", "static_egress"]).catch((e) => String(e)));
        }
      }
      if (v?.status === "True") break;
      await new Promise((res) => setTimeout(res, 300));
    }
    console.log(lab.logTail("controller", 60));
    console.log(lab.logTail("agent-node1", 40));
    console.log(lab.logTail("agent-gw-a", 30));
    console.log(lab.logTail("agent-gw-b", 30));
  });
});
