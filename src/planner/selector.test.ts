import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { LabelSelector } from "../api/v1alpha1/common.js";
import { checkSelector, matches } from "./selector.js";
import { labelSelectorArb, labelsArb } from "./testing/arbitraries.js";

type Row = [name: string, selector: LabelSelector, labels: Record<string, string>, expected: boolean];

const web = { app: "web", tier: "front" };

describe("matches: Kubernetes label selector semantics", () => {
  it.each<Row>([
    ["empty selector matches labels", {}, web, true],
    ["empty selector matches no labels", {}, {}, true],
    ["empty matchLabels and expressions match all", { matchLabels: {}, matchExpressions: [] }, {}, true],
    ["matchLabels equal", { matchLabels: { app: "web" } }, web, true],
    ["matchLabels differs", { matchLabels: { app: "api" } }, web, false],
    ["matchLabels missing key", { matchLabels: { team: "red" } }, web, false],
    ["matchLabels all must hold", { matchLabels: { app: "web", tier: "back" } }, web, false],
    ["matchLabels empty value vs missing key", { matchLabels: { team: "" } }, web, false],
    ["matchLabels empty value vs empty label", { matchLabels: { team: "" } }, { team: "" }, true],
    ["In: value listed", { matchExpressions: [{ key: "app", operator: "In", values: ["api", "web"] }] }, web, true],
    ["In: value not listed", { matchExpressions: [{ key: "app", operator: "In", values: ["api"] }] }, web, false],
    ["In: key missing", { matchExpressions: [{ key: "team", operator: "In", values: ["red"] }] }, web, false],
    ["NotIn: value listed", { matchExpressions: [{ key: "app", operator: "NotIn", values: ["web"] }] }, web, false],
    ["NotIn: value not listed", { matchExpressions: [{ key: "app", operator: "NotIn", values: ["api"] }] }, web, true],
    [
      "NotIn: key missing matches",
      { matchExpressions: [{ key: "team", operator: "NotIn", values: ["red"] }] },
      web,
      true,
    ],
    ["Exists: present", { matchExpressions: [{ key: "tier", operator: "Exists" }] }, web, true],
    [
      "Exists: present with empty value",
      { matchExpressions: [{ key: "tier", operator: "Exists" }] },
      { tier: "" },
      true,
    ],
    ["Exists: missing", { matchExpressions: [{ key: "team", operator: "Exists" }] }, web, false],
    ["DoesNotExist: missing", { matchExpressions: [{ key: "team", operator: "DoesNotExist" }] }, web, true],
    ["DoesNotExist: present", { matchExpressions: [{ key: "app", operator: "DoesNotExist" }] }, web, false],
    [
      "matchLabels and expressions are ANDed (both hold)",
      { matchLabels: { app: "web" }, matchExpressions: [{ key: "tier", operator: "In", values: ["front"] }] },
      web,
      true,
    ],
    [
      "matchLabels and expressions are ANDed (one fails)",
      { matchLabels: { app: "web" }, matchExpressions: [{ key: "tier", operator: "NotIn", values: ["front"] }] },
      web,
      false,
    ],
    // Keys that exist on Object.prototype must not count as labels.
    ["Exists on a prototype key", { matchExpressions: [{ key: "constructor", operator: "Exists" }] }, {}, false],
    [
      "DoesNotExist on a prototype key",
      { matchExpressions: [{ key: "toString", operator: "DoesNotExist" }] },
      {},
      true,
    ],
    [
      "In on a prototype key",
      { matchExpressions: [{ key: "hasOwnProperty", operator: "In", values: ["x"] }] },
      {},
      false,
    ],
    ["matchLabels on a prototype key", { matchLabels: { constructor: "x" } }, {}, false],
  ])("%s", (_name, selector, labels, expected) => {
    expect(matches(selector, labels)).toBe(expected);
  });

  it("treats missing labels as no labels", () => {
    expect(matches({})).toBe(true);
    expect(matches({ matchExpressions: [{ key: "app", operator: "DoesNotExist" }] })).toBe(true);
    expect(matches({ matchLabels: { app: "web" } })).toBe(false);
  });

  it("agrees with a direct reading of the Kubernetes rules on random selectors and labels", () => {
    const reference = (s: LabelSelector, labels: Record<string, string>): boolean => {
      const requirements = [
        ...Object.entries(s.matchLabels ?? {}).map(([key, v]) => ({ key, operator: "In" as const, values: [v] })),
        ...(s.matchExpressions ?? []),
      ];
      return requirements.every((r) => {
        const has = Object.keys(labels).includes(r.key);
        const listed = has && (r.values ?? []).includes(labels[r.key] as string);
        return { In: listed, NotIn: !listed, Exists: has, DoesNotExist: !has }[r.operator];
      });
    };
    fc.assert(
      fc.property(labelSelectorArb(), labelsArb(), (selector, labels) => {
        expect(matches(selector, labels)).toBe(reference(selector, labels));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("checkSelector", () => {
  const at = "spec.podSelector";

  it.each<[string, LabelSelector]>([
    ["empty", {}],
    ["simple labels", { matchLabels: { app: "web", "example.com/tier": "front", "a.b-c/d_e.f": "" } }],
    ["63-character name and value", { matchLabels: { ["k".repeat(63)]: "v".repeat(63) } }],
    [
      "all operators",
      {
        matchExpressions: [
          { key: "app", operator: "In", values: ["web"] },
          { key: "app", operator: "NotIn", values: ["api", "db"] },
          { key: "tier", operator: "Exists" },
          { key: "team", operator: "DoesNotExist", values: [] },
        ],
      },
    ],
  ])("accepts %s", (_name, selector) => {
    expect(checkSelector(selector, at)).toEqual([]);
  });

  it.each<[string, LabelSelector, string]>([
    ["In without values", { matchExpressions: [{ key: "app", operator: "In" }] }, `${at}.matchExpressions[0].values`],
    [
      "In with empty values",
      { matchExpressions: [{ key: "app", operator: "In", values: [] }] },
      `${at}.matchExpressions[0].values`,
    ],
    [
      "NotIn without values",
      { matchExpressions: [{ key: "app", operator: "NotIn" }] },
      `${at}.matchExpressions[0].values`,
    ],
    [
      "Exists with values",
      { matchExpressions: [{ key: "app", operator: "Exists", values: ["web"] }] },
      `${at}.matchExpressions[0].values`,
    ],
    [
      "DoesNotExist with values, second expression",
      {
        matchExpressions: [
          { key: "app", operator: "Exists" },
          { key: "tier", operator: "DoesNotExist", values: ["x"] },
        ],
      },
      `${at}.matchExpressions[1].values`,
    ],
    [
      "expression key with a space",
      { matchExpressions: [{ key: "my app", operator: "Exists" }] },
      `${at}.matchExpressions[0].key`,
    ],
    [
      "expression key with two slashes",
      { matchExpressions: [{ key: "a/b/c", operator: "Exists" }] },
      `${at}.matchExpressions[0].key`,
    ],
    ["label key starting with a dash", { matchLabels: { "-app": "web" } }, `${at}.matchLabels`],
    ["label key with an uppercase prefix", { matchLabels: { "Example.com/app": "web" } }, `${at}.matchLabels`],
    ["64-character label name", { matchLabels: { ["k".repeat(64)]: "web" } }, `${at}.matchLabels`],
    ["empty label key", { matchLabels: { "": "web" } }, `${at}.matchLabels`],
    ["label value ending in a dash", { matchLabels: { app: "web-" } }, `${at}.matchLabels.app`],
    ["64-character label value", { matchLabels: { app: "v".repeat(64) } }, `${at}.matchLabels.app`],
    ["label value with a slash", { matchLabels: { app: "a/b" } }, `${at}.matchLabels.app`],
  ])("rejects %s, naming %s", (_name, selector, field) => {
    const errors = checkSelector(selector, at);
    expect(errors.map((e) => e.field)).toEqual([field]);
    expect(errors[0]?.message).not.toBe("");
  });

  it("reports every problem, each under the field path it was given", () => {
    const errors = checkSelector(
      {
        matchLabels: { "bad key": "x", ok: "bad value!" },
        matchExpressions: [
          { key: "ok", operator: "In" },
          { key: "ok", operator: "Exists", values: ["x"] },
        ],
      },
      "spec.namespaceSelector",
    );
    expect(errors.map((e) => e.field)).toEqual([
      "spec.namespaceSelector.matchLabels",
      "spec.namespaceSelector.matchLabels.ok",
      "spec.namespaceSelector.matchExpressions[0].values",
      "spec.namespaceSelector.matchExpressions[1].values",
    ]);
    expect(errors[2]?.message).toMatch(/In/);
  });

  it("accepts every selector the generators produce (they stand for valid input)", () => {
    fc.assert(
      fc.property(labelSelectorArb(), (selector) => {
        expect(checkSelector(selector, at)).toEqual([]);
      }),
    );
  });
});
