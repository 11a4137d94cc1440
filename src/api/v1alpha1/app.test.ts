import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { APP_REFUSALS, base, withService } from "../../../test/support/app-refusals.js";
import { packageRoot } from "../../lab/paths.js";
import { AppSpec, ServiceSpec, WorkerSpec } from "./app.js";
import { validateApp, validateAppSpec } from "./app-validate.js";
import { addKubernetesKeywords, SpecValidator } from "./validate.js";

// The App's schema against DigitalOcean's own (reference/digitalocean-apps/models, vendored
// unchanged): every constraint DigitalOcean states on a field we accept is ours too, every field
// DigitalOcean knows is in our schema (accepted or refused by name, never "unknown"), and
// DigitalOcean's example specs are accepted or refused field by field.

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const models = join(packageRoot(), "reference", "digitalocean-apps");
const readModel = (file: string): Json => parse(readFileSync(join(models, "models", file), "utf8")) as Json;

/** A DigitalOcean model with its $refs (to files we vendored) and allOf resolved; others left as the ref. */
function resolve(node: Json): Json {
  if (typeof node.$ref === "string") {
    try {
      return resolve(readModel(node.$ref));
    } catch {
      return { unresolved: node.$ref };
    }
  }
  if (Array.isArray(node.allOf)) {
    const parts = node.allOf.map((p: Json) => resolve(p));
    return {
      type: "object",
      properties: Object.assign({}, ...parts.map((p: Json) => p.properties ?? {})),
      required: parts.flatMap((p: Json) => p.required ?? []),
    };
  }
  if (node.properties)
    return {
      ...node,
      properties: Object.fromEntries(Object.entries(node.properties as Json).map(([k, v]) => [k, resolve(v as Json)])),
    };
  if (node.items) return { ...node, items: resolve(node.items as Json) };
  return node;
}

const KEYWORDS = ["minLength", "maxLength", "pattern", "minimum", "maximum", "default"] as const;

/** Our schema as plain JSON, with unions of literals as DigitalOcean writes them (enum). */
function ours(schema: unknown): Json {
  const plain = JSON.parse(JSON.stringify(schema)) as Json;
  const walk = (n: Json): Json => {
    if (Array.isArray(n.anyOf) && n.anyOf.every((s: Json) => "const" in s))
      return { ...n, enum: n.anyOf.map((s: Json) => s.const) };
    if (n.properties)
      n.properties = Object.fromEntries(Object.entries(n.properties as Json).map(([k, v]) => [k, walk(v as Json)]));
    if (n.items) n.items = walk(n.items as Json);
    return n;
  };
  return walk(plain);
}

/**
 * Where our schema differs from DigitalOcean's on purpose, by path. image.tag's default
 * ("latest") holds only when no digest is given, so it cannot be a schema default (a filled-in
 * tag would then clash with the digest): imageRef (src/planner/apps.ts) applies it.
 */
const DIFFERENT: Record<string, string[]> = {
  "app_spec.yml": ["app_spec.yml.services[].image.tag: default", "app_spec.yml.workers[].image.tag: default"],
  "app_service_spec.yml": ["app_service_spec.yml.image.tag: default"],
  "app_worker_spec.yml": ["app_worker_spec.yml.image.tag: default"],
};

function compare(path: string, theirs: Json, mine: Json, out: string[]): void {
  if (theirs.unresolved) return; // a part we refuse as a whole (source specs, log destinations...)
  for (const k of KEYWORDS) {
    if (theirs[k] === undefined) continue;
    if (JSON.stringify(theirs[k]) !== JSON.stringify(mine[k]))
      out.push(`${path}: ${k} is ${JSON.stringify(mine[k])}, DigitalOcean says ${JSON.stringify(theirs[k])}`);
  }
  const theirEnum: unknown[] | undefined =
    theirs.enum ?? (theirs.oneOf as Json[] | undefined)?.flatMap((o) => o.enum ?? []);
  if (
    theirEnum &&
    JSON.stringify([...theirEnum].sort()) !== JSON.stringify([...((mine.enum as unknown[]) ?? [])].sort())
  )
    out.push(`${path}: enum differs`);
  if (mine["x-kubernetes-preserve-unknown-fields"]) return; // refused as a whole
  for (const [k, v] of Object.entries((theirs.properties as Json) ?? {})) {
    const m = (mine.properties as Json | undefined)?.[k] as Json | undefined;
    if (!m) {
      out.push(`${path}.${k}: DigitalOcean's field is not in our schema (it would be refused as unknown)`);
      continue;
    }
    compare(`${path}.${k}`, v as Json, m, out);
  }
  if (theirs.items && mine.items) compare(`${path}[]`, theirs.items as Json, mine.items as Json, out);
}

