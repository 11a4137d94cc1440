import { performance } from "node:perf_hooks";
import type { CommandRunner, RunOptions, RunResult } from "../../src/util/exec.js";

/** One external command the dataplane ran, and how long it took. */
export interface CommandTiming {
  /** `nft`, `ip`, `sysctl`, ... (the command run inside the namespace). */
  command: string;
  /** First argument(s), enough to tell `ip -batch` from `ip -json rule show`. */
  what: string;
  ms: number;
  inputBytes: number;
}

/**
 * Wraps a CommandRunner: records every command with its duration, and bounds each one with a
 * timeout so a hung `nft` cannot keep a benchmark running forever.
 */
export class TimingRunner implements CommandRunner {
  private calls: CommandTiming[] = [];
  // Plain fields, no parameter properties: the scale benchmark's children load this file with Node's own type stripping.
  private readonly inner: CommandRunner;
  private readonly defaultTimeoutMs: number;

  constructor(inner: CommandRunner, defaultTimeoutMs = 120_000) {
    this.inner = inner;
    this.defaultTimeoutMs = defaultTimeoutMs;
  }

  async run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const start = performance.now();
    try {
      return await this.inner.run(command, args, { timeoutMs: this.defaultTimeoutMs, ...options });
    } finally {
      // Our own nft runs as a symlink named se-nft (src/dataplane/kernel-watch.ts): counted as nft.
      // (OWN_NFT_NAME, written out: this file imports no values from src.)
      const name = command.endsWith("/se-nft") ? "nft" : command;
      this.calls.push({
        command: name,
        what: [name, ...args.slice(0, 3)].join(" "),
        ms: performance.now() - start,
        inputBytes: options.input?.length ?? 0,
      });
    }
  }

  /** Returns the commands recorded since the last call, and starts a new record. */
  take(): CommandTiming[] {
    const out = this.calls;
    this.calls = [];
    return out;
  }
}

/** Milliseconds spent per command name (nft, ip, sysctl). */
export function byCommand(calls: readonly CommandTiming[]): Record<string, { count: number; ms: number }> {
  const out: Record<string, { count: number; ms: number }> = {};
  for (const c of calls) {
    const e = (out[c.command] ??= { count: 0, ms: 0 });
    e.count++;
    e.ms += c.ms;
  }
  return out;
}

/** Times one async step in milliseconds. */
export async function timed<T>(step: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await step();
  return { ms: performance.now() - start, value };
}
