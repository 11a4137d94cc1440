import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where labs keep their state: one folder per run prefix. */
export const LAB_STATE_ROOT = process.env.STATIC_EGRESS_LAB_DIR ?? "/run/static-egress-lab";

/** The repository (package) root, found from this module whether it runs from src/ or dist/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the static-egress package root");
    dir = up;
  }
  return dir;
}

/** The built CLI the lab runs inside namespaces (`npm run build` makes it). */
export function cliEntry(): string {
  const entry = join(packageRoot(), "dist", "cli", "main.js");
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` first`);
  return entry;
}