describe("App schema follows DigitalOcean's app spec (reference/digitalocean-apps/models)", () => {
  it.each([
    ["app_spec.yml", AppSpec],
    ["app_service_spec.yml", ServiceSpec],
    ["app_worker_spec.yml", WorkerSpec],
  ] as const)(
    "%s: same names, lengths, patterns, enums, bounds and defaults; no field of theirs is unknown to us",
    (file, schema) => {
      const problems: string[] = [];
      compare(file, resolve(readModel(file)), ours(schema), problems);
      expect(problems.filter((p) => !(DIFFERENT[file] ?? []).some((s) => p.startsWith(s)))).toEqual([]);
    },
  );

  it("the comparison catches a drift (a changed bound, a dropped field)", () => {
    const changed = ours(ServiceSpec);
    changed.properties.http_port.maximum = 70000;
    delete changed.properties.cors;
    const problems: string[] = [];
    compare("svc", resolve(readModel("app_service_spec.yml")), changed, problems);
    expect(problems).toEqual(
      expect.arrayContaining([
        "svc.http_port: maximum is 70000, DigitalOcean says 65535",
        "svc.cors: DigitalOcean's field is not in our schema (it would be refused as unknown)",
      ]),
    );
  });
});

/** A component made of the `example:` values of DigitalOcean's schema files, for the fields we run. */
function exampleComponent(file: string): Json {
  const model = resolve(readModel(file));
  const pick = (props: Json, keys: string[]): Json =>
    Object.fromEntries(keys.filter((k) => props[k]?.example !== undefined).map((k) => [k, props[k].example]));
  const image = pick(resolve(readModel("apps_image_source_spec.yml")).properties as Json, [
    "registry_type",
    "repository",
    "tag",
  ]);
  const env = pick(resolve(readModel("app_variable_definition.yml")).properties as Json, [
    "key",
    "scope",
    "type",
    "value",
  ]);
  const props = model.properties as Json;
  return {
    ...pick(props, [
      "name",
      "run_command",
      "instance_count",
      "instance_size_slug",
      "http_port",
      "internal_ports",
      "protocol",
    ]),
    image,
    envs: [{ ...env, scope: "RUN_TIME" }],
    ...(props.liveness_health_check
      ? {
          liveness_health_check: pick(props.liveness_health_check.properties as Json, [
            "failure_threshold",
            "port",
            "http_path",
            "initial_delay_seconds",
            "period_seconds",
            "success_threshold",
            "timeout_seconds",
          ]),
        }
      : {}),
  };
}

