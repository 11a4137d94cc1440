/**
 * Throughput through a gateway as a fraction of the direct path, measured side by side in one
 * run of the namespace lab (examples/lab.yaml).
 *
 *   npx tsx bench/throughput.ts [--rounds 6] [--seconds 5] [--extra-pods 10000] [--out file] [--max-seconds 300]
 *                               [--hosts shared|split] [--udp-bytes 64]
 *
 * Pod payments/pay-1 (policy checkout) sends TCP with iperf3 to two addresses of the lab's
 * Internet: 198.51.100.10 is diverted (node -> gateway instance -> SNAT to the policy's IP) and
 * 198.51.100.200 is excluded (node's own masquerade, straight out).
 *
 * Once the lab has converged its agents are stopped (the kernel forwards without them) and this
 * process programs node1 and the gateway instances itself, with the same Planner and dataplanes.
 * A second map size adds --extra-pods synthetic checkout pods on node1 to the planner's snapshot,
 * so node1's divert map and the gateways' SNAT maps hold tens of thousands of elements: per-packet
 * cost should not depend on the map size. Every round visits both map sizes and, in each, both
 * paths; the order flips at every step so slow drift on the machine hits all combinations alike.
 *
 * --udp-bytes N measures packets per second instead (issue #16 goal 6): UDP datagrams of N bytes
 * sent as fast as iperf3 can, counted where they arrive (the Internet's interfaces).
 */
import os from "node:os";
import { parseArgs } from "node:util";
import { snapshotFromObjects, type KubeObject } from "../src/api/objects.js";
import { GatewayDataplane } from "../src/dataplane/gateway.js";
import { NodeDataplane } from "../src/dataplane/node.js";
import { commandKernel } from "../src/dataplane/kernel.js";
import { Lab, LAB_CLUSTER_NETWORK } from "../src/lab/lab.js";
import { deleteNamespacesWithPrefix, newRunPrefix } from "../src/lab/netns.js";
import { cliEntry } from "../src/lab/paths.js";
import { formatIPv4, parseIPv4 } from "../src/util/ipv4.js";
import { Planner } from "../src/planner/plan.js";
import { LAB_NETWORK } from "../src/lab/topology.js";
import { inNamespace } from "../src/util/exec.js";
import { requireRoot } from "./lib/env.js";
import { startRun } from "./lib/record.js";
import { guarded } from "./lib/guard.js";
import { IperfServer, runIperfClient, type IperfRun } from "./lib/iperf.js";
import { exampleLabConfig, waitConverged } from "../test/lab/support.js";
import { expectDivertCount, expectElements } from "./lib/netns.js";
import { defaultResultPath, writeResults } from "./lib/results.js";
import { round, roundSummary, summarize, type Summary } from "./lib/stats.js";
import { timed } from "./lib/timing.js";

const POD = "payments/pay-1";
const POLICY = "EgressPolicy/payments/checkout";
const IPERF_PORT = 5201;
/** Synthetic pods get addresses here: inside the cluster's pod CIDR, clear of the lab nodes' /24s. */
const EXTRA_POD_BASE = "10.244.128.0";

type PathName = "gateway" | "direct";

interface Sample extends IperfRun {
  /** What the phase compares: Gbit/s the server received (TCP), or with --udp-bytes Mpps at the Internet's interface. */
  rate: number;
  phase: string;
  path: PathName;
  dst: string;
  round: number;
  /** One visit = one gateway run and one direct run back to back, under the same conditions. */
  visit: number;
}

interface PhaseResult {
  phase: string;
  /** Pods in the planner's snapshot (the lab's own plus the synthetic ones). */
  pods: number;
  nodeDivertElements: number;
  gatewaySnatElements: Record<string, number>;
  /** Gbit/s (TCP) or Mpps (UDP), see `setup.units`. */
  rate: Record<PathName, Summary>;
  /** median(gateway) / median(direct). */
  ratio: number;
  /** gateway / direct of the two runs of each visit (back to back), summarized: less sensitive to drift. */
  pairedRatio: Summary;
  retransmits: Record<PathName, number>;
}

function checkoutPods(count: number, node: string): KubeObject[] {
  const base = parseIPv4(EXTRA_POD_BASE);
  return Array.from({ length: count }, (_, i) => {
    const ip = formatIPv4(base + i);
    return {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: `bench-${i}`, namespace: "payments", labels: { app: "checkout" } },
      spec: { nodeName: node },
      status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
    };
  });
}

