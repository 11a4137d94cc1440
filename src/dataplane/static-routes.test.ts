import { describe, expect, it } from "vitest";
import {
  staticRouteChanges,
  STATIC_ROUTE_PROTO,
  STATIC_ROUTE_RULE_PRIORITY,
  STATIC_ROUTE_TABLE,
} from "./static-routes.js";

const o = { table: STATIC_ROUTE_TABLE, proto: STATIC_ROUTE_PROTO, priority: STATIC_ROUTE_RULE_PRIORITY };

describe("staticRouteChanges", () => {
  it("adds routes and then the rule on an empty node", () => {
    expect(
      staticRouteChanges(
        [
          { dst: "198.51.100.0/24", via: "10.0.0.5", route: "r" },
          { dst: "203.0.113.7/32", route: "r" },
        ],
        { routes: [], rule: false },
        o,
      ),
    ).toEqual({
      add: [
        "route replace 198.51.100.0/24 via 10.0.0.5 table 6997 proto 95",
        "route replace blackhole 203.0.113.7/32 table 6997 proto 95",
        "rule add priority 10150 lookup 6997 protocol 95",
      ],
      remove: [],
    });
  });

  it("changes nothing when the kernel already holds the plan", () => {
    expect(
      staticRouteChanges(
        [{ dst: "198.51.100.0/24", via: "10.0.0.5", route: "r" }],
        { routes: [{ dst: "198.51.100.0/24", via: "10.0.0.5" }], rule: true },
        o,
      ),
    ).toEqual({ add: [], remove: [] });
  });

  it("fails over by replacing in place (no delete, no gap) and fails closed the same way", () => {
    const actual = { routes: [{ dst: "198.51.100.0/24", via: "10.0.0.5" }], rule: true };
    expect(staticRouteChanges([{ dst: "198.51.100.0/24", via: "10.0.0.6", route: "r" }], actual, o)).toEqual({
      add: ["route replace 198.51.100.0/24 via 10.0.0.6 table 6997 proto 95"],
      remove: [],
    });
    expect(staticRouteChanges([{ dst: "198.51.100.0/24", route: "r" }], actual, o)).toEqual({
      add: ["route replace blackhole 198.51.100.0/24 table 6997 proto 95"],
      remove: [],
    });
  });

  it("removes stale routes, and the rule last when nothing is left", () => {
    expect(
      staticRouteChanges(
        [],
        { routes: [{ dst: "198.51.100.0/24", via: "10.0.0.5" }, { dst: "203.0.113.0/24" }], rule: true },
        o,
      ),
    ).toEqual({
      add: [],
      remove: [
        "route del 198.51.100.0/24 via 10.0.0.5 table 6997 proto 95",
        "route del blackhole 203.0.113.0/24 table 6997 proto 95",
        "rule del priority 10150 lookup 6997 protocol 95",
      ],
    });
  });
});
