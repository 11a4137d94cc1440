// Preloaded with `node --import` by test/integration/architecture.test.ts: records every module the
// process resolves and prints the list to stderr at exit, so a test can see what a command loaded.
import { registerHooks } from "node:module";
import process from "node:process";

const seen = new Set();
registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    seen.add(resolved.url);
    return resolved;
  },
});
process.on("exit", () =>
  process.stderr.write(`\nMODULES ${JSON.stringify([...seen].filter((u) => u.startsWith("file:")))}\n`),
);
