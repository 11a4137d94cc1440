import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { bundle } from "../../scripts/bundle.js";
import { packageRoot } from "../../src/lab/paths.js";

// What `npm run build` ships as the CLI (scripts/bundle.ts): one file per entry, behaving as the
// modules it was made of. The lab tests start agents from it against the real API server.
const root = packageRoot();
const cli = join(root, "dist", "cli", "main.js");

function run(args: string[], nodeArgs: string[] = []): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...nodeArgs, ...args], { cwd: root, encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("the built CLI (dist/cli/main.js) is one bundled file", () => {
  it("`agent node --help` loads that file and no other module from disk", () => {
    const r = run([cli, "agent", "node", "--help"], ["--import", join(root, "test", "support", "module-probe.mjs")]);
    expect(r.status, r.stderr).toBe(0);
    const line = r.stderr.split("\n").find((l) => l.startsWith("MODULES "));
    const loaded = (JSON.parse(line!.slice("MODULES ".length)) as string[]).filter(
      (u) => u !== pathToFileURL(cli).href,
    );
    // Only the probe itself besides the bundle (tsc's output loaded ~1,500 modules here).
    expect(loaded.filter((u) => !u.endsWith("/module-probe.mjs"))).toEqual([]);
  });

  it.each(["", "agent node", "agent gateway", "controller", "cni install"])(
    "`%s --help` prints what the TypeScript sources print",
    (line) => {
      const command = line.split(" ").filter(Boolean);
      const built = run([cli, ...command, "--help"]);
      const source = run([join(root, "src", "cli", "main.ts"), ...command, "--help"], ["--import", "tsx"]);
      expect(built.status, built.stderr).toBe(0);
      expect(built.stdout).toBe(source.stdout);
      expect(built.stdout).toContain("Usage: static-egress");
    },
  );

  it("`kubectl static-egress` (the plugin's own bundle) still says how it was called", () => {
    const r = run([join(root, "dist", "cli", "kubectl-plugin.js"), "--help"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("Usage: kubectl static-egress");
  });
});

describe("bundle(): each module keeps its own import.meta.url", () => {
  const dir = mkdtempSync(join(tmpdir(), "se-bundle-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("a module in a subfolder finds what lies beside it, as from its own file", async () => {
    const src = join(dir, "src");
    mkdirSync(join(src, "deep", "er"), { recursive: true });
    writeFileSync(join(src, "deep", "er", "beside.txt"), "found beside deep/er/where.js");
    writeFileSync(
      join(src, "deep", "er", "where.js"),
      'import { readFileSync } from "node:fs";\n' +
        'export const here = import.meta.url;\nexport const beside = readFileSync(new URL("./beside.txt", import.meta.url), "utf8");\n',
    );
    writeFileSync(
      join(src, "entry.js"),
      'import { here, beside } from "./deep/er/where.js";\nconsole.log(JSON.stringify({ here, beside, entry: import.meta.url }));\n',
    );
    const out = join(dir, "out", "cli.js");
    mkdirSync(join(dir, "out"));
    await bundle(join(src, "entry.js"), out, { own: src });
    const r = run([out]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      here: pathToFileURL(join(src, "deep", "er", "where.js")).href,
      beside: "found beside deep/er/where.js",
      entry: pathToFileURL(join(src, "entry.js")).href,
    });
    // One file: the modules are inside it, nothing is imported from src/ at run time.
    expect(readFileSync(out, "utf8")).not.toMatch(/from "\.\/deep/);
  });

  it("refuses to bundle a bundle (a build run twice without tsc)", async () => {
    await expect(bundle(join(dir, "out", "cli.js"), join(dir, "out", "again.js"), { own: dir })).rejects.toThrow(
      /already a bundle/,
    );
  });
});
