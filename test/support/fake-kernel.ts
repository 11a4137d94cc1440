import type { Kernel, NftObject } from "../../src/dataplane/kernel.js";
import { formatIPv4, parseCidr, parseIPv4 } from "../../src/util/ipv4.js";
import { CommandError } from "../../src/util/exec.js";

/**
 * A stateful stand-in for the kernel behind `Kernel` (test only): the nftables tables, sets,
 * maps, counters, chains and rules, and the links, addresses, neighbours, routes and policy
 * rules that the dataplane writes and reads, answering the same `nft -j` / `ip -json` listings.
 * test/lab/kernel-fake.test.ts runs one scenario against it and a real network namespace and
 * asserts the same read-back, so it cannot drift from the kernel unnoticed.
 *
 * What it keeps like the kernel:
 *  - an nft script is one transaction: a failing command leaves everything as it was;
 *  - `add element` of an existing key with the same value is a no-op, with another value (or
 *    `create element`) fails; deleting a missing element or table fails; `flush set|map` empties one; `flush chain`
 *    empties a chain, `delete chain` needs it empty and unreferenced (rules, verdict map elements), `delete set|map`
 *    unreferenced by a rule; interval elements may
 *    not overlap; ranges need `flags interval`; rules may only name sets and counters that exist;
 *  - an `ip -batch` is not a transaction: it stops at the first failing line, earlier lines stay;
 *  - duplicate rules, `route add` of an existing route, deleting a missing rule, route or link
 *    fail; `route replace` replaces; an on-link next hop needs its device up, any other next hop
 *    a connected route; a link going down or away takes its routes with it;
 *  - policy routing: rules in priority order, fwmark/mask and destination matches, a table
 *    without a matching route falls through to the next rule (`lookup`, also `ip route get`).
 *
 * Its lies (not modelled): packets, so counters count only what a test counts in (`count`) and
 * no connection is tracked (`deleteFlows` never matches); rule bodies are kept as text, never compiled (the `expr` of a
 * listed rule is `[{ text }]`), so a rule the kernel would refuse for its syntax is accepted;
 * element types other than ours (ipv4_addr, ifname, mark, integer, inet_service, and jump/goto verdicts); carrier
 * state (a veth is up when set up); broadcast routes; link types other than veth, vxlan, bridge.
 */

type Family = "ip" | "inet" | "bridge";
type Part = { ip: [number, number] } | { str: string } | { num: number } | { verdict: string; target: string };
interface Element {
  key: Part[];
  value?: Part;
}
interface NftSet {
  kind: "set" | "map";
  handle: number;
  types: string[];
  dataType?: string;
  flags: string[];
  elements: Map<string, Element>;
}
interface NftChain {
  handle: number;
  base?: { type: string; hook: string; prio: number; policy: string };
  rules: { handle: number; text: string }[];
}
interface NftTable {
  family: Family;
  name: string;
  handle: number;
  counters: Map<string, { handle: number; packets: number; bytes: number }>;
  sets: Map<string, NftSet>;
  chains: Map<string, NftChain>;
}
interface NftState {
  tables: Map<string, NftTable>;
  nextHandle: number;
}

interface Link {
  ifindex: number;
  name: string;
  kind: "loopback" | "veth" | "vxlan" | "bridge";
  up: boolean;
  mtu: number;
  address: string;
  master?: string;
  peer?: string;
  vxlan?: { id: number; local: string; remote: string; port: number; learning: boolean };
}
interface Address {
  dev: string;
  local: string;
  prefixlen: number;
  scope: "global" | "link" | "host";
}
interface Route {
  table: string;
  /** "default", "a.b.c.d" (a /32) or "a.b.c.d/len". */
  dst: string;
  type: "unicast" | "blackhole";
  gateway?: string;
  dev?: string;
  onlink: boolean;
  protocol?: string;
  scope?: "link";
  prefsrc?: string;
}
interface Rule {
  priority: number;
  dst?: string;
  dstlen?: number;
  fwmark?: number;
  fwmask?: number;
  table?: string;
  blackhole?: boolean;
}

/** One call through the Kernel interface; `ip` batches are logged line by line. */
export interface KernelCall {
  op: "nft" | "nftList" | "ip" | "ipJson" | "bridgeJson" | "writeProcSys" | "deleteFlows";
  text: string;
  ok: boolean;
}

/** Where a packet with this mark, to this destination, goes (the FIB's answer). */
export type Lookup =
  | { via: "blackhole" }
  | { via: "unreachable" }
  | { via: "route"; table: string; dev?: string; gateway?: string; local?: boolean };

const CHAIN_PRIORITIES: Record<string, Record<string, number>> = {
  ip: { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 },
  bridge: { dstnat: -300, filter: -200, out: 100, srcnat: 300 },
};
const TYPEOF: Record<string, string> = {
  "ip saddr": "ipv4_addr",
  "ip daddr": "ipv4_addr",
  "udp dport": "inet_service",
  "udp sport": "inet_service",
  "tcp dport": "inet_service",
  "meta mark": "mark",
  iifname: "ifname",
  oifname: "ifname",
};
const DEFAULT_RULES: Rule[] = [
  { priority: 0, table: "local" },
  { priority: 32766, table: "main" },
  { priority: 32767, table: "default" },
];

const nftError = (script: string, message: string) =>
  new CommandError("nft", ["-f", "-"], 1, `Error: ${message}\n${script}`);
const ipError = (line: string, message: string) =>
  new CommandError("ip", ["-batch", "-"], 1, `${message}\nCommand failed -: ${line}`);

