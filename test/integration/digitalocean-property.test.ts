import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DigitalOceanClient, DigitalOceanProvider, fleetNames } from "../../src/cloud/digitalocean/index.js";
import type { GatewayFleetSpec } from "../../src/cloud/provider.js";
import {
  createCrashingFetch,
  startDigitalOceanStandin,
  type CrashOptions,
  type DigitalOceanStandin,
} from "../../src/lab/do-standin/index.js";
import { cappedSleep } from "../support/standin-testing.js";
import type { FetchLike } from "../../src/cloud/digitalocean/transport.js";

/*
 * Property: whatever sequence of ensures, deletes, crashes (the process dies at a random API
 * call, before or after the call reached the cloud), injected faults (429, 5xx - also after the
 * request was applied -, lost connections, slow and failing actions) and outside interference
 * (droplets destroyed or powered off) happened, one final successful ensure or delete per fleet
 * leaves: no orphaned droplet, reserved IP or firewall, no duplicate, the user's and foreign
 * resources untouched, and a stand-in that never left its OpenAPI document.
 *
 * The provider talks to the stand-in in-process (standin.fetch: same pipeline, no socket) to keep
 * the run count useful within a few seconds.
 */

const CLUSTER = "0b6f7d1e-2c3a-4b5d-8e9f-0a1b2c3d4e5f";
const NODE_TAG = `k8s:${CLUSTER}`;
const FLEETS = ["egress-a", "egress-b"] as const;
type FleetIndex = 0 | 1;

interface EnsureParams {
  count: number;
  allocate: boolean;
  userIPs: number;
}
/** Where the simulated process dies: after N requests, or at the n-th call of a given operation. */
type Crash =
  | { afterRequests: number; when: "before-send" | "after-send" }
  | { atOperation: keyof typeof CRITICAL; nth: number; when: "before-send" | "after-send" };
type Fault =
  | { kind: "rateLimit"; count: number; retryAfterSec: number }
  | { kind: "serverError"; count: number; status: 500 | 502 | 503; afterProcessing: boolean; operationId?: string }
  | { kind: "dropConnection"; count: number; afterProcessing: boolean; operationId?: string }
  | { kind: "slowActions"; count: number; durationMs: number }
  | { kind: "failActions"; count: number; type: "assign_ip" | "unassign_ip" | "create" };
type Command =
  | { kind: "ensure"; fleet: FleetIndex; params: EnsureParams; crash: Crash | null }
  | { kind: "delete"; fleet: FleetIndex; crash: Crash | null }
  | { kind: "fault"; fault: Fault }
  | { kind: "destroy"; fleet: FleetIndex; pick: number }
  | { kind: "powerOff"; fleet: FleetIndex; pick: number };
type Final = { kind: "ensure"; params: EnsureParams } | { kind: "delete" };

/** Calls whose interruption leaves the most to recover; crashes aim at them half of the time. */
const CRITICAL = {
  droplets_create: ["POST", /^\/v2\/droplets$/],
  reservedIPs_create: ["POST", /^\/v2\/reserved_ips$/],
  reservedIPsActions_post: ["POST", /^\/v2\/reserved_ips\/[^/]+\/actions$/],
  reservedIPs_delete: ["DELETE", /^\/v2\/reserved_ips\/[^/]+$/],
  firewalls_create: ["POST", /^\/v2\/firewalls$/],
  tags_create: ["POST", /^\/v2\/tags$/],
  tags_assign_resources: ["POST", /^\/v2\/tags\/[^/]+\/resources$/],
  tags_unassign_resources: ["DELETE", /^\/v2\/tags\/[^/]+\/resources$/],
  tags_delete: ["DELETE", /^\/v2\/tags\/[^/]+$/],
  droplets_destroy: ["DELETE", /^\/v2\/droplets\/\d+$/],
} as const;

const WRITE_OPS = [
  "droplets_create",
  "reservedIPs_create",
  "firewalls_create",
  "reservedIPsActions_post",
  "reservedIPs_delete",
  "droplets_destroy",
  "tags_create",
  "tags_assign_resources",
  "tags_unassign_resources",
  "tags_delete",
  "firewalls_update",
];

