import { describe, expect, it } from "vitest";
import type { StaticRoute } from "../../api/digitalocean-v1/static-route.js";
import type { StaticRouteOutcome } from "../../planner/static-routes.js";
import { createLogger } from "../../util/log.js";
import { StaticRouteStatusReporter, type StaticRouteStatusApi } from "./static-route-status.js";

function recorder() {
  const calls: string[] = [];
  const api: StaticRouteStatusApi = {
    applyStaticRouteNodeStatus: async (name, node, entry) =>
      void calls.push(
        `status ${name} ${node} ` +
          (entry
            ? `${entry.state as string}${entry.gateway ? ` ${entry.gateway as string}` : ""} @${entry.lastTransitionTime as string}`
            : "removed"),
      ),
    createObjectEvent: async (e) => void calls.push(`event ${e.involved.name} ${e.type} ${e.reason}: ${e.message}`),
  };
  return { api, calls };
}

const route = (name: string, nodes?: StaticRoute["status"]): StaticRoute => ({
  apiVersion: "networking.digitalocean.com/v1",
  kind: "StaticRoute",
  metadata: { name },
  spec: { destinations: ["198.51.100.0/24"], gateway: "10.0.0.5", gateways: ["10.0.0.6"] },
  ...(nodes ? { status: nodes } : {}),
});
const routed = (gateway: string): StaticRouteOutcome => ({
  name: "r",
  state: "Routed",
  gateway,
  message: `routed via ${gateway}`,
  errors: [],
});

describe("StaticRouteStatusReporter", () => {
  it("writes this node's entry and an Event on each change, nothing when unchanged", async () => {
    const { api, calls } = recorder();
    let t = 0;
    const r = new StaticRouteStatusReporter(
      api,
      "n1",
      createLogger("test"),
      () => new Date(Date.UTC(2026, 0, 1, 0, 0, t)),
    );
    const obj = route("r");
    r.update([routed("10.0.0.5")], [obj]);
    await r.idle();
    r.update([routed("10.0.0.5")], [obj]);
    await r.idle();
    t = 7;
    r.update([routed("10.0.0.6")], [obj]);
    await r.idle();
    t = 9;
    r.update([{ name: "r", state: "Blackholed", message: "no healthy gateway", errors: [] }], [obj]);
    await r.idle();
    // No longer selecting this node: its entry goes, the object stays.
    r.update([], [obj]);
    await r.idle();
    expect(calls).toEqual([
      "status r n1 Routed 10.0.0.5 @2026-01-01T00:00:00Z",
      "event r Normal Routed: node n1: routed via 10.0.0.5",
      // Still Routed: the transition time stays that of the state.
      "status r n1 Routed 10.0.0.6 @2026-01-01T00:00:00Z",
      "event r Warning FailedOver: node n1: routed via 10.0.0.6",
      "status r n1 Blackholed @2026-01-01T00:00:09Z",
      "event r Warning GatewaysDown: node n1: no healthy gateway",
      "status r n1 removed",
    ]);
  });

  it("a restarted agent writes nothing the object already says", async () => {
    const { api, calls } = recorder();
    const r = new StaticRouteStatusReporter(api, "n1", createLogger("test"));
    const obj = route("r", {
      nodes: [
        {
          name: "n1",
          state: "Routed",
          gateway: "10.0.0.5",
          message: "routed via 10.0.0.5",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        },
      ],
    });
    r.update([routed("10.0.0.5")], [obj]);
    await r.idle();
    expect(calls).toEqual([]);
  });
});
