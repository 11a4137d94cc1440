import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import type { CloudProvider } from "../../cloud/provider.js";
import type { ReconcileContext } from "../controller.js";
import { ReservedIPFollower } from "./reserved-ip.js";
import { claimingPod } from "../../../test/support/cloud-fixtures.js";
import { MANAGED_EXTERNAL_IPS_KEY } from "./service-external-ips.js";

// The follower's I/O around Service externalIPs, with fakes: the order of the Service patches and
// the assign call during a move, and the handling of API errors.
const IP = "203.0.113.5";
const ANCHOR = { "101": "10.20.0.11", "102": "10.20.0.12" } as const;

const pod = (name: string, node: string, ready: boolean): KubernetesObject => claimingPod(name, node, ready, IP);

const nodes = (["101", "102"] as const).map(
  (id, i) =>
    ({
      metadata: { name: `n${i + 1}`, annotations: { "staticegress.io/anchor-ipv4": ANCHOR[id] } },
      spec: { providerID: `digitalocean://${id}` },
    }) as KubernetesObject,
);

function setup(opts: { failPatches?: number[] } = {}) {
  const log: string[] = [];
  let holder: string | undefined;
  const provider = {
    reservedIPHolder: () => Promise.resolve(holder),
    assignReservedIP: (_ip: string, host: string) => {
      log.push(`assign ${host}`);
      holder = host;
      return Promise.resolve();
    },
  };
  // The Service as the informer has it; patches apply to it (as the watch would deliver them).
  const service = {
    metadata: {
      namespace: "web",
      name: "svc",
      resourceVersion: "1",
      annotations: { "staticegress.io/reserved-ip": IP } as Record<string, string>,
    },
    spec: { externalIPs: ["192.0.2.9"] },
  };
  const failures = [...(opts.failPatches ?? [])];
  const client = {
    patchServiceExternalIPs: (
      _ns: string,
      _name: string,
      externalIPs: string[],
      annotations: Record<string, string | null>,
      rv: string | undefined,
    ) => {
      const code = failures.shift();
      if (code) return Promise.reject(Object.assign(new Error(`HTTP ${code}`), { code }));
      if (rv !== service.metadata.resourceVersion)
        return Promise.reject(Object.assign(new Error("conflict"), { code: 409 }));
      log.push(`patch ${externalIPs.join(",")}`);
      service.spec.externalIPs = externalIPs;
      const managed = annotations[MANAGED_EXTERNAL_IPS_KEY];
      if (managed) service.metadata.annotations[MANAGED_EXTERNAL_IPS_KEY] = managed;
      else delete service.metadata.annotations[MANAGED_EXTERNAL_IPS_KEY];
      service.metadata.resourceVersion = String(Number(service.metadata.resourceVersion) + 1);
      return Promise.resolve();
    },
    createObjectEvent: () => Promise.resolve(),
  };
  const follower = new ReservedIPFollower({
    provider: provider as unknown as CloudProvider,
    events: false,
    serviceConflictRetryMs: 1,
    requireNamespaceGrant: false,
  });
  let pods: KubernetesObject[] = [];
  const ctx = {
    client,
    source: {
      raw: (kind: string) => (kind === "Pod" ? pods : kind === "Node" ? nodes : kind === "Service" ? [service] : []),
    },
  } as unknown as ReconcileContext;
  return {
    log,
    service,
    setPods: (p: KubernetesObject[]) => (pods = p),
    pass: async () => {
      await follower.reconcile(ctx);
      await follower.idle();
    },
  };
}

describe("reserved IP follower: Service externalIPs", () => {
  it("patches the Service to both anchors before the assign call, and to the new one after", async () => {
    const s = setup();
    s.setPods([pod("a", "n1", true)]);
    await s.pass();
    await s.pass();
    // First assignment: nothing held it, so the Service gets the anchor before the IP arrives; no second write.
    expect(s.log).toEqual(["patch 192.0.2.9,10.20.0.11", "assign 101"]);
    expect(s.service.spec.externalIPs).toEqual(["192.0.2.9", "10.20.0.11"]);
    s.log.length = 0;
    s.setPods([pod("a", "n1", false), pod("b", "n2", true)]);
    await s.pass();
    await s.pass();
    expect(s.log).toEqual(["patch 192.0.2.9,10.20.0.11,10.20.0.12", "assign 102", "patch 192.0.2.9,10.20.0.12"]);
    expect(s.service.metadata.annotations[MANAGED_EXTERNAL_IPS_KEY]).toBe("10.20.0.12");
  });

  it("moves the IP even when the Service patch fails, and repairs the Service on a later pass", async () => {
    const s = setup({ failPatches: [500, 500] });
    s.setPods([pod("a", "n1", true)]);
    await s.pass();
    expect(s.log).toEqual(["assign 101"]);
    await s.pass();
    expect(s.service.spec.externalIPs).toEqual(["192.0.2.9", "10.20.0.11"]);
  });

  it("a 409 (cache behind) is retried with the newer object; a 404 waits for the next pass", async () => {
    const s = setup({ failPatches: [409] });
    s.setPods([pod("a", "n1", true)]);
    await s.pass();
    expect(s.log).toEqual(["patch 192.0.2.9,10.20.0.11", "assign 101"]);
    const t = setup({ failPatches: [404, 404] });
    t.setPods([pod("a", "n1", true)]);
    await expect(t.pass()).resolves.toBeUndefined();
    expect(t.log).toEqual(["assign 101"]);
    await t.pass();
    expect(t.service.spec.externalIPs).toEqual(["192.0.2.9", "10.20.0.11"]);
  });
});
