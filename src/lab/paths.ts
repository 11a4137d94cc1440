import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
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

/**
 * Starts `static-egress <args>` inside `netns` (the root namespace when ""), appending its output
 * to `logPath`. `detached`: the process outlives the one that started it (CLI labs).
 */
export function spawnCli(netns: string, args: readonly string[], logPath: string, detached: boolean): ChildProcess {
  const fd = openSync(logPath, "a");
  const command = netns ? ["ip", "netns", "exec", netns, process.execPath] : [process.execPath];
  const child = spawn(command[0]!, [...command.slice(1), cliEntry(), ...args], { detached, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  child.on("error", () => undefined);
  if (detached) child.unref();
  return child;
}
