import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseLabConfig, type LabConfig } from "../../src/lab/config.js";
import { waitFor, type Lab, type LabPodStatus } from "../../src/lab/lab.js";
import { packageRoot } from "../../src/lab/paths.js";

export function exampleLabConfig(): LabConfig {
  const path = join(packageRoot(), "examples", "lab.yaml");
  return parseLabConfig(readFileSync(path, "utf8"), path);
}

/** Polls `lab status` until every pod leaves with an address it may use. */
export async function waitConverged(lab: Lab, target?: string, timeoutMs = 60_000): Promise<LabPodStatus[]> {
  let last: LabPodStatus[] = [];
  await waitFor(
    async () => {
      last = await lab.status(target);
      return last.every((r) => r.ok);
    },
    timeoutMs,
    "lab did not converge",
    200,
  ).catch((e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(last.filter((r) => !r.ok))}`, { cause: e });
  });
  return last;
}