/** What the planner says node1 and each gateway instance must hold, for these objects. */
function plansFor(lab: Lab, objects: readonly KubeObject[], node: string) {
  // The per-policy cap on map elements (32,768) would refuse checkout with more than ~16,000 pods;
  // what is measured is the kernel's map size (one map whatever the policies), so the cap is lifted.
  const planner = new Planner(snapshotFromObjects(objects, LAB_CLUSTER_NETWORK), {
    maxMapElementsPerPolicy: Number.MAX_SAFE_INTEGER,
  });
  // Health: every instance up (an empty view plans every instance as reachable).
  const nodePlan = planner.planNode(node, new Map());
  const gatewayPlans = lab.topology.gatewayHosts.map((g) => {
    const plan = planner.planGateway(`${g.gateway}/${g.name}`);
    if (!plan) throw new Error(`no plan for gateway instance ${g.gateway}/${g.name}`);
    return { host: g, plan };
  });
  return { planner, nodePlan, gatewayPlans };
}

/**
 * The datapath of node1 and of every gateway instance, programmed by this process with the same
 * Planner and dataplanes the agents use. Each apply is one atomic nft transaction.
 */
class LabDatapath {
  private node!: NodeDataplane;
  private gateways!: Map<string, GatewayDataplane>;

  constructor(
    private readonly lab: Lab,
    private readonly nodeNs: string,
  ) {
    this.forget();
  }

  /**
   * New dataplane objects know nothing of the kernel's table, so their next apply is a full
   * replace (as after an agent restart) instead of an element delta.
   */
  private forget(): void {
    this.node = new NodeDataplane(commandKernel(inNamespace(this.nodeNs)));
    this.gateways = new Map(
      this.lab.topology.gatewayHosts.map((g) => [g.name, new GatewayDataplane(commandKernel(inNamespace(g.netns)))]),
    );
  }

  async program(
    plans: ReturnType<typeof plansFor>,
    mode: "delta" | "full",
  ): Promise<{ mode: "delta" | "full"; nodeMs: number; gatewayMs: Record<string, number> }> {
    if (mode === "full") this.forget();
    const node = await timed(() => this.node.apply(plans.nodePlan));
    const gatewayMs: Record<string, number> = {};
    for (const { host, plan } of plans.gatewayPlans)
      gatewayMs[host.name] = round((await timed(() => this.gateways.get(host.name)!.apply(plan))).ms);
    await expectDivertCount(inNamespace(this.nodeNs), "static_egress", plans.nodePlan.entries.length, "node1 divert");
    for (const { host, plan } of plans.gatewayPlans) {
      await expectElements(
        inNamespace(host.netns),
        "map",
        "ip",
        "static_egress_gw",
        "egress_snat",
        plan.snat.length,
        `${host.name} SNAT map`,
      );
    }
    return { mode, nodeMs: round(node.ms), gatewayMs };
  }
}

/**
 * `--hosts split`: the gateway hosts' and the Internet's receive work (RPS on each of their veths)
 * goes to the last CPU, so the sender's side (pod, node, fabric) and the far side run on different
 * CPUs, as they do on separate machines. By default (`shared`) a single TCP stream's whole path
 * runs on the sender's CPU: veth hands each packet on within the same CPU.
 */
async function splitHosts(lab: Lab): Promise<void> {
  const cpus = os.availableParallelism();
  if (cpus < 2) throw new Error("--hosts split needs at least 2 CPUs");
  const mask = (1n << BigInt(cpus - 1)).toString(16);
  for (const ns of [...lab.topology.gatewayHosts.map((h) => h.netns), lab.topology.internet]) {
    const inNs = inNamespace(ns);
    const { stdout } = await inNs.run("ip", ["-j", "link", "show", "type", "veth"]);
    for (const link of JSON.parse(stdout) as { ifname: string }[])
      await inNs.run("sh", ["-c", `echo ${mask} > /sys/class/net/${link.ifname}/queues/rx-0/rps_cpus`]);
  }
}

