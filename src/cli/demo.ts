import { readFileSync } from "node:fs";
import { columns } from "./columns.js";
import { parseLabConfig } from "../lab/config.js";
import { Lab, waitFor, type GatewayDeath, type LabMode, type LabPodStatus } from "../lab/lab.js";
import { newRunPrefix } from "../lab/netns.js";
import { LAB_CLOUD } from "../lab/cloud.js";
import { analyzeStream, startUdpStream } from "../lab/traffic.js";

function say(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** The README's demo: a lab, each pod's egress IP, a gateway killed under traffic, the failover. */
export function formatStatusTable(rows: readonly LabPodStatus[]): string {
  const header = ["POD", "NODE", "POD-IP", "EGRESS-IP (seen)", "EXPECTED", "POLICY", "OK"];
  const lines = rows.map((r) => [
    r.pod,
    r.node,
    r.ip,
    r.egressIP ?? `- (${r.error ?? "no answer"})`,
    r.expected.join("|") || "dropped",
    r.policy ?? "-",
    r.ok ? "yes" : "NO",
  ]);
  return columns([header, ...lines], 2);
}

export async function runDemo(file: string, kind: GatewayDeath, keep: boolean, asked?: LabMode): Promise<void> {
  const cfg = parseLabConfig(readFileSync(file, "utf8"), file);
  // A gateway on (stand-in) DigitalOcean droplets needs the controller: Kubernetes mode.
  const mode = asked ?? (cfg.gateways.some((g) => g.digitalocean) ? "kubernetes" : "file");
  if (kind === "destroy" && !cfg.gateways.some((g) => g.digitalocean))
    throw new Error("--kind destroy needs a lab file with a digitalocean gateway (examples/lab-digitalocean.yaml)");
  const lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: keep, mode, log: (l) => say(`  ${l}`) });
  const cleanup = async () => {
    if (!keep) await lab.down();
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));
  try {
    say(`\n== lab ${lab.record.prefix} is up; waiting for the agents and every node's BFD sessions`);
    const view = lab.viewUrl();
    say(
      view
        ? `   live view: ${view}  (open it now to watch the failover; --keep leaves it up afterwards)`
        : "   (with --mode kubernetes the controller runs too, and serves a live view of the failover)",
    );
    await waitFor(() => lab.allInstancesUp(), 30_000, "BFD sessions did not come up", 300);
    let rows = await lab.status();
    await waitFor(async () => (rows = await lab.status()).every((r) => r.ok), 20_000, "the lab did not converge", 300);
    say(formatStatusTable(rows));
    const selected = rows.find((r) => r.policy && r.egressIP);
    if (!selected) throw new Error("no selected pod in this lab: nothing to fail over");
    const started = Date.now();
    const stream = startUdpStream(lab, selected.pod, "demo", 5_000);
    // The instance this very flow uses once it runs is the one that dies.
    await waitFor(
      () => analyzeStream(lab, "demo", selected.expected).received > 500,
      10_000,
      "the UDP stream does not arrive",
    );
    const current = analyzeStream(lab, "demo", selected.expected).lastSource!;
    const victim = lab.gatewayInstances().find((g) => g.egressIPs.includes(current))!;
    say(
      `\n== ${selected.pod} leaves through ${victim.name} (${current}), 1 UDP datagram per ms. Killing ${victim.name} (${kind}) now`,
    );
    const killedAt = Date.now();
    await lab.killGateway(victim.name, kind);
    await stream;
    const report = analyzeStream(lab, "demo", selected.expected, { from: started, to: Date.now() });
    say(`   received ${report.received} datagrams; by source: ${JSON.stringify(report.sources)}`);
    say(
      `   longest interruption: ${report.longestGapMs} ms (began ${report.gapStartedAt - killedAt} ms after the kill)`,
    );
    say(`   datagrams with a source outside ${selected.expected.join("|")}: ${report.wrongSource.length}`);
    say(`\n== after the failover`);
    say(formatStatusTable(await lab.status()));
    if (kind === "destroy") {
      say(
        `\n== ${victim.name} was deleted through the DigitalOcean API; the controller replaces it (same name) and moves ${current} to the replacement`,
      );
      await waitFor(
        () => lab.gatewayInstances().some((g) => g.name === victim.name && g.egressIPs.includes(current)),
        60_000,
        "the droplet was not replaced",
        200,
      );
      say(
        `   the replacement droplet runs and holds ${current} ` +
          `(${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill; the stand-in ` +
          `boots a droplet in ${LAB_CLOUD.dropletBootMs / 1000} s)`,
      );
      await waitFor(() => lab.allInstancesUp(), 30_000, "the replacement did not come up on every node", 300);
      let after = await lab.status();
      await waitFor(
        async () => (after = await lab.status()).every((r) => r.ok) && after.some((r) => r.egressIP === current),
        30_000,
        "traffic did not return to the replacement",
        300,
      );
      say(formatStatusTable(after));
    } else {
      await lab.reviveGateway(victim.name);
      say(`\n== ${victim.name} revived: nodes take it back after its hold-down; open flows stay where they are`);
    }
  } finally {
    await cleanup();
    say(keep ? `\nlab ${lab.record.prefix} left up (static-egress lab down)` : "\nlab removed");
  }
}
