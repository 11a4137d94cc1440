import type { Command } from "commander";
import { loadAgentConfig } from "../agents/config.js";
import type { ClusterNetwork } from "../api/cluster.js";
import { REPORT_ANNOTATION } from "../api/keys.js";
import type { NodeReport } from "../api/node-report.js";
import { snapshotFromObjects, type KubeObject } from "../api/objects.js";
import { commandKernel } from "../dataplane/kernel.js";
import { hex } from "../dataplane/nft.js";
import { NodeDataplane, type PodKernelView } from "../dataplane/node.js";
import { KubeClient } from "../kube/client.js";
import { readCluster, readPod } from "../kube/read.js";
import { compareWithKernel, explainPod, type Explanation, type NodeReportView, type Path } from "../planner/explain.js";
import { Planner } from "../planner/plan.js";
import { StaticEgressError } from "../util/errors.js";
import { localRunner } from "../util/exec.js";
import { contains, parseCidrOrRange, parseIPv4 } from "../util/ipv4.js";
import { loadKubeconfig } from "./agents.js";
import { programName } from "./invocation.js";

/*
 * `static-egress explain <namespace>/<pod>` (docs/explain.md): reads the cluster through the API
 * (lists only), explains the pod with the planner (src/planner/explain.ts), and with --local reads
 * the pod's entry from the kernel of the machine it runs on (the pod's node).
 */

class ExplainCliError extends StaticEgressError {}

/** Where the node agent runs the CLI in its image (the Dockerfile's entrypoint). */
const AGENT_CLI = "node /app/dist/cli/main.js";

interface ExplainFlags {
  kubeconfig?: string;
  config?: string;
  to?: string;
  local?: boolean;
  output: string;
}

/** `<namespace>/<name>`, or an error naming the argument. */
function parsePodRef(ref: string): { namespace: string; name: string } {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(ref);
  if (!m) throw new ExplainCliError(`${JSON.stringify(ref)}: give the pod as <namespace>/<name>, e.g. payments/pay-1`);
  return { namespace: m[1]!, name: m[3]! };
}

/** A client from the kubeconfig the user gave (or the default one), or an error naming the file. */
export function kubeClient(path: string | undefined): KubeClient {
  const what = path ? `--kubeconfig ${path}` : "the default kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster)";
  let kc;
  try {
    kc = loadKubeconfig(path);
  } catch (e) {
    throw new ExplainCliError(`${what}: cannot load it: ${(e as Error).message}`, { cause: e });
  }
  if (!kc.getCurrentCluster()) throw new ExplainCliError(`${what}: no current cluster (current-context) in it`);
  return new KubeClient(kc);
}

/** The node agent's report on its Node (any age: the time is shown), or undefined. */
function reportOf(objects: readonly KubeObject[], node: string | undefined): NodeReportView | undefined {
  if (node === undefined) return undefined;
  const text = objects.find((o) => o.kind === "Node" && o.metadata?.name === node)?.metadata?.annotations?.[
    REPORT_ANNOTATION
  ];
  if (!text) return undefined;
  try {
    const r = JSON.parse(text) as Partial<NodeReport>;
    return { at: String(r.at ?? ""), health: r.health ?? {}, programmed: r.programmed ?? {} };
  } catch {
    return undefined;
  }
}

/** The node agent pod on `node` (deploy/: app.kubernetes.io/component=node-agent), for the hint. */
function agentPodOn(objects: readonly KubeObject[], node: string): KubeObject | undefined {
  return objects.find(
    (o) =>
      o.kind === "Pod" &&
      o.metadata?.labels?.["app.kubernetes.io/name"] === "static-egress" &&
      o.metadata?.labels?.["app.kubernetes.io/component"] === "node-agent" &&
      (o.spec as { nodeName?: string } | undefined)?.nodeName === node,
  );
}

type KernelRead = PodKernelView & {
  podIP: string;
  comparison: ReturnType<typeof compareWithKernel>;
};

export interface ExplainOutput extends Explanation {
  /** What this machine's kernel holds for the pod (`--local`), null when not read. */
  kernel: KernelRead[] | null;
  /** How to get the kernel's entry when it was not read. */
  kernelHint?: string;
}