export class FakeKernel implements Kernel {
  /** Every call, in order. */
  readonly log: KernelCall[] = [];
  private nftState: NftState = { tables: new Map(), nextHandle: 1 };
  private links = new Map<string, Link>([
    ["lo", { ifindex: 1, name: "lo", kind: "loopback", up: false, mtu: 65536, address: "00:00:00:00:00:00" }],
  ]);
  private nextIfindex = 2;
  private addresses: Address[] = [];
  private routes: Route[] = [];
  private rules: Rule[] = DEFAULT_RULES.map((r) => ({ ...r }));
  private neighbours: { dst: string; dev: string; lladdr: string }[] = [];
  /** /proc/sys files written, by path. */
  readonly procSys = new Map<string, string>();
  private readonly observers: ((call: KernelCall) => void)[] = [];
  private readonly failures: { op: "nft" | "ip"; match: RegExp; message: string }[] = [];

  /** Called after every change the fake applies (each nft transaction, each `ip` line). */
  onChange(observer: (call: KernelCall) => void): void {
    this.observers.push(observer);
  }

  /** The next nft script or `ip` line matching `match` fails as if the kernel refused it (e.g. out of memory). */
  failNext(op: "nft" | "ip", match: RegExp = /./, message = "Could not process rule: Cannot allocate memory"): void {
    this.failures.push({ op, match, message });
  }

  private injected(op: "nft" | "ip", text: string): string | undefined {
    const i = this.failures.findIndex((f) => f.op === op && f.match.test(text));
    return i < 0 ? undefined : this.failures.splice(i, 1)[0]!.message;
  }

  private changed(call: KernelCall): void {
    for (const o of this.observers) o(call);
  }

  // ---- nft ---------------------------------------------------------------------------------

  async nft(script: string): Promise<void> {
    const call: KernelCall = { op: "nft", text: script, ok: false };
    this.log.push(call);
    const injected = this.injected("nft", script);
    if (injected) throw nftError(script, injected);
    const next = structuredClone(this.nftState);
    new NftScript(next, script).run();
    this.nftState = next;
    call.ok = true;
    this.changed(call);
  }

  async nftList(what: string, opts: { stateless?: boolean; terse?: boolean } = {}): Promise<NftObject[] | undefined> {
    this.log.push({ op: "nftList", text: what, ok: true });
    const m = /^(counters )?table (ip|inet|bridge) (\w+)$/.exec(what);
    if (!m) throw new Error(`fake kernel: nft list ${what} is not modelled`);
    const t = this.nftState.tables.get(`${m[2]} ${m[3]}`);
    if (!t) return undefined;
    const meta: NftObject = { metainfo: { version: "fake", json_schema_version: 1 } };
    // Like nft 1.0.6: `--stateless` leaves the named counters' values in (there are no anonymous ones here).
    void opts.stateless;
    const counters = [...t.counters].map(([name, c]) => ({
      counter: { family: t.family, name, table: t.name, handle: c.handle, packets: c.packets, bytes: c.bytes },
    }));
    if (m[1]) return [meta, ...counters];
    const sets = [...t.sets].map(([name, s]) => ({
      [s.kind]: {
        family: t.family,
        name,
        table: t.name,
        type: s.types.length === 1 ? s.types[0] : s.types,
        handle: s.handle,
        ...(s.dataType ? { map: s.dataType } : {}),
        ...(s.flags.length > 0 ? { flags: s.flags } : {}),
        ...(s.elements.size > 0 && !opts.terse ? { elem: [...s.elements.values()].map(elementJson) } : {}),
      },
    }));
    const chains = [...t.chains].map(([name, c]) => ({
      chain: { family: t.family, table: t.name, name, handle: c.handle, ...(c.base ?? {}) },
    }));
    const rules = [...t.chains].flatMap(([chain, c]) =>
      c.rules.map((r) => ({
        rule: { family: t.family, table: t.name, chain, handle: r.handle, expr: [{ text: r.text }] },
      })),
    );
    return [
      meta,
      { table: { family: t.family, name: t.name, handle: t.handle } },
      ...counters,
      ...sets,
      ...chains,
      ...rules,
    ];
  }

  /** Packets that hit a named counter's rule (no packets run here: tests count them in). */
  count(family: Family, table: string, counter: string, packets: number): void {
    const c = this.nftState.tables.get(`${family} ${table}`)?.counters.get(counter);
    if (!c) throw new Error(`fake kernel: no counter ${counter} in ${family} ${table}`);
    c.packets += packets;
    c.bytes += packets * 64;
  }

  /** The elements of a set or map, as nft's JSON shows them (for assertions). */
  elements(family: Family, table: string, set: string): unknown[] {
    const s = this.nftState.tables.get(`${family} ${table}`)?.sets.get(set);
    return s ? [...s.elements.values()].map(elementJson) : [];
  }

  hasTable(family: Family, name: string): boolean {
    return this.nftState.tables.has(`${family} ${name}`);
  }

  // ---- ip ----------------------------------------------------------------------------------

  async ip(lines: readonly string[]): Promise<void> {
    for (const line of lines) {
      const call: KernelCall = { op: "ip", text: line, ok: false };
      this.log.push(call);
      const injected = this.injected("ip", line);
      if (injected) throw ipError(line, injected);
      this.ipLine(line.trim().split(/\s+/));
      call.ok = true;
      this.changed(call);
    }
  }

