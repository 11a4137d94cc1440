import { describe, expect, it } from "vitest";
import { FaultInjector, FaultSpecError, type RequestInfo } from "./faults.js";

const req = (verb: RequestInfo["verb"], resource = "pods", extra: Partial<RequestInfo> = {}): RequestInfo => ({ verb, group: "", resource, ...extra });

function injector() {
  const calls: string[] = [];
  const f = new FaultInjector({
    dropWatches: (resource, mode, namespace) => {
      calls.push(`drop:${resource ?? "*"}:${mode}:${namespace ?? "*"}`);
      return 3;
    },
    expireHistory: (resource) => {
      calls.push(`expire:${resource ?? "*"}`);
      return 42;
    },
  });
  return { f, calls };
}

describe("FaultInjector", () => {
  it("fails the next N matching requests, then lets them through", () => {
    const { f } = injector();
    f.fail({ status: 500, count: 2, verb: "list", resource: "pods" });
    expect(f.decide(req("get")).failure).toBeUndefined();
    expect(f.decide(req("list", "nodes")).failure).toBeUndefined();
    expect(f.decide(req("list")).failure?.status).toMatchObject({ code: 500, reason: "InternalError", status: "Failure", kind: "Status" });
    expect(f.decide(req("list")).failure?.retryAfterSeconds).toBe(1);
    expect(f.decide(req("list")).failure).toBeUndefined();
    expect(f.active()).toEqual([]);
  });

  it("matches qualified resources, subresources, namespaces and names", () => {
    const { f } = injector();
    f.fail({ status: 409, count: -1, resource: "egresspolicies.staticegress.io/status", namespace: "a" });
    const status = req("patch", "egresspolicies", { group: "staticegress.io", subresource: "status", namespace: "a" });
    expect(f.decide(status).failure?.status.reason).toBe("Conflict");
    expect(f.decide({ ...status, subresource: undefined }).failure).toBeUndefined();
    expect(f.decide({ ...status, namespace: "b" }).failure).toBeUndefined();
    expect(f.decide(status).failure).toBeDefined();
    f.clear();
    expect(f.decide(status).failure).toBeUndefined();
  });

  it("delays until cleared by default, and reports the longest delay", () => {
    const { f } = injector();
    f.delay({ ms: 50, verb: ["watch", "list"] });
    f.delay({ ms: 200, resource: "pods", count: 1 });
    expect(f.decide(req("watch")).delayMs).toBe(200);
    expect(f.decide(req("watch")).delayMs).toBe(50);
    expect(f.decide(req("create")).delayMs).toBe(0);
  });

  it("applies JSON specs, including the immediate actions", () => {
    const { f, calls } = injector();
    const results = f.apply([
      { action: "dropWatches", resource: "pods", namespace: "a", mode: "reset" },
      { action: "expireHistory" },
      { action: "fail", status: 410, verb: "watch", inWatch: true },
      { action: "delay", ms: 5 },
    ]);
    expect(results).toEqual([
      { action: "dropWatches", dropped: 3 },
      { action: "expireHistory", compactedAt: 42 },
      { action: "fail", id: "f1" },
      { action: "delay", id: "f2" },
    ]);
    expect(calls).toEqual(["drop:pods:reset:a", "expire:*"]);
    const d = f.decide(req("watch"));
    expect(d).toMatchObject({ delayMs: 5, failure: { inWatch: true, status: { code: 410, reason: "Expired" } } });
  });

  it.each([
    [{ action: "explode" }],
    [{ action: "fail", status: 200 }],
    [{ action: "fail", status: 500, verb: "frobnicate" }],
    [{ action: "delay", ms: -1 }],
    [{ action: "fail", status: 500, count: 0 }],
    [{ action: "dropWatches", mode: "gently" }],
    ["nope"],
  ])("rejects %j", (spec) => {
    const { f } = injector();
    expect(() => f.apply(spec)).toThrow(FaultSpecError);
  });
});
