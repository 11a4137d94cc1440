import { readFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { packageRoot } from "../../src/lab/paths.js";
import { runCommand } from "../../src/util/exec.js";

/**
 * What every result file records under `run`, so a figure can always be traced to the code, the
 * machine and how busy the machine was: two numbers are only comparable when these say so.
 */
export interface RunRecord {
  benchmark: string;
  /** ISO dates: when the benchmark started and when it wrote its result. */
  startedAt: string;
  finishedAt: string;
  /** The code measured: `git rev-parse HEAD`; dirty when tracked files (other than bench/results) differed from it. */
  code: { commit: string; dirty: boolean };
  machine: {
    cpuModel: string;
    cores: number;
    kernel: string;
    memoryBytes: number;
    os: string;
    node: string;
    nft: string;
    iperf3: string;
  };
  /** 1, 5 and 15 minute load averages: other work on the same cores slows every number down. */
  load: { atStart: number[]; atEnd: number[] };
  /** The options the benchmark ran with (defaults included). */
  options: Record<string, unknown>;
}

export function currentLoad(): number[] {
  return loadavg().map((x) => Math.round(x * 100) / 100);
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  const out = await runCommand(cmd, args).catch(() => ({ stdout: "" }));
  return out.stdout.split("\n")[0]!.trim() || "unavailable";
}

function osName(): string {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** A run in progress: call `finish()` when the result is complete (it takes the load at the end). */
export interface RunRecorder {
  readonly startedAt: Date;
  readonly loadAtStart: number[];
  finish(): RunRecord;
}

export async function startRun(benchmark: string, options: Record<string, unknown>): Promise<RunRecorder> {
  const startedAt = new Date();
  const atStart = currentLoad();
  const git = (args: string[]) => runCommand("git", ["-C", packageRoot(), ...args]).then((r) => r.stdout.trim());
  const commit = await git(["rev-parse", "HEAD"]).catch(() => "unknown");
  // Result files are the benchmarks' output, not the code measured: one run's new result must not mark the next dirty.
  const dirty =
    (await git(["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"]).catch(
      () => "unknown",
    )) !== "";
  const machine: RunRecord["machine"] = {
    cpuModel: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    kernel: release(),
    memoryBytes: totalmem(),
    os: osName(),
    node: process.version,
    nft: await firstLine("nft", ["--version"]),
    iperf3: await firstLine("iperf3", ["--version"]),
  };
  return {
    startedAt,
    loadAtStart: atStart,
    finish: () => ({
      benchmark,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      code: { commit, dirty },
      machine,
      load: { atStart, atEnd: currentLoad() },
      options,
    }),
  };
}

const isLoad = (x: unknown): boolean =>
  Array.isArray(x) && x.length === 3 && x.every((v) => typeof v === "number" && Number.isFinite(v) && v >= 0);
const isDate = (x: unknown): boolean => typeof x === "string" && !Number.isNaN(Date.parse(x));
const isText = (x: unknown): boolean => typeof x === "string" && x !== "" && x !== "unknown";

/** What is missing or malformed in a result file's run record (empty: the file is acceptable). */
export function runRecordProblems(doc: unknown): string[] {
  const run = (doc as { run?: Partial<RunRecord> } | null)?.run;
  if (!run || typeof run !== "object") return ["no `run` record"];
  const problems: string[] = [];
  const need = (ok: boolean, field: string) => {
    if (!ok) problems.push(`run.${field} is missing or malformed`);
  };
  need(isText(run.benchmark), "benchmark");
  need(isDate(run.startedAt), "startedAt");
  need(isDate(run.finishedAt), "finishedAt");
  need(/^[0-9a-f]{40}$/.test(String(run.code?.commit)), "code.commit");
  need(typeof run.code?.dirty === "boolean", "code.dirty");
  const m = run.machine;
  need(isText(m?.cpuModel), "machine.cpuModel");
  need(Number.isInteger(m?.cores) && m!.cores > 0, "machine.cores");
  need(isText(m?.kernel), "machine.kernel");
  need(Number.isInteger(m?.memoryBytes) && m!.memoryBytes > 0, "machine.memoryBytes");
  need(isLoad(run.load?.atStart), "load.atStart");
  need(isLoad(run.load?.atEnd), "load.atEnd");
  need(!!run.options && typeof run.options === "object" && !Array.isArray(run.options), "options");
  return problems;
}