  private ipLine(w: string[]): void {
    const line = w.join(" ");
    const fail = (message: string): never => {
      throw ipError(line, message);
    };
    const opt = (name: string) => {
      const i = w.indexOf(name);
      return i < 0 ? undefined : w[i + 1];
    };
    const [object, verb] = w;
    if (object === "link") return this.linkCommand(w, verb!, opt, fail);
    if (object === "addr" && (verb === "add" || verb === "replace")) {
      const [local, len] = w[2]!.split("/");
      const dev = this.device(opt("dev"), fail);
      const existing = this.addresses.findIndex((a) => a.dev === dev.name && a.local === local);
      if (existing >= 0 && verb === "add") fail("RTNETLINK answers: File exists");
      if (existing >= 0) this.addresses.splice(existing, 1);
      const a: Address = {
        dev: dev.name,
        local: local!,
        prefixlen: Number(len ?? 32),
        scope: (opt("scope") as Address["scope"]) ?? "global",
      };
      this.addresses.push(a);
      if (dev.up) this.addPrefixRoute(a);
      return;
    }
    if (object === "neigh" && verb === "replace") {
      const dev = this.device(opt("dev"), fail);
      this.neighbours = this.neighbours.filter((n) => !(n.dst === w[2] && n.dev === dev.name));
      this.neighbours.push({ dst: w[2]!, dev: dev.name, lladdr: opt("lladdr")! });
      return;
    }
    if (object === "route") return this.routeCommand(w, verb!, opt, fail);
    if (object === "rule") return this.ruleCommand(w, verb!, opt, fail);
    fail(`fake kernel: ip ${line} is not modelled`);
  }

  private device(name: string | undefined, fail: (m: string) => never): Link {
    const l = name === undefined ? undefined : this.links.get(name);
    return l ?? fail(`Cannot find device "${name}"`);
  }

  private linkCommand(
    w: string[],
    verb: string,
    opt: (n: string) => string | undefined,
    fail: (m: string) => never,
  ): void {
    const name = w[2]!;
    if (verb === "add") {
      if (this.links.has(name)) fail("RTNETLINK answers: File exists");
      const kind = opt("type");
      const make = (n: string, k: Link["kind"]): Link => ({
        ifindex: this.nextIfindex++,
        name: n,
        kind: k,
        up: false,
        mtu: Number(opt("mtu") ?? (k === "vxlan" ? 1450 : 1500)),
        address: macFor(this.nextIfindex),
      });
      if (kind === "veth") {
        const peer = opt("name") ?? fail("fake kernel: a veth needs `peer name`");
        if (this.links.has(peer)) fail("RTNETLINK answers: File exists");
        const a = make(name, "veth");
        const b = make(peer, "veth");
        this.links.set(name, { ...a, ...(opt("address") ? { address: opt("address")! } : {}), peer });
        this.links.set(peer, { ...b, peer: name });
      } else if (kind === "vxlan") {
        const vxlan = {
          id: Number(opt("id")),
          local: opt("local")!,
          remote: opt("remote")!,
          port: Number(opt("dstport")),
          learning: !w.includes("nolearning"),
        };
        this.links.set(name, {
          ...make(name, "vxlan"),
          ...(opt("address") ? { address: opt("address")! } : {}),
          vxlan,
        });
      } else if (kind === "bridge") {
        this.links.set(name, make(name, "bridge"));
      } else fail("Error: Unknown device type.");
      return;
    }
    const link = this.device(name, fail);
    if (verb === "del") {
      const gone = new Set([name, ...(link.peer ? [link.peer] : [])]);
      for (const g of gone) this.links.delete(g);
      for (const l of this.links.values()) if (l.master && gone.has(l.master)) delete l.master;
      this.routes = this.routes.filter((r) => !r.dev || !gone.has(r.dev));
      this.addresses = this.addresses.filter((a) => !gone.has(a.dev));
      this.neighbours = this.neighbours.filter((n) => !gone.has(n.dev));
      return;
    }
    if (verb === "set") {
      if (w[3] === "up") {
        if (!link.up) {
          link.up = true;
          for (const a of this.addresses) if (a.dev === name) this.addPrefixRoute(a);
        }
      } else if (w[3] === "down") {
        link.up = false;
        // The kernel drops the routes through a device that goes down.
        this.routes = this.routes.filter((r) => r.dev !== name);
      } else if (w[3] === "master") {
        const br = this.device(w[4], fail);
        if (br.kind !== "bridge") fail("Error: Device does not allow enslaving to a master.");
        link.master = br.name;
      } else fail(`fake kernel: ip ${w.join(" ")} is not modelled`);
      return;
    }
    fail(`fake kernel: ip ${w.join(" ")} is not modelled`);
  }

  private addPrefixRoute(a: Address): void {
    if (a.prefixlen === 32) return;
    const r = parseCidr(`${a.local}/${a.prefixlen}`);
    const dst = `${formatIPv4(r.from)}/${a.prefixlen}`;
    if (this.routes.some((x) => x.table === "main" && x.dst === dst)) return;
    this.routes.push({
      table: "main",
      dst,
      type: "unicast",
      dev: a.dev,
      onlink: false,
      protocol: "kernel",
      scope: "link",
      prefsrc: a.local,
    });
  }

