import { CommandError, type CommandRunner } from "../util/exec.js";

/**
 * Everything the dataplane asks of the kernel, and nothing more: nft transactions and listings,
 * `ip` batches and JSON listings, the bridge FDB, /proc/sys writes and conntrack deletions.
 * Agents pass `commandKernel` (the real commands); unit tests pass the stateful fake in
 * test/support/fake-kernel.ts, and the lab tests keep both honest against the real kernel.
 */
export interface Kernel {
  /** One nft transaction (`nft -f -`): all of the script or none of it. */
  nft(script: string): Promise<void>;
  /**
   * `nft -j list <what>` (e.g. `table ip t`, `counters table ip t`): the `nftables` array, or
   * undefined when the table is not there. `stateless` leaves counter values out.
   */
  /** `terse`: sets and maps without their elements (a structure check reads no 30,000 elements). */
  nftList(what: string, opts?: { stateless?: boolean; terse?: boolean }): Promise<NftObject[] | undefined>;
  /**
   * `ip -batch -`: the lines in order. Not a transaction: the first failing line stops the
   * batch and the lines before it stay applied (callers order them so that no step opens a gap).
   */
  ip(lines: readonly string[]): Promise<void>;
  /** `ip -json <args>` (e.g. `-4 rule show`, `route get 10.0.0.1`). */
  ipJson<T>(args: readonly string[]): Promise<T[]>;
  /**
   * The device `ip route get <address>` names for each address, all in one process
   * (`ip -force -json -batch -`); an address without a route (unreachable) is left out.
   */
  routeDevices(addresses: readonly string[]): Promise<Map<string, string>>;
  /** `bridge -json <args>` (the FDB). */
  bridgeJson<T>(args: readonly string[]): Promise<T[]>;
  /** Writes /proc/sys files (e.g. `<procSysNet>/ipv4/conf/eth0/rp_filter`), all with one process; stops at the first that fails. */
  writeProcSys(file: string | readonly string[], value: string): Promise<void>;
  /**
   * Deletes the conntrack entries each filter (`conntrack -D` arguments) matches, all in one
   * `conntrack -R` run (a fixed three processes, `sh`, `cat` and `conntrack`, for any number of filters; none for none). A filter that
   * matches nothing is not an error.
   */
  deleteFlows(filters: readonly (readonly string[])[]): Promise<void>;
}

/** One object of an `nft -j` listing: `{ table: {...} }`, `{ set: {...} }`, `{ rule: {...} }`, ... */
export type NftObject = Record<string, unknown>;

/**
 * The real kernel, through the `nft`, `ip`, `bridge`, `sh` and `conntrack` commands. `nft`: the
 * command our transactions are run as (`ownNftCommand`, so that `nft monitor` can tell them apart).
 */
export function commandKernel(runner: CommandRunner, opts: { nft?: string } = {}): Kernel {
  const nft = opts.nft ?? "nft";
  const json = async <T>(command: string, args: readonly string[]): Promise<T[]> =>
    JSON.parse((await runner.run(command, ["-json", ...args])).stdout || "[]") as T[];
  return {
    async nft(script) {
      await runner.run(nft, ["-f", "-"], { input: script });
    },
    async nftList(what, opts = {}) {
      try {
        const { stdout } = await runner.run("nft", [
          "-j",
          ...(opts.stateless ? ["--stateless"] : []),
          ...(opts.terse ? ["--terse"] : []),
          "list",
          ...what.split(" "),
        ]);
        return (JSON.parse(stdout) as { nftables: NftObject[] }).nftables;
      } catch (e) {
        if (/No such file or directory/.test(String((e as Error).message))) return undefined;
        throw e;
      }
    },
    async ip(lines) {
      if (lines.length === 0) return;
      await runner.run("ip", ["-batch", "-"], { input: lines.join("\n") + "\n" });
    },
    ipJson: (args) => json("ip", args),
    async routeDevices(addresses) {
      const out = new Map<string, string>();
      if (addresses.length === 0) return out;
      let stdout: string;
      try {
        ({ stdout } = await runner.run("ip", ["-force", "-json", "-batch", "-"], {
          input: addresses.map((a) => `route get ${a}\n`).join(""),
        }));
      } catch (e) {
        // -force goes on after an address without a route and then exits 1: the others still printed theirs.
        if (!(e instanceof CommandError) || e.code !== 1) throw e;
        stdout = e.stdout;
      }
      // One JSON array per command that worked, a line each; `dst` says which address it answers.
      for (const line of stdout.split("\n")) {
        if (!line.trim()) continue;
        for (const r of JSON.parse(line) as { dst?: string; dev?: string }[])
          if (r.dst && r.dev && addresses.includes(r.dst)) out.set(r.dst, r.dev);
      }
      return out;
    },
    bridgeJson: (args) => json("bridge", args),
    async writeProcSys(file, value) {
      const files = typeof file === "string" ? [file] : file;
      if (files.length === 0) return;
      // Through the runner (so in the agent's namespace); works with a mounted /proc/sys/net.
      if (files.length === 1) await runner.run("sh", ["-c", `echo "$1" > "$0"`, files[0]!, value]);
      else
        await runner.run("sh", [
          "-c",
          `v="$1"; shift; for f; do echo "$v" > "$f" || exit 1; done`,
          "sh",
          value,
          ...files,
        ]);
    },
    async deleteFlows(filters) {
      if (filters.length === 0) return;
      // conntrack 1.4.7's batch input (-R): one line of `-D` arguments per filter. It opens its
      // file by name, and Node's stdin is a socket, which /dev/stdin cannot open: `cat` makes a pipe.
      const input = filters.map((f) => ["-D", ...f].join(" ") + "\n").join("");
      await runner.run("sh", ["-c", "cat | conntrack -R -"], { input });
    },
  };
}
