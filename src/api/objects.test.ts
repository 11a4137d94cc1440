import { describe, expect, it } from "vitest";
import { podInfo } from "./objects.js";

describe("podInfo", () => {
  it("reads every address of a running pod", () => {
    const pod = podInfo({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "a", namespace: "shop" },
      status: { podIP: "10.244.1.5", podIPs: [{ ip: "10.244.1.5" }, { ip: "fd00::5" }] },
    });
    expect(pod.ips).toEqual(["10.244.1.5", "fd00::5"]);
  });

  it("falls back to podIP when podIPs is absent", () => {
    expect(podInfo({ metadata: { name: "a" }, status: { podIP: "10.244.1.5" } }).ips).toEqual(["10.244.1.5"]);
  });

  it("skips entries without an address instead of passing undefined on", () => {
    const pod = podInfo({
      metadata: { name: "a" },
      status: { phase: "Pending", podIPs: [{}, { ip: "" }, { ip: 7 }, { ip: "10.244.1.6" }] },
    });
    expect(pod.ips).toEqual(["10.244.1.6"]);
  });
});
