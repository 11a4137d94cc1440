import { describe, expect, it } from "vitest";
import { KubeApiError, statusOf } from "./errors.js";
import { StaticEgressError } from "../util/errors.js";
import { AddressError } from "../util/ipv4.js";

describe("errors", () => {
  it("carry their cause, and the project's errors share one base", () => {
    const cause = new Error("socket hang up");
    const e = new StaticEgressError("could not read", { cause });
    expect(e.cause).toBe(cause);
    expect(new AddressError("bad")).toBeInstanceOf(StaticEgressError);
  });

  it("a Kubernetes API error has its HTTP status, also where informers look for it", () => {
    const e = new KubeApiError(409, "Conflict", { cause: new Error("HTTP 409") });
    expect(e).toBeInstanceOf(StaticEgressError);
    expect([e.status, e.code, statusOf(e)]).toEqual([409, 409, 409]);
    expect(statusOf(Object.assign(new Error("Gone"), { statusCode: 410 }))).toBe(410);
    expect(statusOf(new Error("no answer"))).toBeUndefined();
  });

  it("keeps the API server's answer, whose causes name the refused fields", () => {
    const body = JSON.stringify({
      kind: "Status",
      details: { causes: [{ field: "spec.name", message: "Invalid value" }] },
    });
    expect(
      new KubeApiError(422, "Unprocessable", { cause: Object.assign(new Error("HTTP 422"), { code: 422, body }) }).body,
    ).toBe(body);
    expect(new KubeApiError(undefined, "no answer", { cause: new Error("ECONNREFUSED") }).body).toBeUndefined();
  });
});