  private routeCommand(
    w: string[],
    verb: string,
    opt: (n: string) => string | undefined,
    fail: (m: string) => never,
  ): void {
    const blackhole = w[2] === "blackhole";
    const dst = canonicalDst(w[blackhole ? 3 : 2]!, fail);
    const table = opt("table") ?? "main";
    const protocol = opt("proto");
    if (verb === "del") {
      if (!this.routes.some((r) => r.table === table)) fail("Error: FIB table does not exist.");
      const i = this.routes.findIndex(
        (r) =>
          r.table === table &&
          r.dst === dst &&
          (!blackhole || r.type === "blackhole") &&
          (opt("via") === undefined || r.gateway === opt("via")) &&
          (opt("dev") === undefined || r.dev === opt("dev")) &&
          (protocol === undefined || r.protocol === protocol),
      );
      if (i < 0) fail("RTNETLINK answers: No such process");
      this.routes.splice(i, 1);
      return;
    }
    if (verb !== "add" && verb !== "replace") fail(`fake kernel: ip ${w.join(" ")} is not modelled`);
    let route: Route = { table, dst, type: "blackhole", onlink: false, ...(protocol ? { protocol } : {}) };
    if (!blackhole) {
      const gateway = opt("via");
      const onlink = w.includes("onlink");
      let dev = opt("dev") === undefined ? undefined : this.device(opt("dev"), fail);
      if (gateway !== undefined && !onlink) {
        if (this.addresses.some((a) => a.local === gateway)) fail("Error: Nexthop has invalid gateway.");
        const connected = this.longestMatch(
          this.routes.filter((r) => r.table === "main" && r.type === "unicast" && !r.gateway && r.dev),
          parseIPv4(gateway),
        );
        if (!connected || (dev && connected.dev !== dev.name)) fail("Error: Nexthop has invalid gateway.");
        dev = this.links.get(connected!.dev!);
      }
      if (!dev) fail("Error: Device for nexthop is not up.");
      if (!dev!.up) fail("Error: Nexthop device is not up.");
      route = {
        ...route,
        type: "unicast",
        dev: dev!.name,
        onlink,
        ...(gateway ? { gateway } : { scope: "link" as const }),
      };
    }
    const i = this.routes.findIndex((r) => r.table === table && r.dst === dst);
    if (i >= 0 && verb === "add") fail("RTNETLINK answers: File exists");
    if (i >= 0) this.routes[i] = route;
    else this.routes.push(route);
  }

  private ruleCommand(
    w: string[],
    verb: string,
    opt: (n: string) => string | undefined,
    fail: (m: string) => never,
  ): void {
    const to = opt("to");
    const [mark, mask] = (opt("fwmark") ?? "").split("/");
    const rule: Rule = {
      priority: Number(opt("priority")),
      ...(to ? { dst: to.split("/")[0]!, dstlen: Number(to.split("/")[1] ?? 32) } : {}),
      ...(mark ? { fwmark: Number(mark) >>> 0, fwmask: mask === undefined ? 0xffffffff : Number(mask) >>> 0 } : {}),
      ...(w.includes("blackhole") ? { blackhole: true } : { table: opt("lookup") ?? "main" }),
    };
    const same = (r: Rule) => JSON.stringify(ruleKey(r)) === JSON.stringify(ruleKey(rule));
    if (verb === "add") {
      if (this.rules.some(same)) fail("RTNETLINK answers: File exists");
      // After the rules of the same priority, like the kernel.
      const at = this.rules.findIndex((r) => r.priority > rule.priority);
      this.rules.splice(at < 0 ? this.rules.length : at, 0, rule);
      return;
    }
    if (verb === "del") {
      const i = this.rules.findIndex(same);
      if (i < 0) fail("RTNETLINK answers: No such file or directory");
      this.rules.splice(i, 1);
      return;
    }
    fail(`fake kernel: ip ${w.join(" ")} is not modelled`);
  }

  private longestMatch(routes: readonly Route[], addr: number): Route | undefined {
    let best: { len: number; r: Route } | undefined;
    for (const r of routes) {
      const range =
        r.dst === "default" ? { from: 0, to: 0xffffffff } : parseCidr(r.dst.includes("/") ? r.dst : `${r.dst}/32`);
      const len = r.dst === "default" ? 0 : Number(r.dst.split("/")[1] ?? 32);
      if (addr >= range.from && addr <= range.to && (!best || len > best.len)) best = { len, r };
    }
    return best?.r;
  }

  /** The FIB's decision for a packet with `mark` to `dst`: policy rules in order, then the table's longest match. */
  lookup(dst: string, mark = 0): Lookup {
    const addr = parseIPv4(dst);
    for (const rule of this.rules) {
      if (rule.fwmark !== undefined && (mark & rule.fwmask!) >>> 0 !== rule.fwmark) continue;
      if (rule.dst !== undefined) {
        const r = parseCidr(`${rule.dst}/${rule.dstlen}`);
        if (addr < r.from || addr > r.to) continue;
      }
      if (rule.blackhole) return { via: "blackhole" };
      if (rule.table === "local") {
        const a = this.addresses.find((x) => x.local === dst);
        if (a) return { via: "route", table: "local", dev: "lo", local: true };
        continue;
      }
      const route = this.longestMatch(
        this.routes.filter((r) => r.table === rule.table),
        addr,
      );
      if (!route) continue;
      if (route.type === "blackhole") return { via: "blackhole" };
      return {
        via: "route",
        table: route.table,
        ...(route.dev ? { dev: route.dev } : {}),
        ...(route.gateway ? { gateway: route.gateway } : {}),
      };
    }
    return { via: "unreachable" };
  }

  async ipJson<T>(args: readonly string[]): Promise<T[]> {
    const what = args.join(" ");
    this.log.push({ op: "ipJson", text: what, ok: true });
    return this.ipListing(what) as T[];
  }

