import { readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import type { Command } from "commander";
import { parseDocuments } from "../api/objects.js";
import { parseLabConfig } from "../lab/config.js";
import { startInternetServer } from "../lab/internet-server.js";
import { join } from "node:path";
import { GATEWAY_DEATHS, Lab, removeLeftovers, type GatewayDeath, type LabRecord } from "../lab/lab.js";
import { LabCloud } from "../lab/cloud.js";
import { LabGatewayPool } from "../lab/gateway-pool.js";
import { formatStatusTable, runDemo } from "./demo.js";
import { parseEndpoint, startRelay } from "../lab/relay.js";
import { LabKubelet } from "../lab/kubelet.js";
import { labClient, podNetns } from "../lab/kube-lab.js";
import { createLogger } from "../util/log.js";
import { newRunPrefix } from "../lab/netns.js";
import { udpStream } from "../lab/traffic.js";
import { LAB_NETWORK } from "../lab/topology.js";

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The `lab` subcommands, registered on `lab` (src/cli/main.ts loads this module for `lab ...` only). */
export function registerLabCommands(lab: Command): void {
  lab
    .command("up")
    .description("build the lab from a lab file and start the agents")
    .requiredOption("-f, --file <lab.yaml>", "lab description (see examples/lab.yaml)")
    .option("--name <prefix>", "name prefix of this lab (default: se-<random>)")
    .option(
      "--mode <mode>",
      "kubernetes (real kube-apiserver, etcd and controller manager, our controller, the lab kubelet) or file (agents read a file)",
      "kubernetes",
    )
    .action(async (o: { file: string; name?: string; mode: string }) => {
      if (o.mode !== "kubernetes" && o.mode !== "file")
        throw new Error(`--mode must be kubernetes or file, not ${o.mode}`);
      const cfg = parseLabConfig(readFileSync(o.file, "utf8"), o.file);
      await takeDownPersistentLabs();
      const prefix = o.name ?? newRunPrefix();
      const l = await Lab.up(cfg, { prefix, persistent: true, mode: o.mode, log: say });
      if (o.mode === "kubernetes")
        say(`kubectl: export KUBECONFIG=${l.kubeconfigPath}   (or: static-egress lab kubeconfig > lab.kubeconfig)`);
      const view = l.viewUrl();
      if (view)
        say(`live view: ${view}   (the controller's read-only page: gateways, health, pods' egress IPs, failovers)`);
      say(
        `lab ${prefix} is up: ${l.topology.nodes.length} nodes, ${l.topology.gatewayHosts.length} gateway hosts, ${l.topology.pods.length} pods`,
      );
      say("next: static-egress lab status   |   static-egress lab exec <pod> -- <cmd>   |   static-egress lab down");
    });

  lab
    .command("down")
    .description("remove the lab: processes, namespaces, state")
    .option("--name <prefix>", "which lab (default: the only one)")
    .option("--all", "remove every lab and every leftover of crashed runs")
    .action(async (o: { name?: string; all?: boolean }) => {
      if (o.all) {
        await takeDownPersistentLabs();
        await removeLeftovers(say);
        return;
      }
      const l = Lab.open(o.name);
      await l.down();
      say(`lab ${l.record.prefix} removed`);
    });

  lab
    .command("status")
    .description("each pod's node, the egress IP the lab's Internet saw, and the expected one")
    .option("--name <prefix>", "which lab")
    .option("--json", "machine-readable output")
    .option("--target <ip>", "service to ask", LAB_NETWORK.echoService)
    .action(async (o: { name?: string; json?: boolean; target: string }) => {
      const l = Lab.open(o.name);
      const rows = await l.status(o.target);
      say(o.json ? JSON.stringify(rows, null, 2) : formatStatusTable(rows));
      const view = l.viewUrl();
      if (view && !o.json) say(`\nlive view: ${view}`);
      if (rows.some((r) => !r.ok)) process.exitCode = 3;
    });

  lab
    .command("exec")
    .description("run a command inside a pod: lab exec <pod> -- <cmd> [args...]")
    .argument("<pod>", "pod name or namespace/name")
    .argument("<command...>", "command and arguments")
    .option("--name <prefix>", "which lab")
    .action((pod: string, command: string[], o: { name?: string }) => {
      const p = Lab.open(o.name).findPod(pod);
      const r = spawnSync("ip", ["netns", "exec", p.netns, ...command], { stdio: "inherit" });
      process.exitCode = r.status ?? 1;
    });

  lab
    .command("apply")
    .description("add or replace EgressPolicy / ClusterEgressPolicy documents in the lab")
    .requiredOption("-f, --file <file>", "YAML documents")
    .option("--name <prefix>", "which lab")
    .action(async (o: { file: string; name?: string }) => {
      await Lab.open(o.name).applyPolicies(parseDocuments(readFileSync(o.file, "utf8"), o.file));
      say("applied; the agents reload within a second");
    });

  lab
    .command("delete")
    .description("delete the policies named in the documents")
    .requiredOption("-f, --file <file>", "YAML documents")
    .option("--name <prefix>", "which lab")
    .action(async (o: { file: string; name?: string }) => {
      const n = await Lab.open(o.name).deletePolicies(parseDocuments(readFileSync(o.file, "utf8"), o.file));
      say(`deleted ${n} policies`);
    });

  lab
    .command("kill-gateway")
    .description(
      "kill a gateway instance: its agent and health responder, its VPC link, the whole host (silent), or (a droplet) destroy it through the cloud API",
    )
    .argument("<instance>", "gateway instance (host) name, e.g. gw-a")
    .option("--kind <kind>", `how it dies: ${GATEWAY_DEATHS.join(", ")}`, "link")
    .option("--name <prefix>", "which lab")
    .action(async (instance: string, o: { kind: string; name?: string }) => {
      if (!GATEWAY_DEATHS.includes(o.kind as GatewayDeath))
        throw new Error(`--kind must be one of ${GATEWAY_DEATHS.join(", ")}, not ${o.kind}`);
      await Lab.open(o.name).killGateway(instance, o.kind as GatewayDeath);
      say(`${instance}: killed (${o.kind}); nodes fail over once their probes miss it`);
    });

  lab
    .command("revive-gateway")
    .description("undo kill-gateway; nodes use the instance again after its hold-down")
    .argument("<instance>")
    .option("--name <prefix>", "which lab")
    .action(async (instance: string, o: { name?: string }) => {
      await Lab.open(o.name).reviveGateway(instance);
      say(`${instance}: revived`);
    });

  lab
    .command("drain")
    .description("drain a gateway instance: new connections move off it, open ones finish")
    .argument("<instance>")
    .option("--undo", "stop draining")
    .option("--name <prefix>", "which lab")
    .action(async (instance: string, o: { undo?: boolean; name?: string }) => {
      await Lab.open(o.name).setDrain(instance, !o.undo);
      say(`${instance}: ${o.undo ? "serving again" : "draining"}`);
    });

  lab
    .command("demo")
    .description("up, show egress IPs, kill a gateway under traffic, show the failover, down")
    .option("-f, --file <lab.yaml>", "lab description", "examples/lab.yaml")
    .option("--kind <kind>", "how the gateway dies", "link")
    .option(
      "--mode <mode>",
      "kubernetes (the control plane and our controller, with its live view) or file (quicker to start); " +
        "default: kubernetes for a lab file with a digitalocean gateway, else file",
    )
    .option("--keep", "leave the lab up at the end")
    .action(async (o: { file: string; kind: string; mode?: string; keep?: boolean }) => {
      if (o.mode !== undefined && o.mode !== "kubernetes" && o.mode !== "file")
        throw new Error(`--mode must be kubernetes or file, not ${o.mode}`);
      await runDemo(o.file, o.kind as GatewayDeath, o.keep === true, o.mode);
    });

  lab
    .command("kubeconfig")
    .description("print a kubeconfig for the lab's API (Kubernetes mode): kubectl get egresspolicies -A")
    .option("--name <prefix>", "which lab")
    .action((o: { name?: string }) => {
      const l = Lab.open(o.name);
      if (l.record.mode !== "kubernetes")
        throw new Error(`lab ${l.record.prefix} runs in file mode: it has no API server`);
      process.stdout.write(readFileSync(l.kubeconfigPath, "utf8"));
    });

  lab
    .command("kube-apiserver", { hidden: true })
    .description(
      "(internal) the lab's control plane: etcd, kube-apiserver, kube-controller-manager and the fault proxy, on loopback",
    )
    .requiredOption("--dir <dir>", "the lab's state folder (kubeconfig and ca.crt are written there)")
    .option("--extra-ip <ip...>", "more addresses the API server's certificate is valid for", [])
    .action(async (o: { dir: string; extraIp: string[] }) => {
      const { serveLabControlPlane } = await import("../lab/control-plane/serve.js");
      await serveLabControlPlane({
        dir: o.dir,
        extraIPs: o.extraIp,
        log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
      });
    });

  lab
    .command("cloud", { hidden: true })
    .description("(internal) the lab's cloud: the DigitalOcean stand-in whose droplets become gateway namespaces")
    .requiredOption("--dir <dir>", "the lab's state folder")
    .action(async (o: { dir: string }) => {
      const record = JSON.parse(readFileSync(join(o.dir, "lab.json"), "utf8")) as LabRecord;
      const logger = createLogger("lab-cloud");
      const cloud = new LabCloud({
        dir: o.dir,
        topology: record.topology,
        config: record.config,
        log: (msg, fields) => logger.info(fields ?? {}, msg),
      });
      await cloud.start();
      const stop = () => void cloud.stop().then(() => process.exit(0));
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
    });

  lab
    .command("relay", { hidden: true })
    .description("(internal) relay bytes between tcp:<host>:<port> and unix:<path>")
    .requiredOption("--listen <endpoint>")
    .requiredOption("--to <endpoint>")
    .action(async (o: { listen: string; to: string }) => {
      await startRelay(parseEndpoint(o.listen), parseEndpoint(o.to));
    });

  lab
    .command("kubelet", { hidden: true })
    .description("(internal) runs the lab's pods: namespaces, CNI chain, pod status")
    .requiredOption("--name <prefix>")
    .action(async (o: { name: string }) => {
      const l = Lab.open(o.name);
      const kubelet = new LabKubelet(
        labClient(l),
        l.topology.nodes.map((n) => n.name),
        (p) => l.wiring({ ...p, netns: podNetns(l.record.prefix, p.namespace, p.name), labels: {} }),
        createLogger("lab-kubelet"),
        (node) => l.topology.nodes.find((n) => n.name === node)?.vpcIP,
      );
      await kubelet.start();
    });

  lab
    .command("gateway-pool", { hidden: true })
    .description("(internal) runs the pool hosts' gateway agents for the app gateways the controller assigns them to")
    .requiredOption("--name <prefix>")
    .action(async (o: { name: string }) => {
      const l = Lab.open(o.name);
      const logger = createLogger("lab-gateway-pool");
      const pool = new LabGatewayPool({
        dir: l.dir,
        hosts: l.topology.poolHosts ?? [],
        client: labClient(l),
        agentArgs: l.poolAgentArgs(),
        log: (msg, fields) => logger.info(fields ?? {}, msg),
      });
      await pool.start();
      const stop = () => void pool.stop().then(() => process.exit(0));
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
    });

  lab
    .command("internet-server", { hidden: true })
    .description("(internal) the lab's Internet host; runs inside the internet namespace")
    .requiredOption("--allowlist <ips>", "comma-separated sources the firewalled service admits, or none")
    .requiredOption("--udp-log <file>", "where to record UDP datagrams")
    .option("--lifetime <seconds>", "stop after this long", "14400")
    .action(async (o: { allowlist: string; udpLog: string; lifetime: string }) => {
      await startInternetServer({
        httpPort: 80,
        udpPort: LAB_NETWORK.udpSinkPort,
        allowlistService: LAB_NETWORK.allowlistService,
        allowlist: o.allowlist === "none" ? [] : o.allowlist.split(","),
        udpLog: o.udpLog,
        lifetimeMs: Number(o.lifetime) * 1000,
      });
    });

  lab
    .command("udp-stream", { hidden: true })
    .description("(internal) send a bounded stream of UDP datagrams to the lab's Internet")
    .requiredOption("--tag <tag>")
    .option("--interval-ms <ms>", "", "1")
    .option("--duration-ms <ms>", "", "5000")
    .option("--host <ip>", "", LAB_NETWORK.echoService)
    .action(async (o: { tag: string; intervalMs: string; durationMs: string; host: string }) => {
      const sent = await udpStream(
        o.host,
        LAB_NETWORK.udpSinkPort,
        o.tag,
        Number(o.intervalMs),
        Math.min(Number(o.durationMs), 600_000),
      );
      say(JSON.stringify(sent));
    });
}

async function takeDownPersistentLabs(): Promise<void> {
  for (;;) {
    let l: Lab;
    try {
      l = Lab.open();
    } catch {
      return;
    }
    // A test's lab (not persistent) belongs to the test running it, perhaps another user's.
    if (!l.record.persistent) return;
    say(`removing the earlier lab ${l.record.prefix}`);
    await l.down();
  }
}
