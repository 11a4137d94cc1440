#!/usr/bin/env node
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { stringify } from "yaml";
import { parseDocuments, snapshotFromObjects } from "../api/objects.js";
import { crdFor } from "../api/v1alpha1/crd.js";
import { SERVED_KINDS } from "../api/served-kinds.js";
import { STATIC_ROUTE_API_VERSION, validateStaticRoute } from "../api/digitalocean-v1/static-route.js";
import { loadAgentConfig } from "../agents/config.js";
import { Planner } from "../planner/plan.js";
import { runGatewayAgent, runHealthResponder, runNodeAgent } from "./agents.js";
import { METADATA_URL } from "../cloud/digitalocean/metadata.js";
import { installPlugin } from "../cni/install.js";
import { chainConfDir, unchainConfDir } from "../cni/conf-dir.js";
import { chainEntryFor } from "../cni/conflist.js";
import { DEFAULT_AGENT_SOCKET } from "../cni/input.js";
import { runController } from "./controller.js";
import { registerImportCommand } from "./import.js";
import { registerAppsCommands } from "./apps.js";
import { registerExplainCommand } from "./explain.js";
import { registerEgressIPsCommand } from "./egress-ips.js";
import { programName } from "./invocation.js";

const program = new Command(programName())
  .description("dedicated, fixed egress IPs for Kubernetes workloads")
  .showHelpAfterError();

const agent = program.command("agent").description("run an agent (long-running)");
agent
  .command("node")
  .description("program this node's datapath from the cluster state")
  .requiredOption("--node <name>", "this node's name")
  .requiredOption(
    "--source <file|kubernetes>",
    "`kubernetes` (the API server), or a file of Kubernetes documents (reloaded on change)",
  )
  .option("--kubeconfig <file>", "with --source kubernetes: kubeconfig (default: in-cluster)")
  .requiredOption("--config <file>", "agent config: clusterNetwork CIDRs, resyncSeconds")
  .option("--address <ip>", "this node's address toward the gateways; enables BFD probing and failover")
  .option(
    "--proc-sys-net <dir>",
    "the node's /proc/sys/net (a host mount when /proc/sys is read-only)",
    "/proc/sys/net",
  )
  .option("--metrics-port <port>", "serve Prometheus metrics on /metrics (and /healthz, /readyz)")
  .option(
    "--metrics-address <ip>",
    "with --metrics-port: listen on this address (default 127.0.0.1: not reachable from pods), e.g. the host's own IP for a Prometheus elsewhere",
  )
  .option(
    "--cni-socket <path>",
    "serve the chained CNI plugin on this unix socket (mode 0600), e.g. /run/static-egress/cni.sock",
  )
  .option(
    "--cni-conf-dir <dir>",
    "with --cni-socket: keep the plugin chained last in the runtime's CNI " +
      "config list in this directory (e.g. /etc/cni/net.d), also " +
      "after the cluster CNI rewrites it; --cleanup unchains it",
  )
  .option(
    "--anchor-ip-from <source>",
    "with --source kubernetes: publish this node's anchor IPv4 as " +
      "annotation staticegress.io/anchor-ipv4 (for Service externalIPs that " +
      "follow a reserved IP); source: `digitalocean-metadata`",
  )
  .option(
    "--metadata-url <url>",
    `with --anchor-ip-from digitalocean-metadata: metadata root (default ${METADATA_URL})`,
  )
  .option(
    "--static-routes",
    "also program DigitalOcean's StaticRoute objects (networking.digitalocean.com/v1; their CRD must be installed): " +
      "routes for the node's own and hostNetwork traffic, see docs/static-routes.md",
  )
  .option("--cleanup", "remove everything the node agent owns and exit")
  .action(runNodeAgent);
