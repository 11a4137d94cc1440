import { describe, expect, it } from "vitest";
import { bridgePort, resolveBindings, routeDevice, type KernelView } from "./bindings.js";

// Shapes as `ip -json` and `bridge -json` print them (iproute2 6.x).
const view: KernelView = {
  routes: [
    { dst: "default", dev: "eth1" },
    { dst: "10.0.0.0/24", dev: "eth0" },
    { dst: "10.244.1.5", dev: "veth1a2b" },
    { dst: "10.244.2.0/24", dev: "cni0" },
  ],
  links: [
    { ifname: "eth0" },
    { ifname: "veth1a2b", linkinfo: { info_kind: "veth" } },
    { ifname: "cni0", linkinfo: { info_kind: "bridge" } },
    { ifname: "vethpay", master: "cni0", linkinfo: { info_kind: "veth" } },
    { ifname: "vethweb", master: "cni0", linkinfo: { info_kind: "veth" } },
  ],
  neighbours: [{ dst: "10.244.2.7", dev: "cni0", lladdr: "aa:bb:cc:00:00:07", state: ["REACHABLE"] }],
  fdb: [
    { mac: "aa:bb:cc:00:00:99", ifname: "vethpay", master: "cni0", state: "permanent" },
    { mac: "AA:BB:CC:00:00:07", ifname: "vethpay", master: "cni0" },
  ],
};

describe("pod bindings from the kernel", () => {
  it("a routed pod is bound to the device of its host route (longest prefix; never the default route)", () => {
    expect(routeDevice(view.routes, "10.244.1.5")).toBe("veth1a2b");
    expect(routeDevice(view.routes, "10.244.2.7")).toBe("cni0");
    expect(routeDevice(view.routes, "198.51.100.1")).toBeUndefined();
  });

  it("a bridged pod is bound to the bridge and to the port its MAC was learned on", () => {
    expect(bridgePort(view, "cni0", "10.244.2.7")).toBe("vethpay");
    expect(resolveBindings(["10.244.1.5", "10.244.2.7"], view)).toEqual(
      new Map([
        ["10.244.1.5", { podIP: "10.244.1.5", iface: "veth1a2b" }],
        ["10.244.2.7", { podIP: "10.244.2.7", iface: "cni0", port: "vethpay" }],
      ]),
    );
  });

  it("leaves out what it cannot tell (no neighbour entry, no route): those pods fail closed", () => {
    expect(resolveBindings(["10.244.2.8", "192.0.2.1"], view).size).toBe(0);
  });

  it("keeps a bridged pod's binding while its port exists, even if the FDB now says otherwise", () => {
    const moved: KernelView = { ...view, fdb: [{ mac: "aa:bb:cc:00:00:07", ifname: "vethweb", master: "cni0" }] };
    const previous = new Map([["10.244.2.7", { podIP: "10.244.2.7", iface: "cni0", port: "vethpay" }]]);
    expect(resolveBindings(["10.244.2.7"], moved, previous).get("10.244.2.7")?.port).toBe("vethpay");
    // The port is gone (the pod was deleted and its address reused): learned afresh.
    const gone: KernelView = { ...moved, links: view.links.filter((l) => l.ifname !== "vethpay") };
    expect(resolveBindings(["10.244.2.7"], gone, previous).get("10.244.2.7")?.port).toBe("vethweb");
  });
});