  /** As `ip -force -json -batch -` of `route get` lines: one log line, the unreachable left out. */
  async routeDevices(addresses: readonly string[]): Promise<Map<string, string>> {
    this.log.push({ op: "ipJson", text: addresses.map((a) => `route get ${a}`).join("\n"), ok: true });
    const out = new Map<string, string>();
    for (const a of addresses) {
      let dev: string | undefined;
      try {
        dev = (this.ipListing(`route get ${a}`) as { dev?: string }[])[0]?.dev;
      } catch (e) {
        if (!(e instanceof CommandError)) throw e;
      }
      if (dev) out.set(a, dev);
    }
    return out;
  }

  private ipListing(what: string): unknown[] {
    switch (what) {
      case "-4 rule show":
        return this.rules.map(ruleJson);
      case "-4 route show table all":
        return [
          ...this.routes.map(routeJson),
          ...this.addresses.map((a) => ({
            type: "local",
            dst: a.local,
            dev: a.dev,
            table: "local",
            protocol: "kernel",
            scope: "host",
            prefsrc: a.local,
            flags: [],
          })),
        ];
      case "-4 route show table main":
        return this.routes.filter((r) => r.table === "main").map(routeJson);
      case "-d link show":
        return [...this.links.values()].map((l) => this.linkJson(l));
      case "-d link show type vxlan":
        return [...this.links.values()].filter((l) => l.kind === "vxlan").map((l) => this.linkJson(l));
      case "-4 neigh show":
      case "-4 neigh show nud permanent":
        return this.neighbours.map((n) => ({ dst: n.dst, dev: n.dev, lladdr: n.lladdr, state: ["PERMANENT"] }));
      case "-4 addr show":
      case "-4 addr show type vxlan":
        // ip prints an empty object for each link the filter leaves out.
        return [...this.links.values()].map((l) => {
          const addrs = this.addresses.filter((a) => a.dev === l.name);
          if ((what.endsWith("vxlan") && l.kind !== "vxlan") || addrs.length === 0) return {};
          const { ifindex, ifname, flags, mtu } = this.linkJson(l);
          return {
            ifindex,
            ifname,
            flags,
            mtu,
            addr_info: addrs.map((a) => ({
              family: "inet",
              local: a.local,
              prefixlen: a.prefixlen,
              scope: a.scope,
              label: a.dev,
            })),
          };
        });
    }
    const get = /^route get (\S+)$/.exec(what);
    if (get) {
      const where = this.lookup(get[1]!);
      if (where.via === "unreachable")
        throw new CommandError("ip", ["-json", ...what.split(" ")], 2, "RTNETLINK answers: Network is unreachable");
      if (where.via === "blackhole")
        throw new CommandError("ip", ["-json", ...what.split(" ")], 2, "RTNETLINK answers: Invalid argument");
      if (where.local)
        return [
          {
            type: "local",
            dst: get[1],
            dev: "lo",
            table: "local",
            prefsrc: get[1],
            flags: [],
            uid: 0,
            cache: ["local"],
          },
        ];
      const src =
        this.addresses.find((a) => a.dev === where.dev && a.scope === "global") ??
        this.addresses.find((a) => a.scope === "global");
      return [
        {
          dst: get[1],
          ...(where.gateway ? { gateway: where.gateway } : {}),
          dev: where.dev,
          ...(where.table !== "main" ? { table: where.table } : {}),
          ...(src ? { prefsrc: src.local } : {}),
          flags: [],
          uid: 0,
          cache: [],
        },
      ];
    }
    throw new Error(`fake kernel: ip -json ${what} is not modelled`);
  }

  private linkJson(l: Link) {
    const flags =
      l.kind === "loopback"
        ? ["LOOPBACK", ...(l.up ? ["UP", "LOWER_UP"] : [])]
        : ["BROADCAST", "MULTICAST", ...(l.up ? ["UP", "LOWER_UP"] : [])];
    return {
      ifindex: l.ifindex,
      ...(l.peer ? { link: l.peer } : {}),
      ifname: l.name,
      flags,
      mtu: l.mtu,
      ...(l.master ? { master: l.master } : {}),
      link_type: l.kind === "loopback" ? "loopback" : "ether",
      address: l.address,
      ...(l.kind === "loopback"
        ? {}
        : {
            linkinfo: {
              info_kind: l.kind,
              ...(l.vxlan
                ? {
                    info_data: {
                      id: l.vxlan.id,
                      remote: l.vxlan.remote,
                      local: l.vxlan.local,
                      port: l.vxlan.port,
                      learning: l.vxlan.learning,
                    },
                  }
                : {}),
              ...(l.master ? { info_slave_kind: "bridge" } : {}),
            },
          }),
    };
  }

  /** `bridge -json fdb show`: each VXLAN device's default entry toward its remote (the learned entries of bridges are not modelled). */
  async bridgeJson<T>(args: readonly string[]): Promise<T[]> {
    const what = args.join(" ");
    this.log.push({ op: "bridgeJson", text: what, ok: true });
    if (what !== "fdb show") throw new Error(`fake kernel: bridge -json ${what} is not modelled`);
    return [...this.links.values()].flatMap((l) =>
      l.vxlan
        ? [{ mac: "00:00:00:00:00:00", ifname: l.name, dst: l.vxlan.remote, flags: ["self"], state: "permanent" }]
        : [],
    ) as T[];
  }

  async writeProcSys(files: string | readonly string[], value: string): Promise<void> {
    // One process for all in the real kernel, stopping at the first that fails: the same here.
    for (const file of typeof files === "string" ? [files] : files) this.writeOne(file, value);
  }

