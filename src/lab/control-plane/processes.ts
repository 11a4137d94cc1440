import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The processes a control plane starts, and a record of them on disk so that a later run can end
 * the leftovers of one that crashed (a test runner killed with SIGKILL cannot stop its children).
 * One folder per control plane under RUN_ROOT: owner.json names the owning process and the PIDs.
 */
export const RUN_ROOT = process.env.STATIC_EGRESS_CP_DIR ?? "/run/static-egress-cp";

interface OwnerRecord {
  ownerPid: number;
  pids: number[];
}

/** Whether a process with this PID exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Ends the processes of control planes whose owner is gone, and removes their folders. */
export function removeLeftovers(): number {
  if (!existsSync(RUN_ROOT)) return 0;
  let removed = 0;
  for (const name of readdirSync(RUN_ROOT)) {
    const dir = join(RUN_ROOT, name);
    let record: OwnerRecord | undefined;
    try {
      record = JSON.parse(readFileSync(join(dir, "owner.json"), "utf8")) as OwnerRecord;
    } catch {
      record = undefined;
    }
    if (record && alive(record.ownerPid)) continue;
    for (const pid of record?.pids ?? []) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/** A folder for one control plane, with its child processes; `stop` ends them all. */
export class ProcessGroup {
  private readonly children = new Map<string, ChildProcess>();
  private readonly onExit = () => this.killAllNow();

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.save();
    process.once("exit", this.onExit);
  }

  /** Starts `command` with its output appended to `<dir>/<name>.log`. */
  start(name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const fd = openSync(this.logPath(name), "a");
    const child = spawn(command, [...args], { stdio: ["ignore", fd, fd], env });
    closeSync(fd);
    child.on("error", () => undefined);
    this.children.set(name, child);
    this.save();
    return child;
  }

  logPath(name: string): string {
    return join(this.dir, `${name}.log`);
  }

  /** The last lines of a process's log, for error messages. */
  logTail(name: string, lines = 25): string {
    try {
      return readFileSync(this.logPath(name), "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  exited(name: string): boolean {
    const c = this.children.get(name);
    return !c || c.exitCode !== null || c.signalCode !== null;
  }

  /** Ends one process: SIGTERM, then SIGKILL after `graceMs`. */
  async stopOne(name: string, graceMs = 5_000): Promise<void> {
    const c = this.children.get(name);
    if (!c) return;
    this.children.delete(name);
    if (c.exitCode === null && c.signalCode === null) {
      const done = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      c.kill("SIGTERM");
      const timer = setTimeout(() => c.kill("SIGKILL"), graceMs);
      await done;
      clearTimeout(timer);
    }
    this.save();
  }

  /** Ends every process (in reverse start order) and removes the folder. */
  async stop(): Promise<void> {
    for (const name of [...this.children.keys()].reverse()) await this.stopOne(name);
    process.removeListener("exit", this.onExit);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private killAllNow(): void {
    for (const c of this.children.values()) c.kill("SIGKILL");
  }

  private save(): void {
    const record: OwnerRecord = {
      ownerPid: process.pid,
      pids: [...this.children.values()].map((c) => c.pid).filter((p): p is number => p !== undefined),
    };
    writeFileSync(join(this.dir, "owner.json"), JSON.stringify(record));
  }
}
