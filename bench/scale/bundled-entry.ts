import { basename, join } from "node:path";
import { bundle } from "../../scripts/bundle.js";

const built = new Map<string, Promise<string>>();

/**
 * A benchmark child's TypeScript entry bundled as `npm run build` bundles the CLI (the same
 * function and settings; its imports of src/ taken from tsc's dist/), once per entry and
 * directory: the child loads one file, as `static-egress agent node` does since the bundle.
 */
export function bundledEntry(entry: string, dir: string): Promise<string> {
  const out = join(dir, basename(entry).replace(/\.ts$/, ".bundle.mjs"));
  let p = built.get(out);
  if (!p) {
    p = bundle(entry, out, { srcAsBuilt: true }).then(() => out);
    built.set(out, p);
  }
  return p;
}
