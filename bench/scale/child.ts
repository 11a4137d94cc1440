import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync, statSync, type WriteStream } from "node:fs";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { ChildEvent } from "./child-io.js";

/** Loads the product from dist/ in a child (see from-dist.ts). */
const FROM_DIST = fileURLToPath(new URL("./from-dist.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

class ChildError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ChildError";
  }
}

/** A pino line the child wrote on stderr (only the fields the benchmark reads). */
export interface LogRecord {
  msg?: string;
  level?: number;
  durationMs?: number;
  [field: string]: unknown;
}

export interface ProcStats {
  /** Peak resident set (VmHWM), MiB. */
  peakRssMiB: number;
  rssMiB: number;
  /** user + system CPU time, milliseconds (from /proc/<pid>/stat, 10 ms resolution). */
  cpuMs: number;
  /** The same of its child processes that ended (the agents' ip, nft, ... commands). */
  childrenCpuMs: number;
}

const CLOCK_TICKS_PER_SECOND = 100;

/** Reads a process's memory and CPU time from /proc (undefined once it is gone). */
export function procStats(pid: number): ProcStats | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
    const childTicks = Number(fields[13]) + Number(fields[14]); // cutime, cstime (16 and 17)
    return {
      peakRssMiB: Math.round(kb("VmHWM") / 1024),
      rssMiB: Math.round(kb("VmRSS") / 1024),
      cpuMs: (ticks * 1000) / CLOCK_TICKS_PER_SECOND,
      childrenCpuMs: (childTicks * 1000) / CLOCK_TICKS_PER_SECOND,
    };
  } catch {
    return undefined;
  }
}

let buildChecked = false;

/**
 * The children run the built JavaScript: a source file newer than its build (or not built) would
 * measure other code than the tree's, so the run stops and says `npm run build`.
 */
function requireFreshBuild(): void {
  if (buildChecked) return;
  const stale: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== "testing") walk(path);
      } else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) {
        const built = join(ROOT, "dist", relative(join(ROOT, "src"), path)).replace(/\.ts$/, ".js");
        let builtAt = 0;
        try {
          builtAt = statSync(built).mtimeMs;
        } catch {
          /* not built */
        }
        if (builtAt < statSync(path).mtimeMs) stale.push(relative(ROOT, path));
      }
    }
  };
  walk(join(ROOT, "src"));
  if (stale.length > 0)
    throw new ChildError(
      `dist/ is older than ${stale.slice(0, 3).join(", ")} (${stale.length} files): run npm run build`,
    );
  buildChecked = true;
}

/**
 * A benchmark child process (`node --import ./from-dist.ts <entry>`: the product from dist/, as the
 * image runs it; the small entry is TypeScript stripped by Node): its JSON-line events from stdout,
 * its pino logs from stderr (kept in memory and copied to a file), and its /proc readings.
 */
export class BenchChild {
  readonly events: ChildEvent[] = [];
  readonly logs: LogRecord[] = [];
  private readonly stderrTail: string[] = [];
  private readonly proc: ChildProcess;
  private readonly logFile: WriteStream;
  private listeners: (() => void)[] = [];
  private exited: { code: number | null; signal: string | null } | undefined;
  /** Peak heap used as sampled by the child (every 0.5 s), MiB. */
  peakHeapUsedMiB = 0;
  /** The child's latest memory samples (diagnostics when something stalls). */
  readonly recentMemory: { t: number; rssMiB: number; heapUsedMiB: number }[] = [];