  private writeOne(file: string, value: string): void {
    const call: KernelCall = { op: "writeProcSys", text: `${file} ${value}`, ok: false };
    this.log.push(call);
    const dev = /\/ipv4\/conf\/([^/]+)\//.exec(file)?.[1];
    if (dev !== undefined && dev !== "all" && dev !== "default" && !this.links.has(dev))
      throw new CommandError("sh", ["-c", file], 2, `sh: 1: cannot create ${file}: Directory nonexistent`);
    this.procSys.set(file, value);
    call.ok = true;
    this.changed(call);
  }

  /** No connection is tracked here: nothing ever matches (not an error in `conntrack -R`). One call, one log line per batch. */
  async deleteFlows(filters: readonly (readonly string[])[]): Promise<void> {
    if (filters.length === 0) return;
    this.log.push({ op: "deleteFlows", text: filters.map((f) => f.join(" ")).join("\n"), ok: true });
  }
}

/** The nft commands our code sends, applied to a copy of the state (the caller keeps it only if all succeed). */
class NftScript {
  private readonly lines: string[];
  private i = 0;

  constructor(
    private readonly state: NftState,
    private readonly script: string,
  ) {
    this.lines = script.split("\n");
  }

  private fail(message: string): never {
    throw nftError(this.script, message);
  }

