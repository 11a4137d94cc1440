import { formatRange, normalize, parseCidr, type Range } from "../util/ipv4.js";
import { CommandError, type CommandRunner } from "../util/exec.js";

/**
 * The quarantine: pods whose addresses the node agent has not (yet) programmed, and whose
 * traffic to anything outside the cluster is therefore dropped. The CNI plugin adds a pod here
 * when it cannot get an answer from the agent; the agent removes it once its datapath holds
 * the pod. Cluster-internal traffic (DNS, Services, other pods, the node) keeps working.
 *
 * Why a table of its own and not a set in the agent's `ip static_egress`: the agent replaces
 * its table wholesale (delete + create in one transaction) when it starts and when it repairs
 * drift. An element the plugin added between the agent reading the kernel and that replacement
 * would vanish, and a vanished quarantine entry is a leak. Nobody ever replaces this table:
 * the plugin only adds elements, the agent only deletes the ones it vouches for and rewrites
 * its copy of the cluster ranges and its one rule in place, each change one atomic transaction.
 * So no writer can undo another's change, and no lock is needed.
 */

const QUARANTINE_TABLE = "static_egress_quarantine";

/** One quarantined address; the comment (pod namespace/name) is for people reading `nft list`. */
export interface QuarantineEntry {
  ip: string;
  comment?: string;
}

/** nft element comments hold at most 128 characters. */
const MAX_COMMENT = 128;

export function quarantineComment(namespace: string, name: string): string {
  const text = `${namespace}/${name}`;
  return text.length <= MAX_COMMENT ? text : `${text.slice(0, MAX_COMMENT - 3)}...`;
}

const RULE = `ip saddr @pods ip daddr != @cluster counter name "drops" drop`;

/** Declarations only: adding them again is a no-op, so this never duplicates anything. */
function declarations(name: string): string {
  return (
    `table ip ${name} {\n` +
    `  set cluster {\n    type ipv4_addr; flags interval;\n  }\n` +
    `  set pods {\n    type ipv4_addr;\n  }\n` +
    `  counter drops {\n  }\n` +
    // After destination NAT, as the agent's own marking: a Service is judged by its real backend.
    `  chain hold {\n    type filter hook prerouting priority dstnat + 5; policy accept;\n  }\n` +
    `}\n`
  );
}

function clusterElements(name: string, cluster: readonly Range[]): string {
  const ranges = normalize(cluster);
  return ranges.length === 0 ? "" : `add element ip ${name} cluster { ${ranges.map(formatRange).join(", ")} }\n`;
}

function element(e: QuarantineEntry): string {
  // Names are DNS labels/subdomains (checked at the edge); quotes are stripped regardless.
  return e.comment ? `${e.ip} comment "${e.comment.replace(/["\\]/g, "").slice(0, MAX_COMMENT)}"` : e.ip;
}

/**
 * Quarantines addresses in an existing table. Add, delete, add again: an element that is
 * already there (an earlier pod that had the address) gets the new comment, in one transaction.
 */
export function renderHold(name: string, entries: readonly QuarantineEntry[]): string {
  return entries
    .map(
      (e) =>
        `add element ip ${name} pods { ${e.ip} }\ndelete element ip ${name} pods { ${e.ip} }\nadd element ip ${name} pods { ${element(e)} }\n`,
    )
    .join("");
}

/**
 * Creates the table with everything in it, when nobody has yet (the agent never ran on this
 * node). `create` fails if the table exists, which aborts the whole transaction: then someone
 * else was faster and `renderHold` is used instead. The rule is added only here and by `sync`
 * (after a flush), so it is never doubled.
 */
export function renderBootstrap(name: string, cluster: readonly Range[], entries: readonly QuarantineEntry[]): string {
  return `create table ip ${name}\n${declarations(name)}add rule ip ${name} hold ${RULE}\n${clusterElements(name, cluster)}${renderHold(name, entries)}`;
}

/** Removes addresses from the quarantine; addresses not in it are fine (add before delete). */
export function renderRelease(name: string, ips: readonly string[]): string {
  return ips.map((ip) => `add element ip ${name} pods { ${ip} }\ndelete element ip ${name} pods { ${ip} }\n`).join("");
}