/** Packets received on every veth of a namespace so far (the kernel's interface counters). */
async function rxPackets(ns: string): Promise<number> {
  const { stdout } = await inNamespace(ns).run("ip", ["-j", "-s", "link", "show", "type", "veth"]);
  return (JSON.parse(stdout) as { stats64?: { rx?: { packets?: number } } }[]).reduce(
    (n, l) => n + (l.stats64?.rx?.packets ?? 0),
    0,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "6" },
      seconds: { type: "string", default: "5" },
      "extra-pods": { type: "string", default: "10000" },
      out: { type: "string", default: defaultResultPath("throughput") },
      "max-seconds": { type: "string", default: "300" },
      hosts: { type: "string", default: "shared" },
      "udp-bytes": { type: "string" },
    },
  });
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  const extraPods = Number(values["extra-pods"]);
  const maxSeconds = Number(values["max-seconds"]);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20)
    throw new Error("--rounds must be an integer from 1 to 20");
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60)
    throw new Error("--seconds must be an integer from 1 to 60");
  if (!Number.isInteger(extraPods) || extraPods < 0 || extraPods > 60_000)
    throw new Error("--extra-pods must be an integer from 0 to 60000");
  const udpBytes = values["udp-bytes"] === undefined ? undefined : Number(values["udp-bytes"]);
  if (udpBytes !== undefined && (!Number.isInteger(udpBytes) || udpBytes < 16 || udpBytes > 1400))
    throw new Error("--udp-bytes must be an integer from 16 to 1400 (the UDP payload of each datagram)");
  const hosts = values.hosts;
  if (hosts !== "shared" && hosts !== "split") throw new Error("--hosts must be shared or split");
  requireRoot();
  cliEntry(); // the lab runs the built agents: fail early if `npm run build` is missing
  const log = (l: string) => console.error(l);
  const run = await startRun("throughput", {
    rounds,
    seconds,
    extraPods,
    maxSeconds,
    hosts,
    udpBytes,
    out: values.out,
  });
  const prefix = newRunPrefix();
  const started = Date.now();
  let lab: Lab | undefined;
  let servers: IperfServer[] = [];
  log(
    `throughput benchmark, run ${prefix}, ${rounds} rounds x ${seconds}s per path, load ${run.loadAtStart.join(" ")}`,
  );

  const outcome = await guarded(
    async () => {
      await Promise.all(servers.map((s) => s.stop()));
      await lab?.down();
      await deleteNamespacesWithPrefix(`${prefix}-`);
    },
    async () => {
      const cfg = exampleLabConfig();
      const up = await timed(() => Lab.up(cfg, { prefix, persistent: false, log: (l) => log(`lab: ${l}`) }));
      lab = up.value;
      await waitConverged(lab);
      log(`lab up and converged in ${(up.ms / 1000).toFixed(1)}s (plus convergence)`);
      if (hosts === "split") await splitHosts(lab);

      const pod = lab.findPod(POD);
      const node = lab.topology.nodes.find((n) => n.name === pod.node)!;
      const podIP = lab.record.podIPs[POD]!;
      const destinations: Record<PathName, string> = {
        gateway: LAB_NETWORK.echoService,
        direct: LAB_NETWORK.otherService,
      };
      // One server per destination, bound to it (a UDP server must answer from the address asked).
      const ports: Record<PathName, number> = { gateway: IPERF_PORT, direct: IPERF_PORT + 1 };
      servers = await Promise.all(
        (["gateway", "direct"] as const).map((p) =>
          IperfServer.start(lab!.topology.internet, {
            port: ports[p],
            bind: destinations[p],
            lifetimeSeconds: maxSeconds,
          }),
        ),
      );
      const samples: Sample[] = [];
      const phases: PhaseResult[] = [];

      const checkPaths = async (planner: Planner, nodePlan: ReturnType<Planner["planNode"]>) => {
        const policy = planner.resolution.policies.find((p) => p.resource === POLICY);
        if (!policy) throw new Error(`${POLICY} is not a valid policy of the lab`);
        const policyIPs = [...policy.egressIPsByInstance.values()].flat();
        const diverted = (dst: string) =>
          nodePlan.entries.some((e) => e.podIP === podIP && e.dst.from <= parseIPv4(dst) && parseIPv4(dst) <= e.dst.to);
        if (!diverted(destinations.gateway) || diverted(destinations.direct))
          throw new Error(
            `the plan does not divert ${destinations.gateway} and exclude ${destinations.direct} for ${POD}`,
          );
        const viaGateway = await lab!.probe(pod, `http://${destinations.gateway}/`);
        const direct = await lab!.probe(pod, `http://${destinations.direct}/`);
        if (!viaGateway.source || !policyIPs.includes(viaGateway.source))
          throw new Error(
            `${destinations.gateway} saw ${viaGateway.source ?? viaGateway.error}, not one of ${policyIPs.join(", ")}`,
          );
        if (direct.source !== node.publicIP)
          throw new Error(
            `${destinations.direct} saw ${direct.source ?? direct.error}, not the node's ${node.publicIP}`,
          );
        return { gatewaySource: viaGateway.source, directSource: direct.source };
      };

      // From here on this process owns the datapath: the agents are stopped (the kernel keeps
      // forwarding without them) so their periodic resyncs and health sessions cannot disturb
      // the runs, and both map sizes are programmed the same way.
      for (const p of lab.record.processes) if (p.name.startsWith("agent-")) lab.killProcess(p.name);
      const datapath = new LabDatapath(lab, node.netns);
      const baseObjects = lab.objects(await lab.currentPolicies());
      const phaseDefs = [
        { name: "lab pods only", pods: lab.topology.pods.length, plans: plansFor(lab, baseObjects, node.name) },
      ];
      if (extraPods > 0) {
        phaseDefs.push({
          name: `+${extraPods} pods`,
          pods: lab.topology.pods.length + extraPods,
          plans: plansFor(lab, [...baseObjects, ...checkoutPods(extraPods, node.name)], node.name),
        });
      }

      // Rounds interleave both map sizes and both paths, flipping the order every time, so slow
      // drift in what else the machine does hits every combination alike.
      const switches: {
        round: number;
        to: string;
        mode: "delta" | "full";
        nodeMs: number;
        gatewayMs: Record<string, number>;
      }[] = [];
      let current: string | undefined;
      let visit = 0;
      for (let r = 0; r < rounds; r++) {
        for (const phase of r % 2 === 0 ? phaseDefs : [...phaseDefs].reverse()) {
          if (current !== phase.name) {
            // Growing is an element delta, as an agent would do it. Shrinking is a full replace:
            // deleting 20,000 interval elements in one delta takes the kernel tens of seconds
            // (see the bulk results of bench/programming.ts), which would dominate the run.
            const grows =
              current !== undefined &&
              phase.plans.nodePlan.entries.length >
                (phaseDefs.find((p) => p.name === current)?.plans.nodePlan.entries.length ?? 0);
            const t = await datapath.program(phase.plans, grows ? "delta" : "full");
            switches.push({ round: r, to: phase.name, ...t });
            current = phase.name;
            const seen = await checkPaths(phase.plans.planner, phase.plans.nodePlan);
            log(
              `round ${r + 1}, ${phase.name}: programmed (${t.mode}) in ${t.nodeMs} ms ` +
                `on ${node.name} (${phase.plans.nodePlan.entries.length} divert elements), ` +
                `gateways ${JSON.stringify(t.gatewayMs)} ms; ${destinations.gateway} ` +
                `sees ${seen.gatewaySource}, ${destinations.direct} sees ${seen.directSource}`,
            );
          }
          const v = visit++;
          for (const path of v % 2 === 0 ? (["gateway", "direct"] as const) : (["direct", "gateway"] as const)) {
            const before = udpBytes ? await rxPackets(lab.topology.internet) : 0;
            const run = await runIperfClient(pod.netns, destinations[path], { port: ports[path], seconds, udpBytes });
            // UDP: count at the Internet's interface, not at iperf3's socket (one receiving thread
            // would be the bottleneck of both paths alike and hide the path's own cost).
            const rate = udpBytes ? (await rxPackets(lab.topology.internet)) - before : run.gbps;
            const sample = udpBytes ? { ...run, rate: rate / run.seconds / 1e6 } : { ...run, rate };
            samples.push({ ...sample, phase: phase.name, path, dst: destinations[path], round: r, visit: v });
            log(
              udpBytes
                ? `  ${path.padEnd(7)} ${destinations[path]}: ${sample.rate.toFixed(3)} Mpps at the Internet, ` +
                    `${run.udp!.sentPackets} sent, ${run.udp!.lostPackets} not at the server's socket`
                : `  ${path.padEnd(7)} ${destinations[path]}: ${run.gbps.toFixed(2)} ` +
                    `Gbit/s, ${run.retransmits} retransmits, cpu ` +
                    `client ${run.cpuPercent.client.toFixed(0)}% server ${run.cpuPercent.server.toFixed(0)}%`,
            );
          }
        }
      }

      for (const phase of phaseDefs) {
        const runs = (path: PathName) => samples.filter((s) => s.phase === phase.name && s.path === path);
        const rates = (path: PathName) => runs(path).map((s) => s.rate);
        phases.push({
          phase: phase.name,
          pods: phase.pods,
          nodeDivertElements: phase.plans.nodePlan.entries.length,
          gatewaySnatElements: Object.fromEntries(
            phase.plans.gatewayPlans.map((g) => [g.host.name, g.plan.snat.length]),
          ),
          rate: {
            gateway: roundSummary(summarize(rates("gateway"))),
            direct: roundSummary(summarize(rates("direct"))),
          },
          ratio: round(summarize(rates("gateway")).median / summarize(rates("direct")).median),
          pairedRatio: roundSummary(
            summarize(runs("gateway").map((g) => g.rate / runs("direct").find((d) => d.visit === g.visit)!.rate)),
          ),
          retransmits: {
            gateway: runs("gateway").reduce((n, s) => n + s.retransmits, 0),
            direct: runs("direct").reduce((n, s) => n + s.retransmits, 0),
          },
        });
      }
      const switchMs = (to: string | undefined, mode: "delta" | "full") =>
        roundSummary(summarize(switches.filter((x) => x.to === to && x.mode === mode).map((x) => x.nodeMs)));
      const programming = {
        /** node1: adding the extra pods to the live table (one element delta). */
        nodeAddExtraMs: extraPods > 0 ? switchMs(phaseDefs[1]?.name, "delta") : undefined,
        /** node1: full replace of the table with the lab's own pods only. */
        nodeFullSmallMs: switchMs(phaseDefs[0]?.name, "full"),
        switches,
      };
      // Map size effect per path: median with the extra pods over median without.
      const mapSizeEffect =
        phases.length === 2
          ? Object.fromEntries(
              (["gateway", "direct"] as const).map((p) => [
                p,
                round(phases[1]!.rate[p].median / phases[0]!.rate[p].median),
              ]),
            )
          : undefined;
      return { samples, phases, mapSizeEffect, programming };
    },
    { maxSeconds, log },
  );

  writeResults(values.out, run, {
    durationSeconds: Math.round((Date.now() - started) / 1000),
    setup: {
      lab: "examples/lab.yaml (3 nodes, gateway `shared` with gw-a and gw-b), veth + Linux bridges, MTU 1500",
      client: udpBytes
        ? `${POD} on node1, iperf3 UDP, ${udpBytes}-byte payloads as fast as it can send (-b 0), ${seconds}s per run, pod -> Internet`
        : `${POD} on node1, iperf3 TCP, ${seconds}s per run, one stream, pod -> Internet (upload)`,
      hosts:
        hosts === "split"
          ? "split: the gateway hosts' and the Internet's receive work on the last CPU (RPS)"
          : "shared: one stream's whole path on the sender's CPU",
      paths: {
        gateway: `${LAB_NETWORK.echoService}: node1 -> gateway instance (SNAT to checkout's IP) -> Internet`,
        direct: `${LAB_NETWORK.otherService}: excluded by checkout, node1 masquerade -> Internet`,
      },
      agents:
        "stopped after the lab converged; node1 and both gateway instances are programmed by the " +
        "benchmark with the same Planner and Node/GatewayDataplane (health: all instances up)",
      extraPods:
        extraPods > 0
          ? `${extraPods} synthetic checkout pods on node1 (addresses from ${EXTRA_POD_BASE}) added to the planner's snapshot`
          : "none",
      units: udpBytes
        ? "Mpps: datagrams received at the Internet's interface per second of the run; p95 is nearest-rank"
        : "Gbit/s received by the iperf3 server; p95 is nearest-rank (the maximum with few samples)",
    },
    ...outcome,
  });
  const range = (x: Summary) => `${x.median} (${x.min}–${x.max})`;
  const unit = udpBytes ? "Mpps" : "Gbit/s";
  console.log(
    `\n| map size | divert elements (node1) | SNAT elements (per gateway) | gateway ` +
      `${unit} median (min–max) | direct ${unit} median (min–max) | gateway / direct ` +
      "(of medians) | gateway / direct, paired runs: median (min–max) |",
  );
  console.log("|---|---|---|---|---|---|---|");
  for (const p of outcome.phases) {
    console.log(
      `| ${p.phase} | ${p.nodeDivertElements} ` +
        `| ${Object.values(p.gatewaySnatElements).join(" / ")} | ${range(p.rate.gateway)} ` +
        `| ${range(p.rate.direct)} | ${p.ratio} | ${range(p.pairedRatio)} |`,
    );
  }
  if (outcome.mapSizeEffect)
    console.log(
      `(with / without the extra pods, medians: gateway ${outcome.mapSizeEffect.gateway}, direct ${outcome.mapSizeEffect.direct})`,
    );
  const { nodeAddExtraMs } = outcome.programming;
  if (nodeAddExtraMs)
    console.log(
      `(node1, live: adding the ${extraPods} extra pods as one element delta: ${nodeAddExtraMs.median} ms median)`,
    );
  log(`raw results: ${values.out}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