const fleetArb = fc.constantFrom<FleetIndex>(0, 1);
const paramsArb: fc.Arbitrary<EnsureParams> = fc.record({
  count: fc.integer({ min: 0, max: 3 }),
  allocate: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  userIPs: fc.integer({ min: 0, max: 2 }),
});
const whenArb = fc.constantFrom<Crash["when"]>("before-send", "after-send");
const crashArb: fc.Arbitrary<Crash | null> = fc.option(
  fc.oneof(
    fc.record({ afterRequests: fc.integer({ min: 0, max: 40 }), when: whenArb }),
    fc.record({
      atOperation: fc.oneof(
        { weight: 4, arbitrary: fc.constant("reservedIPs_create" as const) },
        { weight: 2, arbitrary: fc.constant("droplets_create" as const) },
        { weight: 2, arbitrary: fc.constant("reservedIPsActions_post" as const) },
        { weight: 3, arbitrary: fc.constantFrom(...(Object.keys(CRITICAL) as Array<keyof typeof CRITICAL>)) },
      ),
      nth: fc.integer({ min: 0, max: 1 }),
      when: whenArb,
    }),
  ),
  { freq: 2 },
);
const opArb = fc.option(fc.constantFrom(...WRITE_OPS), { nil: undefined });
const faultArb: fc.Arbitrary<Fault> = fc.oneof(
  fc.record({
    kind: fc.constant("rateLimit" as const),
    count: fc.integer({ min: 1, max: 2 }),
    retryAfterSec: fc.integer({ min: 0, max: 2 }),
  }),
  fc.record({
    kind: fc.constant("serverError" as const),
    count: fc.integer({ min: 1, max: 3 }),
    status: fc.constantFrom<500 | 502 | 503>(500, 502, 503),
    afterProcessing: fc.boolean(),
    operationId: opArb,
  }),
  fc.record({
    kind: fc.constant("dropConnection" as const),
    count: fc.integer({ min: 1, max: 2 }),
    afterProcessing: fc.boolean(),
    operationId: opArb,
  }),
  fc.record({
    kind: fc.constant("slowActions" as const),
    count: fc.integer({ min: 1, max: 3 }),
    durationMs: fc.integer({ min: 5, max: 30 }),
  }),
  fc.record({
    kind: fc.constant("failActions" as const),
    count: fc.constant(1),
    type: fc.constantFrom<"assign_ip" | "unassign_ip" | "create">("assign_ip", "unassign_ip", "create"),
  }),
);
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("ensure" as const), fleet: fleetArb, params: paramsArb, crash: crashArb }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("delete" as const), fleet: fleetArb, crash: crashArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("fault" as const), fault: faultArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("destroy" as const), fleet: fleetArb, pick: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("powerOff" as const), fleet: fleetArb, pick: fc.nat(5) }) },
);
const finalArb: fc.Arbitrary<Final> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("ensure" as const), params: paramsArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const) }) },
);

/** 50 runs in CI; a soak: DO_PROPERTY_RUNS=600 npx vitest run ... digitalocean-property */
const RUNS = Number(process.env["DO_PROPERTY_RUNS"] ?? 50);

let standin: DigitalOceanStandin;

beforeAll(async () => {
  standin = await startDigitalOceanStandin({ dropletBootMs: 3, actionDurationMs: 2 });
});
afterAll(async () => {
  await standin.close();
});

function crashOptions(crash: Crash): CrashOptions {
  if ("afterRequests" in crash) return crash;
  const [method, path] = CRITICAL[crash.atOperation];
  let seen = 0;
  return {
    when: crash.when,
    at: (r) => r.method === method && path.test(new URL(r.url).pathname) && seen++ === crash.nth,
  };
}

type Obj = Record<string, unknown>;
const holder = (ip: Obj): number | undefined => (ip["droplet"] as Obj | null)?.["id"] as number | undefined;
const tagsOf = (d: Obj): string[] => d["tags"] as string[];

