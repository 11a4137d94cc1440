/**
 * Module hooks for the benchmark's children (`node --import ./bench/scale/from-dist.ts <entry>.ts`):
 * the product is loaded from `dist/` (what `npm run build` emits and the image runs), so a child's
 * start time and CPU are the production code's, not tsx compiling TypeScript. Only the small
 * benchmark entries (and the bench helpers they import) stay TypeScript, stripped by Node itself:
 * they must use erasable syntax only (no parameter properties, no enums).
 */
import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const src = `${root}src/`;
const dist = `${root}dist/`;

registerHooks({
  resolve(specifier, context, nextResolve) {
    // Packages' own imports (thousands, in @kubernetes/client-node) go straight through.
    const parent = context.parentURL;
    if (
      (specifier.startsWith(".") || specifier.startsWith("file:")) &&
      parent?.startsWith("file:") &&
      !parent.includes("/node_modules/")
    ) {
      const path = fileURLToPath(new URL(specifier, parent));
      if (path.startsWith(src)) {
        const built = `${dist}${path.slice(src.length)}`;
        if (!existsSync(built)) throw new Error(`${built} is missing: run npm run build first`);
        return { url: pathToFileURL(built).href, shortCircuit: true, format: "module" };
      }
      // Bench files import each other as `.js` (tsc's convention); on disk they are `.ts`.
      if (path.startsWith(`${root}bench/`) && path.endsWith(".js") && !existsSync(path)) {
        const ts = `${path.slice(0, -3)}.ts`;
        if (existsSync(ts)) return { url: pathToFileURL(ts).href, shortCircuit: true };
      }
    }
    return nextResolve(specifier, context);
  },
});
