import { describe, expect, it } from "vitest";
import { FieldSelectorParseError, matchesFields, parseFieldSelector } from "./fields.js";

describe("field selectors", () => {
  it("parses =, == and != terms", () => {
    expect(parseFieldSelector("spec.nodeName=n1,status.phase!=Failed,metadata.name==x")).toEqual([
      { field: "spec.nodeName", operator: "=", value: "n1" },
      { field: "status.phase", operator: "!=", value: "Failed" },
      { field: "metadata.name", operator: "=", value: "x" },
    ]);
  });

  it("treats an empty value as a real value (unscheduled pods)", () => {
    const reqs = parseFieldSelector("spec.nodeName=");
    expect(matchesFields(reqs, () => "")).toBe(true);
    expect(matchesFields(reqs, () => "n1")).toBe(false);
  });

  it("unescapes backslash-escaped separators in values", () => {
    expect(parseFieldSelector("a=x\\,y\\=z")).toEqual([{ field: "a", operator: "=", value: "x,y=z" }]);
  });

  it("matches every requirement", () => {
    const reqs = parseFieldSelector("a=1,b!=2");
    const values: Record<string, string> = { a: "1", b: "3" };
    expect(matchesFields(reqs, (f) => values[f] ?? "")).toBe(true);
    values.b = "2";
    expect(matchesFields(reqs, (f) => values[f] ?? "")).toBe(false);
  });

  it.each(["novalue", "=x", "a=\\q"])("rejects %j", (s) => {
    expect(() => parseFieldSelector(s)).toThrow(FieldSelectorParseError);
  });
});
