/**
 * Runs the stand-in as its own process: prints its URL on the first line of stdout, optionally
 * writes a kubeconfig, and stops on SIGINT/SIGTERM (or when `signal` aborts).
 */

import { writeFile } from "node:fs/promises";
import { Command, InvalidArgumentError } from "commander";
import pino from "pino";
import { startKubeStandin } from "./standin.js";

export interface MainIo {
  stdout: (line: string) => void;
  /** Stops the server when aborted; by default SIGINT/SIGTERM do. */
  signal?: AbortSignal;
}

function intArg(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`expected a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

export async function runKubeStandinMain(argv: readonly string[], io: MainIo = { stdout: (l) => process.stdout.write(`${l}\n`) }): Promise<void> {
  const cmd = new Command("kube-standin")
    .description("Kubernetes API stand-in for tests and the lab (not a real API server)")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port (0: any free port)", intArg, 0)
    .option("--kubeconfig-out <path>", "write a kubeconfig for this server to this file")
    .option("--token <token>", "bearer token to put in the kubeconfig")
    .option("--history-window <n>", "change events kept per resource", intArg, 10_000)
    .option("--bookmark-interval-ms <ms>", "bookmark period for watches that allow them", intArg, 10_000)
    .option("--log-level <level>", "pino log level", "info")
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout(s.trimEnd()), writeErr: (s) => process.stderr.write(s) });
  cmd.parse([...argv], { from: "user" });
  const o = cmd.opts<{ host: string; port: number; kubeconfigOut?: string; token?: string; historyWindow: number; bookmarkIntervalMs: number; logLevel: string }>();
  const logger = pino({ level: o.logLevel }, pino.destination(2));
  const standin = await startKubeStandin({
    host: o.host,
    port: o.port,
    logger,
    historyWindow: o.historyWindow,
    bookmarkIntervalMs: o.bookmarkIntervalMs,
    ...(o.token ? { token: o.token } : {}),
  });
  if (o.kubeconfigOut) await writeFile(o.kubeconfigOut, standin.kubeconfig(), { mode: 0o600 });
  io.stdout(standin.url);
  await new Promise<void>((resolve) => {
    if (io.signal) {
      if (io.signal.aborted) resolve();
      else io.signal.addEventListener("abort", () => resolve(), { once: true });
      return;
    }
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await standin.close();
}
