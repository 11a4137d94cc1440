import { describe, expect, it } from "vitest";
import { customResourceTable, humanDuration, nodeTable, podTable } from "./printers.js";

const NOW = Date.parse("2026-01-01T12:00:00Z");
const ago = (s: number): string => new Date(NOW - s * 1000).toISOString();

describe("printers", () => {
  it.each([
    [0, "0s"],
    [119, "119s"],
    [125, "2m5s"],
    [600, "10m"],
    [3 * 3600 + 60, "3h1m"],
    [10 * 3600, "10h"],
    [50 * 3600, "2d2h"],
    [30 * 86400, "30d"],
    [3 * 365 * 86400, "3y"],
  ])("humanDuration(%i s) = %s", (s, want) => {
    expect(humanDuration(s * 1000)).toBe(want);
  });

  it("prints pods like kubectl shows them", () => {
    const cells = podTable.cells(
      {
        metadata: { name: "web", creationTimestamp: ago(90) },
        spec: { nodeName: "n1", containers: [{ name: "a" }, { name: "b" }] },
        status: { phase: "Running", podIP: "10.1.0.5", containerStatuses: [{ ready: true, restartCount: 2 }, { ready: false, restartCount: 1 }] },
      },
      NOW,
    );
    expect(cells.slice(0, 7)).toEqual(["web", "1/2", "Running", "3", "90s", "10.1.0.5", "n1"]);
  });

  it("prints node readiness and roles", () => {
    const cells = nodeTable.cells(
      {
        metadata: { name: "n1", creationTimestamp: ago(10), labels: { "node-role.kubernetes.io/gateway": "" } },
        spec: { unschedulable: true },
        status: { conditions: [{ type: "Ready", status: "True" }], nodeInfo: { kubeletVersion: "v1.32.0" } },
      },
      NOW,
    );
    expect(cells.slice(0, 5)).toEqual(["n1", "Ready,SchedulingDisabled", "gateway", "10s", "v1.32.0"]);
  });

  it("evaluates additionalPrinterColumns with their types", () => {
    const t = customResourceTable([
      { name: "Gateway", type: "string", jsonPath: ".spec.gateway" },
      { name: "IPs", type: "string", jsonPath: ".status.egressIPs" },
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: "Count", type: "integer", jsonPath: ".status.count" },
      { name: "Missing", type: "string", jsonPath: ".status.nothing", priority: 1 },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ]);
    expect(t.columns.map((c) => c.name)).toEqual(["Name", "Gateway", "IPs", "Ready", "Count", "Missing", "Age"]);
    expect(t.columns[5]?.priority).toBe(1);
    const cells = t.cells(
      {
        metadata: { name: "p", creationTimestamp: ago(30) },
        spec: { gateway: "gw" },
        status: { egressIPs: ["198.51.100.1"], conditions: [{ type: "Ready", status: "True" }], count: 3.7 },
      },
      NOW,
    );
    expect(cells).toEqual(["p", "gw", '["198.51.100.1"]', "True", 3, null, "30s"]);
  });

  it("shows Age when a CRD version declares no columns", () => {
    expect(customResourceTable(undefined).columns.map((c) => c.name)).toEqual(["Name", "Age"]);
  });
});