  run(): void {
    while (this.i < this.lines.length) {
      const line = this.lines[this.i++]!.trim();
      if (line === "" || line.startsWith("#")) continue;
      let m: RegExpExecArray | null;
      if ((m = /^(?:add )?table (ip|inet|bridge) (\w+)( \{)?$/.exec(line))) {
        const t = this.ensureTable(m[1] as Family, m[2]!);
        if (m[3]) this.tableBlock(t);
      } else if ((m = /^delete table (ip|inet|bridge) (\w+)$/.exec(line))) {
        if (!this.state.tables.delete(`${m[1]} ${m[2]}`)) this.fail("No such file or directory");
      } else if ((m = /^flush chain (ip|inet|bridge) (\w+) (\w+)$/.exec(line))) {
        const chain =
          this.state.tables.get(`${m[1]} ${m[2]}`)?.chains.get(m[3]!) ?? this.fail("No such file or directory");
        chain.rules = [];
      } else if ((m = /^delete chain (ip|inet|bridge) (\w+) (\w+)$/.exec(line))) {
        // Like the kernel: only an empty chain nothing jumps to (a rule or a verdict map element).
        const t = this.state.tables.get(`${m[1]} ${m[2]}`);
        const chain = t?.chains.get(m[3]!) ?? this.fail("No such file or directory");
        const target = new RegExp(`\\b(?:jump|goto) ${m[3]}\\b`);
        const used =
          chain.rules.length > 0 ||
          [...t!.chains.values()].some((c) => c.rules.some((r) => target.test(r.text))) ||
          [...t!.sets.values()].some((x) =>
            [...x.elements.values()].some((e) => e.value && "target" in e.value && e.value.target === m![3]),
          );
        if (used) this.fail("Could not process rule: Device or resource busy");
        t!.chains.delete(m[3]!);
      } else if ((m = /^delete (set|map) (ip|inet|bridge) (\w+) (\w+)$/.exec(line))) {
        const t = this.state.tables.get(`${m[2]} ${m[3]}`);
        const set = t?.sets.get(m[4]!);
        if (!set || set.kind !== m[1]) this.fail("No such file or directory");
        const ref = new RegExp(`@${m[4]}(?![\\w,])`);
        if ([...t!.chains.values()].some((c) => c.rules.some((r) => ref.test(r.text))))
          this.fail("Could not process rule: Device or resource busy");
        t!.sets.delete(m[4]!);
      } else if ((m = /^flush (set|map) (ip|inet|bridge) (\w+) (\w+)$/.exec(line))) {
        const set = this.state.tables.get(`${m[2]} ${m[3]}`)?.sets.get(m[4]!);
        if (!set || set.kind !== m[1]) this.fail("No such file or directory");
        set.elements.clear();
      } else if ((m = /^(add|create|delete) element (ip|inet|bridge) (\w+) (\w+) \{ (.*) \}$/.exec(line))) {
        const set = this.state.tables.get(`${m[2]} ${m[3]}`)?.sets.get(m[4]!) ?? this.fail("No such file or directory");
        for (const text of m[5]!.split(",")) this.element(set, m[1] as "add" | "create" | "delete", text.trim());
      } else this.fail(`syntax error (not modelled by the fake): ${line}`);
    }
    // A rule may only name sets and counters of its table (checked on the final state, like a commit).
    for (const t of this.state.tables.values()) {
      for (const c of t.chains.values()) {
        for (const r of c.rules) {
          for (const [, set] of r.text.matchAll(/@([A-Za-z_]\w*)(?![\w,])/g))
            if (!t.sets.has(set!)) this.fail(`Could not process rule: No such file or directory: @${set}`);
          for (const [, counter] of r.text.matchAll(/counter name "(\w+)"/g))
            if (!t.counters.has(counter!)) this.fail(`Could not process rule: No such file or directory: ${counter}`);
        }
      }
      // A verdict map's jumps must land on a chain of the table.
      for (const set of t.sets.values())
        for (const e of set.elements.values())
          if (e.value && "target" in e.value && !t.chains.has(e.value.target))
            this.fail(`Could not process rule: No such file or directory: chain ${e.value.target}`);
    }
  }

  private ensureTable(family: Family, name: string): NftTable {
    const key = `${family} ${name}`;
    let t = this.state.tables.get(key);
    if (!t) {
      t = { family, name, handle: this.state.nextHandle++, counters: new Map(), sets: new Map(), chains: new Map() };
      this.state.tables.set(key, t);
    }
    return t;
  }

  /** The lines up to the `}` that closes the block opened on the line before. */
  private block(): string[] {
    const out: string[] = [];
    for (;;) {
      if (this.i >= this.lines.length) this.fail("syntax error, unexpected end of file");
      const line = this.lines[this.i++]!.trim();
      if (line === "}") return out;
      out.push(line);
    }
  }

  private tableBlock(t: NftTable): void {
    for (;;) {
      if (this.i >= this.lines.length) this.fail("syntax error, unexpected end of file");
      const line = this.lines[this.i++]!.trim();
      if (line === "}") return;
      if (line === "") continue;
      let m: RegExpExecArray | null;
      if ((m = /^(set|map) (\w+) \{$/.exec(line)))
        this.setBlock(t, m[1] as "set" | "map", m[2]!, this.block().join(" "));
      else if ((m = /^counter (\w+) \{$/.exec(line))) {
        // `counter x { packets N bytes M }` starts it there (nft does); an existing counter keeps counting.
        const start = /packets (\d+) bytes (\d+)/.exec(this.block().join(" "));
        const [packets, bytes] = start ? [Number(start[1]), Number(start[2])] : [0, 0];
        if (!t.counters.has(m[1]!)) t.counters.set(m[1]!, { handle: this.state.nextHandle++, packets, bytes });
      } else if ((m = /^chain (\w+) \{$/.exec(line))) this.chainBlock(t, m[1]!, this.block());
      else this.fail(`syntax error (not modelled by the fake): ${line}`);
    }
  }

  private setBlock(t: NftTable, kind: "set" | "map", name: string, body: string): void {
    const [spec, elements] = body.split(/\belements = \{/);
    const type = /(?:^|;)\s*type ([^;]+);/.exec(spec!);
    const typeOf = /(?:^|;)\s*typeof ([^;]+);/.exec(spec!);
    let keys: string[];
    let dataType: string | undefined;
    if (type) {
      const [k, d] = type[1]!.split(" : ");
      keys = k!.split(" . ").map((s) => s.trim());
      dataType = d?.trim();
    } else if (typeOf) {
      keys = typeOf[1]!
        .split(" . ")
        .map(
          (e) =>
            TYPEOF[e.trim()] ??
            (e.trim().startsWith("@") ? "integer" : this.fail(`fake kernel: typeof ${e} is not modelled`)),
        );
    } else this.fail(`set ${name} has no type`);
    if ((kind === "map") !== (dataType !== undefined))
      this.fail(`${kind} ${name}: ${kind === "map" ? "a map needs a data type" : "a set has no data type"}`);
    for (const k of [...keys, ...(dataType && dataType !== "verdict" ? [dataType] : [])])
      if (!["ipv4_addr", "ifname", "mark", "integer", "inet_service"].includes(k))
        this.fail(`fake kernel: type ${k} is not modelled`);
    const flags =
      /flags ([^;]+);/
        .exec(spec!)?.[1]!
        .split(",")
        .map((f) => f.trim()) ?? [];
    let set = t.sets.get(name);
    if (set && (set.kind !== kind || set.types.join(".") !== keys.join(".") || set.dataType !== dataType))
      this.fail(`Could not process rule: File exists: ${name}`);
    if (!set) {
      set = {
        kind,
        handle: this.state.nextHandle++,
        types: keys,
        ...(dataType ? { dataType } : {}),
        flags,
        elements: new Map(),
      };
      t.sets.set(name, set);
    }
    if (elements !== undefined) {
      const list = elements.replace(/\}\s*$/, "").trim();
      if (list !== "") for (const e of list.split(",")) this.element(set, "add", e.trim());
    }
  }

  private chainBlock(t: NftTable, name: string, lines: string[]): void {
    let chain = t.chains.get(name);
    if (!chain) {
      chain = { handle: this.state.nextHandle++, rules: [] };
      t.chains.set(name, chain);
    }
    for (const line of lines) {
      const base = /^type (\w+) hook (\w+) priority ([^;]+); policy (\w+);$/.exec(line);
      if (base) {
        const prio = this.priority(t.family, base[3]!.trim());
        const next = { type: base[1]!, hook: base[2]!, prio, policy: base[4]! };
        if (chain.base && JSON.stringify(chain.base) !== JSON.stringify(next))
          this.fail(`Could not process rule: Device or resource busy: chain ${name}`);
        chain.base = next;
      } else if (line !== "") chain.rules.push({ handle: this.state.nextHandle++, text: line });
    }
  }

  private priority(family: Family, text: string): number {
    const m = /^(-?\d+)$|^(\w+)(?: ([+-]) (\d+))?$/.exec(text) ?? this.fail(`syntax error: priority ${text}`);
    if (m[1] !== undefined) return Number(m[1]);
    const base =
      CHAIN_PRIORITIES[family === "bridge" ? "bridge" : "ip"]![m[2]!] ??
      this.fail(`'${m[2]}' is invalid priority in this context.`);
    return base + (m[3] === "-" ? -1 : 1) * Number(m[4] ?? 0);
  }

  private element(set: NftSet, verb: "add" | "create" | "delete", text: string): void {
    const [keyText, valueText] = text.split(" : ");
    const parts = keyText!.split(" . ").map((p) => p.trim());
    if (parts.length !== set.types.length) this.fail(`datatype mismatch: ${text}`);
    const key = parts.map((p, i) => this.part(set, set.types[i]!, p));
    const id = JSON.stringify(key);
    const interval = set.flags.includes("interval");
    if (verb === "delete") {
      if (!set.elements.delete(id))
        this.fail(interval ? "element does not exist" : "Could not process rule: No such file or directory");
      return;
    }
    if (set.dataType !== undefined && valueText === undefined) this.fail(`map needs a value: ${text}`);
    const value = valueText !== undefined ? this.part(set, set.dataType!, valueText.trim()) : undefined;
    const had = set.elements.get(id);
    if (had) {
      if (verb === "create" || JSON.stringify(had.value) !== JSON.stringify(value))
        this.fail("Could not process rule: File exists");
      return;
    }
    if (interval) {
      for (const other of set.elements.values())
        if (overlaps(other.key, key)) this.fail("interval overlaps with an existing one");
    }
    set.elements.set(id, { key, ...(value !== undefined ? { value } : {}) });
  }

  private part(set: NftSet, type: string, text: string): Part {
    if (type === "ipv4_addr") {
      const m =
        /^(\d+\.\d+\.\d+\.\d+)(?:-(\d+\.\d+\.\d+\.\d+)|\/(\d+))?$/.exec(text) ??
        this.fail(`Could not resolve hostname: ${text}`);
      if ((m[2] || m[3]) && !set.flags.includes("interval"))
        this.fail("You must add 'flags interval' to your set declaration if you want to add prefix/range elements");
      if (m[3]) {
        const r = parseCidr(`${m[1]}/${m[3]}`);
        return { ip: [r.from, r.to] };
      }
      const from = parseIPv4(m[1]!);
      const to = m[2] ? parseIPv4(m[2]) : from;
      if (to < from) this.fail(`Range has zero or negative size: ${text}`);
      return { ip: [from, to] };
    }
    if (type === "ifname") return { str: /^"(.*)"$/.exec(text)?.[1] ?? text };
    if (type === "verdict") {
      const v = /^(jump|goto) ([A-Za-z_]\w*)$/.exec(text) ?? this.fail(`fake kernel: verdict ${text} is not modelled`);
      return { verdict: v[1]!, target: v[2]! };
    }
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) this.fail(`datatype mismatch: ${text} is not a ${type}`);
    return { num: n >>> 0 };
  }
}

function overlaps(a: readonly Part[], b: readonly Part[]): boolean {
  return a.every((p, i) => {
    const q = b[i]!;
    if ("ip" in p && "ip" in q) return p.ip[0] <= q.ip[1] && q.ip[0] <= p.ip[1];
    return JSON.stringify(p) === JSON.stringify(q);
  });
}

/** An element as `nft -j` prints it: a prefix when the range is one, else a range; concatenations as `concat`. */
function partJson(p: Part): unknown {
  if ("str" in p) return p.str;
  if ("num" in p) return p.num;
  if ("verdict" in p) return { [p.verdict]: { target: p.target } };
  const [from, to] = p.ip;
  if (from === to) return formatIPv4(from);
  const size = to - from + 1;
  const len = 32 - Math.log2(size);
  if (Number.isInteger(len) && from % size === 0) return { prefix: { addr: formatIPv4(from), len } };
  return { range: [formatIPv4(from), formatIPv4(to)] };
}

function elementJson(e: Element): unknown {
  const key = e.key.length === 1 ? partJson(e.key[0]!) : { concat: e.key.map(partJson) };
  return e.value === undefined ? key : [key, partJson(e.value)];
}

function macFor(n: number): string {
  return `02:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`;
}

function canonicalDst(text: string, fail: (m: string) => never): string {
  if (text === "default") return text;
  const [addr, len = "32"] = text.split("/");
  const r = parseCidr(`${addr}/${len}`);
  if (formatIPv4(r.from) !== addr) fail("Error: Invalid prefix for given prefix length.");
  return len === "32" ? addr! : `${addr}/${len}`;
}

function ruleKey(r: Rule): unknown[] {
  return [r.priority, r.dst, r.dstlen, r.fwmark, r.fwmask, r.table, r.blackhole];
}

function ruleJson(r: Rule): Record<string, unknown> {
  return {
    priority: r.priority,
    src: "all",
    ...(r.dst !== undefined ? { dst: r.dst, ...(r.dstlen !== 32 ? { dstlen: r.dstlen } : {}) } : {}),
    ...(r.fwmark !== undefined
      ? {
          fwmark: `0x${r.fwmark.toString(16)}`,
          ...(r.fwmask !== 0xffffffff ? { fwmask: `0x${r.fwmask!.toString(16)}` } : {}),
        }
      : {}),
    ...(r.blackhole ? { action: "blackhole" } : { table: r.table }),
  };
}

function routeJson(r: Route): Record<string, unknown> {
  return {
    ...(r.type !== "unicast" ? { type: r.type } : {}),
    dst: r.dst,
    ...(r.gateway ? { gateway: r.gateway } : {}),
    ...(r.dev ? { dev: r.dev } : {}),
    ...(r.table !== "main" ? { table: r.table } : {}),
    ...(r.protocol ? { protocol: r.protocol } : {}),
    ...(r.scope ? { scope: r.scope } : {}),
    ...(r.prefsrc ? { prefsrc: r.prefsrc } : {}),
    flags: r.onlink ? ["onlink"] : [],
  };
}