describe("DigitalOcean's example specs", () => {
  const v = new SpecValidator();

  it("a spec made of the schema files' own examples is accepted", () => {
    const spec = {
      name: resolve(readModel("app_spec.yml")).properties.name.example,
      region: resolve(readModel("app_spec.yml")).properties.region.example,
      services: [exampleComponent("app_service_spec.yml")],
      workers: [{ ...exampleComponent("app_worker_spec.yml"), name: "worker" }],
      egress: { type: readModel("app_egress_type_spec.yml").example },
    };
    expect(spec.services[0]).toMatchObject({ name: "api", http_port: 3000, image: { registry_type: "DOCR" } });
    expect(validateAppSpec(spec, v)).toEqual([]);
  });

  it("apps_create's example is refused for exactly the parts static-egress does not run, each named", () => {
    const example = (parse(readFileSync(join(models, "apps_create.yml"), "utf8")) as Json).requestBody.content[
      "application/json"
    ].example.spec as Json;
    const fields = validateAppSpec(structuredClone(example), v).map((e) => e.field);
    expect(fields.sort()).toEqual(
      [
        "spec.disable_edge_cache",
        "spec.enhanced_threat_control_enabled",
        "spec.services[0].environment_slug",
        "spec.services[0].github",
        "spec.services[0].image",
        "spec.services[0].routes",
        "spec.vpc",
      ].sort(),
    );
    // The same app from an image, without the CDN and VPC settings: accepted as it is.
    const { github: _g, environment_slug: _e, routes: _r, ...service } = example.services[0] as Json;
    const runnable: Json = {
      ...example,
      services: [{ ...service, image: { registry_type: "DOCR", repository: "sample-golang" } }],
      disable_edge_cache: false,
      enhanced_threat_control_enabled: false,
    };
    delete runnable.vpc;
    expect(validateAppSpec(runnable, v)).toEqual([]);
  });

  it("apps_validate_appSpec's example is refused naming the source build", () => {
    const example = (parse(readFileSync(join(models, "apps_validate_appSpec.yml"), "utf8")) as Json).requestBody
      .content["application/json"].example.spec as Json;
    expect(validateAppSpec(example, v)).toContainEqual({
      field: "spec.services[0].github",
      message: "builds from source are not run by static-egress (give a container image in image)",
    });
  });

  it("examples/apps/*.yaml are accepted", () => {
    for (const f of ["web.yaml", "payments.yaml", "worker-only.yaml"]) {
      expect(validateAppSpec(parse(readFileSync(join(packageRoot(), "examples", "apps", f), "utf8")), v), f).toEqual(
        [],
      );
    }
  });
});

/** The committed CRD's schema, as the API server validates an object (its CEL rules too). */
function serverValidator() {
  const crd = parse(readFileSync(join(packageRoot(), "deploy", "crds", "apps.yaml"), "utf8")) as Json;
  return addKubernetesKeywords(new Ajv({ allErrors: true, strict: false })).compile(
    crd.spec.versions[0].schema.openAPIV3Schema,
  );
}

describe("refusals: one per part static-egress does not run", () => {
  const v = new SpecValidator();
  const server = serverValidator();

  it.each(APP_REFUSALS)("%s: the CRD refuses it and our validator names %s", (_what, spec, field, message) => {
    expect(
      server({
        apiVersion: "staticegress.io/v1alpha1",
        kind: "App",
        metadata: { name: spec.name },
        spec: structuredClone(spec),
      }),
    ).toBe(false);
    const errors = validateAppSpec(structuredClone(spec), v);
    expect(errors.map((e) => e.field)).toEqual([field]);
    expect(errors[0]!.message).toContain(message);
  });
});