agent
  .command("gateway")
  .description("program this gateway instance: SNAT map, relay filter, return routes")
  .requiredOption("--instance <gateway/instance>", "this instance")
  .requiredOption(
    "--source <file|kubernetes>",
    "`kubernetes` (the API server), or a file of Kubernetes documents (reloaded on change)",
  )
  .option("--kubeconfig <file>", "with --source kubernetes: kubeconfig (default: in-cluster)")
  .requiredOption("--config <file>", "agent config")
  .option("--metrics-port <port>", "serve Prometheus metrics on /metrics (and /healthz, /readyz)")
  .option(
    "--metrics-address <ip>",
    "with --metrics-port: listen on this address (default 127.0.0.1: not reachable from pods), e.g. the host's own IP for a Prometheus elsewhere",
  )
  .option(
    "--egress-via-anchor",
    "DigitalOcean: SNAT to this droplet's anchor IP and route via the anchor gateway (from the " +
      "metadata service); the platform turns it into the droplet's reserved IP",
  )
  .option("--metadata-url <url>", `with --egress-via-anchor: the droplet metadata service (default ${METADATA_URL})`)
  .option(
    "--snat-port-range <from-to>",
    "source ports SNAT may use for TCP and UDP (default: the kernel's, 1024-65535 when a pod's " +
      "own port is taken); the limit the SNAT port metrics are measured against",
  )
  .option(
    "--traffic-report-seconds <s>",
    "with --source kubernetes: write this instance's traffic per policy into the policies' status this often (0: never)",
    "60",
  )
  .option("--cleanup", "remove everything the gateway agent owns and exit")
  .action(runGatewayAgent);
agent
  .command("health-responder")
  .description("answer BFD probes from nodes on a gateway host (a process of its own)")
  .requiredOption("--listen <ip>", "the gateway's address toward the nodes")
  .option("--metrics-port <port>", "serve Prometheus metrics on /metrics (and /healthz, /readyz)")
  .option(
    "--metrics-address <ip>",
    "with --metrics-port: listen on this address (default 127.0.0.1: not reachable from pods), e.g. the host's own IP for a Prometheus elsewhere",
  )
  .option(
    "--wait-for-datapath",
    "answer probes only once the gateway agent on this host has programmed its table (use when both start together, e.g. at boot)",
  )
  .action(runHealthResponder);

