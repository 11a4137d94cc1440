import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { ReservedIPNotFoundError, type CloudProvider } from "../../cloud/provider.js";
import type { ReconcileContext } from "../controller.js";
import { ReservedIPFollower } from "./reserved-ip.js";
import { claimingPod } from "../../../test/support/cloud-fixtures.js";

// The follower's gating against a fake provider: when it asks the cloud, and that every move is
// decided on the holder the cloud reports (never on memory).
const IP = "203.0.113.5";

class FakeProvider {
  holders = new Map<string, string | undefined>([[IP, undefined]]);
  reads = 0;
  assigns: [string, string][] = [];
  reservedIPHolder(ip: string): Promise<string | undefined> {
    this.reads++;
    if (!this.holders.has(ip)) return Promise.reject(new ReservedIPNotFoundError(ip));
    return Promise.resolve(this.holders.get(ip));
  }
  assignReservedIP(ip: string, host: string): Promise<void> {
    this.assigns.push([ip, host]);
    this.holders.set(ip, host);
    return Promise.resolve();
  }
}

const pod = (name: string, node: string, ready: boolean): KubernetesObject => claimingPod(name, node, ready, IP);

const nodes = [1, 2].map(
  (i) => ({ metadata: { name: `n${i}` }, spec: { providerID: `digitalocean://10${i}` } }) as KubernetesObject,
);

function setup() {
  let t = 1_000_000;
  const provider = new FakeProvider();
  const follower = new ReservedIPFollower({
    provider: provider as unknown as CloudProvider,
    now: () => t,
    holderTtlMs: 60_000,
    events: false,
    requireNamespaceGrant: false,
  });
  let pods: KubernetesObject[] = [];
  const ctx = {
    source: { raw: (kind: string) => (kind === "Pod" ? pods : kind === "Node" ? nodes : []) },
  } as unknown as ReconcileContext;
  const pass = async (times = 1) => {
    for (let i = 0; i < times; i++) {
      await follower.reconcile(ctx);
      await follower.idle();
    }
  };
  return {
    provider,
    pass,
    setPods: (p: KubernetesObject[]) => (pods = p),
    advance: (ms: number) => (t += ms),
  };
}

describe("reserved IP follower: when it asks the cloud", () => {
  it("a settled IP costs nothing until its holder is due for a re-read", async () => {
    const s = setup();
    s.setPods([pod("a", "n1", true)]);
    await s.pass();
    expect(s.provider.assigns).toEqual([[IP, "101"]]);
    const reads = s.provider.reads;
    await s.pass(5);
    expect(s.provider.reads).toBe(reads);
    s.advance(60_001);
    await s.pass(3);
    expect(s.provider.reads).toBe(reads + 1);
  });

  it("an IP without a ready pod is not re-read on every pass (it stays where it is)", async () => {
    const s = setup();
    s.setPods([pod("a", "n1", false)]);
    await s.pass(5);
    expect(s.provider.reads).toBe(1);
    expect(s.provider.assigns).toEqual([]);
    // A pod becoming ready is a change: looked at at once.
    s.setPods([pod("a", "n1", true)]);
    await s.pass();
    expect(s.provider.assigns).toEqual([[IP, "101"]]);
  });

  it("decides on the holder the cloud reports: an IP moved by hand to another ready node stays there", async () => {
    const s = setup();
    s.setPods([pod("a", "n1", true), pod("b", "n2", true)]);
    await s.pass();
    expect(s.provider.assigns).toEqual([[IP, "101"]]);
    s.provider.holders.set(IP, "102"); // someone moved it in the control panel
    s.setPods([pod("a", "n1", false), pod("b", "n2", true)]);
    await s.pass();
    expect(s.provider.assigns).toEqual([[IP, "101"]]);
  });

  it("an IP missing from the account is reported once and left alone until its pods change", async () => {
    const s = setup();
    s.provider.holders.delete(IP);
    s.setPods([pod("a", "n1", true)]);
    await s.pass(4);
    expect(s.provider.reads).toBe(1);
    s.setPods([pod("a", "n1", true), pod("b", "n2", true)]);
    await s.pass();
    expect(s.provider.reads).toBe(2);
  });
});
