import { describe, expect, it } from "vitest";
import { formatLabelSelector, matchesLabels, parseLabelSelector, SelectorParseError } from "./labels.js";

const sel = (s: string, labels: Record<string, string>): boolean => matchesLabels(parseLabelSelector(s), labels);

describe("label selectors", () => {
  it("parses every operator", () => {
    expect(parseLabelSelector("a=b, c==d,e!=f,g in (x, y),h notin (z),i,!j,k>3,l<4")).toEqual([
      { key: "a", operator: "=", values: ["b"] },
      { key: "c", operator: "=", values: ["d"] },
      { key: "e", operator: "!=", values: ["f"] },
      { key: "g", operator: "in", values: ["x", "y"] },
      { key: "h", operator: "notin", values: ["z"] },
      { key: "i", operator: "exists", values: [] },
      { key: "j", operator: "!", values: [] },
      { key: "k", operator: "gt", values: ["3"] },
      { key: "l", operator: "lt", values: ["4"] },
    ]);
  });

  it("selects everything with the empty selector", () => {
    expect(parseLabelSelector("")).toEqual([]);
    expect(sel("", {})).toBe(true);
  });

  it.each([
    ["app=web", { app: "web" }, true],
    ["app=web", { app: "db" }, false],
    ["app=web", {}, false],
    ["app!=web", {}, true],
    ["app!=web", { app: "web" }, false],
    ["tier in (a,b)", { tier: "b" }, true],
    ["tier in (a,b)", {}, false],
    ["tier notin (a,b)", {}, true],
    ["tier notin (a,b)", { tier: "a" }, false],
    ["k8s.haim.dev/floating-ip", { "k8s.haim.dev/floating-ip": "true" }, true],
    ["!k8s.haim.dev/floating-ip", { "k8s.haim.dev/floating-ip": "true" }, false],
    ["!gone", {}, true],
    ["n>3", { n: "4" }, true],
    ["n>3", { n: "x" }, false],
    ["n<3", { n: "2" }, true],
    ["a=", { a: "" }, true],
    ["a=b,c=d", { a: "b", c: "d" }, true],
    ["a=b,c=d", { a: "b" }, false],
  ] as const)("%s on %j -> %s", (s, labels, want) => {
    expect(sel(s, labels)).toBe(want);
  });

  it.each(["a in", "a in (", "=b", "a=b,", "a b", "a>x", "UPPER_/bad/key", "a in ()"])("rejects %j", (s) => {
    expect(() => parseLabelSelector(s)).toThrow(SelectorParseError);
  });

  it("formats back to an equivalent selector", () => {
    const s = "a=b,c!=d,e in (x,y),f notin (z),g,!h";
    expect(formatLabelSelector(parseLabelSelector(s))).toBe(s);
  });
});
