/** A policy's Verified condition, from the nodes' verification results (docs/policies.md "Verification"). */
import { describe, expect, it } from "vitest";
import type { VerificationReport } from "../api/node-report.js";
import { parseReport, policyStatus, type NodeReport, type PolicyFacts } from "./status.js";
import { REPORT_ANNOTATION } from "../api/keys.js";

const NOW = "2026-11-22T00:00:00Z";
const RESOURCE = "EgressPolicy/shop/web";

const report = (node: string, verification?: VerificationReport): NodeReport => ({
  node,
  programmed: { [RESOURCE]: 1 },
  health: {},
  unavailable: {},
  ...(verification ? { verification: { [RESOURCE]: verification } } : {}),
  at: NOW,
});
const ok = (seen = "192.0.2.10"): VerificationReport => ({
  result: "ok",
  seen,
  expected: [seen],
  instance: "shared/gw-a",
  since: NOW,
});
const mismatch = (seen: string): VerificationReport => ({
  result: "mismatch",
  seen,
  expected: ["192.0.2.10"],
  instance: "shared/gw-a",
  since: NOW,
});
const failed = (error: string): VerificationReport => ({
  result: "error",
  error,
  expected: ["192.0.2.20"],
  instance: "shared/gw-b",
  since: NOW,
});

function verified(reports: NodeReport[], verifies = true) {
  const facts: PolicyFacts = {
    resource: RESOURCE,
    generation: 3,
    verdict: { resource: RESOURCE, valid: true, errors: [] },
    egressIPs: ["192.0.2.10", "192.0.2.20"],
    selectedPods: 2,
    gatewayInstances: ["shared/gw-a", "shared/gw-b"],
    reports,
    verifies,
  };
  return policyStatus(facts, undefined, NOW).conditions?.find((c) => c.type === "Verified");
}

describe("the Verified condition", () => {
  it("is absent when the policy asks for no verification", () => {
    expect(verified([report("node1", ok())], false)).toBeUndefined();
  });

  it("is Unknown until a node has probed", () => {
    expect(verified([report("node1")])).toMatchObject({ status: "Unknown", reason: "NotYetProbed" });
  });

  it("is True when every node's echo service saw the policy's IP", () => {
    expect(verified([report("node1", ok()), report("node2", ok("192.0.2.20"))])).toMatchObject({
      status: "True",
      reason: "SourceMatches",
      message: "the echo service saw 192.0.2.10, 192.0.2.20 from 2 node(s): node1; node2",
      observedGeneration: 3,
    });
  });

  it("is False with SourceMismatch naming the node and the source seen, whatever the other nodes saw", () => {
    const c = verified([
      report("node1", ok()),
      report("node2", mismatch("203.0.113.101")),
      report("node3", failed("x")),
    ]);
    expect(c).toMatchObject({
      status: "False",
      reason: "SourceMismatch",
      message: "node2 saw source 203.0.113.101 through shared/gw-a (expected 192.0.2.10)",
    });
  });

  it("is False with ProbeFailed when a probe got no usable answer and none saw a wrong source", () => {
    expect(verified([report("node1", ok()), report("node2", failed("no answer within 5 s"))])).toMatchObject({
      status: "False",
      reason: "ProbeFailed",
      message: "node2 through shared/gw-b: no answer within 5 s",
    });
  });

  it("cuts a report's strings short: no node's report can bloat the status", () => {
    const c = verified([report("node1", failed("x".repeat(10_000)))]);
    expect(c!.message).toBe(`node1 through shared/gw-b: ${"x".repeat(200)}`);
  });

  it("names at most five nodes", () => {
    const reports = Array.from({ length: 8 }, (_, i) => report(`node${i}`, mismatch(`203.0.113.${i}`)));
    expect(verified(reports)!.message).toMatch(/node4 saw source 203\.0\.113\.4 .*; and 3 more$/);
  });

  it("is read from the node report annotation", () => {
    const r = parseReport(
      "node1",
      { [REPORT_ANNOTATION]: JSON.stringify({ ...report("node1", mismatch("198.51.100.1")), node: undefined }) },
      Date.parse(NOW),
    );
    expect(r?.verification?.[RESOURCE]).toEqual(mismatch("198.51.100.1"));
    expect(verified([r!])).toMatchObject({ status: "False", reason: "SourceMismatch" });
  });
});
