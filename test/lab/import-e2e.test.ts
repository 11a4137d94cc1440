/**
 * `static-egress import --apply` end to end (issue #13, outcome 4): a nirmata StaticEgressIP (with
 * its Service), a Cilium CiliumEgressGatewayPolicy and a spidernet EgressPolicy, as their users
 * have them, imported into the
 * lab's real control plane with `--gateway shared`; then the lab's Internet host says which source
 * address each pod's request arrived with: the selected pods leave with the imported egress IPs,
 * for the imported destinations only, and the others with their node's IP.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { Lab } from "../../src/lab/lab.js";
import { newRunPrefix } from "../../src/lab/netns.js";
import { cliEntry } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { byPod, exampleLabConfig, waitConverged } from "./support.js";

let lab: Lab;

/** nirmata: the checkout application's pods (behind Service checkout) reach the partner range from 192.0.2.10. */
const NIRMATA = [
  {
    apiVersion: "staticegressips.nirmata.io/v1alpha1",
    kind: "StaticEgressIP",
    metadata: { name: "checkout-egress", namespace: "payments" },
    spec: { rules: [{ egressip: "192.0.2.10", "service-name": "checkout", cidr: "198.51.100.0/24" }] },
  },
  {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "checkout", namespace: "payments" },
    spec: { selector: { app: "checkout" }, ports: [{ port: 80 }] },
  },
];
/** Cilium: the exporter pods of namespace reporting (Cilium's pseudo-label), the partner range except one address, from 192.0.2.21. */
const CILIUM = {
  apiVersion: "cilium.io/v2",
  kind: "CiliumEgressGatewayPolicy",
  metadata: { name: "exporter-egress" },
  spec: {
    selectors: [{ podSelector: { matchLabels: { app: "exporter", "io.kubernetes.pod.namespace": "reporting" } } }],
    destinationCIDRs: ["198.51.100.0/24"],
    excludedCIDRs: [`${LAB_NETWORK.otherService}/32`],
    egressGateway: { nodeSelector: { matchLabels: { "kubernetes.io/hostname": "gw-b" } }, egressIP: "192.0.2.21" },
  },
};

/** spidernet: the frontend pods of namespace web, everywhere outside the cluster, from 192.0.2.12. */
const SPIDERNET = {
  apiVersion: "egressgateway.spidernet.io/v1beta1",
  kind: "EgressPolicy",
  metadata: { name: "frontend-egress", namespace: "web" },
  spec: {
    egressGatewayName: "egw",
    egressIP: { ipv4: "192.0.2.12", useNodeIP: false },
    appliedTo: { podSelector: { matchLabels: { app: "frontend" } } },
    priority: 100,
  },
};

function runImport(file: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    [cliEntry(), "import", "-f", file, "--gateway", "shared", "--apply", "--kubeconfig", lab.kubeconfigPath],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stderr })));
}

beforeAll(async () => {
  // The example lab (gateway `shared`: gw-a 192.0.2.10/.11, gw-b .20/.21; payments granted .10/.20), without its policies;
  // gw-a also carries 192.0.2.12, granted to web, and web has a pod no policy selects.
  const cfg = exampleLabConfig();
  cfg.policies = [];
  cfg.gateways[0]!.instances![0]!.egressIPs.push("192.0.2.12");
  cfg.gateways[0]!.grants!.push({
    namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "web" } },
    egressIPs: ["192.0.2.12"],
  });
  cfg.pods.push({ name: "web-3", namespace: "web", node: "node2", labels: { app: "other" } });
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  await waitConverged(lab, undefined, 30_000);
});

afterAll(async () => {
  await lab?.down();
});

const nodeIP = (name: string) => lab.topology.nodes.find((n) => n.name === name)!.publicIP;

describe("static-egress import --apply, then traffic", () => {
  it("before: every pod leaves with its node's IP", async () => {
    const rows = await waitConverged(lab);
    for (const r of rows) expect(r.egressIP, r.pod).toBe(nodeIP(r.node));
  });

  it("after: the imported policies' pods leave with their egress IPs; the others with the node IP", async () => {
    const file = join(lab.dir, "import-input.yaml");
    writeFileSync(file, [...NIRMATA, CILIUM, SPIDERNET].map((o) => stringify(o)).join("---\n"));
    const r = await runImport(file);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^created\s+ClusterEgressPolicy\/exporter-egress$/m);
    expect(r.stderr).toMatch(/^created\s+EgressPolicy\/payments\/checkout-egress$/m);
    expect(r.stderr).toMatch(/^created\s+EgressPolicy\/web\/frontend-egress$/m);

    const rows = byPod(await waitConverged(lab, LAB_NETWORK.echoService, 60_000));
    // What the Internet host saw.
    expect(rows.get("payments/pay-1")!.egressIP).toBe("192.0.2.10");
    expect(rows.get("payments/pay-2")!.egressIP).toBe("192.0.2.10");
    expect(rows.get("reporting/rep-1")!.egressIP).toBe("192.0.2.21");
    expect(rows.get("reporting/rep-2")!.egressIP).toBe("192.0.2.21");
    expect(rows.get("web/web-1")!.egressIP).toBe("192.0.2.12");
    expect(rows.get("web/web-2")!.egressIP).toBe("192.0.2.12");
    // Selected by none: its node's IP.
    expect(rows.get("web/web-3")!.egressIP).toBe(nodeIP("node2"));
    expect(rows.get("payments/pay-1")!.policy).toBe("EgressPolicy/payments/checkout-egress");
    expect(rows.get("reporting/rep-1")!.policy).toBe("ClusterEgressPolicy/exporter-egress");
    expect(rows.get("web/web-1")!.policy).toBe("EgressPolicy/web/frontend-egress");
  });

  it("Cilium's excludedCIDRs holds: the excluded address is reached with the node IP", async () => {
    const rows = byPod(await waitConverged(lab, LAB_NETWORK.otherService));
    expect(rows.get("reporting/rep-1")!.egressIP).toBe(nodeIP("node2"));
    expect(rows.get("reporting/rep-2")!.egressIP).toBe(nodeIP("node3"));
    // nirmata's range has no exclusion: checkout still leaves with its IP there.
    expect(rows.get("payments/pay-1")!.egressIP).toBe("192.0.2.10");
  });
});
