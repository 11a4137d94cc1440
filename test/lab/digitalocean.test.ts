import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DigitalOceanClient } from "../../src/cloud/digitalocean/index.js";
import { parseLabConfig } from "../../src/lab/config.js";
import { LAB_CLOUD } from "../../src/lab/cloud.js";
import { Lab, waitFor } from "../../src/lab/lab.js";
import { execIn, listNamespaces, newRunPrefix } from "../../src/lab/netns.js";
import { packageRoot } from "../../src/lab/paths.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { analyzeStream, startUdpStream } from "../../src/lab/traffic.js";
import { byPod, waitConverged } from "./support.js";

// A digitalocean gateway in the lab: the controller creates the droplets, firewall and reserved-IP
// assignments through the DigitalOcean API (the stand-in, validated against the OpenAPI document),
// and the lab boots every droplet as a gateway namespace. What a user would see on DigitalOcean,
// on one machine: pods leave with the reserved IPs, a destroyed droplet fails over at once and is
// replaced, deleting the gateway removes what the controller created and nothing else.
const RESERVED = ["192.0.2.30", "192.0.2.40"];
let lab: Lab;
let api: DigitalOceanClient;

function kubectl(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync("kubectl", ["--kubeconfig", lab.kubeconfigPath, ...args], { encoding: "utf8" });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

interface Instance {
  name: string;
  id: string;
  address: string;
  egressIPs: string[];
  health: string;
}
function instances(): Instance[] {
  const r = kubectl(["get", "egressgateway", "cloud", "-o", "jsonpath={.status.instances}"]);
  return r.stdout ? (JSON.parse(r.stdout) as Instance[]) : [];
}

beforeAll(async () => {
  const path = join(packageRoot(), "examples", "lab-digitalocean.yaml");
  lab = await Lab.up(parseLabConfig(readFileSync(path, "utf8"), path), {
    prefix: newRunPrefix(),
    persistent: false,
    mode: "kubernetes",
  });
  const cloud = lab.cloud()!;
  api = new DigitalOceanClient({ token: readFileSync(cloud.tokenFile, "utf8").trim(), baseUrl: cloud.url });
  await waitConverged(lab, undefined, 30_000);
}, 150_000);

afterAll(async () => {
  await lab?.down();
});

describe("lab: a digitalocean gateway on droplets that are gateway namespaces", () => {
  it("the controller creates the droplets and their firewall through the API; pods leave with the reserved IPs", async () => {
    const droplets = (await api.listDroplets()).filter((d) => !d.tags.includes(LAB_CLOUD.nodeTag));
    expect(droplets).toHaveLength(2);
    const running = lab.cloud()!.droplets;
    expect(running.map((d) => d.id).sort()).toEqual(droplets.map((d) => d.id).sort());
    for (const d of running) expect(listNamespaces()).toContain(d.netns);
    // status.instances lists the droplets with their private address and reserved IP.
    const listed = instances();
    expect(listed.map((i) => i.id).sort()).toEqual(droplets.map((d) => String(d.id)).sort());
    expect(listed.flatMap((i) => i.egressIPs).sort()).toEqual(RESERVED);
    // The controller's status follows the nodes' reports (written within a second).
    await waitFor(() => instances().every((i) => i.health === "Up"), 10_000, "instances not listed Up");
    expect(instances().map((i) => i.health)).toEqual(["Up", "Up"]);
    // The firewall admits the node tag, not the world.
    const firewalls = await api.listFirewalls();
    expect(firewalls).toHaveLength(1);
    const inbound = firewalls[0]!.inbound_rules ?? [];
    expect(inbound.length).toBeGreaterThan(0);
    for (const rule of inbound) expect(rule.sources.tags).toEqual([LAB_CLOUD.nodeTag]);
    // Forwarded packets keep the pods' addresses: the pod CIDR is admitted on the forwarding ports, never on BFD or the tunnels.
    for (const rule of inbound)
      expect(rule.sources.addresses ?? []).toEqual(
        rule.ports === "3784" || rule.ports === "15905-24095" ? [] : [LAB_NETWORK.podCidr],
      );

    // As on DigitalOcean: each gateway SNATs to its own anchor IP (learned from the metadata
    // service), and the edge turns the anchor of the reserved IP's holder into the reserved IP.
    const edgeJson = JSON.parse(
      await execIn(lab.topology.internet, "nft", ["-j", "list", "map", "ip", "lab_edge", "reserved_to_anchor"]),
    ) as { nftables: { map?: { elem?: [string, string][] } }[] };
    const edge = edgeJson.nftables.find((x) => x.map)?.map?.elem ?? [];
    for (const d of running) {
      expect(d.anchorIP).toMatch(/^10\.20\./);
      const snat = await execIn(d.netns, "nft", ["list", "map", "ip", "static_egress_gw", "egress_snat"]);
      expect(snat).toContain(`: ${d.anchorIP}`);
      for (const ip of RESERVED) expect(snat).not.toContain(`: ${ip}`);
      const held = RESERVED.find((ip) => lab.cloud()!.reservedIPs[ip] === d.id)!;
      expect(edge).toContainEqual([held, d.anchorIP]);
    }

    // While the droplets booted the policy named IPs no instance carried yet: it was never
    // Invalid (an invalid policy selects nothing, so its pods would have left with node IPs).
    const events = kubectl([
      "get",
      "events",
      "-n",
      "payments",
      "-o",
      'jsonpath={range .items[*]}{.reason}{"\\n"}{end}',
    ]);
    expect(events.status).toBe(0);
    expect(events.stdout.split("\n").filter((r) => r.startsWith("Invalid"))).toEqual([]);

    const rows = byPod(await lab.status());
    for (const pod of ["payments/pay-1", "payments/pay-2"]) expect(RESERVED).toContain(rows.get(pod)?.egressIP);
    expect(rows.get("web/web-1")?.egressIP).toBe("203.0.113.13");
    // The partner's allowlist names the reserved IPs: checkout gets in, web does not.
    const admitted = await lab.probe(lab.findPod("payments/pay-1"), `http://${LAB_NETWORK.allowlistService}/`);
    expect(admitted.admitted).toBe(true);
    const refused = await lab.probe(lab.findPod("web/web-1"), `http://${LAB_NETWORK.allowlistService}/`);
    expect(refused.admitted).toBe(false);
  });

  it("a droplet destroyed through the API: traffic fails over with no other source, the droplet is replaced and takes its IP back", async () => {
    const started = Date.now();
    const stream = startUdpStream(lab, "payments/pay-1", "destroy", 4_000);
    await waitFor(() => analyzeStream(lab, "destroy", RESERVED).received > 300, 10_000, "the stream does not arrive");
    const ip = analyzeStream(lab, "destroy", RESERVED).lastSource!;
    const victim = lab.gatewayInstances().find((g) => g.egressIPs.includes(ip))!;
    const oldId = instances().find((i) => i.name === victim.name)!.id;
    await lab.killGateway(victim.name, "destroy");
    const killedAt = Date.now();
    await stream;
    const report = analyzeStream(lab, "destroy", RESERVED, { from: started, to: Date.now() });
    expect(report.wrongSource).toEqual([]);
    // Still arriving after the failover, from the surviving droplet's reserved IP.
    const after = analyzeStream(lab, "destroy", RESERVED, { from: killedAt + 1_500, to: Date.now() });
    expect(after.received).toBeGreaterThan(500);
    expect(Object.keys(after.sources)).toEqual(RESERVED.filter((x) => x !== ip));

    // The controller notices without any change in the cluster and replaces the droplet under
    // the same name; the slot's reserved IP moves to it and nodes use it once its probes answer.
    await waitFor(
      () => instances().some((i) => i.name === victim.name && i.id !== oldId && i.health === "Up"),
      60_000,
      "the droplet was not replaced",
      300,
    );
    const replacement = instances().find((i) => i.name === victim.name)!;
    expect(replacement.egressIPs).toEqual([ip]);
    const holder = (await api.getReservedIP(ip))?.droplet;
    expect(holder && "id" in holder ? holder.id : undefined).toBe(Number(replacement.id));
    expect(await api.getDroplet(Number(oldId))).toBeUndefined();
    await waitFor(
      async () => (await lab.status()).some((r) => r.egressIP === ip),
      30_000,
      "no pod leaves through the replacement",
      300,
    );
    await waitConverged(lab, undefined, 30_000);
  }, 120_000);

  it("deleting the gateway removes its droplets and firewall, and leaves the user's reserved IPs and the nodes", async () => {
    expect(kubectl(["delete", "egressgateway", "cloud", "--wait=false"]).status).toBe(0);
    await waitFor(
      () => kubectl(["get", "egressgateway", "cloud"]).status !== 0,
      60_000,
      "the gateway is still there (finalizer)",
      300,
    );
    const droplets = await api.listDroplets();
    expect(droplets.map((d) => d.name).sort()).toEqual(["node1", "node2", "node3"]);
    expect(await api.listFirewalls()).toEqual([]);
    const ips = await api.listReservedIPs();
    expect(ips.map((i) => i.ip).sort()).toEqual(RESERVED);
    expect(ips.every((i) => !i.droplet || !("id" in i.droplet))).toBe(true);
    // The lab cloud took the droplets' namespaces down with them.
    await waitFor(() => lab.cloud()!.droplets.length === 0, 10_000, "droplet namespaces left");
    expect(listNamespaces().filter((n) => n.startsWith(`${lab.record.prefix}-d`))).toEqual([]);
  }, 90_000);
});
