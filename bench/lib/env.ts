import { loadavg, cpus, release } from "node:os";
import { readFileSync } from "node:fs";
import { runCommand } from "../../src/util/exec.js";

/** Where a result was measured: enough to compare runs across machines. */
export interface MachineInfo {
  date: string;
  kernel: string;
  os: string;
  cpus: number;
  cpuModel: string;
  node: string;
  nft: string;
  iperf3: string;
  /** The code measured: `git describe --always --dirty` of the working copy ("unknown" outside git). */
  commit: string;
  /** 1, 5, 15 minute load averages when the benchmark started (other work on the machine skews results). */
  loadAtStart: number[];
}

export async function machineInfo(): Promise<MachineInfo> {
  const version = async (cmd: string, args: string[]) =>
    (await runCommand(cmd, args).catch(() => ({ stdout: "unavailable" }))).stdout.split("\n")[0]!.trim();
  let os = "unknown";
  try {
    os = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? os;
  } catch {
    /* not Linux-like: keep unknown */
  }
  return {
    date: new Date().toISOString(),
    kernel: release(),
    os,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    node: process.version,
    nft: await version("nft", ["--version"]),
    iperf3: await version("iperf3", ["--version"]),
    commit: (await runCommand("git", ["describe", "--always", "--dirty", "--abbrev=12"]).catch(() => ({ stdout: "unknown" }))).stdout.trim() || "unknown",
    loadAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function currentLoad(): number[] {
  return loadavg().map((x) => Math.round(x * 100) / 100);
}

export function requireRoot(): void {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new Error("benchmarks need root (network namespaces, nftables): run as root");
  }
}
