import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { createInterface } from "node:readline";

/*
 * What changed in the kernel since a read, told by the kernel itself (docs/design.md "Knowing the
 * kernel without reading it"): `ip monitor` for links, addresses, routes and rules (any line is a
 * change), `nft monitor` for the ruleset (every transaction ends with "# new generation N by
 * process P (comm)"). A read taken with a mark stays true while the mark does: a verify or a new
 * pod then reuses it instead of reading 10,000 interfaces or 30,000 elements again. The watch
 * vouches for nothing it could have missed: not before its monitors have settled, not across a
 * restart, not after a monitor said anything on stderr (lost events) — each of those starts a new
 * epoch, and every older mark is stale.
 */

/** The name our own nft transactions carry (a symlink to nft: a process's comm is the name it was run by). */
export const OWN_NFT_NAME = "se-nft";

/** A long-running command's output, line by line; `trouble` for stderr output and for its end. */
export type StreamSpawner = (
  command: string,
  args: readonly string[],
  on: { line: (line: string) => void; trouble: (why: string) => void },
) => { stop: () => void };

export const localStreams: StreamSpawner = (command, args, on) => {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stopped = false;
  createInterface({ input: child.stdout }).on("line", on.line);
  createInterface({ input: child.stderr }).on("line", (l) => on.trouble(`${command}: ${l}`));
  child.on("error", (e) => on.trouble(`${command}: ${e.message}`));
  child.on("exit", (code, signal) => {
    if (!stopped) on.trouble(`${command} ended (${signal ?? code})`);
  });
  return {
    stop: () => {
      stopped = true;
      child.kill();
    },
  };
};

/**
 * A private directory (0700, ours) with `se-nft` pointing at the `nft` on PATH, so that `nft
 * monitor` tells our transactions from anyone else's: in the first of `dirs` where one can be
 * made (a read-only root file system has no writable /tmp; the agent's run directory is). Plain
 * "nft" when there is none on PATH or no directory takes it: then every transaction looks
 * foreign and the watch vouches for no table (a verify reads the tables back each time).
 */
export function ownNftCommand(opts: { dirs?: readonly string[]; path?: string } = {}): string {
  const nft = (opts.path ?? process.env.PATH ?? "")
    .split(delimiter)
    .filter((d) => d !== "")
    .map((d) => join(d, "nft"))
    .find((p) => existsSync(p));
  if (!nft) return "nft";
  for (const parent of opts.dirs ?? [tmpdir()]) {
    try {
      const dir = mkdtempSync(join(parent, "static-egress-nft-"));
      const own = join(dir, OWN_NFT_NAME);
      symlinkSync(nft, own);
      process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
      return own;
    } catch {
      // not writable here: the next
    }
  }
  return "nft";
}

/** A point in the watch's history, taken just before a read. */
export interface WatchMark {
  readonly epoch: number;
  readonly links: number;
  readonly tables: number;
}

export interface KernelWatchOptions {
  /** The nft tables whose foreign changes count ("ip static_egress", "bridge static_egress_bind"). */
  tables: readonly string[];
  /** How long after (re)starting the monitors a mark is trusted (they subscribe some time after spawning). */
  settleMs?: number;
  /** The first wait before monitors that failed are started again (doubled on each failure in a row, to a minute). */
  restartMs?: number;
  /** Told why the watch lost its view (a monitor's stderr, or its end); it vouches for nothing until back. */
  onTrouble?: (why: string) => void;
  now?: () => number;
}

const VERB = /^(add|delete|destroy|replace|insert|update|flush|reset|rename) (\w+) (\w+) (\S+)/;
const GENERATION = /^# new generation \d+ by process \d+ \(([^)]*)\)/;

export class KernelWatch {
  private epoch = 0;
  private links = 0;
  private tables = 0;
  private trustedAt = Number.POSITIVE_INFINITY;
  private running = false;
  private streams: { stop: () => void }[] = [];
  private restart: NodeJS.Timeout | undefined;
  /** A transaction under way touched a watched table. */
  private touched = false;
  private readonly linkListeners = new Set<() => void>();
  /** Failures in a row, each before the monitors settled: the restart waits longer each time. */
  private failures = 0;

  constructor(
    private readonly spawnStream: StreamSpawner,
    private readonly opts: KernelWatchOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.begin();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.restart);
    for (const s of this.streams) s.stop();
    this.streams = [];
    this.epoch++;
  }

  /** Where the kernel's history stands now; undefined when the watch cannot vouch for what follows. */
  mark(): WatchMark | undefined {
    if (!this.running || this.now() < this.trustedAt) return undefined;
    return { epoch: this.epoch, links: this.links, tables: this.tables };
  }

  /** No link, address, route or rule has changed since `mark` (and the watch saw all of that time). */
  linksSince(mark: WatchMark | undefined): boolean {
    return mark !== undefined && this.running && mark.epoch === this.epoch && mark.links === this.links;
  }

  /** No process but ours has changed a watched table since `mark`. */
  tablesSince(mark: WatchMark | undefined): boolean {
    return mark !== undefined && this.running && mark.epoch === this.epoch && mark.tables === this.tables;
  }

  /** Called after each link, address, route or rule change (and when the watch lost its view). */
  onLinks(listener: () => void): void {
    this.linkListeners.add(listener);
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private begin(): void {
    const epoch = ++this.epoch;
    this.touched = false;
    this.trustedAt = this.now() + (this.opts.settleMs ?? 300);
    const trouble = (why: string) => {
      if (epoch !== this.epoch || !this.running) return;
      this.opts.onTrouble?.(why);
      if (this.now() >= this.trustedAt) this.failures = 0; // they had settled: a new run of failures
      // Events may have been lost: every mark so far is stale; start over after a pause.
      for (const s of this.streams) s.stop();
      this.streams = [];
      this.epoch++;
      this.trustedAt = Number.POSITIVE_INFINITY;
      this.changedLinks();
      const wait = Math.min(60_000, (this.opts.restartMs ?? 1_000) * 2 ** this.failures++);
      this.restart = setTimeout(() => {
        if (this.running) this.begin();
      }, wait);
      this.restart.unref();
    };
    this.streams = [
      this.spawnStream("ip", ["-4", "monitor", "link", "address", "route", "rule"], {
        line: () => {
          if (epoch !== this.epoch) return;
          this.links++;
          this.changedLinks();
        },
        trouble,
      }),
      this.spawnStream("nft", ["monitor"], {
        line: (line) => {
          if (epoch === this.epoch) this.onNftLine(line);
        },
        trouble,
      }),
    ];
  }

  private onNftLine(line: string): void {
    const generation = GENERATION.exec(line);
    if (generation) {
      if (this.touched && generation[1] !== OWN_NFT_NAME) this.tables++;
      this.touched = false;
      return;
    }
    if (line.trim() === "") return;
    const m = VERB.exec(line);
    // A line we cannot read might be about our table: counted as touching it.
    if (!m || m[2] === "ruleset" || this.opts.tables.includes(`${m[3]} ${m[4]}`)) this.touched = true;
  }

  private changedLinks(): void {
    for (const l of this.linkListeners) l();
  }
}
