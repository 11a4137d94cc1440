import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { k8sBinary } from "../../src/lab/control-plane/binaries.js";
import type { KubeObject } from "../../src/api/objects.js";
import { Lab, LAB_METRICS_PORT, waitFor } from "../../src/lab/lab.js";
import { execIn, newRunPrefix } from "../../src/lab/netns.js";
import { LAB_NETWORK } from "../../src/lab/topology.js";
import { byPod, exampleLabConfig, waitConverged } from "./support.js";
import { shippedRulesWithShortFor, startPrometheus, type LabPrometheus } from "./prometheus.js";

// Metering, capacity and alerts on the example lab (Kubernetes mode: the controller runs too),
// each gateway instance with a spare egress IP granted to payments for the SNAT pool
// (192.0.2.12 on gw-a, .22 on gw-b); checkout is narrowed to 192.0.2.10 (gw-a).
const SPARE: Record<string, string> = { "gw-a": "192.0.2.12", "gw-b": "192.0.2.22" };
const HOME: Record<string, string> = { "192.0.2.10": "gw-a", "192.0.2.20": "gw-b" };
const POLICY = "EgressPolicy/payments/checkout";
const SINK = LAB_NETWORK.udpSinkPort;
// Another destination of checkout for the exhaustion (the sink listens on every address of the Internet host).
const CROWDED = LAB_NETWORK.allowlistService;

let lab: Lab;
let prom: LabPrometheus;
let ip: string; // pay-1's egress IP
let gw: string; // its instance

beforeAll(async () => {
  const cfg = exampleLabConfig();
  cfg.gateways[0]!.instances![0]!.egressIPs.push(SPARE["gw-a"]!);
  cfg.gateways[0]!.instances![1]!.egressIPs.push(SPARE["gw-b"]!);
  cfg.gateways[0]!.grants![0]!.egressIPs!.push(SPARE["gw-a"]!, SPARE["gw-b"]!);
  // Slower BFD (1.5 s to judge an instance down): counting is exact only while the path holds, and
  // a busy machine (2 cores, several labs) delays 100 ms probes.
  cfg.gateways[0]!.health = { intervalMs: 300, multiplier: 5, holdDownMs: 2_000 };
  lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: false, mode: "kubernetes" });
  await waitConverged(lab, undefined, 60_000);
  // checkout on gw-a only: on a busy machine a BFD timeout must not move pay-1's flows to gw-b
  // mid-count (it fails closed instead, and what the Internet received stays the check).
  ip = "192.0.2.10";
  gw = HOME[ip]!;
  const checkout = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")! as KubeObject & {
    spec: Record<string, unknown>;
  };
  await lab.applyPolicies([{ ...checkout, spec: { ...checkout.spec, egressIPs: [ip] } } as KubeObject]);
  await waitFor(
    async () => byPod(await lab.status()).get("payments/pay-1")?.egressIP === ip,
    60_000,
    "checkout not on gw-a alone",
  );
  prom = await startPrometheus(await lab.exposeMetrics(), shippedRulesWithShortFor(3));
}, 300_000);

afterAll(async () => {
  await prom?.stop();
  await lab?.down();
});

/**
 * Sends from pay-1: `count` datagrams of `size` bytes from each source port (one flow per port),
 * payload `<tag>-<port>`, spread over `spreadMs`.
 */
async function send(
  dst: string,
  tag: string,
  ports: readonly number[],
  count = 1,
  size = 0,
  spreadMs = 0,
): Promise<void> {
  const script = `const d = require("node:dgram");
const [dst, dport, tag, count, size, spread, ...ports] = process.argv.slice(1);
(async () => { for (const p of ports) {
  const s = d.createSocket("udp4"); await new Promise((r) => s.bind(Number(p), r));
  const msg = Buffer.alloc(Math.max(Number(size), tag.length + p.length + 1), " "); msg.write(tag + "-" + p);
  for (let i = 0; i < Number(count); i++) {
    await new Promise((r) => s.send(msg, Number(dport), dst, r));
    if (Number(spread)) await new Promise((r) => setTimeout(r, Number(spread) / Number(count)));
  }
  s.close(); } })();`;
  await execIn(lab.findPod("payments/pay-1").netns, process.execPath, [
    "-e",
    script,
    dst,
    String(SINK),
    tag,
    String(count),
    String(size),
    String(spreadMs),
    ...ports.map(String),
  ]);
}

