import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/lab/paths.js";

// ARCHITECTURE.md: the layer rules (.dependency-cruiser.mjs, run by `npm run lint`) and the lazy lab.

const root = packageRoot();
const depcruise = join(root, "node_modules", "dependency-cruiser", "bin", "dependency-cruiser.mjs");

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
}

/** Runs the project's rules over a tree of files (relative path -> source) in a temporary directory. */
function cruise(dir: string, files: Record<string, string>): Violation[] {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", strict: true },
      include: ["src"],
    }),
  );
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ type: "module", dependencies: {}, devDependencies: { "fast-check": "*" } }),
  );
  const r = spawnSync(
    process.execPath,
    [depcruise, "--config", join(root, ".dependency-cruiser.mjs"), "--output-type", "json", "src"],
    { cwd: dir, encoding: "utf8" },
  );
  if (r.stdout === "") throw new Error(`depcruise failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { summary: { violations: Violation[] } }).summary.violations;
}

describe("layer rules", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "se-arch-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("report an upward import, an agent calling a cloud, a static lab import, test code in product code and a cycle; not the allowed imports", () => {
    const violations = cruise(join(dir, "tree"), {
      "src/planner/model.ts": "export interface Plan { n: number }\n",
      "src/api/types.ts": "export type Name = string;\n",
      "src/util/ok.ts": "export const x = 1;\n",
      // allowed: planner -> api, util
      "src/planner/plan.ts":
        'import type { Name } from "../api/types.js";\nimport { x } from "../util/ok.js";\nexport const p: Name = String(x);\n',
      // forbidden: util -> planner (upward)
      "src/util/bad.ts": 'import type { Plan } from "../planner/model.js";\nexport type P = Plan;\n',
      // forbidden: agents -> cloud (only through a port)
      "src/cloud/metadata.ts": "export const read = () => 1;\n",
      "src/agents/anchor.ts": 'import { read } from "../cloud/metadata.js";\nexport const a = read();\n',
      // forbidden: the CLI loads the lab statically; allowed: dynamically
      "src/lab/lab.ts": "export const lab = 1;\n",
      "src/cli/main.ts":
        'import { lab } from "../lab/lab.js";\nexport const l = lab;\nexport const later = () => import("../lab/lab.js");\n',
      // forbidden: product code imports a test helper
      "src/controller/testing/fake.ts": "export const fake = 1;\n",
      "src/controller/controller.ts": 'import { fake } from "./testing/fake.js";\nexport const c = fake;\n',
      // forbidden: a cycle inside one layer
      "src/kube/a.ts": 'import { b } from "./b.js";\nexport const a = () => b;\n',
      "src/kube/b.ts": 'import { a } from "./a.js";\nexport const b = () => a;\n',
    });
    const found = violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`).sort();
    expect(found).toEqual([
      "agents: src/agents/anchor.ts -> src/cloud/metadata.ts",
      "lab-loads-lazily: src/cli/main.ts -> src/lab/lab.ts",
      "no-circular: src/kube/a.ts -> src/kube/b.ts",
      "product-never-imports-test-code: src/controller/controller.ts -> src/controller/testing/fake.ts",
      "util-is-the-bottom: src/util/bad.ts -> src/planner/model.ts",
    ]);
  });
});

/** The src/ modules a CLI command loads (through tsx, so no build is needed). */
function modulesLoadedBy(args: string[]): string[] {
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "--import",
      join(root, "test", "support", "module-probe.mjs"),
      join(root, "src", "cli", "main.ts"),
      ...args,
    ],
    { cwd: root, encoding: "utf8" },
  );
  const line = r.stderr.split("\n").find((l) => l.startsWith("MODULES "));
  if (!line) throw new Error(`no module list from ${args.join(" ")}: ${r.stderr}`);
  const prefix = `file://${join(root, "src")}/`;
  return (JSON.parse(line.slice("MODULES ".length)) as string[])
    .filter((u) => u.startsWith(prefix))
    .map((u) => u.slice(prefix.length));
}

describe("the lab loads lazily", () => {
  it.each(["agent node", "agent gateway", "agent health-responder", "controller"])(
    "`%s --help` loads no lab module and no stand-in",
    (command) => {
      const loaded = modulesLoadedBy([...command.split(" "), "--help"]);
      expect(loaded).toContain("cli/agents.ts");
      expect(loaded.filter((m) => m.startsWith("lab/") || m === "cli/lab.ts" || m === "cli/demo.ts")).toEqual([]);
    },
  );

  it("`lab --help` does load the lab (the probe sees it)", () => {
    expect(modulesLoadedBy(["lab", "--help"])).toContain("lab/lab.ts");
  });
});