async function runExplain(ref: string, flags: ExplainFlags): Promise<void> {
  if (flags.output !== "text" && flags.output !== "json")
    throw new ExplainCliError(`-o: must be text or json, not ${JSON.stringify(flags.output)}`);
  const pod = parsePodRef(ref);
  if (flags.to !== undefined) {
    try {
      parseIPv4(flags.to);
    } catch {
      throw new ExplainCliError(`--to: not an IPv4 address: ${JSON.stringify(flags.to)}`);
    }
  }
  const network: ClusterNetwork = flags.config
    ? loadAgentConfig(flags.config).clusterNetwork
    : { podCIDRs: [], serviceCIDRs: [], nodeCIDRs: [] };
  const client = kubeClient(flags.kubeconfig);
  await readPod(client, pod.namespace, pod.name); // says "not found" before reading everything
  const objects = await readCluster(client);
  const planner = new Planner(snapshotFromObjects(objects, network));
  const podNode = (
    objects.find((o) => o.kind === "Pod" && o.metadata?.namespace === pod.namespace && o.metadata?.name === pod.name)
      ?.spec as { nodeName?: string } | undefined
  )?.nodeName;
  const report = reportOf(objects, podNode);
  const explanation = explainPod(planner, pod, {
    ...(report ? { report } : {}),
    ...(flags.to !== undefined ? { destination: flags.to } : {}),
  });
  const out: ExplainOutput = { ...explanation, kernel: null };
  if (flags.local) {
    out.kernel = await readKernel(explanation, flags.to);
  } else if (podNode !== undefined && !explanation.pod.hostNetwork) {
    const agent = agentPodOn(objects, podNode);
    const target = agent
      ? `-n ${agent.metadata?.namespace} ${agent.metadata?.name}`
      : `-n static-egress <the node agent pod on ${podNode}>`;
    out.kernelHint =
      `the kernel of ${podNode} was not read; run there: kubectl exec ${target} -- ${AGENT_CLI} explain ` +
      `${pod.namespace}/${pod.name}${flags.to ? ` --to ${flags.to}` : ""} --local`;
  }
  process.stdout.write(flags.output === "json" ? JSON.stringify(out, null, 2) + "\n" : renderExplanation(out));
}

/** Reads the pod's addresses from this machine's kernel and compares each with the plan. */
async function readKernel(e: Explanation, to: string | undefined): Promise<KernelRead[]> {
  if (e.pod.hostNetwork) return [];
  const dataplane = new NodeDataplane(commandKernel(localRunner));
  const dst = to === undefined ? undefined : parseIPv4(to);
  const out: KernelRead[] = [];
  for (const podIP of e.pod.ips.filter((ip) => !ip.includes(":"))) {
    const view = await dataplane.readPod(podIP);
    // With --to, only the rows that hold that destination, as the plan's.
    const entries =
      dst === undefined ? view.entries : view.entries.filter((x) => contains([parseCidrOrRange(x.dst)], dst));
    const marks = new Set(entries.map((x) => x.mark));
    const planned = (e.node?.entries ?? []).filter((x) => x.podIP === podIP);
    out.push({
      podIP,
      ...view,
      entries,
      paths: view.paths.filter((p) => marks.has(p.mark)),
      comparison: compareWithKernel(planned, entries),
    });
  }
  return out;
}

function pathText(p: Path): string {
  switch (p.kind) {
    case "gateway": {
      const health = `health on the node: ${p.healthOnNode}${p.gatewayStatus ? `; gateway status: ${p.gatewayStatus}` : ""}`;
      return (
        `instance ${p.instance} (${p.address}${p.drain ? ", draining" : ""}; ${health}), ` +
        `egress IP ${p.egressIPs.join(" or ")}`
      );
    }
    case "dropped":
      return `dropped (fail-closed): ${p.reason}`;
    case "node-ip":
      return `the node's IP: ${p.reason}`;
    case "unscheduled":
      return p.reason;
  }
}

function ago(at: string): string {
  const s = Math.round((Date.now() - Date.parse(at)) / 1000);
  return Number.isFinite(s) ? `${s} s ago` : "at an unreadable time";
}

