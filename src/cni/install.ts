import { chmodSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { StaticEgressError } from "../util/errors.js";

/**
 * The runtime executes a file named after the plugin's `type` from its CNI bin directory, so
 * installing the plugin means one small wrapper there: `<binDir>/static-egress`, which execs
 * Node on `dist/cni/main.js` of this installation.
 */

export const PLUGIN_TYPE = "static-egress";

export class InstallError extends StaticEgressError {}

/** The plugin's entry next to this module (`dist/cni/main.js` when built). */
export function defaultPluginEntry(): string {
  return join(dirname(fileURLToPath(import.meta.url)), "main.js");
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function renderWrapper(opts: { node: string; entry: string }): string {
  if (!isAbsolute(opts.node) || !isAbsolute(opts.entry)) throw new InstallError("the wrapper needs absolute paths for node and the plugin entry");
  return `#!/bin/sh\n# static-egress chained CNI plugin (written by \`static-egress cni install\`).\nexec ${shellQuote(opts.node)} ${shellQuote(opts.entry)} "$@"\n`;
}

/** Writes `<binDir>/static-egress` (mode 0755) atomically, so a runtime never runs half a file. */
export function installWrapper(binDir: string, opts: { node?: string; entry?: string } = {}): string {
  const entry = resolve(opts.entry ?? defaultPluginEntry());
  if (!existsSync(entry)) throw new InstallError(`${entry} does not exist: run \`npm run build\` first`);
  const text = renderWrapper({ node: opts.node ?? process.execPath, entry });
  mkdirSync(binDir, { recursive: true });
  const target = join(binDir, PLUGIN_TYPE);
  const tmp = `${target}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o755 });
  chmodSync(tmp, 0o755);
  renameSync(tmp, target);
  return target;
}
