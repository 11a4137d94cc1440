import { readFileSync } from "node:fs";
import { parseLabConfig } from "../lab/config.js";
import { Lab, waitFor, type GatewayDeath } from "../lab/lab.js";
import { newRunPrefix } from "../lab/netns.js";
import { analyzeStream, startUdpStream } from "../lab/traffic.js";
import { formatStatusTable } from "./lab.js";

function say(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** The README's demo: a lab, each pod's egress IP, a gateway killed under traffic, the failover. */
export async function runDemo(file: string, kind: GatewayDeath, keep: boolean): Promise<void> {
  const cfg = parseLabConfig(readFileSync(file, "utf8"), file);
  const lab = await Lab.up(cfg, { prefix: newRunPrefix(), persistent: keep, log: (l) => say(`  ${l}`) });
  const cleanup = async () => {
    if (!keep) await lab.down();
  };
  process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));
  try {
    say(`\n== lab ${lab.record.prefix} is up; waiting for the agents and the BFD sessions`);
    let rows = await lab.status();
    await waitFor(async () => (rows = await lab.status()).every((r) => r.ok), 20_000, "the lab did not converge", 300);
    say(formatStatusTable(rows));
    const selected = rows.find((r) => r.policy && r.egressIP);
    if (!selected) throw new Error("no selected pod in this lab: nothing to fail over");
    const victim = lab.topology.gatewayHosts.find((g) => g.egressIPs.includes(selected.egressIP!))!;
    say(`\n== ${selected.pod} leaves through ${victim.name} (${selected.egressIP}). Sending it 1 UDP datagram per ms and killing ${victim.name} (${kind})`);
    const started = Date.now();
    const stream = startUdpStream(lab, selected.pod, "demo", 4_000);
    await new Promise((r) => setTimeout(r, 1_000));
    const killedAt = Date.now();
    await lab.killGateway(victim.name, kind);
    await stream;
    const report = analyzeStream(lab, "demo", selected.expected, { from: started, to: Date.now() });
    say(`   received ${report.received} datagrams; by source: ${JSON.stringify(report.sources)}`);
    say(`   longest interruption: ${report.longestGapMs} ms (began ${report.gapStartedAt - killedAt} ms after the kill)`);
    say(`   datagrams with a source outside ${selected.expected.join("|")}: ${report.wrongSource.length}`);
    say(`\n== after the failover`);
    say(formatStatusTable(await lab.status()));
    await lab.reviveGateway(victim.name);
    say(`\n== ${victim.name} revived: nodes take it back after its hold-down; open flows stay where they are`);
  } finally {
    await cleanup();
    say(keep ? `\nlab ${lab.record.prefix} left up (static-egress lab down)` : "\nlab removed");
  }
}
