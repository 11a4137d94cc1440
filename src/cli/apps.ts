import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { parse } from "yaml";
import { appForSpec, restoreRedacted, toDigitalOceanApp } from "../api/v1alpha1/app-view.js";
import { validateAppSpec } from "../api/v1alpha1/app-validate.js";
import type { AppSpec } from "../api/v1alpha1/app.js";
import type { FieldError } from "../api/v1alpha1/validate.js";
import { AppsClient } from "../kube/apps.js";
import { KubeClient } from "../kube/client.js";
import { loadKubeconfig } from "./agents.js";
import { columns } from "./columns.js";

/**
 * `static-egress apps`: DigitalOcean's `doctl apps` over App objects (docs/apps.md). Specs are
 * validated here first, with the controller's own validator: an invalid spec is never sent.
 */

/** Exit status for an invalid spec (doctl's usage errors are 1; scripts tell them apart). */
const EXIT_INVALID = 2;

class InvalidSpec extends Error {
  constructor(
    readonly file: string,
    readonly errors: FieldError[],
  ) {
    super(`${file}: invalid app spec`);
  }
}

/** A spec file: the app spec itself (as doctl takes it), or a DigitalOcean request body with `spec:`. */
function readSpec(file: string): AppSpec {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`, { cause: e });
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw new InvalidSpec(file, [{ field: "spec", message: "must be a mapping (an app spec)" }]);
  const d = doc as Record<string, unknown>;
  return (d.spec !== undefined && d.name === undefined ? d.spec : d) as AppSpec;
}

function checked(file: string, spec: AppSpec): AppSpec {
  const errors = validateAppSpec(spec);
  if (errors.length > 0) throw new InvalidSpec(file, errors);
  return spec;
}

function client(kubeconfig: string | undefined): AppsClient {
  return new AppsClient(new KubeClient(loadKubeconfig(kubeconfig)));
}

/** The API server's own refusal message, when it has one (422 with a Status body). */
function apiMessage(e: unknown): string {
  const body = (e as { body?: unknown }).body;
  try {
    const status = JSON.parse(typeof body === "string" ? body : "{}") as { message?: string };
    if (status.message) return status.message;
  } catch {
    /* not JSON */
  }
  return (e as Error).message;
}

type Row = Record<string, unknown>;
function table(apps: Row[]): string {
  const rows = [["ID", "Spec Name", "Phase", "Egress", "Dedicated IPs", "Created At"]];
  for (const a of apps) {
    const spec = a.spec as AppSpec | undefined;
    rows.push([
      String(a.id),
      spec?.name ?? "",
      String(a.phase),
      spec?.egress?.type ?? "AUTOASSIGN",
      ((a.dedicated_ips as { ip: string }[]) ?? []).map((d) => d.ip).join(",") || "-",
      String(a.created_at ?? ""),
    ]);
  }
  return columns(rows) + "\n";
}

/** One app's dedicated IPs with what left through each (docs/apps.md#usage), and the app's total. */
function usageTable(app: Row): string {
  type Usage = { bandwidth_bytes: string; packets: string; since: string };
  const ips = (app.dedicated_ips as { ip: string; status: string; usage?: Usage }[] | undefined) ?? [];
  const total = app.bandwidth_usage as Usage | undefined;
  if (ips.length === 0 && !total) return "";
  const rows = [["Dedicated IP", "Status", "Bytes Out", "Packets Out", "Since"]];
  for (const d of ips)
    rows.push([d.ip, d.status, d.usage?.bandwidth_bytes ?? "0", d.usage?.packets ?? "0", d.usage?.since ?? "-"]);
  if (total) rows.push(["(app)", "", total.bandwidth_bytes, total.packets, total.since]);
  return "\n" + columns(rows) + "\n";
}

function print(apps: Row[], output: string | undefined, single: boolean): void {
  if (output === "json") process.stdout.write(JSON.stringify(single ? apps[0] : apps, null, 2) + "\n");
  else if (output === undefined || output === "text")
    process.stdout.write(table(apps) + (single && apps[0] ? usageTable(apps[0]) : ""));
  else throw new Error(`-o: unknown output ${JSON.stringify(output)} (json or text)`);
}

/** Runs one subcommand: an invalid spec prints its fields and exits EXIT_INVALID; API refusals name what the server said. */
async function run(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof InvalidSpec) {
      process.stderr.write(
        `${e.file}: invalid app spec\n${e.errors.map((f) => `  ${f.field}: ${f.message}\n`).join("")}`,
      );
      process.exitCode = EXIT_INVALID;
      return;
    }
    const code = (e as { code?: unknown }).code;
    if (typeof code === "number")
      throw new Error(`the API server refused (HTTP ${code}): ${apiMessage(e)}`, { cause: e });
    throw e;
  }
}

export function registerAppsCommands(program: Command): void {
  const apps = program
    .command("apps")
    .description("apps from DigitalOcean app specs, run in this cluster (docs/apps.md)");
  const kube = "kubeconfig (default: $KUBECONFIG, ~/.kube/config or in-cluster)";

  apps
    .command("create")
    .description("create an app from an app spec file (as `doctl apps create --spec`)")
    .requiredOption("--spec <file>", "the app spec (YAML or JSON)")
    .option("--kubeconfig <file>", kube)
    .option("-o, --output <format>", "text or json")
    .action((o: { spec: string; kubeconfig?: string; output?: string }) =>
      run(async () => {
        const spec = checked(o.spec, readSpec(o.spec));
        const created = await client(o.kubeconfig).createApp(appForSpec(spec));
        print([toDigitalOceanApp(created as never)], o.output, true);
      }),
    );

  apps
    .command("update <name>")
    .description("replace an app's spec (every component rolls, as a DigitalOcean deployment does)")
    .requiredOption(
      "--spec <file>",
      "the app spec; SECRET values shown by `apps get` as **redacted** keep their current value",
    )
    .option("--kubeconfig <file>", kube)
    .option("-o, --output <format>", "text or json")
    .action((name: string, o: { spec: string; kubeconfig?: string; output?: string }) =>
      run(async () => {
        const spec = readSpec(o.spec);
        if (spec.name !== name)
          throw new InvalidSpec(o.spec, [
            { field: "spec.name", message: `must be ${JSON.stringify(name)}, the app being updated` },
          ]);
        const c = client(o.kubeconfig);
        const current = (await c.getApp(name)) as
          | {
              metadata: {
                resourceVersion?: string;
                labels?: Record<string, string>;
                annotations?: Record<string, string>;
                finalizers?: string[];
              };
              spec?: AppSpec;
            }
          | undefined;
        if (!current) throw new Error(`app ${name} not found`);
        const restored = restoreRedacted(spec, current.spec);
        if (restored.length > 0) throw new InvalidSpec(o.spec, restored);
        checked(o.spec, spec);
        // The resourceVersion read above: a change made meanwhile makes this fail (409), not vanish.
        // A replace sets the whole object: the App's labels, annotations (its choice for its IPs
        // on removal) and finalizer are carried over, not dropped.
        const { labels, annotations, finalizers } = current.metadata;
        const updated = await c.replaceApp(name, {
          ...appForSpec(spec),
          metadata: {
            name,
            resourceVersion: current.metadata.resourceVersion,
            ...(labels ? { labels } : {}),
            ...(annotations ? { annotations } : {}),
            ...(finalizers ? { finalizers } : {}),
          },
        });
        print([toDigitalOceanApp(updated as never)], o.output, true);
      }),
    );

  apps
    .command("get <name>")
    .description("show an app (-o json: shaped like DigitalOcean's App)")
    .option("--kubeconfig <file>", kube)
    .option("-o, --output <format>", "text or json")
    .action((name: string, o: { kubeconfig?: string; output?: string }) =>
      run(async () => {
        const app = await client(o.kubeconfig).getApp(name);
        if (!app) throw new Error(`app ${name} not found`);
        print([toDigitalOceanApp(app as never)], o.output, true);
      }),
    );

  apps
    .command("list")
    .description("list apps")
    .option("--kubeconfig <file>", kube)
    .option("-o, --output <format>", "text or json")
    .action((o: { kubeconfig?: string; output?: string }) =>
      run(async () => {
        const all = await client(o.kubeconfig).listApps();
        print(
          all.map((a) => toDigitalOceanApp(a as never)),
          o.output,
          false,
        );
      }),
    );

  apps
    .command("delete <name>")
    .description("delete an app and everything it runs")
    .option("--kubeconfig <file>", kube)
    .action((name: string, o: { kubeconfig?: string }) =>
      run(async () => {
        if (!(await client(o.kubeconfig).deleteApp(name))) throw new Error(`app ${name} not found`);
        process.stdout.write(`app ${name} deleted (its namespace goes first)\n`);
      }),
    );

  apps
    .command("spec")
    .description("app spec files")
    .command("validate <file>")
    .description(`check an app spec offline with the controller's validator; exit ${EXIT_INVALID} if invalid`)
    .action((file: string) =>
      run(async () => {
        checked(file, readSpec(file));
        process.stdout.write(`${file}: valid\n`);
      }),
    );
}
