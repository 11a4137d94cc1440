import type { Command } from "commander";
import { PUBLISH_EGRESS_IPS_ANNOTATION } from "../api/keys.js";
import { feedDocument, feedEntries, parseFeedRef, type EgressIPsEntry } from "../controller/feed/egress-ips.js";
import { listKind } from "../kube/read.js";
import { StaticEgressError } from "../util/errors.js";
import { kubeClient } from "./explain.js";
import { columns } from "./columns.js";
import { programName } from "./invocation.js";

/*
 * `static-egress egress-ips [<ref>]` (docs/explain.md): the egress-IP feed the controller serves
 * on GET /egress-ips, built by the same code from the same objects read through the API, so
 * `-o json` prints the very bytes the controller answers with.
 */

class EgressIPsError extends StaticEgressError {}

interface Flags {
  kubeconfig?: string;
  output: string;
}

function table(entries: readonly EgressIPsEntry[]): string {
  const rows = [
    ["KIND", "NAME", "GATEWAY", "EGRESS-IPS", "LAST-CHANGE"],
    ...entries.map((e) => [
      e.kind,
      e.namespace ? `${e.namespace}/${e.name}` : e.name,
      e.gateway ?? "-",
      e.egressIPs.join(",") || "-",
      e.lastChange ?? "-",
    ]),
  ];
  return columns(rows) + "\n";
}

async function run(ref: string | undefined, flags: Flags): Promise<void> {
  if (flags.output !== "json" && flags.output !== "table")
    throw new EgressIPsError(`-o: must be json or table, not ${JSON.stringify(flags.output)}`);
  const parsed = ref === undefined ? undefined : parseFeedRef(ref);
  if (ref !== undefined && parsed === undefined)
    throw new EgressIPsError(
      `${JSON.stringify(ref)}: give <namespace>/<name> (an EgressPolicy), <name> (a ClusterEgressPolicy) or apps/<name> (an App)`,
    );
  const client = kubeClient(flags.kubeconfig);
  const [namespaced, cluster, apps] = await Promise.all([
    listKind(client, "EgressPolicy"),
    listKind(client, "ClusterEgressPolicy"),
    listKind(client, "App", { optional: true }),
  ]);
  const { entries, problems } = feedEntries({ policies: [...namespaced, ...cluster], apps });
  for (const p of problems) process.stderr.write(`warning: ${p.resource}: ${p.field}: ${p.message}\n`);
  const doc = feedDocument(entries, parsed);
  if (!doc)
    throw new EgressIPsError(
      `${ref}: not found, or not published (a policy publishes with spec.publishEgressIPs: true, ` +
        `an App with the annotation ${PUBLISH_EGRESS_IPS_ANNOTATION}: "true")`,
    );
  process.stdout.write(flags.output === "json" ? doc.body : table(parsed ? [doc.value as EgressIPsEntry] : entries));
}

export function registerEgressIPsCommand(program: Command): void {
  program
    .command("egress-ips")
    .description(
      "the published egress IPs (the controller's feed on GET /egress-ips): every published policy and App, or one",
    )
    .argument("[ref]", "<namespace>/<name> (EgressPolicy), <name> (ClusterEgressPolicy) or apps/<name> (App)")
    .option("-o, --output <format>", "table or json (the feed's document, byte for byte)", "table")
    .option("--kubeconfig <file>", "kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    .addHelpText("after", `\nExample: ${programName()} egress-ips payments/checkout -o json`)
    .action(run);
}
