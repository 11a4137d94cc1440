import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { parseDocuments } from "../api/objects.js";
import { importObjects } from "../importers/index.js";
import { formatObjects, formatReport } from "../importers/report.js";
import { applyAllOrNone } from "../kube/apply.js";
import { KubeClient } from "../kube/client.js";
import { loadKubeconfig } from "./agents.js";

interface ImportFlags {
  file: string;
  output?: string;
  gateway?: string;
  namespace: string;
  apply?: boolean;
  kubeconfig?: string;
}

/** `static-egress import`: peers' objects into ours (docs/import.md). */
export function registerImportCommand(program: Command): void {
  program
    .command("import")
    .description(
      "convert Cilium CiliumEgressGatewayPolicy, nirmata StaticEgressIP and " +
        "spidernet egressgateway EgressPolicy/EgressGateway objects " +
        "into EgressGateway/ClusterEgressPolicy/EgressPolicy; " +
        "prints the objects (stdout) and, per source field, what was refused, ignored or is left to do (stderr); exit 1 if anything was refused",
    )
    .requiredOption(
      "-f, --file <file>",
      "Kubernetes documents (`-` for stdin), e.g. `kubectl get ciliumegressgatewaypolicies -o yaml`; " +
        "nirmata's rules need their Services in it, spidernet's policies their EgressGateways",
    )
    .option(
      "-o, --output <format>",
      "print the made objects as yaml or json (default yaml; with --apply only when given)",
    )
    .option(
      "--gateway <name>",
      "attach every policy to this existing EgressGateway instead of generating one per peer gateway",
    )
    .option("--namespace <ns>", "namespace of namespaced source objects that name none", "default")
    .option(
      "--apply",
      "apply the made objects (server-side apply), all or none: nothing if anything was refused or the API server refuses any of them",
    )
    .option("--kubeconfig <file>", "with --apply: kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    .action(runImport);
}

async function runImport(flags: ImportFlags): Promise<void> {
  if (flags.output !== undefined && flags.output !== "yaml" && flags.output !== "json")
    throw new Error(`--output: must be yaml or json, not ${JSON.stringify(flags.output)}`);
  const text = readFileSync(flags.file === "-" ? 0 : flags.file, "utf8");
  const result = importObjects(parseDocuments(text, flags.file), {
    defaultNamespace: flags.namespace,
    ...(flags.gateway ? { gateway: flags.gateway } : {}),
  });
  if (flags.output !== undefined || !flags.apply)
    process.stdout.write(formatObjects(result, (flags.output ?? "yaml") as "yaml" | "json"));
  process.stderr.write(formatReport(result));
  const refused = result.findings.filter((f) => f.verdict === "refused").length;
  if (refused > 0) process.exitCode = 1;
  if (!flags.apply) return;
  if (refused > 0) {
    process.stderr.write(
      `nothing applied: ${refused} refused (fix the source objects, or leave them out of the input)\n`,
    );
    return;
  }
  if (result.made.length === 0) {
    process.stderr.write("nothing to apply\n");
    return;
  }
  const { applied, outcomes } = await applyAllOrNone(
    new KubeClient(loadKubeconfig(flags.kubeconfig)),
    result.made.map((m) => m.object),
  );
  for (const o of outcomes) process.stderr.write(`${o.result.padEnd(11)} ${o.ref}${o.error ? `: ${o.error}` : ""}\n`);
  if (!applied)
    process.stderr.write(
      `nothing applied: the API server refused ${outcomes.filter((o) => o.result === "refused").length} of ${outcomes.length}\n`,
    );
  if (!applied || outcomes.some((o) => o.result === "failed")) process.exitCode = 1;
}