/** The explanation for people. */
function renderExplanation(o: ExplainOutput): string {
  const lines: string[] = [];
  const p = o.pod;
  lines.push(
    `Pod ${p.namespace}/${p.name} on ${p.node ?? "(no node yet)"}, IP ${p.ips.join(", ") || "(none)"}` +
      (o.destination ? `, to ${o.destination}` : ""),
  );
  for (const s of o.summary) lines.push(`  ${s}`);
  if (o.decisions.length > 0) {
    lines.push("", "Deciding:");
    for (const d of o.decisions) {
      lines.push(`  ${d.policy}${d.valid ? "" : " (Invalid)"}`);
      lines.push(`    destinations: ${d.destinations.join(", ")}`);
      if (d.gateway) lines.push(`    gateway: ${d.gateway}, failurePolicy ${d.failurePolicy}`);
      lines.push(`    path: ${pathText(d.path)}`);
    }
  }
  const others = o.policies.filter((x) => x.lost.length > 0 || !x.valid || x.decides.length === 0);
  if (others.length > 0) {
    lines.push("", "Also selecting the pod:");
    for (const x of others) {
      lines.push(`  ${x.policy} (priority ${x.priority}${x.valid ? "" : ", Invalid"})`);
      for (const err of x.errors) lines.push(`    invalid: ${err.field}: ${err.message}`);
      for (const l of x.lost) lines.push(`    lost ${l.destinations.join(", ")} to ${l.to}: ${l.message} [${l.rule}]`);
      if (x.decides.length > 0) lines.push(`    still decides ${x.decides.join(", ")}`);
      if (x.note) lines.push(`    ${x.note}`);
    }
  }
  if (o.node) {
    const r = o.node.report;
    lines.push(
      "",
      `Datapath on ${o.node.name}, planned with its last report` +
        (r ? ` (${r.at}, ${ago(r.at)})` : " (none: every instance taken as up)") +
        ":",
    );
    if (o.node.entries.length === 0) lines.push("  no divert entry for the pod: its packets leave as the node's");
    for (const e of o.node.entries) {
      const target =
        e.instance === ""
          ? "dropped (no instance)"
          : `table ${e.table} -> ${e.route === "via" ? `tunnel to ${e.instance}` : "blackhole (dropped)"}`;
      lines.push(`  ${e.podIP} . ${e.dst} -> mark ${hex(e.mark)} -> ${target}`);
    }
    if (r)
      for (const d of o.decisions) {
        const n = r.programmed[d.policy] ?? 0;
        lines.push(`  the node reports ${n} pod${n === 1 ? "" : "s"} programmed for ${d.policy}`);
      }
  }
  if (o.kernel) {
    lines.push("", "Kernel of this machine (read now):");
    if (o.kernel.length === 0)
      lines.push("  not read: a hostNetwork pod's traffic is the node's own (map node_divert)");
    for (const k of o.kernel) {
      if (!k.present) lines.push(`  table ${k.table} is not there: the node agent has not programmed this machine`);
      if (k.entries.length === 0) lines.push(`  ${k.podIP}: no divert entry`);
      for (const e of k.entries) lines.push(`  ${k.podIP} . ${e.dst} -> mark ${hex(e.mark)}`);
      lines.push(`  bound to interface: ${k.boundInterface ?? "(none: its diverted packets are dropped)"}`);
      for (const path of k.paths) {
        const rule = path.rule
          ? `rule ${path.rule.priority} fwmark ${hex(path.rule.fwmark)}/${hex(path.rule.mask)} -> ` +
            (path.rule.action === "blackhole" ? "blackhole" : `table ${path.rule.action.table}`)
          : "no rule";
        const routes = path.routes
          .map((r) =>
            r.kind === "blackhole" ? `blackhole ${r.dst}` : `${r.dst} via ${r.via} dev ${r.onlinkDev ?? "?"}`,
          )
          .join("; ");
        lines.push(
          `  mark ${hex(path.mark)}${path.down ? " (in down_instances: dropped)" : ""}: ${rule}` +
            (routes ? `: ${routes}` : "") +
            (path.tunnel ? ` (tunnel ${path.tunnel.device} to ${path.tunnel.remote}, VNI ${path.tunnel.vni})` : ""),
        );
      }
      lines.push(
        k.comparison.matches
          ? "  matches the plan"
          : `  differs from the plan: missing ${JSON.stringify(k.comparison.missing)}, unexpected ${JSON.stringify(k.comparison.unexpected)}`,
      );
    }
  } else if (o.kernelHint) {
    lines.push("", `Kernel: ${o.kernelHint}`);
  }
  return lines.join("\n") + "\n";
}

export function registerExplainCommand(program: Command): void {
  program
    .command("explain")
    .description(
      "why a pod leaves with the address it does: the deciding policy, the policies it beat and why, " +
        "the gateway instance and its health, the egress IP, and the node's datapath entry",
    )
    .argument("<namespace/pod>", "the pod")
    .option("--to <ip>", "only this destination")
    .option(
      "--local",
      "also read the pod's entry from this machine's kernel (nft map, ip rule and route): run it on the pod's node, " +
        "e.g. in the node agent pod there",
    )
    .option("--kubeconfig <file>", "kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    .option("--config <file>", "agent config: its clusterNetwork ranges are never diverted (the node agent's --config)")
    .option("-o, --output <format>", "text or json", "text")
    .addHelpText("after", `\nExample: ${programName()} explain payments/pay-1 --to 198.51.100.10`)
    .action(runExplain);
}
