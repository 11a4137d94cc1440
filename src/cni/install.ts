import { chmodSync, copyFileSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StaticEgressError } from "../util/errors.js";

/**
 * The runtime executes a file named after the plugin's `type` from its CNI bin directory.
 * Installing the plugin writes two files there: `<binDir>/static-egress`, the Go shim
 * (cni-shim/), which hands each call to the node agent, and `<binDir>/static-egress-nodejs`, a
 * small wrapper that execs Node on `dist/cni/main.js` of this installation: the TypeScript
 * plugin, which the shim runs when the agent cannot take the call.
 */

export const PLUGIN_TYPE = "static-egress";
/** The TypeScript plugin's wrapper; the shim finds it by this name beside itself. */
export const FALLBACK_PLUGIN = "static-egress-nodejs";

export class InstallError extends StaticEgressError {}

/** The plugin's entry next to this module (`dist/cni/main.js` when built). */
function defaultPluginEntry(): string {
  return join(dirname(fileURLToPath(import.meta.url)), "main.js");
}

/** The shim next to this module (`dist/cni/static-egress-shim`, put there by scripts/build-cni-shim.sh). */
function defaultShim(): string {
  return join(dirname(fileURLToPath(import.meta.url)), "static-egress-shim");
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function renderWrapper(opts: { node: string; entry: string }): string {
  if (!isAbsolute(opts.node) || !isAbsolute(opts.entry))
    throw new InstallError("the wrapper needs absolute paths for node and the plugin entry");
  return (
    `#!/bin/sh\n# static-egress chained CNI plugin (written by \`static-egress cni ` +
    `install\`).\nexec ${shellQuote(opts.node)} ${shellQuote(opts.entry)} "$@"\n`
  );
}

/** Writes `file` (mode 0755) atomically, so a runtime never runs half a file. */
function writeExecutable(file: string, write: (tmp: string) => void): void {
  const tmp = `${file}.tmp-${process.pid}`;
  write(tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, file);
}

/**
 * Writes `<binDir>/static-egress-nodejs` (the TypeScript plugin's wrapper), then
 * `<binDir>/static-egress` (the shim), so the shim never runs without its fallback.
 */
export function installPlugin(binDir: string, opts: { node?: string; entry?: string; shim?: string } = {}): string {
  const entry = resolve(opts.entry ?? defaultPluginEntry());
  if (!existsSync(entry)) throw new InstallError(`${entry} does not exist: run \`npm run build\` first`);
  const shim = resolve(opts.shim ?? defaultShim());
  if (!existsSync(shim))
    throw new InstallError(`${shim} does not exist: run scripts/build-cni-shim.sh first (it needs Go)`);
  const text = renderWrapper({ node: opts.node ?? process.execPath, entry });
  mkdirSync(binDir, { recursive: true });
  writeExecutable(join(binDir, FALLBACK_PLUGIN), (tmp) => writeFileSync(tmp, text, { mode: 0o755 }));
  const target = join(binDir, PLUGIN_TYPE);
  writeExecutable(target, (tmp) => copyFileSync(shim, tmp));
  return target;
}