  constructor(
    readonly name: string,
    entry: string,
    args: readonly string[],
    opts: {
      cwd: string;
      logPath: string;
      env?: Record<string, string>;
      nodeArgs?: readonly string[];
      /** `entry` is a bundle of dist/ (bundled-entry.ts): it needs no module hooks. */
      bundled?: boolean;
    },
  ) {
    requireFreshBuild();
    this.logFile = createWriteStream(opts.logPath);
    const hooks = opts.bundled ? [] : ["--import", FROM_DIST];
    this.proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...hooks, entry, ...args], {
      cwd: opts.cwd,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, ...opts.env },
    });
    this.proc.stdin?.on("error", () => undefined);
    createInterface({ input: this.proc.stdout! }).on("line", (line) => {
      let ev: ChildEvent;
      try {
        ev = JSON.parse(line) as ChildEvent;
      } catch {
        this.stderrTail.push(`stdout: ${line}`);
        return;
      }
      if (ev.ev === "mem") {
        this.peakHeapUsedMiB = Math.max(this.peakHeapUsedMiB, Number(ev.heapUsedMiB) || 0);
        this.recentMemory.push({ t: ev.t, rssMiB: Number(ev.rssMiB), heapUsedMiB: Number(ev.heapUsedMiB) });
        if (this.recentMemory.length > 20) this.recentMemory.shift();
      } else this.events.push(ev);
      this.notify();
    });
    createInterface({ input: this.proc.stderr! }).on("line", (line) => {
      this.logFile.write(`${line}\n`);
      this.stderrTail.push(line);
      if (this.stderrTail.length > 40) this.stderrTail.shift();
      try {
        this.logs.push(JSON.parse(line) as LogRecord);
      } catch {
        /* not a pino line (a stack trace): kept in the tail only */
      }
    });
    this.proc.on("exit", (code, signal) => {
      this.exited = { code, signal };
      this.notify();
    });
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new ChildError(`${this.name}: did not start`);
    return this.proc.pid;
  }

  get running(): boolean {
    return this.exited === undefined;
  }

  private notify(): void {
    for (const l of this.listeners.splice(0)) l();
  }

  private changed(): Promise<void> {
    return new Promise((r) => this.listeners.push(r));
  }

  /** Waits for the first event (at index `from` or later) that satisfies `match`. */
  async waitForEvent(
    match: (e: ChildEvent) => boolean,
    timeoutMs: number,
    what: string,
    from = 0,
  ): Promise<ChildEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const failed = this.events.find((e) => e.ev === "failed");
      if (failed) throw new ChildError(`${this.name} failed while waiting for ${what}: ${String(failed.error)}`);
      const hit = this.events.slice(from).find(match);
      if (hit) return hit;
      if (this.exited)
        throw new ChildError(
          `${this.name} exited (${JSON.stringify(this.exited)}) while waiting for ${what}; stderr:\n${this.stderrTail.join("\n")}`,
        );
      const left = deadline - Date.now();
      if (left <= 0)
        throw new ChildError(`${this.name}: no ${what} within ${timeoutMs} ms; stderr:\n${this.stderrTail.join("\n")}`);
      await Promise.race([this.changed(), new Promise((r) => setTimeout(r, Math.min(left, 1_000)))]);
    }
  }

  /** Asks the child for a `stats` event (its own CPU time, heap, VmHWM) and waits for it. */
  async stats(tag: string, timeoutMs = 30_000): Promise<ChildEvent> {
    const from = this.events.length;
    this.proc.stdin?.write(`${tag}\n`);
    return this.waitForEvent((e) => e.ev === "stats" && e.tag === tag, timeoutMs, `stats ${tag}`, from);
  }

  readProc(): ProcStats | undefined {
    return this.proc.pid === undefined ? undefined : procStats(this.proc.pid);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; by PID only. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running || this.proc.pid === undefined) return this.closeLog();
    this.proc.kill("SIGTERM");
    const deadline = Date.now() + graceMs;
    while (this.running && Date.now() < deadline)
      await Promise.race([this.changed(), new Promise((r) => setTimeout(r, 200))]);
    if (this.running) this.proc.kill("SIGKILL");
    while (this.running) await Promise.race([this.changed(), new Promise((r) => setTimeout(r, 200))]);
    await this.closeLog();
  }

  /** Immediate SIGKILL (cleanup after a failure). */
  kill(): void {
    if (this.running) this.proc.kill("SIGKILL");
  }

  private closeLog(): Promise<void> {
    return new Promise((r) => this.logFile.end(() => r()));
  }
}
