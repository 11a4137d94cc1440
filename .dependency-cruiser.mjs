/**
 * The layers of ARCHITECTURE.md, enforced: `npm run lint` runs `depcruise` with this file, and a
 * wrong import fails it (and CI). Each rule names a folder and what it may import from src/;
 * tests (`*.test.ts`) and test-only helpers (`testing/` folders) may reach wider, but product
 * code never imports them. Type-only imports count: a type cycle is still a cycle.
 */

/** Test code: colocated tests, `testing/` helpers (excluded from the build), and test/. */
const TEST = "(\\.test\\.ts$|(^|/)testing(/|\\.ts$)|^test/)";

/** A rule: product files of `layer` import nothing from src/ outside `allowed` (and their own layer). */
function layer(name, layerPath, allowed, comment) {
  return {
    name,
    comment,
    severity: "error",
    from: { path: `^src/${layerPath}/`, pathNot: TEST },
    to: { path: "^src/", pathNot: `^src/(${[layerPath, ...allowed].join("|")})/` },
  };
}

export default {
  forbidden: [
    {
      name: "no-circular",
      comment: "No import cycles anywhere, type-only imports included.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    layer(
      "util-is-the-bottom",
      "util",
      [],
      "util (exec, log, ipv4, backoff, clock, errors, reconcile loop, metrics server) imports nothing else from src.",
    ),
    layer(
      "api-over-util",
      "api",
      ["util"],
      "api: CRD types, validation, the cluster as read, the shared keys and kernel numbers.",
    ),
    layer("planner-is-pure", "planner", ["api", "util"], "The planner plans; it reads the API and pure helpers only."),
    {
      name: "planner-does-no-io",
      comment: "The planner is pure: no Node I/O module and no package (it gets everything from api/util).",
      severity: "error",
      from: { path: "^src/planner/", pathNot: TEST },
      // Types of a package (e.g. the Kubernetes objects a plan describes) carry no I/O.
      to: {
        dependencyTypes: ["core", "npm", "npm-dev", "npm-optional", "npm-peer", "npm-no-pkg", "npm-unknown"],
        dependencyTypesNot: ["type-only"],
      },
    },
    layer(
      "dataplane-over-planner",
      "dataplane",
      ["planner", "api", "util"],
      "The kernel writers and readers program plans; they know nothing of Kubernetes or clouds.",
    ),
    layer(
      "kube-is-the-api-caller",
      "kube",
      ["api", "util"],
      "The only Kubernetes API caller; it knows no agent, controller or planner.",
    ),
    layer("cloud-providers", "cloud", ["api", "util"], "Cloud providers: API clients and metadata readers."),
    layer(
      "cni-plugin",
      "cni",
      ["api", "util"],
      "The chained CNI plugin (a short-lived process of the runtime) and the agent protocol.",
    ),
    layer(
      "agents",
      "agents",
      ["planner", "dataplane", "kube", "cni", "api", "util"],
      "Node, gateway and health agents. A cloud reaches them only through a port the CLI plugs in (e.g. AnchorReader).",
    ),
    layer(
      "importers",
      "importers",
      ["api", "util"],
      "Pure converters of the peers' objects into ours (the CLI reads and applies).",
    ),
    {
      name: "every-folder-has-a-layer",
      comment:
        "A new folder under src/ gets its own rule here (and a line in ARCHITECTURE.md) before code lands in it.",
      severity: "error",
      from: {
        path: "^src/",
        pathNot: "^src/(util|api|planner|dataplane|kube|cloud|cni|agents|controller|importers|lab|cli)/",
      },
      to: {},
    },
    layer(
      "controller",
      "controller",
      ["planner", "kube", "cloud", "api", "util"],
      "The controller and its cloud plugins; no agent code.",
    ),
    layer(
      "lab-is-on-top",
      "lab",
      ["agents", "controller", "planner", "dataplane", "kube", "cloud", "cni", "api", "util"],
      "The lab builds clusters from the product; it never imports the CLI.",
    ),
    {
      name: "lab-loads-lazily",
      comment:
        "Agent and controller processes never load the lab: the CLI reaches the lab commands by dynamic import only.",
      severity: "error",
      from: { path: "^src/cli/", pathNot: `^src/cli/(lab|demo)\\.ts$|${TEST}` },
      to: { path: "^src/(lab/|cli/(lab|demo)\\.ts$)", dependencyTypesNot: ["dynamic-import"] },
    },
    {
      name: "product-never-imports-test-code",
      comment: "Test helpers, stand-in helpers and fixtures stay out of product code (and of dist/).",
      severity: "error",
      from: { path: "^src/", pathNot: TEST },
      to: { path: TEST },
    },
    {
      name: "product-never-imports-dev-dependencies",
      comment: "What ships runs without devDependencies (fast-check, vitest, tsx).",
      severity: "error",
      from: { path: "^src/", pathNot: TEST },
      to: { dependencyTypes: ["npm-dev"], dependencyTypesNot: ["type-only"] },
    },
    {
      name: "resolvable",
      comment: "Every relative import names a file that exists.",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^src/cloud/digitalocean/generated/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
