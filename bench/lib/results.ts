import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { packageRoot } from "../../src/lab/paths.js";
import type { RunRecorder } from "./record.js";

/** Default place for a benchmark's raw results: bench/results/<name>.json. */
export function defaultResultPath(name: string): string {
  return join(packageRoot(), "bench", "results", `${name}.json`);
}

/**
 * Writes results atomically (a crash never leaves half a JSON file), always with the run record
 * (code, machine, load, options) first: a result without it is rejected by record.test.ts.
 */
export function writeResults(path: string, run: RunRecorder, data: object): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ run: run.finish(), ...data }, null, 2) + "\n");
  renameSync(tmp, path);
}