/**
 * The agent's view of the table: declared if missing, its cluster ranges and its one rule
 * rewritten in place. The quarantined pods are left as they are.
 */
export function renderSync(name: string, cluster: readonly Range[]): string {
  return `${declarations(name)}flush set ip ${name} cluster\n${clusterElements(name, cluster)}flush chain ip ${name} hold\nadd rule ip ${name} hold ${RULE}\n`;
}

export function parseClusterCIDRs(cidrs: readonly string[]): Range[] {
  return cidrs.map(parseCidr);
}

/** Elements of `nft -j list set`: a bare value, or `{elem: {val, comment}}` when commented. */
export function parseQuarantineListing(json: string): QuarantineEntry[] {
  const doc = JSON.parse(json) as { nftables?: { set?: { elem?: unknown[] } }[] };
  const set = doc.nftables?.find((e) => e.set)?.set;
  const out: QuarantineEntry[] = [];
  for (const el of set?.elem ?? []) {
    if (typeof el === "string") out.push({ ip: el });
    else {
      const inner = (el as { elem?: { val?: unknown; comment?: unknown } }).elem;
      if (typeof inner?.val === "string")
        out.push({ ip: inner.val, ...(typeof inner.comment === "string" ? { comment: inner.comment } : {}) });
    }
  }
  return out;
}

function isMissing(e: unknown): boolean {
  return e instanceof CommandError && /No such file or directory/.test(e.stderr);
}

function isExisting(e: unknown): boolean {
  return e instanceof CommandError && /File exists/.test(e.stderr);
}

/** The quarantine table of this node's network namespace, through `nft`. */
export class QuarantineTable {
  constructor(
    private readonly runner: CommandRunner,
    readonly name = QUARANTINE_TABLE,
  ) {}

  private async nft(script: string): Promise<void> {
    await this.runner.run("nft", ["-f", "-"], { input: script });
  }

  /**
   * Quarantines the entries. When the table does not exist yet, it is created with the given
   * cluster ranges (the plugin's `clusterCIDRs`); if someone creates it meanwhile, the entries
   * are added to theirs. Returns whether this call created the table.
   */
  async hold(
    entries: readonly QuarantineEntry[],
    bootstrapCluster: readonly Range[] = [],
  ): Promise<{ created: boolean }> {
    if (entries.length === 0) return { created: false };
    try {
      await this.nft(renderHold(this.name, entries));
      return { created: false };
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
    try {
      await this.nft(renderBootstrap(this.name, bootstrapCluster, entries));
      return { created: true };
    } catch (e) {
      if (!isExisting(e)) throw e;
    }
    await this.nft(renderHold(this.name, entries));
    return { created: false };
  }

  /** Releases addresses; a missing table holds nobody, so there is nothing to do then. */
  async release(ips: readonly string[]): Promise<void> {
    if (ips.length === 0) return;
    try {
      await this.nft(renderRelease(this.name, ips));
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
  }

  /** The quarantined addresses, or undefined when the table does not exist. */
  async list(): Promise<QuarantineEntry[] | undefined> {
    try {
      const { stdout } = await this.runner.run("nft", ["-j", "list", "set", "ip", this.name, "pods"]);
      return parseQuarantineListing(stdout);
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** The agent's part: the table exists, knows the cluster's ranges, and has exactly its rule. */
  async sync(cluster: readonly Range[]): Promise<void> {
    await this.nft(renderSync(this.name, cluster));
  }

  /** Packets dropped because their pod was quarantined. */
  async drops(): Promise<number> {
    try {
      const { stdout } = await this.runner.run("nft", ["-j", "list", "counter", "ip", this.name, "drops"]);
      const entry = (JSON.parse(stdout) as { nftables: { counter?: { packets: number } }[] }).nftables.find(
        (e) => e.counter,
      );
      return entry?.counter?.packets ?? 0;
    } catch (e) {
      if (isMissing(e)) return 0;
      throw e;
    }
  }

  /** Uninstall: no pod is held any more. */
  async remove(): Promise<void> {
    await this.nft(`table ip ${this.name}\ndelete table ip ${this.name}\n`);
  }
}
