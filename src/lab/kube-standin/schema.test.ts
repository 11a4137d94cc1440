import { describe, expect, it } from "vitest";
import { CrdSchema, fieldPathOf, SchemaCompileError, type OpenApiSchema } from "./schema.js";

const schema: OpenApiSchema = {
  type: "object",
  properties: {
    spec: {
      type: "object",
      required: ["gateway"],
      properties: {
        gateway: { type: "string", minLength: 1, maxLength: 10, pattern: "^[a-z0-9-]+$" },
        destinations: { type: "array", maxItems: 2, items: { type: "string", format: "cidr" } },
        fallback: { type: "string", enum: ["drop", "nodeIP"], default: "drop" },
        port: { "x-kubernetes-int-or-string": true },
        replicas: { type: "integer", minimum: 1, maximum: 5 },
        weight: { type: "number", minimum: 0, exclusiveMinimum: true },
        extra: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
        labels: { type: "object", additionalProperties: { type: "string" } },
        selector: { type: "object", properties: { tier: { type: "string", default: "web" } } },
        optional: { type: "string", nullable: true },
        set: { type: "array", "x-kubernetes-list-type": "set", items: { type: "string" } },
        timeout: { type: "string", format: "duration" },
        unknownFormat: { type: "string", format: "my-format" },
      },
    },
    status: { type: "object", properties: { ready: { type: "boolean" } } },
  },
};

const crd = new CrdSchema(schema);
const base = { apiVersion: "staticegress.io/v1alpha1", kind: "EgressPolicy", metadata: { name: "x", anything: 1 } };
const run = (spec: unknown, extra: Record<string, unknown> = {}) => crd.process({ ...base, spec, ...extra });
const messages = (spec: unknown): string[] => run(spec).errors.map((e) => `${e.field}: ${e.detail}`);

describe("CRD schema: prune, default, validate", () => {
  it("accepts a valid object, applies defaults and leaves metadata alone", () => {
    const out = run({ gateway: "gw-1", destinations: ["203.0.113.0/24", "2001:db8::/32"], selector: {}, timeout: "1m30s", unknownFormat: "whatever" });
    expect(out.errors).toEqual([]);
    expect(out.object.spec).toMatchObject({ gateway: "gw-1", fallback: "drop", selector: { tier: "web" } });
    expect(out.object.metadata).toEqual(base.metadata);
  });

  it("prunes unknown fields and reports their paths, but keeps preserved ones", () => {
    const out = run({ gateway: "g", bogus: 1, extra: { free: { form: true } }, labels: { a: "b" }, selector: { nope: 1 } }, { topLevel: 2 });
    expect(out.unknownFields.sort()).toEqual(["spec.bogus", "spec.selector.nope", "topLevel"]);
    expect(out.object.spec).toMatchObject({ extra: { free: { form: true } }, labels: { a: "b" } });
    expect(out.object.spec).not.toHaveProperty("bogus");
    expect(out.object).not.toHaveProperty("topLevel");
  });

  it("names the field in kube-openapi's words", () => {
    expect(messages({ destinations: ["nope"] })).toEqual([
      "spec.gateway: Required value",
      'spec.destinations[0]: Invalid value: "nope": spec.destinations[0] in body must be of type cidr: "nope"',
    ]);
    expect(messages({ gateway: "g", fallback: "maybe" })).toEqual(['spec.fallback: Unsupported value: "maybe": supported values: "drop", "nodeIP"']);
    expect(messages({ gateway: "g", replicas: "3" })).toEqual(['spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"']);
    expect(messages({ gateway: "g", replicas: 9 })).toEqual(["spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5"]);
    expect(messages({ gateway: "g", weight: 0 })).toEqual(["spec.weight: Invalid value: 0: spec.weight in body should be greater than 0"]);
    expect(messages({ gateway: "UPPER" })).toEqual([`spec.gateway: Invalid value: "UPPER": spec.gateway in body should match '^[a-z0-9-]+$'`]);
    expect(messages({ gateway: "g", destinations: ["10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8"] })).toEqual(["spec.destinations: Too many: 3: must have at most 2 items"]);
    expect(messages({ gateway: "abcdefghijkl" })).toEqual(["spec.gateway: Too long: may not be longer than 10"]);
    expect(messages({ gateway: "g", set: ["a", "a"] })).toEqual(['spec.set[1]: Duplicate value: "a"']);
    expect(messages({ gateway: "g", timeout: "5 minutes" })).toHaveLength(1);
  });

  it("accepts int-or-string and nullable values", () => {
    expect(messages({ gateway: "g", port: 80 })).toEqual([]);
    expect(messages({ gateway: "g", port: "http" })).toEqual([]);
    expect(messages({ gateway: "g", port: true })[0]).toContain("must be of type integer,string");
    expect(messages({ gateway: "g", optional: null })).toEqual([]);
  });

  it("validates status too", () => {
    expect(run({ gateway: "g" }, { status: { ready: "yes" } }).errors[0]?.field).toBe("status.ready");
  });

  it("refuses a schema ajv cannot compile", () => {
    expect(() => new CrdSchema({ type: "object", properties: { a: { type: "string", pattern: "([" } } })).toThrow(SchemaCompileError);
  });

  it("turns JSON pointers into kube field paths", () => {
    expect(fieldPathOf("/spec/destinations/0/cidr", { spec: { destinations: [{}] } })).toBe("spec.destinations[0].cidr");
    expect(fieldPathOf("/spec/labels/a~1b", { spec: { labels: {} } })).toBe("spec.labels.a/b");
  });
});