describe("bad fields: each named", () => {
  const v = new SpecValidator();
  const server = serverValidator();
  const cases: [string, Json, string][] = [
    ["app name with capitals", { ...base(), name: "Shop" }, "spec.name"],
    ["app name too long", { ...base(), name: "a".repeat(33) }, "spec.name"],
    ["app name of one character", { ...base(), name: "a" }, "spec.name"],
    ["no name", { services: base().services }, "spec.name"],
    ["unknown region", { ...base(), region: "mars" }, "spec.region"],
    ["no components", { name: "shop" }, "spec.services"],
    ["component name ending in -", withService({ name: "api-" }), "spec.services[0].name"],
    ["component name repeated", { ...base(), services: [...base().services, ...base().services] }, "spec.services[1]"],
    ["component name in services and workers", { ...base(), workers: base().services }, "spec.workers"],
    ["no image", withService({ image: undefined }), "spec.services[0].image"],
    [
      "no repository",
      withService({ image: { registry_type: "GHCR", registry: "a" } }),
      "spec.services[0].image.repository",
    ],
    [
      "unknown registry type",
      withService({ image: { registry_type: "QUAY", repository: "a" } }),
      "spec.services[0].image.registry_type",
    ],
    [
      "tag and digest",
      withService({ image: { registry_type: "GHCR", registry: "a", repository: "b", tag: "1", digest: "sha256:ab" } }),
      "spec.services[0].image.tag",
    ],
    [
      "DOCR with a registry",
      withService({ image: { registry_type: "DOCR", registry: "other", repository: "b" } }),
      "spec.services[0].image.registry",
    ],
    ["http_port 0", withService({ http_port: 0 }), "spec.services[0].http_port"],
    ["http_port 65536", withService({ http_port: 65536 }), "spec.services[0].http_port"],
    ["instance_count 0", withService({ instance_count: 0 }), "spec.services[0].instance_count"],
    ["unknown size", withService({ instance_size_slug: "apps-x-huge" }), "spec.services[0].instance_size_slug"],
    ["unknown protocol", withService({ protocol: "GRPC" }), "spec.services[0].protocol"],
    ["env key with a dash", withService({ envs: [{ key: "MY-VAR", value: "1" }] }), "spec.services[0].envs[0].key"],
    ["env without key", withService({ envs: [{ value: "1" }] }), "spec.services[0].envs[0].key"],
    ["unknown env type", withService({ envs: [{ key: "A", type: "PUBLIC" }] }), "spec.services[0].envs[0].type"],
    ["env key repeated", withService({ envs: [{ key: "A" }, { key: "A" }] }), "spec.services[0].envs[1]"],
    [
      "liveness success_threshold 2",
      withService({ liveness_health_check: { success_threshold: 2 } }),
      "spec.services[0].liveness_health_check.success_threshold",
    ],
    [
      "drain_seconds 111",
      withService({ termination: { drain_seconds: 111 } }),
      "spec.services[0].termination.drain_seconds",
    ],
    ["unknown egress type", { ...base(), egress: { type: "STATIC" } }, "spec.egress.type"],
  ];

  it.each(cases)("%s: refused by the CRD and named %s", (_what, spec, field) => {
    const s = structuredClone(spec);
    if (s.services?.[0] && "image" in s.services[0] && s.services[0].image === undefined) delete s.services[0].image;
    expect(
      server({
        apiVersion: "staticegress.io/v1alpha1",
        kind: "App",
        metadata: { name: typeof s.name === "string" ? s.name : "x" },
        spec: structuredClone(s),
      }),
    ).toBe(false);
    expect(validateAppSpec(s, v).map((e) => e.field)).toContain(field);
  });

  it("messages say what is wrong, in DigitalOcean's words where it has them", () => {
    expect(
      validateAppSpec(
        withService({
          image: { registry_type: "GHCR", registry: "a", repository: "b", tag: "1", digest: "sha256:ab" },
        }),
        v,
      ),
    ).toEqual([{ field: "spec.services[0].image.tag", message: "cannot be specified if digest is provided" }]);
    // Unknown fields: the API server drops them from a structural schema unless the client asks
    // for Strict field validation, as kubectl and `static-egress apps` do (then it refuses them:
    // test/integration/apps.test.ts). Our validator always refuses them.
    expect(validateAppSpec({ ...base(), servics: [] }, v)).toEqual([
      { field: "spec", message: 'unknown field "servics"' },
    ]);
  });

  it("checks beyond the schema: bindable variables, DOCR without a configured registry, metadata.name", () => {
    const docr = {
      name: "shop",
      workers: [
        {
          name: "wk",
          image: { registry_type: "DOCR", repository: "r" },
          envs: [{ key: "U", value: "${db.DATABASE_URL}" }],
        },
      ],
    };
    expect(validateAppSpec(structuredClone(docr), v).map((e) => e.field)).toEqual(["spec.workers[0].envs[0].value"]);
    expect(validateAppSpec(structuredClone(docr), v, { docrRegistry: "" }).map((e) => e.field)).toEqual([
      "spec.workers[0].envs[0].value",
      "spec.workers[0].image.registry_type",
    ]);
    expect(validateApp({ metadata: { name: "other" }, spec: base() }, v)).toEqual([
      { field: "metadata.name", message: 'metadata.name must equal spec.name ("shop")' },
    ]);
    expect(
      server({ apiVersion: "staticegress.io/v1alpha1", kind: "App", metadata: { name: "other" }, spec: base() }),
    ).toBe(false);
  });

  it("fills DigitalOcean's defaults", () => {
    const spec = withService({ envs: [{ key: "A", value: "1" }] });
    expect(validateAppSpec(spec, v)).toEqual([]);
    expect(spec.services[0]).toMatchObject({
      http_port: 8080,
      instance_count: 1,
      envs: [{ key: "A", value: "1", type: "GENERAL", scope: "RUN_AND_BUILD_TIME" }],
    });
  });
});
