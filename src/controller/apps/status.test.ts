import { describe, expect, it } from "vitest";
import { appStatus, type EgressFacts } from "./status.js";

const deployment = (replicas: number, available: number, observed = 2) => ({
  metadata: { generation: 2 },
  spec: { replicas },
  status: { observedGeneration: observed, updatedReplicas: replicas, availableReplicas: available },
});
const none = { state: "none" as const, dedicatedIPs: [] };

describe("appStatus", () => {
  it("invalid: ERROR, Invalid names the first field, every problem in the message", () => {
    const s = appStatus(
      {
        kind: "invalid",
        errors: [
          { field: "spec.services[0].github", message: "builds from source" },
          { field: "spec.vpc", message: "no" },
        ],
      },
      4,
      undefined,
      "t1",
    );
    expect(s.phase).toBe("ERROR");
    expect(s.observedGeneration).toBe(4);
    expect(s.conditions?.find((c) => c.type === "Invalid")).toMatchObject({
      status: "True",
      reason: "InvalidSpecServicesGithub",
      message: "spec.services[0].github: builds from source; spec.vpc: no",
    });
    expect(s.conditions?.find((c) => c.type === "Ready")).toMatchObject({ status: "False", reason: "Invalid" });
  });

  it("DEPLOYING until every Deployment has rolled out and is available, then ACTIVE", () => {
    const facts = (available: number, observed?: number) => ({
      kind: "applied" as const,
      namespace: "app-web",
      components: [{ name: "api", kind: "service" as const, deployment: deployment(2, available, observed) }],
      egress: none,
    });
    expect(appStatus(facts(1), 2, undefined, "t1").phase).toBe("DEPLOYING");
    expect(appStatus(facts(2, 1), 2, undefined, "t1").phase).toBe("DEPLOYING"); // the Deployment controller has not seen the new template
    const active = appStatus(facts(2), 2, undefined, "t1");
    expect(active).toMatchObject({
      phase: "ACTIVE",
      namespace: "app-web",
      components: [{ name: "api", kind: "service", replicas: 2, availableReplicas: 2 }],
    });
    expect(active.conditions?.find((c) => c.type === "DedicatedEgress")).toBeUndefined();
  });

  it("updated_at moves with the generation only; lastTransitionTime only with the status", () => {
    const facts = { kind: "applied" as const, namespace: "app-web", components: [], egress: none };
    const first = appStatus(facts, 2, undefined, "t1");
    const same = appStatus(facts, 2, first, "t2");
    expect(same.updated_at).toBe("t1");
    expect(same.conditions).toEqual(first.conditions);
    expect(appStatus(facts, 3, first, "t3").updated_at).toBe("t3");
  });

  it("dedicated egress: Assigning, Assigned, PoolExhausted, NotAssigned", () => {
    const app = (egress: EgressFacts) =>
      appStatus({ kind: "applied", namespace: "app-web", components: [], egress }, 1, undefined, "t");
    const cond = (s: ReturnType<typeof appStatus>) => s.conditions?.find((c) => c.type === "DedicatedEgress");
    expect(
      cond(
        app({
          state: "planned",
          dedicatedIPs: [
            { ip: "203.0.113.10", id: "a", status: "ASSIGNED" },
            { ip: "203.0.113.20", id: "b", status: "ASSIGNING" },
          ],
        }),
      ),
    ).toMatchObject({ status: "False", reason: "Assigning", message: expect.stringContaining("203.0.113.20") });
    const assigned = app({
      state: "planned",
      dedicatedIPs: [
        { ip: "203.0.113.10", id: "a", status: "ASSIGNED" },
        { ip: "198.51.100.1", id: "old", status: "REMOVED" },
      ],
    });
    expect(cond(assigned)).toMatchObject({
      status: "True",
      reason: "Assigned",
      message: "traffic leaves with 203.0.113.10",
    });
    expect(assigned.dedicated_ips).toHaveLength(2);
    expect(cond(app({ state: "exhausted", free: 1, dedicatedIPs: [] }))).toMatchObject({ reason: "PoolExhausted" });
    expect(cond(app({ state: "unconfigured", free: 0, dedicatedIPs: [] }))).toMatchObject({ reason: "NotAssigned" });
  });
});

describe("appStatus: DigitalOcean's egress states", () => {
  const applied = (egress: EgressFacts) => ({
    kind: "applied" as const,
    namespace: "app-web",
    components: [],
    egress,
  });
  const removed = [{ ip: "203.0.113.5", id: "203.0.113.5", status: "REMOVED" as const }];

  it("Provisioning, Removing, Released, Kept: each a DedicatedEgress reason; kept IPs listed, and cleared with []", () => {
    const reason = (e: EgressFacts) =>
      appStatus(applied(e), 1, undefined, "t").conditions?.find((c) => c.type === "DedicatedEgress");
    expect(reason({ state: "provisioning", dedicatedIPs: [] })).toMatchObject({
      status: "False",
      reason: "Provisioning",
    });
    expect(reason({ state: "removing", dedicatedIPs: removed })).toMatchObject({ reason: "Removing" });
    expect(reason({ state: "released", dedicatedIPs: removed, keptIPs: [] })).toMatchObject({ reason: "Released" });
    const kept = appStatus(
      applied({ state: "kept", dedicatedIPs: removed, keptIPs: ["203.0.113.5"] }),
      1,
      undefined,
      "t",
    );
    expect(kept.kept_ips).toEqual(["203.0.113.5"]);
    expect(kept.conditions?.find((c) => c.type === "DedicatedEgress")).toMatchObject({
      reason: "Kept",
      message: expect.stringContaining("203.0.113.5"),
    });
    // The status is merge-patched: the last kept IPs go only when [] is written.
    const cleared = appStatus(applied({ state: "planned", dedicatedIPs: [], keptIPs: [] }), 1, kept, "t");
    expect(cleared.kept_ips).toEqual([]);
    expect(appStatus(applied({ state: "planned", dedicatedIPs: [], keptIPs: [] }), 1, cleared, "t")).not.toHaveProperty(
      "kept_ips",
    );
  });
});
