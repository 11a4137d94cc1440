import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StaticRouteWriter } from "../../src/dataplane/static-routes.js";
import { deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { commandKernel } from "../../src/dataplane/kernel.js";
import { inNamespace } from "../../src/util/exec.js";
import { addNodeNamespace } from "../support/node-namespace.js";

// One namespace stands in for a node with routes and rules of its own (some for the very
// destinations a StaticRoute names). The writer must add only its own, repair them, and leave
// the node's routing exactly as it found it when the routes go.
const prefix = newRunPrefix();
const ns = `${prefix}-srnode`;
const writer = new StaticRouteWriter(commandKernel(inNamespace(ns)));

async function routing(): Promise<{ routes: unknown; rules: unknown }> {
  return {
    routes: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "route", "show", "table", "all"])) as unknown,
    rules: JSON.parse(await execIn(ns, "ip", ["-j", "-4", "rule", "show"])) as unknown,
  };
}

beforeAll(async () => {
  await addNodeNamespace(ns, "eth0");
  await execIn(ns, "ip", ["route", "add", "default", "via", "10.0.0.1"]);
  // Others' state: a main-table route for a destination we will route too, another table, a rule.
  await execIn(ns, "ip", ["route", "add", "198.51.100.0/24", "via", "10.0.0.2"]);
  await execIn(ns, "ip", ["route", "add", "blackhole", "192.0.2.0/24", "table", "100"]);
  await execIn(ns, "ip", ["rule", "add", "priority", "500", "to", "192.0.2.0/24", "lookup", "100"]);
});

afterAll(async () => {
  await deleteNamespacesWithPrefix(prefix);
});

describe("StaticRouteWriter in a namespace", () => {
  it("reads the node's own subnets (not the default route)", async () => {
    expect(await writer.connectedSubnets()).toEqual(["10.0.0.0/24"]);
  });

  it("writes its routes, wins over the main table, repairs drift, and restores the node exactly", async () => {
    const before = await routing();
    expect(
      await writer.apply([
        { dst: "198.51.100.0/24", via: "10.0.0.5", route: "r" },
        { dst: "203.0.113.7/32", route: "r" },
      ]),
    ).toEqual({ added: 3, removed: 0 });
    const get = async (dst: string) =>
      (JSON.parse(await execIn(ns, "ip", ["-j", "route", "get", dst])) as { gateway?: string; type?: string }[])[0];
    expect((await get("198.51.100.9"))?.gateway).toBe("10.0.0.5");
    // Blackholed (fail-closed): the lookup fails instead of taking the default route.
    await expect(execIn(ns, "ip", ["-j", "route", "get", "203.0.113.7"])).rejects.toThrow();
    expect((await get("203.0.113.8"))?.gateway).toBe("10.0.0.1");
    // Idempotent.
    expect(
      await writer.apply([
        { dst: "198.51.100.0/24", via: "10.0.0.5", route: "r" },
        { dst: "203.0.113.7/32", route: "r" },
      ]),
    ).toEqual({ added: 0, removed: 0 });
    // Drift: someone deletes our route and our rule; a foreign route appears in our table.
    await execIn(ns, "ip", ["route", "del", "198.51.100.0/24", "table", "6997"]);
    await execIn(ns, "ip", ["rule", "del", "priority", "10150"]);
    await execIn(ns, "ip", ["route", "add", "192.0.2.128/25", "via", "10.0.0.3", "table", "6997"]);
    expect(
      await writer.apply([
        { dst: "198.51.100.0/24", via: "10.0.0.6", route: "r" },
        { dst: "203.0.113.7/32", route: "r" },
      ]),
    ).toEqual({ added: 2, removed: 0 });
    expect((await get("198.51.100.9"))?.gateway).toBe("10.0.0.6");
    // The foreign route (not our protocol) survives everything we do.
    await writer.apply([]);
    expect(await execIn(ns, "ip", ["route", "show", "table", "6997"])).toContain("192.0.2.128/25 via 10.0.0.3");
    await execIn(ns, "ip", ["route", "del", "192.0.2.128/25", "table", "6997"]);
    expect(await routing()).toEqual(before);
  });

  it("cleanup removes what it owns and nothing else", async () => {
    const before = await routing();
    await writer.apply([{ dst: "198.51.100.0/24", via: "10.0.0.5", route: "r" }]);
    await writer.cleanup();
    expect(await routing()).toEqual(before);
  });
});
