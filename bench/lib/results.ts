import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { packageRoot } from "../../src/lab/paths.js";

/** Default place for a benchmark's raw results: bench/results/<name>.json. */
export function defaultResultPath(name: string): string {
  return join(packageRoot(), "bench", "results", `${name}.json`);
}

/** Writes results atomically (a crash never leaves half a JSON file). */
export function writeResults(path: string, data: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(data, null, 2) + "\n");
  renameSync(tmp, path);
}
