import { readdirSync } from "node:fs";
import { runCommand } from "../util/exec.js";

/**
 * Network namespace primitives for the lab and the lab test tier. Everything the lab creates
 * lives inside namespaces whose names start with a per-run prefix; nothing here creates a
 * link in the machine's root namespace.
 */

/** Every lab namespace name starts with this, then a per-run id: `se-<id>-<role>`. */
export const LAB_NAME_ROOT = "se-";

export function newRunPrefix(): string {
  return `${LAB_NAME_ROOT}${Math.random().toString(36).slice(2, 7)}`;
}

export async function addNamespace(name: string): Promise<void> {
  await runCommand("ip", ["netns", "add", name]);
  await runCommand("ip", ["-n", name, "link", "set", "lo", "up"]);
}

export async function deleteNamespace(name: string): Promise<void> {
  await runCommand("ip", ["netns", "delete", name]).catch(() => undefined);
}

export function listNamespaces(): string[] {
  try {
    return readdirSync("/var/run/netns");
  } catch {
    return [];
  }
}

/** Removes every namespace whose name starts with `prefix` (also leftovers of a crashed run). */
export async function deleteNamespacesWithPrefix(prefix: string): Promise<string[]> {
  const doomed = listNamespaces().filter((n) => n.startsWith(prefix));
  for (const ns of doomed) await killNamespaceProcesses(ns);
  await Promise.all(doomed.map(deleteNamespace));
  return doomed;
}

/** Kills every process whose network namespace is `ns` (servers and agents the lab started). */
export async function killNamespaceProcesses(ns: string): Promise<void> {
  const { stdout } = await runCommand("ip", ["netns", "pids", ns]).catch(() => ({ stdout: "" }));
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

/** Runs a command inside `ns` and returns its stdout. */
export async function execIn(ns: string, command: string, args: readonly string[], input?: string): Promise<string> {
  const { stdout } = await runCommand(
    "ip",
    ["netns", "exec", ns, command, ...args],
    input === undefined ? {} : { input },
  );
  return stdout;
}

/** Creates a veth pair whose ends live in two namespaces, never in the root namespace. */
export async function addVethPair(a: { ns: string; name: string }, b: { ns: string; name: string }): Promise<void> {
  await runCommand("ip", ["-n", a.ns, "link", "add", a.name, "type", "veth", "peer", "name", b.name, "netns", b.ns]);
  await runCommand("ip", ["-n", a.ns, "link", "set", a.name, "up"]);
  await runCommand("ip", ["-n", b.ns, "link", "set", b.name, "up"]);
}

export async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await execIn(ns, "sysctl", ["-q", "-w", `${key}=${value}`]);
}

/**
 * What a gateway host's boot sets (the user data's sysctls, deploy/digitalocean): forwarding
 * stays OFF; the gateway agent turns it on once its filter table (policy drop) is loaded.
 */
export async function gatewayBootSysctls(ns: string): Promise<void> {
  await sysctl(ns, "net.ipv4.ip_forward", "0");
  await sysctl(ns, "net.ipv4.conf.all.rp_filter", "0");
}

/**
 * A gateway host as a reboot leaves it: forwarding off first (flushing the ruleset before would
 * forward decapsulated pod packets unSNATed, which no real reboot does; bench/failover.ts found
 * that ordering leaking), then no nft tables, no routes of ours (proto 94), no tunnel devices
 * (and their neighbour entries), empty conntrack. Addresses and the default route stay (the
 * host's boot configures them). Its agents must be stopped first.
 */
export async function wipeGatewayHost(ns: string): Promise<void> {
  await gatewayBootSysctls(ns);
  await execIn(ns, "nft", ["flush", "ruleset"]);
  await execIn(ns, "ip", ["route", "flush", "proto", "94"]);
  for (const l of JSON.parse((await execIn(ns, "ip", ["-json", "link", "show", "type", "vxlan"])) || "[]") as {
    ifname: string;
  }[]) {
    await execIn(ns, "ip", ["link", "del", l.ifname]);
  }
  await execIn(ns, "conntrack", ["-F"]).catch(() => undefined);
}

/**
 * The cloud's anti-spoofing on the lab's VPC bridge: a port may send IPv4 only from the
 * address the "cloud" gave its host (as DigitalOcean's VPC drops a droplet's packets whose
 * source is not its own address). The table and its set always exist, so hosts can be admitted
 * at any time; the dropping rule is there only when `enforce` (lab file: `vpc.antiSpoofing`).
 */
const VPC_ANTISPOOF_TABLE = "lab_vpc_antispoof";

export async function installVpcAntiSpoofing(fabric: string, enforce: boolean): Promise<void> {
  const rule = enforce
    ? `    ether type ip iifname @vpc_ports iifname . ip saddr != @port_sources counter name "spoofed" drop\n`
    : "";
  await execIn(
    fabric,
    "nft",
    ["-f", "-"],
    `table bridge ${VPC_ANTISPOOF_TABLE} {\n  counter spoofed {\n  }\n  set vpc_ports {\n    ` +
      `type ifname;\n  }\n  set port_sources {\n    type ifname . ipv4_addr;\n  }\n` +
      `  chain forward {\n    type filter hook forward priority filter; policy accept;\n${rule}  }\n}\n`,
  );
}

/** Marks `port` as a port of the VPC bridge whose host may send from `address` (and only from it). */
export async function admitVpcSource(fabric: string, port: string, address: string): Promise<void> {
  await execIn(
    fabric,
    "nft",
    ["-f", "-"],
    `add element bridge ${VPC_ANTISPOOF_TABLE} vpc_ports { "${port}" }\nadd element bridge ${VPC_ANTISPOOF_TABLE} port_sources { "${port}" . ${address} }\n`,
  );
}

/**
 * A plain NAT gateway, as DigitalOcean's egress blueprint sets one up: forwarding on, and
 * everything leaving on its public interface masqueraded to its public IP.
 */
export async function natGatewaySetup(ns: string): Promise<void> {
  await sysctl(ns, "net.ipv4.ip_forward", "1");
  await execIn(
    ns,
    "nft",
    ["-f", "-"],
    `table ip lab_nat {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "eth1" masquerade\n  }\n}\n`,
  );
}
