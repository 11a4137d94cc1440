import { describe, expect, it } from "vitest";
import type { NodeReport, VerificationReport } from "../api/node-report.js";
import type { SourceChange } from "../api/source.js";
import type { KubeClient } from "../kube/client.js";
import type { KubeSource } from "../kube/source.js";
import { silentLogger } from "../util/log.js";
import { Controller, touchedBy, type PassOutcome } from "./controller.js";

const plan = {
  gatewayOfInstance: new Map([
    ["shared/a", "shared"],
    ["shared/b", "shared"],
    ["other/c", "other"],
  ]),
  policiesOfGateway: new Map([
    ["shared", ["EgressPolicy/web/checkout", "ClusterEgressPolicy/all"]],
    ["other", ["EgressPolicy/web/billing"]],
  ]),
};

function report(r: Partial<NodeReport>): NodeReport {
  return { node: "n1", programmed: {}, health: {}, unavailable: {}, at: "2026-12-05T00:00:00Z", ...r };
}

function touched(before: NodeReport | undefined, after: NodeReport | undefined) {
  const policies = new Set<string>();
  const gateways = new Set<string>();
  touchedBy(before, after, plan, policies, gateways);
  return { policies: [...policies].sort(), gateways: [...gateways].sort() };
}

describe("touchedBy: what a node's new report changes", () => {
  it("nothing when only the timestamp moved", () => {
    const r = report({ programmed: { "EgressPolicy/web/checkout": 3 }, health: { "shared/a": "up" } });
    expect(touched(r, { ...r, at: "2026-12-05T00:02:00Z" })).toEqual({ policies: [], gateways: [] });
  });

  it("a first judgement of an instance touches its gateway, not the gateway's policies (nothing went down)", () => {
    expect(touched(undefined, report({ health: { "other/c": "up" } }))).toEqual({ policies: [], gateways: ["other"] });
  });

  it("an instance going down (or back up) touches its gateway and every policy of that gateway", () => {
    const up = report({ health: { "shared/a": "up", "other/c": "up" } });
    const down = report({ health: { "shared/a": "down", "other/c": "up" } });
    const expected = { policies: ["ClusterEgressPolicy/all", "EgressPolicy/web/checkout"], gateways: ["shared"] };
    expect(touched(up, down)).toEqual(expected);
    expect(touched(down, up)).toEqual(expected);
  });

  it("per-policy parts touch that policy only: programmed count, unavailable, verification", () => {
    const before = report({ programmed: { "EgressPolicy/web/checkout": 3, "EgressPolicy/web/billing": 1 } });
    expect(
      touched(before, report({ programmed: { "EgressPolicy/web/checkout": 4, "EgressPolicy/web/billing": 1 } })),
    ).toEqual({ policies: ["EgressPolicy/web/checkout"], gateways: [] });
    expect(touched(report({}), report({ unavailable: { "EgressPolicy/web/billing": "Drop" } }))).toEqual({
      policies: ["EgressPolicy/web/billing"],
      gateways: [],
    });
    const probe: VerificationReport = {
      result: "ok",
      seen: "192.0.2.10",
      instance: "shared/a",
      expected: ["192.0.2.10"],
      since: "2026-12-05T00:00:00Z",
    };
    expect(
      touched(
        report({ verification: { "EgressPolicy/web/checkout": probe } }),
        report({
          verification: { "EgressPolicy/web/checkout": { ...probe, result: "mismatch" } },
        }),
      ),
    ).toEqual({ policies: ["EgressPolicy/web/checkout"], gateways: [] });
  });

  it("a report that expired or vanished touches everything it had said", () => {
    const r = report({
      programmed: { "EgressPolicy/web/billing": 2 },
      health: { "shared/b": "down" },
    });
    expect(touched(r, undefined)).toEqual({
      policies: ["ClusterEgressPolicy/all", "EgressPolicy/web/billing", "EgressPolicy/web/checkout"],
      gateways: ["shared"],
    });
  });

  it("an instance key the plan does not know names its gateway before the slash", () => {
    expect(touched(undefined, report({ health: { "new-gw/x": "up" } }))).toEqual({
      policies: [],
      gateways: ["new-gw"],
    });
  });
});

describe("Controller: a burst of events", () => {
  it("leads to one pass (the handler only marks work; the pass runs after the burst, not inside the first event's handler)", async () => {
    let onChange: ((c: SourceChange) => void) | undefined;
    // A source with one node and nothing else: passes make no API call (no policies, no gateways).
    const node = { metadata: { name: "n1", annotations: {} } };
    const source = {
      start: (cb: (c: SourceChange) => void) => ((onChange = cb), Promise.resolve()),
      stop: () => Promise.resolve(),
      objects: () => [{ ...node, kind: "Node", apiVersion: "v1" }],
      raw: (kind: string) => (kind === "Node" ? [node] : []),
      get: (kind: string, name: string) => (kind === "Node" && name === "n1" ? node : undefined),
    };
    const passes: PassOutcome[] = [];
    const controller = new Controller({
      client: {} as KubeClient,
      source: source as unknown as KubeSource,
      network: { podCIDRs: ["10.244.0.0/16"], serviceCIDRs: ["10.96.0.0/12"], nodeCIDRs: ["10.0.0.0/24"] },
      logger: silentLogger,
      resyncMs: 600_000,
      onPass: (p) => passes.push(p),
    });
    await controller.startInformers();
    controller.activate();
    await controller.idle();
    expect(passes.map((p) => p.scope)).toEqual(["full"]);
    // A watch chunk of 50 events, handled in one go: first planned-from changes, then reports.
    for (let i = 0; i < 50; i++) onChange!({ kind: "Pod", name: `p${i}`, namespace: "ns" });
    await controller.idle();
    for (let i = 0; i < 50; i++) onChange!({ kind: "Node", name: "n1", reportOnly: true });
    await controller.idle();
    await controller.stop();
    expect(passes.map((p) => p.scope)).toEqual(["full", "full", "keyed"]);
  });
});