function kubectl(args: string[]): string {
  const r = spawnSync(k8sBinary("kubectl"), ["--kubeconfig", lab.kubeconfigPath, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Sources the Internet saw per payload of this tag (after the sink flushed). */
async function arrivals(tag: string, expected: number): Promise<Map<string, string>> {
  const seen = () =>
    new Map(
      lab
        .udpRecords()
        .filter((r) => r.payload.startsWith(`${tag}-`))
        .map((r) => [r.payload.trim(), r.src]),
    );
  await waitFor(async () => seen().size >= expected, 10_000, "").catch(() => undefined);
  await new Promise((r) => setTimeout(r, 300));
  return seen();
}

/** The gateway agent's metrics, read inside its namespace ("" while it does not answer: restarting, or a loaded machine). */
async function gatewayMetrics(name: string): Promise<string> {
  const g = lab.gatewayHost(name);
  return execIn(g.netns, "curl", ["-s", "-m", "10", `http://127.0.0.1:${LAB_METRICS_PORT}/metrics`]).catch(() => "");
}

function sample(text: string, metric: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}

async function traffic(what: "packets" | "bytes", direction = "out"): Promise<number> {
  let value: number | undefined;
  const labels = { instance: `shared/${gw}`, policy: POLICY, egress_ip: ip, direction };
  await waitFor(
    async () =>
      (value = sample(await gatewayMetrics(gw), `static_egress_gateway_egress_${what}_total`, labels)) !== undefined,
    30_000,
    "no traffic metric",
  );
  return value!;
}

async function restartGatewayAgent(extra: string[] = []): Promise<void> {
  lab.killProcess(`agent-${gw}`);
  await waitFor(async () => lab.processExited(`agent-${gw}`), 5_000, "agent did not die");
  const g = lab.gatewayHost(gw);
  lab.startAgent(g.name, g.netns, [
    "agent",
    "gateway",
    "--instance",
    `shared/${g.name}`,
    "--metrics-port",
    String(LAB_METRICS_PORT),
    ...extra,
  ]);
  await waitFor(
    async () => (await gatewayMetrics(gw)).includes("static_egress_gateway_egress_packets_total{"),
    30_000,
    "restarted agent serves no traffic metrics",
  );
}

describe("metering: counted by the gateway's kernel", () => {
  it("counts every packet and byte of a policy's egress IP exactly, and an agent restart neither loses nor repeats a count", async () => {
    // What the Internet received from the egress IP is the check: on a busy machine a packet can
    // be lost before the gateway (or a BFD timeout can move the flow), never counted then.
    const received = async () => {
      let n = -1;
      // Settled: the sink writes its records in batches.
      await waitFor(
        async () => n === (n = lab.udpRecords().filter((r) => r.payload.startsWith("meter-") && r.src === ip).length),
        10_000,
        "",
        500,
      ).catch(() => undefined);
      return n;
    };
    /** Batches of 100 datagrams of 100 bytes (128-byte IP packets) on one flow, 1 s each, until `want` got out (at most 5). */
    const sendUntil = async (want: number): Promise<number> => {
      const start = await received();
      for (let i = 0; i < 5 && (await received()) - start < want; i++)
        await send(LAB_NETWORK.echoService, "meter", [41_999], 100, 100, 1_000);
      return (await received()) - start;
    };
    const before = { packets: await traffic("packets"), bytes: await traffic("bytes") };
    const sink = await sendUntil(200);
    const after = { packets: await traffic("packets"), bytes: await traffic("bytes") };
    expect(sink).toBeGreaterThanOrEqual(200);
    expect(after.packets - before.packets).toBe(sink);
    expect(after.bytes - before.bytes).toBe(sink * 128);
    // The agent crashes and comes back: the kernel kept counting, the new agent exports the same values.
    await restartGatewayAgent();
    expect(await traffic("packets")).toBe(after.packets);
    const more = await sendUntil(50);
    expect(more).toBeGreaterThanOrEqual(50);
    expect(await traffic("packets")).toBe(after.packets + more);
    // Replies are counted apart (direction in): an HTTP exchange through the gateway.
    const inBefore = await traffic("packets", "in");
    expect((await lab.probe(lab.findPod("payments/pay-1"), `http://${LAB_NETWORK.echoService}/`)).source).toBe(ip);
    expect(await traffic("packets", "in")).toBeGreaterThan(inBefore);
  });

  it("kubectl get egresspolicies shows the policy's recent traffic", async () => {
    await restartGatewayAgent(["--traffic-report-seconds", "2"]);
    // About 25 KB/s for 10 s: 500 datagrams of 500 bytes.
    const sending = send(LAB_NETWORK.echoService, "rate", [41_998], 500, 500, 10_000);
    const rate = () =>
      Number(
        kubectl([
          "get",
          "egresspolicy",
          "-n",
          "payments",
          "checkout",
          "-o",
          "jsonpath={.status.traffic.bytesPerSecond}",
        ]) || 0,
      );
    await waitFor(async () => rate() > 10_000, 20_000, "no traffic in the policy's status");
    const table = kubectl(["get", "egresspolicies", "-n", "payments"]);
    expect(table).toMatch(/BYTES\/S/);
    expect(table).toMatch(/checkout\s.*\s[1-9]\d{4,}\s/);
    // The instance's own entry, written by its agent (server-side apply, its own field manager).
    const entries = JSON.parse(
      kubectl(["get", "egresspolicy", "-n", "payments", "checkout", "-o", "jsonpath={.status.traffic.instances}"]),
    ) as { instance: string }[];
    expect(entries.map((e) => e.instance)).toContain(`shared/${gw}`);
    await sending;
  });
});

describe("capacity: SNAT ports per egress IP and destination", () => {
  it("drives one egress IP to exhaustion (16 ports): the metric and the alert show it; a second IP on the instance relieves it", async () => {
    await restartGatewayAgent(["--snat-port-range", "20000-20015"]);
    const crowded = `${CROWDED}:${SINK}/udp`;
    const old = Array.from({ length: 20 }, (_, i) => 42_000 + i);
    await send(CROWDED, "old", old);
    const first = await arrivals("old", 16);
    // 16 flows got a port, the other 4 found none and were dropped: nothing left with another address.
    expect(first.size).toBe(16);
    expect(new Set(first.values())).toEqual(new Set([ip]));
    const labels = { instance: `shared/${gw}`, egress_ip: ip };
    let text = "";
    await waitFor(
      async () =>
        sample((text = await gatewayMetrics(gw)), "static_egress_gateway_snat_ports_in_use", {
          ...labels,
          destination: crowded,
        }) === 16,
      15_000,
      "ports in use not 16",
    ).catch(() => undefined);
    expect(sample(text, "static_egress_gateway_snat_ports_in_use", { ...labels, destination: crowded })).toBe(16);
    expect(sample(text, "static_egress_gateway_snat_ports_limit", labels)).toBe(16);
    expect(sample(text, "static_egress_gateway_conntrack_entries", labels)).toBeGreaterThanOrEqual(16);
    // The shipped alert, in a real Prometheus scraping the agent.
    await waitFor(
      async () =>
        (await prom.alerts()).some(
          (a) =>
            a.labels.alertname === "StaticEgressSnatPortsNearExhaustion" &&
            a.state === "firing" &&
            a.labels.egress_ip === ip &&
            a.labels.destination === crowded,
        ),
      30_000,
      "no SNAT exhaustion alert",
    );

    // Relief: checkout gets a second egress IP on the same instance.
    const spare = SPARE[gw]!;
    const policy = (await lab.currentPolicies()).find((p) => p.metadata?.name === "checkout")! as KubeObject & {
      spec: { egressIPs: string[] };
    };
    await lab.applyPolicies([
      { ...policy, spec: { ...policy.spec, egressIPs: [...policy.spec.egressIPs, spare] } } as KubeObject,
    ]);
    const g = lab.gatewayHost(gw);
    await waitFor(
      async () => (await execIn(g.netns, "nft", ["list", "table", "ip", "static_egress_gw"])).includes(spare),
      30_000,
      "pool not programmed",
    );
    // Old flows (the same source ports) keep their IP; new connections take the two IPs in turn:
    // those given the spare get out.
    await send(CROWDED, "again", old);
    const fresh = Array.from({ length: 16 }, (_, i) => 43_000 + i);
    await send(CROWDED, "new", fresh);
    const again = await arrivals("again", 16);
    for (const payload of first.keys())
      expect({ payload, src: again.get(payload.replace("old-", "again-")) }).toEqual({ payload, src: ip });
    const got = await arrivals("new", 8);
    const viaSpare = [...got.values()].filter((s) => s === spare).length;
    // 20 new connections (16 fresh, the 4 dropped before) alternate between the IPs: 10 take the spare.
    expect(viaSpare, JSON.stringify([...got])).toBeGreaterThanOrEqual(8);
    expect(new Set(got.values())).toEqual(new Set([spare]));
    await waitFor(
      async () =>
        (sample(await gatewayMetrics(gw), "static_egress_gateway_snat_ports_in_use", {
          instance: `shared/${gw}`,
          egress_ip: spare,
          destination: crowded,
        }) ?? 0) > 0,
      15_000,
      "the spare's ports are not shown",
    );
  });
});

describe("alerts in a real Prometheus scraping the lab", () => {
  it("scrapes the agents and the controller; killing a gateway fires StaticEgressInstanceDown, reviving it resolves it", async () => {
    await waitFor(
      async () => (await prom.query("max(static_egress_controller_leader)"))[0]?.value[1] === "1",
      30_000,
      "controller leader not scraped",
    );
    await waitFor(
      async () => (await prom.query('sum(up{job="static-egress-node"})'))[0]?.value[1] === "3",
      30_000,
      "node agents not scraped",
    );
    expect((await prom.alerts()).filter((a) => a.labels.alertname === "StaticEgressNoControllerLeader")).toEqual([]);
    const victim = Object.keys(SPARE).find((n) => n !== gw)!;
    const down = async () =>
      (await prom.alerts()).filter(
        (a) => a.labels.alertname === "StaticEgressInstanceDown" && a.labels.instance === `shared/${victim}`,
      );
    expect(await down()).toEqual([]);
    await lab.killGateway(victim, "agent");
    await waitFor(
      async () => (await down()).some((a) => a.state === "firing"),
      60_000,
      "instance-down alert did not fire",
    );
    await lab.reviveGateway(victim);
    await waitFor(async () => (await down()).length === 0, 90_000, "instance-down alert did not resolve");
  });
});
