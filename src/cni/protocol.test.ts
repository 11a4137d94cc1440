import { describe, expect, it } from "vitest";
import {
  parseAddRequest,
  parseAddResponse,
  parseCheckResponse,
  parseDelRequest,
  parseExecRequest,
  ProtocolError,
} from "./protocol.js";

const add = { containerId: "c0ffee-1", namespace: "payments", name: "pay-1", ips: ["10.244.1.2"] };

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProtocolError) return e.field;
    throw e;
  }
  return undefined;
}

describe("requests", () => {
  it("accepts a well-formed ADD and DEL", () => {
    expect(parseAddRequest(add)).toEqual(add);
    expect(parseDelRequest({ containerId: "c", namespace: "web", name: "w" })).toEqual({
      containerId: "c",
      namespace: "web",
      name: "w",
    });
  });

  it.each([
    [null, "body"],
    [[], "body"],
    [{ ...add, containerId: "" }, "containerId"],
    [{ ...add, namespace: "Payments" }, "namespace"],
    [{ ...add, name: 7 }, "name"],
    [{ ...add, ips: "10.244.1.2" }, "ips"],
    [{ ...add, ips: [] }, "ips"],
    [{ ...add, ips: ["10.244.1.2", "10.244.1.2"] }, "ips"],
    [{ ...add, ips: ["fd00::2"] }, "ips[0]"],
    [{ ...add, ips: ["10.244.1.2", "10.244.1.256"] }, "ips[1]"],
    [{ ...add, policy: "x" }, "policy"],
  ])("names the bad field of %j", (body, field) => {
    expect(fieldOf(() => parseAddRequest(body))).toBe(field);
  });
});

describe("a whole CNI call (the shim's request)", () => {
  it("carries the CNI_* environment and stdin as they came", () => {
    const call = { env: { CNI_COMMAND: "ADD", CNI_ARGS: "K8S_POD_NAME=a;X=" }, stdin: '{"cniVersion":"1.0.0"}' };
    expect(parseExecRequest(call)).toEqual(call);
  });

  it.each([
    [null, "body"],
    [{ env: {}, stdin: "", extra: 1 }, "extra"],
    [{ env: [], stdin: "" }, "env"],
    [{ env: { HOME: "/root" }, stdin: "" }, "env.HOME"],
    [{ env: { CNI_COMMAND: 1 }, stdin: "" }, "env.CNI_COMMAND"],
    [{ env: {} }, "stdin"],
  ])("names the bad field of %j", (body, field) => {
    expect(fieldOf(() => parseExecRequest(body))).toBe(field);
  });
});

describe("responses", () => {
  it("are checked by the plugin too", () => {
    expect(parseAddResponse({ selected: true, policy: "EgressPolicy/payments/checkout", quarantined: false })).toEqual({
      selected: true,
      policy: "EgressPolicy/payments/checkout",
      quarantined: false,
    });
    expect(fieldOf(() => parseAddResponse({ selected: "yes", quarantined: false }))).toBe("response.selected");
    expect(fieldOf(() => parseAddResponse({ selected: true }))).toBe("response.quarantined");
    expect(fieldOf(() => parseCheckResponse({ known: true, programmed: true }))).toBe("response.quarantined");
  });
});
