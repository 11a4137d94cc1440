import { describe, expect, it, vi } from "vitest";
import { mkdtempSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { KernelWatch, OWN_NFT_NAME, ownNftCommand, type StreamSpawner } from "./kernel-watch.js";

/** Monitors whose lines and troubles the test writes. */
function fakeStreams() {
  const live = new Map<string, { line: (l: string) => void; trouble: (why: string) => void }>();
  let spawned = 0;
  const spawn: StreamSpawner = (command, _args, on) => {
    spawned++;
    live.set(command, on);
    return { stop: () => live.delete(command) };
  };
  return { spawn, live, spawned: () => spawned };
}

function watchAt(t: { now: number }) {
  const s = fakeStreams();
  const w = new KernelWatch(s.spawn, {
    tables: ["ip static_egress", "bridge static_egress_bind"],
    settleMs: 100,
    restartMs: 1_000_000,
    now: () => t.now,
  });
  w.start();
  t.now += 100;
  return { w, ...s };
}

describe("KernelWatch", () => {
  it("vouches for nothing until its monitors have settled", () => {
    const t = { now: 0 };
    const s = fakeStreams();
    const w = new KernelWatch(s.spawn, { tables: ["ip static_egress"], settleMs: 100, now: () => t.now });
    w.start();
    expect(w.mark()).toBeUndefined();
    t.now = 99;
    expect(w.mark()).toBeUndefined();
    t.now = 100;
    const m = w.mark();
    expect(w.linksSince(m)).toBe(true);
    expect(w.tablesSince(m)).toBe(true);
    w.stop();
  });

  it("any line of ip monitor is a change of links", () => {
    const t = { now: 0 };
    const { w, live } = watchAt(t);
    const m = w.mark();
    let told = 0;
    w.onLinks(() => told++);
    live.get("ip")!.line("10.244.1.7 dev veth1234 scope link");
    expect(w.linksSince(m)).toBe(false);
    expect(w.tablesSince(m)).toBe(true);
    expect(told).toBe(1);
    expect(w.linksSince(w.mark())).toBe(true);
  });

  it("counts a transaction on a watched table by anyone but us; ours and other tables' do not count", () => {
    const t = { now: 0 };
    const { w, live } = watchAt(t);
    const nft = live.get("nft")!;
    const m = w.mark();
    nft.line("add element ip static_egress pod_class { 10.244.1.7 : jump class_1 }");
    nft.line(`# new generation 7 by process 100 (${OWN_NFT_NAME})`);
    nft.line("add rule ip kube-proxy services ip daddr 10.96.0.1 jump svc");
    nft.line("# new generation 8 by process 101 (nft)");
    expect(w.tablesSince(m)).toBe(true);
    nft.line("delete element bridge static_egress_bind guarded { 10.244.1.7 }");
    nft.line("# new generation 9 by process 102 (nft)");
    expect(w.tablesSince(m)).toBe(false);
    const m2 = w.mark();
    nft.line("flush ruleset");
    nft.line("# new generation 10 by process 103 (iptables-nft)");
    expect(w.tablesSince(m2)).toBe(false);
    const m3 = w.mark();
    // A line it cannot read could be about our table.
    nft.line("something else entirely");
    nft.line("# new generation 11 by process 104 (nft)");
    expect(w.tablesSince(m3)).toBe(false);
  });

  it("a monitor that says anything on stderr or ends makes every mark stale, and nothing is vouched for until it is back", () => {
    const t = { now: 0 };
    const { w, live, spawned } = watchAt(t);
    const m = w.mark();
    live.get("nft")!.trouble("nft: netlink: Error: No buffer space available");
    expect(w.linksSince(m)).toBe(false);
    expect(w.tablesSince(m)).toBe(false);
    expect(w.mark()).toBeUndefined();
    expect(spawned()).toBe(2);
    w.stop();
    expect(live.size).toBe(0);
  });

  it("says why it lost its view, and waits longer before each restart of monitors that keep failing", () => {
    vi.useFakeTimers();
    try {
      const t = { now: 0 };
      const s = fakeStreams();
      const why: string[] = [];
      const w = new KernelWatch(s.spawn, {
        tables: ["ip static_egress"],
        settleMs: 100,
        restartMs: 1_000,
        now: () => t.now,
        onTrouble: (m) => why.push(m),
      });
      w.start();
      s.live.get("ip")!.trouble("ip ended (1)");
      expect(why).toEqual(["ip ended (1)"]);
      vi.advanceTimersByTime(999);
      expect(s.spawned()).toBe(2);
      vi.advanceTimersByTime(1);
      expect(s.spawned()).toBe(4); // both monitors again, after 1 s
      s.live.get("nft")!.trouble("nft ended (1)");
      vi.advanceTimersByTime(1_999);
      expect(s.spawned()).toBe(4);
      vi.advanceTimersByTime(1);
      expect(s.spawned()).toBe(6); // after 2 s
      w.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it("a mark from before stop() is stale after it", () => {
    const t = { now: 0 };
    const { w } = watchAt(t);
    const m = w.mark();
    w.stop();
    expect(w.linksSince(m)).toBe(false);
    expect(w.mark()).toBeUndefined();
  });
});

describe("ownNftCommand", () => {
  it("makes se-nft, a link to the nft on PATH, in the first directory that takes it; plain nft when none does", () => {
    const root = mkdtempSync(join(tmpdir(), "own-nft-test-"));
    try {
      writeFileSync(join(root, "nft"), "");
      const own = ownNftCommand({ path: root, dirs: ["/proc/no-such-dir", root] });
      expect(basename(own)).toBe(OWN_NFT_NAME);
      expect(dirname(dirname(own))).toBe(root);
      expect(readlinkSync(own)).toBe(join(root, "nft"));
      expect(ownNftCommand({ path: root, dirs: ["/proc/no-such-dir"] })).toBe("nft");
      expect(ownNftCommand({ path: "/proc/no-such-dir", dirs: [root] })).toBe("nft");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
