// `npm run build`, after tsc: rewrites the CLI's entries in dist/ (dist/cli/main.js and the
// kubectl plugin) as single ES module files with their dependencies inlined, so a process loads
// one file instead of ~1,500 modules (about 1,000 of them @kubernetes/client-node's, whose index
// loads every generated model): a node agent's start is that much shorter (bench/README.md, "A
// node agent at rest, and its first datapath"). Everything else in dist/ stays tsc's output.
//
// Each of our modules keeps its own location: `import.meta.url` in dist/x/y.js becomes that
// file's URL, so what it finds beside itself (the BFD thread's worker file, the CNI shim in
// dist/cni/, the lab's package root) is found as from tsc's output. The lab is in the bundle but
// evaluated only for `lab ...` (esbuild wraps a dynamically imported module in a lazy init).
// The benchmarks bundle their node agent child with the same function (bench/scale/bundle.ts).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type Plugin } from "esbuild";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, "dist");
// The plugin first: it imports main.js, which must still be tsc's when it is read.
const ENTRIES = ["cli/kubectl-plugin.js", "cli/main.js"];
const BUNDLE_MARK = "// static-egress: bundled by scripts/bundle.ts";

/** Our modules' (those under `own`) `import.meta.url`: their own file's URL (in dist/, or bench/). */
function keepModuleUrls(bundleDir: string, own: string): Plugin {
  return {
    name: "keep-module-urls",
    setup(b) {
      b.onLoad({ filter: /\.[jt]s$/ }, (args) => {
        if (!args.path.startsWith(own + sep) || args.path.includes(`${sep}node_modules${sep}`)) return undefined;
        const loader = args.path.endsWith(".ts") ? "ts" : "js";
        const source = readFileSync(args.path, "utf8");
        if (source.includes(BUNDLE_MARK)) throw new Error(`${args.path} is already a bundle: run tsc first`);
        if (!source.includes("import.meta.url")) return { contents: source, loader };
        let rel = relative(bundleDir, args.path).split(sep).join("/");
        if (!rel.startsWith(".")) rel = `./${rel}`;
        return {
          contents: source.replaceAll("import.meta.url", `new URL(${JSON.stringify(rel)}, import.meta.url).href`),
          loader,
        };
      });
    },
  };
}

/**
 * An import of src/x.ts (by its `.js` name) from bench/ resolved to tsc's dist/x.js: a benchmark
 * child bundled from its TypeScript entry runs the product as built, not esbuild's transpile.
 */
const srcAsBuilt: Plugin = {
  name: "src-as-built",
  setup(b) {
    b.onResolve({ filter: /^\./ }, (args) => {
      const path = resolve(args.resolveDir, args.path);
      if (!args.importer.startsWith(join(ROOT, "bench") + sep) || !path.startsWith(join(ROOT, "src") + sep))
        return undefined;
      return { path: join(DIST, relative(join(ROOT, "src"), path)).replace(/\.ts$/, ".js") };
    });
  },
};

/**
 * Bundles `entry` (and everything it imports, but Node's own modules) into the ES module `outfile`.
 * `own`: the tree whose modules keep their own `import.meta.url` (default: this package).
 */
export async function bundle(
  entry: string,
  outfile: string,
  opts: { srcAsBuilt?: boolean; own?: string } = {},
): Promise<void> {
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    write: false,
    outfile,
    logLevel: "error",
    // tr46 (client-node → node-fetch → whatwg-url) requires Node's deprecated `punycode`; Node
    // warns (DEP0040, on stderr) only for code outside node_modules, which bundled code is: the
    // userland package of the same API instead.
    alias: { punycode: "punycode/" },
    // CommonJS dependencies (commander, pino, ...) call require(); an ES module has none.
    banner: {
      js: [
        BUNDLE_MARK,
        'import { createRequire as __seCreateRequire } from "node:module";',
        "const require = __seCreateRequire(import.meta.url);",
      ].join("\n"),
    },
    plugins: [...(opts.srcAsBuilt ? [srcAsBuilt] : []), keepModuleUrls(dirname(outfile), opts.own ?? ROOT)],
  });
  for (const o of out.outputFiles) writeFileSync(o.path, o.contents, { mode: 0o755 });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  for (const entry of ENTRIES) await bundle(join(DIST, entry), join(DIST, entry));
}
