import { spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { addNamespace, addVethPair, deleteNamespacesWithPrefix, execIn, newRunPrefix } from "../../src/lab/netns.js";
import { runCommand } from "../../src/util/exec.js";

/**
 * Interoperability of our BFD agent with FRR's bfdd (RFC 5880/5881), in two namespaces joined
 * by a veth pair: `<prefix>-gw` runs bfdd, `<prefix>-node` runs our agent as a child process
 * (node cannot enter a namespace itself). Both directions of session set-up are covered: our
 * active side against a passive bfdd, and an active bfdd against our passive side. Detection
 * times are logged, not asserted.
 */

const BFDD = "/usr/lib/frr/bfdd";
const REPO = fileURLToPath(new URL("../..", import.meta.url));
const STANDALONE = join(REPO, "src/agents/health/bfd/standalone.ts");
const GW_ADDR = "10.254.0.1";
const NODE_ADDR = "10.254.0.2";
const canRun = process.getuid?.() === 0 && existsSync(BFDD);

const prefix = newRunPrefix();
const gwNs = `${prefix}-gw`;
const nodeNs = `${prefix}-node`;
const children = new Set<ChildProcess>();
let workDir = "";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

function killChild(child: ChildProcess | undefined): void {
  if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

async function killAllChildren(): Promise<void> {
  const all = [...children];
  for (const child of all) killChild(child);
  await Promise.all(all.map(exited));
  children.clear();
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once("exit", () => r()));
}

// --- FRR bfdd ---------------------------------------------------------------------------------

interface FrrPeer {
  peer: string;
  status: string;
  id: number;
  "remote-id": number;
  "passive-mode": boolean;
  diagnostic: string;
  "remote-diagnostic": string;
  "remote-receive-interval": number;
  "remote-transmit-interval": number;
}

interface Bfdd {
  child: ChildProcess;
  dir: string;
}

let bfddRuns = 0;

async function startBfdd(opts: { passive: boolean }): Promise<Bfdd> {
  // A fresh directory per run: vty socket, control socket, pid file and log of this instance.
  const dir = join(workDir, `bfdd-${++bfddRuns}`);
  mkdirSync(dir, { mode: 0o770 });
  writeFileSync(
    join(dir, "bfdd.conf"),
    [
      "bfd",
      ` peer ${NODE_ADDR} local-address ${GW_ADDR}`,
      "  receive-interval 100",
      "  transmit-interval 100",
      "  detect-multiplier 3",
      ...(opts.passive ? ["  passive-mode"] : []),
      " !",
      "!",
      "",
    ].join("\n"),
  );
  const uid = Number((await runCommand("id", ["-u", "frr"])).stdout.trim());
  const gid = Number((await runCommand("id", ["-g", "frr"])).stdout.trim());
  for (const path of [dir, join(dir, "bfdd.conf")]) chownSync(path, uid, gid);
  const child = spawn(
    "ip",
    // prettier-ignore
    ["netns", "exec", gwNs, BFDD, "-f", join(dir, "bfdd.conf"), "-u", "frr", "-g", "frr", "-N", gwNs,
      "--vty_socket", dir, "--bfdctl", join(dir, "bfdd.ctl"), "-i", join(dir, "bfdd.pid"),
      "--log", `file:${join(dir, "bfdd.log")}`, "--log-level", "debug"],
    { stdio: "ignore" },
  );
  children.add(child);
  const bfdd = { child, dir };
  await waitFor("bfdd to answer on its vty", () => frrPeer(bfdd).catch(() => undefined));
  // `ip netns exec` execs in place: the pid we hold is bfdd's own.
  expect(Number(readFileSync(join(dir, "bfdd.pid"), "utf8").trim())).toBe(child.pid);
  return bfdd;
}

async function frrPeer(bfdd: Bfdd): Promise<FrrPeer | undefined> {
  const out = await execIn(gwNs, "vtysh", ["--vty_socket", bfdd.dir, "-c", "show bfd peers json"]);
  return (JSON.parse(out) as FrrPeer[]).find((p) => p.peer === NODE_ADDR);
}

async function frrStatus(bfdd: Bfdd, status: string): Promise<FrrPeer> {
  return waitFor(`bfdd to show the peer ${status}`, async () => {
    const peer = await frrPeer(bfdd);
    return peer?.status === status ? peer : undefined;
  });
}

async function stopBfdd(bfdd: Bfdd): Promise<number> {
  const at = Date.now();
  killChild(bfdd.child);
  await exited(bfdd.child);
  children.delete(bfdd.child);
  return at;
}

// --- our agent as a child process ---------------------------------------------------------------

interface OurEvent {
  event: string;
  seenAt: number;
  [key: string]: unknown;
}

interface Ours {
  child: ChildProcess;
  events: OurEvent[];
  command(line: string): void;
  next(what: string, pred: (e: OurEvent) => boolean, timeoutMs?: number): Promise<OurEvent>;
  status(): Promise<OurEvent>;
}

async function startOurs(args: string[]): Promise<Ours> {
  const child = spawn("ip", ["netns", "exec", nodeNs, process.execPath, "--import", "tsx", STANDALONE, ...args], {
    cwd: REPO,
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.add(child);
  const events: OurEvent[] = [];
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    try {
      events.push({ ...(JSON.parse(line) as object), seenAt: Date.now() } as OurEvent);
    } catch {
      /* not ours */
    }
  });
  // One cursor per event type, so reading a status reply never skips a state change.
  const cursors = new Map<string, number>();
  const ours: Ours = {
    child,
    events,
    command: (line) => child.stdin!.write(`${line}\n`),
    // Returns the first matching event after the previously returned one of the same type.
    next: async (what, pred, timeoutMs = 10_000) =>
      waitFor(
        `our agent: ${what} (stderr: ${stderr.slice(-500)})`,
        () => {
          const i = events.findIndex((e, idx) => idx >= (cursors.get(e.event) ?? 0) && pred(e));
          if (i < 0) return undefined;
          cursors.set(events[i]!.event, i + 1);
          return events[i];
        },
        timeoutMs,
        5,
      ),
    status: async () => {
      ours.command("status");
      return ours.next("status", (e) => e.event === "status");
    },
  };
  await ours.next("ready", (e) => e.event === "ready", 20_000);
  return ours;
}

const change = (to: string, from?: string) => (e: OurEvent) =>
  e.event === "change" && e.to === to && (from === undefined || e.from === from);

function report(what: string, startedAt: number, detectedAt: number): void {
  console.info(`[bfd-frr] ${what}: ${Math.round(detectedAt - startedAt)} ms`);
}

// --- the tests -----------------------------------------------------------------------------------

describe.skipIf(!canRun)("BFD interoperability with FRR bfdd (network namespaces)", () => {
  beforeAll(async () => {
    workDir = mkdtempSync(join(tmpdir(), "se-bfd-frr-"));
    chownSync(workDir, Number((await runCommand("id", ["-u", "frr"])).stdout.trim()), 0);
    await addNamespace(gwNs);
    await addNamespace(nodeNs);
    await addVethPair({ ns: gwNs, name: "gw0" }, { ns: nodeNs, name: "node0" });
    await execIn(gwNs, "ip", ["addr", "add", `${GW_ADDR}/30`, "dev", "gw0"]);
    await execIn(nodeNs, "ip", ["addr", "add", `${NODE_ADDR}/30`, "dev", "node0"]);
  });

  // Each scenario starts from a quiet link even if the previous one failed half-way.
  afterEach(async () => {
    await killAllChildren();
    await execIn(gwNs, "ip", ["link", "set", "gw0", "up"]).catch(() => undefined);
    await execIn(nodeNs, "ip", ["link", "set", "node0", "up"]).catch(() => undefined);
  });

  afterAll(async () => {
    await killAllChildren();
    await deleteNamespacesWithPrefix(prefix);
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it("our active side with a passive bfdd: Up, bfdd death, link down, our death", async () => {
    let bfdd = await startBfdd({ passive: true });
    const ours = await startOurs(["--local", NODE_ADDR, "--peer", GW_ADDR]);

    // Session set-up initiated by us (bfdd waits in passive mode).
    await ours.next("Up", change("Up"));
    let frr = await frrStatus(bfdd, "up");
    let status = await ours.status();
    expect(frr["passive-mode"]).toBe(true);
    expect(frr["remote-id"]).toBe(status.localDiscriminator);
    expect(status.remoteDiscriminator).toBe(frr.id);
    // Our Poll after going Up moved bfdd to our 100 ms timers, and bfdd's Final ended it.
    await waitFor("bfdd to learn our 100 ms timers", async () => {
      const p = await frrPeer(bfdd);
      return p?.["remote-transmit-interval"] === 100 && p["remote-receive-interval"] === 100 ? p : undefined;
    });
    status = await ours.status();
    expect(status).toMatchObject({
      state: "Up",
      remoteState: "Up",
      txIntervalMs: 100,
      detectionTimeMs: 300,
      pollInProgress: false,
    });
    console.info(`[bfd-frr] Poll->Final round trip to bfdd: ${String(status.lastRttMs)} ms`);

    // bfdd dies: we detect it.
    const killedAt = await stopBfdd(bfdd);
    const down = await ours.next("Down after bfdd was killed", change("Down", "Up"));
    expect(down).toMatchObject({ diag: 1, diagName: "control-detection-time-expired" });
    report("bfdd killed -> our session Down (event time)", killedAt, down.at as number);

    // A new bfdd comes back Up with us.
    bfdd = await startBfdd({ passive: true });
    await ours.next("Up again", change("Up"));
    await frrStatus(bfdd, "up");

    // Link down on our side: both ends detect it.
    const linkDownAt = Date.now();
    await execIn(nodeNs, "ip", ["link", "set", "node0", "down"]);
    const linkDown = await ours.next("Down after link down", change("Down", "Up"));
    expect(linkDown.diag).toBe(1);
    report("link down -> our session Down (event time)", linkDownAt, linkDown.at as number);
    frr = await frrStatus(bfdd, "down");
    expect(frr.diagnostic).toBe("control detection time expired");
    report("link down -> bfdd shows Down (observed by polling vtysh)", linkDownAt, Date.now());
    await execIn(nodeNs, "ip", ["link", "set", "node0", "up"]);
    await ours.next("Up after link up", change("Up"));
    await frrStatus(bfdd, "up");

    // We die (no goodbye): bfdd detects it.
    const oursKilledAt = Date.now();
    killChild(ours.child);
    frr = await frrStatus(bfdd, "down");
    expect(frr.diagnostic).toBe("control detection time expired");
    report("our agent killed -> bfdd shows Down (observed by polling vtysh)", oursKilledAt, Date.now());
    await stopBfdd(bfdd);
  });

  it("an active bfdd with our passive side: we never send first, Up, bfdd death, link down, our graceful stop", async () => {
    const ours = await startOurs(["--local", NODE_ADDR, "--peer", GW_ADDR, "--passive"]);
    await sleep(1500);
    expect(await ours.status()).toMatchObject({ state: "Down", packetsSent: 0, passive: true });

    let bfdd = await startBfdd({ passive: false });
    await ours.next("Up", change("Up"));
    let frr = await frrStatus(bfdd, "up");
    expect(frr["passive-mode"]).toBe(false);
    expect((await ours.status()).remoteDiscriminator).toBe(frr.id);

    // bfdd dies: we detect it, then fall silent (passive, peer discriminator forgotten).
    const killedAt = await stopBfdd(bfdd);
    const down = await ours.next("Down after bfdd was killed", change("Down", "Up"));
    expect(down.diag).toBe(1);
    report("bfdd killed -> our passive session Down (event time)", killedAt, down.at as number);
    const silentFrom = (await ours.status()).packetsSent as number;
    await sleep(1500);
    expect((await ours.status()).packetsSent).toBe(silentFrom);

    bfdd = await startBfdd({ passive: false });
    await ours.next("Up again", change("Up"));
    await frrStatus(bfdd, "up");

    // Link down on bfdd's side this time.
    const linkDownAt = Date.now();
    await execIn(gwNs, "ip", ["link", "set", "gw0", "down"]);
    const linkDown = await ours.next("Down after link down", change("Down", "Up"));
    expect(linkDown.diag).toBe(1);
    report("gateway link down -> our passive session Down (event time)", linkDownAt, linkDown.at as number);
    await frrStatus(bfdd, "down");
    report("gateway link down -> bfdd shows Down (observed by polling vtysh)", linkDownAt, Date.now());
    await execIn(gwNs, "ip", ["link", "set", "gw0", "up"]);
    await ours.next("Up after link up", change("Up"));
    await frrStatus(bfdd, "up");

    // Graceful stop: we send AdminDown, bfdd goes down at once with the neighbour's reason.
    const stopAt = Date.now();
    ours.command("stop");
    await ours.next("stopped", (e) => e.event === "stopped");
    await exited(ours.child);
    expect(ours.child.exitCode).toBe(0);
    frr = await frrStatus(bfdd, "down");
    expect(frr["remote-diagnostic"]).toBe("administratively down");
    report("our graceful stop -> bfdd shows Down (observed by polling vtysh)", stopAt, Date.now());
    await stopBfdd(bfdd);
  });
});