program
  .command("controller")
  .description("run the controller (leader-elected): status, events, finalizers")
  .option("--kubeconfig <file>", "kubeconfig (default: in-cluster)")
  .requiredOption("--config <file>", "config: clusterNetwork CIDRs")
  .option("--namespace <ns>", "namespace of the Lease", "static-egress")
  .option("--identity <id>", "this replica's name (default: $POD_NAME or host-pid)")
  .option("--lease-seconds <s>", "lease duration", "15")
  .option(
    "--cloud <name>",
    "run cloud plugins: `digitalocean` (gateway droplets for spec.digitalocean, reserved IPs following pods)",
  )
  .option(
    "--cluster-id <id>",
    "with --cloud: a stable id of this cluster (e.g. the DOKS cluster UUID), part of every ownership tag",
  )
  .option(
    "--digitalocean-token-file <file>",
    "API token file (a mounted Secret; re-read on rotation); default: $DIGITALOCEAN_TOKEN",
  )
  .option(
    "--digitalocean-api-url <url>",
    "API root (default https://api.digitalocean.com; the stand-in's URL in tests)",
  )
  .option(
    "--gateway-user-data-file <file>",
    "cloud-init template for gateway droplets, e.g. deploy/digitalocean/gateway-user-data.yaml (placeholders and default: docs/digitalocean.md)",
  )
  .option("--gateway-image <ref>", "with --cloud: the static-egress image the user data's ${IMAGE} names")
  .option(
    "--gateway-kubeconfig-file <file>",
    "with --cloud: kubeconfig of the gateway agents' read-only ServiceAccount (a mounted Secret) for the user data's ${KUBECONFIG_BASE64}",
  )
  .option(
    "--cloud-resync-seconds <s>",
    "with --cloud: converge every gateway fleet this often (a destroyed droplet is replaced then)",
    "60",
  )
  .option(
    "--gateway-drain-seconds <s>",
    "with --cloud: a droplet built from an old size or image drains this long before the rolling replacement deletes it",
    "60",
  )
  .option("--cloud-poll-ms <ms>", "with --cloud: poll interval while droplets boot and reserved IPs move", "2000")
  .option(
    "--metrics-port <port>",
    "serve Prometheus metrics on /metrics, liveness on /healthz and readiness (informers synced) on /readyz",
  )
  .option("--metrics-address <ip>", "with --metrics-port: listen on this address only (default all)")
  .option(
    "--view-port <port>",
    "serve the live view (read-only web page: gateways, health, policies, pods' egress IPs, failovers, traffic; docs/view.md)",
  )
  .option("--view-address <ip>", "with --view-port: listen on this address (default 127.0.0.1: kubectl port-forward)")
  .option(
    "--reserved-ips-any-namespace",
    "with --cloud: let pods of any namespace ask for any reserved IP (default: only IPs " +
      "granted to their Namespace with annotation staticegress.io/reserved-ips)",
  )
  .option("--no-apps", "do not reconcile Apps (docs/apps.md)")
  .option(
    "--apps-ingress-label <key=value>",
    "Apps: namespaces with this label are the ingress side, admitted to services' http_port",
    "staticegress.io/apps-ingress=true",
  )
  .option(
    "--apps-docr-registry <host/name>",
    "Apps: where DOCR images come from, e.g. registry.digitalocean.com/acme (absent: DOCR components are refused)",
  )
  .option(
    "--apps-gateway-pool <file>",
    "Apps: gateway hosts for DEDICATED_IP apps, two each (YAML hosts: [{name, address, egressIP}]; docs/apps.md)",
  )
  .option(
    "--apps-digitalocean <file>",
    "Apps: DEDICATED_IP apps get two droplets and two reserved IPs each, with --cloud digitalocean " +
      "(YAML region, size, nodeTag, optional image, vpcUUID, onRemoval release|keep; docs/apps.md)",
  )
  .action(runController);

program
  .command("crds")
  .description("print the CustomResourceDefinitions (or write one file per kind)")
  .option("--out <dir>", "write <plural>.yaml files here")
  .action((o: { out?: string }) => {
    const header = "# Generated by `static-egress crds` from src/api/v1alpha1. Do not edit.\n";
    if (!o.out) {
      process.stdout.write(SERVED_KINDS.map((k) => header + stringify(crdFor(k))).join("---\n"));
      return;
    }
    mkdirSync(o.out, { recursive: true });
    for (const k of SERVED_KINDS) writeFileSync(join(o.out, `${k.plural}.yaml`), header + stringify(crdFor(k)));
  });

program
  .command("validate")
  .description("check policies, gateways and StaticRoutes in a file; exit 1 if any is invalid")
  .requiredOption("-f, --file <file>", "Kubernetes documents")
  .action((o: { file: string }) => {
    const objects = parseDocuments(readFileSync(o.file, "utf8"), o.file);
    const planner = new Planner(snapshotFromObjects(objects, { podCIDRs: [], serviceCIDRs: [], nodeCIDRs: [] }));
    // StaticRoutes without a cluster: what each node adds (its subnets, the API server, on-link) is checked by the node agent.
    const routes = objects
      .filter((d) => d.kind === "StaticRoute" && d.apiVersion === STATIC_ROUTE_API_VERSION)
      .map((d) => ({ resource: `StaticRoute/${d.metadata?.name ?? ""}`, errors: validateStaticRoute(d) }));
    const verdicts = [...planner.resolution.verdicts, ...routes.map((r) => ({ ...r, valid: r.errors.length === 0 }))];
    for (const v of verdicts) {
      process.stdout.write(
        v.valid
          ? `${v.resource}: valid\n`
          : `${v.resource}: Invalid\n${v.errors.map((e) => `  ${e.field}: ${e.message}\n`).join("")}`,
      );
    }
    if (verdicts.some((v) => !v.valid)) process.exitCode = 1;
  });