describe("DigitalOceanProvider under crashes, faults and interference", () => {
  it(
    "always converges to exactly the owned resources after a final successful ensure or delete",
    async () => {
      let runs = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(commandArb, { minLength: 1, maxLength: 7 }),
          fc.tuple(finalArb, finalArb),
          async (commands, finals) => {
            runs++;
            standin.reset();
            const s = standin.state;
            const mk = (name: string, tags: string[]): number =>
              s.createDroplet({ name, region: "nyc3", size: "s-1vcpu-1gb", image: "ubuntu-24-04-x64", tags })[
                "id"
              ] as number;
            const nodes = [mk("pool-1", [NODE_TAG]), mk("pool-2", [NODE_TAG])];
            const foreignDroplet = mk("foreign-1", ["other"]);
            const foreignIP = s.createReservedIP({ region: "nyc3", dropletId: foreignDroplet });
            const foreignFirewall = s.createFirewall({
              name: "foreign-fw",
              inbound_rules: [{ protocol: "tcp", ports: "22", sources: { addresses: ["0.0.0.0/0"] } }],
            });
            const userPools = [
              [s.createReservedIP({ region: "nyc3" }), s.createReservedIP({ region: "nyc3" })],
              [s.createReservedIP({ region: "nyc3" })],
            ];
            const names = FLEETS.map((g) => fleetNames(CLUSTER, g));
            const specOf = (fleet: FleetIndex, p: EnsureParams): GatewayFleetSpec => ({
              gatewayName: FLEETS[fleet],
              clusterId: CLUSTER,
              region: "nyc3",
              size: "s-1vcpu-1gb",
              image: "ubuntu-24-04-x64",
              count: p.count,
              reservedIPs: userPools[fleet]?.slice(0, p.userIPs),
              allocateReservedIPs: p.allocate,
              userData: "#cloud-config\n",
              nodeTag: NODE_TAG,
              ports: [{ protocol: "udp", ports: "51820" }],
            });
            // Reserved IPs whose create answer reached the provider: it knows them, so it must never
            // leave one behind (the documented gap is only for an IP whose create answer was lost).
            const answered = new Set<string>();
            const recordingCreates =
              (inner: FetchLike): FetchLike =>
              async (req) => {
                const isCreate = req.method === "POST" && new URL(req.url).pathname === "/v2/reserved_ips";
                const res = await inner(req);
                if (isCreate && res.ok) {
                  const ip = ((await res.clone().json()) as { reserved_ip?: { ip?: string } }).reserved_ip?.ip;
                  if (ip) answered.add(ip);
                }
                return res;
              };
            const provider = (crash: Crash | null): DigitalOceanProvider => {
              const fetchImpl = recordingCreates(
                crash ? createCrashingFetch(standin.fetch, crashOptions(crash)).fetch : standin.fetch,
              );
              const { sleep } = cappedSleep(1);
              const client = new DigitalOceanClient({
                token: standin.token,
                baseUrl: standin.url,
                fetch: fetchImpl,
                sleep,
                retry: { maxAttempts: 4 },
                actionPollIntervalMs: 1,
              });
              return new DigitalOceanProvider({
                client,
                sleep,
                pollIntervalMs: 1,
                actionTimeoutMs: 3000,
                dropletActiveTimeoutMs: 3000,
              });
            };
            const fleetDroplets = (fleet: FleetIndex): Obj[] =>
              s
                .droplets()
                .filter(
                  (d) =>
                    tagsOf(d).includes(names[fleet]!.fleetTag) ||
                    names[fleet]!.slotOf(d["name"] as string) !== undefined,
                );
            // A fleet is "dirty" after an operation that did not finish: an allocation may be
            // half-recorded, and destroying its droplet then is the documented gap.
            const dirty = [false, false];

            for (const c of commands) {
              if (c.kind === "ensure" || c.kind === "delete") {
                const p = provider(c.crash);
                try {
                  if (c.kind === "ensure") await p.ensureGatewayFleet(specOf(c.fleet, c.params));
                  else await p.deleteGatewayFleet(FLEETS[c.fleet], CLUSTER);
                  dirty[c.fleet] = false;
                } catch {
                  dirty[c.fleet] = true;
                }
              } else if (c.kind === "fault") {
                const f = c.fault;
                if (f.kind === "rateLimit")
                  standin.faults.rateLimit({ count: f.count, retryAfterSec: f.retryAfterSec });
                else if (f.kind === "serverError") standin.faults.serverError(f);
                else if (f.kind === "dropConnection") standin.faults.dropConnection(f);
                else if (f.kind === "slowActions") standin.faults.slowActions(f);
                else standin.faults.failActions(f);
              } else if (c.kind === "destroy" && !dirty[c.fleet]) {
                await standin.settle();
                const ds = fleetDroplets(c.fleet);
                if (ds.length > 0) s.destroyDroplet(ds[c.pick % ds.length]!["id"] as number);
              } else if (c.kind === "powerOff") {
                const ds = fleetDroplets(c.fleet);
                if (ds.length > 0) s.powerOff(ds[c.pick % ds.length]!["id"] as number);
              }
            }

            standin.faults.clear();
            await standin.settle();
            // Whatever was left half-done, a fleet with any resource still has the mark that
            // listGatewayFleets reads: the controller's sweep can always find a fleet whose gateway is gone.
            const listed = await provider(null).listGatewayFleets(CLUSTER);
            for (const fleet of [0, 1] as const) {
              const n = names[fleet]!;
              const hasResources =
                fleetDroplets(fleet).length > 0 ||
                s.firewalls().some((f) => f["name"] === n.firewallName) ||
                s.tags().some((t) => t.startsWith(n.ipRecordPrefix) || t.startsWith(n.pendingPrefix));
              if (hasResources)
                expect(listed, `fleet ${FLEETS[fleet]} has resources but no mark`).toContain(FLEETS[fleet]);
            }
            for (const fleet of [0, 1] as const) {
              const fin = finals[fleet]!;
              if (fin.kind === "ensure") await provider(null).ensureGatewayFleet(specOf(fleet, fin.params));
              else await provider(null).deleteGatewayFleet(FLEETS[fleet], CLUSTER);
            }
            await standin.settle();

            // ---- invariants
            const droplets = s.droplets();
            const ips = s.reservedIPs();
            const firewalls = s.firewalls();
            const tags = s.tags();
            const allowedDroplets = new Set<number>([...nodes, foreignDroplet]);
            const allowedIPs = new Set<string>([foreignIP, ...userPools.flat()]);
            const allowedFirewalls = new Set<string>([foreignFirewall["id"] as string]);

            for (const fleet of [0, 1] as const) {
              const n = names[fleet]!;
              const fin = finals[fleet]!;
              const mine = fleetDroplets(fleet);
              const records = tags.filter((t) => t.startsWith(n.ipRecordPrefix)).map((t) => n.parseIpRecordTag(t));
              const fws = firewalls.filter((f) => f["name"] === n.firewallName);
              if (fin.kind === "delete") {
                expect(mine).toEqual([]);
                expect(records).toEqual([]);
                expect(fws).toEqual([]);
                expect(tags).not.toContain(n.fleetTag);
                expect(await provider(null).listGatewayFleets(CLUSTER)).not.toContain(FLEETS[fleet]);
                continue;
              }
              const { count, allocate, userIPs } = fin.params;
              const users = userPools[fleet]!.slice(0, userIPs);
              // Exactly one active droplet per slot.
              expect(mine.map((d) => d["name"]).sort()).toEqual(
                Array.from({ length: count }, (_, i) => n.dropletName(i)).sort(),
              );
              expect(mine.every((d) => d["status"] === "active" && tagsOf(d).includes(n.fleetTag))).toBe(true);
              mine.forEach((d) => allowedDroplets.add(d["id"] as number));
              expect(fws).toHaveLength(1);
              allowedFirewalls.add(fws[0]!["id"] as string);
              const bySlot = new Map(mine.map((d) => [n.slotOf(d["name"] as string) as number, d["id"] as number]));
              const heldBy = (ip: string): number | undefined => {
                const rec = ips.find((x) => x["ip"] === ip);
                return rec ? holder(rec) : undefined;
              };
              for (let slot = 0; slot < count; slot++) {
                if (slot < users.length) expect(heldBy(users[slot]!)).toBe(bySlot.get(slot));
              }
              // One recorded, existing, correctly assigned IP per allocated slot; no other records.
              const allocatedSlots = allocate
                ? Array.from({ length: Math.max(0, count - users.length) }, (_, i) => users.length + i)
                : [];
              expect(records.map((r) => r?.slot).sort()).toEqual(allocatedSlots);
              for (const r of records) {
                expect(heldBy(r!.ip)).toBe(bySlot.get(r!.slot));
                allowedIPs.add(r!.ip);
              }
            }
            // The documented gap: an allocation whose create answer was lost and whose assignment then
            // failed leaves an unassigned IP nobody can attribute. Exempt only that cause: the provider
            // never received the create's answer (crash after sending, dropped connection, 5xx after
            // processing), and the IP's only action is its assign, failed by an injected `failActions`
            // fault (the stand-in marks such actions `willError`). Any other unassigned IP is an orphan.
            const knownGap = (ip: Obj): boolean => {
              const address = ip["ip"] as string;
              const actions = s.raw.ipActions(address);
              return (
                holder(ip) === undefined &&
                !answered.has(address) &&
                actions.length === 1 &&
                actions[0]!.type === "assign_ip" &&
                actions[0]!.status === "errored" &&
                actions[0]!.willError
              );
            };
            // No orphans anywhere, nothing foreign or user-owned lost.
            expect(droplets.map((d) => d["id"] as number).filter((id) => !allowedDroplets.has(id))).toEqual([]);
            expect(
              ips.filter((ip) => !allowedIPs.has(ip["ip"] as string) && !knownGap(ip)).map((ip) => ip["ip"]),
            ).toEqual([]);
            expect(firewalls.map((f) => f["id"] as string).filter((id) => !allowedFirewalls.has(id))).toEqual([]);
            for (const ip of [foreignIP, ...userPools.flat()]) expect(ips.some((x) => x["ip"] === ip)).toBe(true);
            const foreignIPNow = ips.find((x) => x["ip"] === foreignIP);
            expect(foreignIPNow && holder(foreignIPNow)).toBe(foreignDroplet);
            expect(firewalls.find((f) => f["id"] === foreignFirewall["id"])).toEqual(foreignFirewall);
            for (const id of [...nodes, foreignDroplet]) expect(droplets.some((d) => d["id"] === id)).toBe(true);
            // Every interrupted allocation was resolved.
            expect(tags.filter((t) => names.some((n) => t.startsWith(n.pendingPrefix)))).toEqual([]);
            expect(standin.violations()).toEqual([]);
            expect(standin.rejectedRequests()).toEqual([]);
          },
        ),
        { numRuns: RUNS, endOnFailure: true },
      );
      expect(runs).toBeGreaterThanOrEqual(RUNS);
    },
    120_000 + RUNS * 2000,
  );
});
