import { spawn } from "node:child_process";
import { StaticEgressError } from "./errors.js";

/** A failed external command, with what it printed so the caller can say why. */
export class CommandError extends StaticEgressError {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly code: number | null,
    readonly stderr: string,
    /** What the command printed on stdout before failing (e.g. `ip -force -batch`'s lines that worked). */
    readonly stdout = "",
  ) {
    super(`${command} ${args.join(" ")} failed (exit ${code}): ${stderr.trim().slice(0, 2000)}`);
    this.name = "CommandError";
  }
}

export interface RunOptions {
  /** Written to the command's stdin (e.g. an `nft -f -` script or an `ip -batch -` list). */
  input?: string;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
  /** Extra environment variables (added to this process's environment). */
  env?: Record<string, string>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * The one seam through which the dataplane touches the kernel: it runs `ip` and `nft`.
 * Production runs them in the agent's own namespace; tests and the lab wrap them with
 * `ip netns exec <ns>` (see `inNamespace`).
 */
export interface CommandRunner {
  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
}

export function runCommand(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs) timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(new CommandError(command, args, null, e.message));
    });
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) resolve({ stdout, stderr });
      else reject(new CommandError(command, args, code, stderr || stdout, stdout));
    });
    child.stdin.on("error", () => undefined); // the command may exit before reading stdin
    child.stdin.end(options.input ?? "");
  });
}

/** Runs commands in the current namespace. */
export const localRunner: CommandRunner = { run: runCommand };

/** Runs commands inside a named network namespace (`ip netns exec`). */
export function inNamespace(ns: string): CommandRunner {
  return {
    run: (command, args, options) => runCommand("ip", ["netns", "exec", ns, command, ...args], options),
  };
}