program
  .command("plan")
  .description("print the datapath planned for a node or a gateway instance (JSON)")
  .requiredOption("-f, --file <file>", "Kubernetes documents")
  .requiredOption("--config <file>", "agent config")
  .option("--node <name>")
  .option("--gateway <gateway/instance>")
  .action((o: { file: string; config: string; node?: string; gateway?: string }) => {
    const planner = new Planner(
      snapshotFromObjects(
        parseDocuments(readFileSync(o.file, "utf8"), o.file),
        loadAgentConfig(o.config).clusterNetwork,
      ),
    );
    const plan = o.node ? planner.planNode(o.node, new Map()) : o.gateway ? planner.planGateway(o.gateway) : undefined;
    process.stdout.write(JSON.stringify({ verdicts: planner.resolution.verdicts, plan }, null, 2) + "\n");
  });

const cni = program.command("cni").description("the chained CNI plugin (see docs/cni.md)");
cni
  .command("install")
  .description(
    "write the plugin into <bin-dir>: the shim static-egress (hands each call " +
      "to the node agent) and static-egress-nodejs, which runs this " +
      "installation's dist/cni/main.js when the agent cannot answer",
  )
  .option("--bin-dir <dir>", "the runtime's CNI bin directory", "/opt/cni/bin")
  .option("--node <path>", "the Node.js binary the wrapper runs", process.execPath)
  .option("--shim <path>", "the shim binary to install (default: this installation's dist/cni/static-egress-shim)")
  .action((o: { binDir: string; node: string; shim?: string }) => {
    process.stdout.write(`${installPlugin(o.binDir, { node: o.node, ...(o.shim ? { shim: o.shim } : {}) })}\n`);
  });

cni
  .command("chain")
  .description(
    "chain the plugin last into the config list the runtime uses (the first config file of --conf-dir by name); idempotent",
  )
  .requiredOption("--conf-dir <dir>", "the runtime's CNI config directory, e.g. /etc/cni/net.d")
  .option("--agent-socket <path>", "the node agent's socket", DEFAULT_AGENT_SOCKET)
  .option(
    "--config <file>",
    "agent config: its clusterNetwork CIDRs become clusterCIDRs (reachable while a pod is quarantined)",
  )
  .action(async (o: { confDir: string; agentSocket: string; config?: string }) => {
    const entry = o.config
      ? chainEntryFor(o.agentSocket, loadAgentConfig(o.config))
      : { agentSocket: o.agentSocket, clusterCIDRs: [] };
    const r = await chainConfDir(o.confDir, entry);
    process.stdout.write(`${r.file}: ${r.changed ? "chained" : "already chained"}\n`);
  });
cni
  .command("unchain")
  .description("remove the plugin from the config list the runtime uses")
  .requiredOption("--conf-dir <dir>", "the runtime's CNI config directory")
  .action(async (o: { confDir: string }) => {
    const r = await unchainConfDir(o.confDir);
    process.stdout.write(`${r.file}: ${r.changed ? "unchained" : "was not chained"}\n`);
  });

registerImportCommand(program);
// The lab and its stand-ins load only for `lab ...`: an agent or controller process never loads them.
const lab = program.command("lab").description("a whole cluster made of network namespaces on this machine (root)");
if (process.argv[2] === "lab") (await import("./lab.js")).registerLabCommands(lab);
registerAppsCommands(program);
registerExplainCommand(program);
registerEgressIPsCommand(program);

program.parseAsync().catch((e: unknown) => {
  process.stderr.write(`${programName()}: ${(e as Error).message}\n`);
  process.exit(1);
});
