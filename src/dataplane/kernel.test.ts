import { describe, expect, it } from "vitest";
import { CommandError, type CommandRunner, type RunOptions } from "../util/exec.js";
import { commandKernel } from "./kernel.js";

/** Records each command with its input; answers from `answer`. */
function recorder(answer: (command: string, args: readonly string[]) => string = () => "[]") {
  const calls: { line: string; input?: string }[] = [];
  const runner: CommandRunner = {
    run: async (command, args, options?: RunOptions) => {
      calls.push({
        line: `${command} ${args.join(" ")}`,
        ...(options?.input !== undefined ? { input: options.input } : {}),
      });
      return { stdout: answer(command, args), stderr: "" };
    },
  };
  return { calls, kernel: commandKernel(runner) };
}

describe("the real kernel: the commands behind each call", () => {
  it("nft scripts and ip batches go in on stdin, one run each; an empty batch runs nothing", async () => {
    const { calls, kernel } = recorder();
    await kernel.nft("table ip t\n");
    await kernel.ip(["rule add priority 1 lookup 2", "route replace blackhole default table 2"]);
    await kernel.ip([]);
    expect(calls).toEqual([
      { line: "nft -f -", input: "table ip t\n" },
      { line: "ip -batch -", input: "rule add priority 1 lookup 2\nroute replace blackhole default table 2\n" },
    ]);
  });

  it("listings are JSON; a table that is not there is undefined, any other failure is thrown", async () => {
    const { calls, kernel } = recorder((command) =>
      command === "nft" ? '{"nftables":[{"metainfo":{}},{"table":{"name":"t"}}]}' : '[{"priority":0}]',
    );
    expect(await kernel.nftList("table ip t", { stateless: true })).toEqual([
      { metainfo: {} },
      { table: { name: "t" } },
    ]);
    expect(await kernel.ipJson(["-4", "rule", "show"])).toEqual([{ priority: 0 }]);
    expect(await kernel.bridgeJson(["fdb", "show"])).toEqual([{ priority: 0 }]);
    expect(calls.map((c) => c.line)).toEqual([
      "nft -j --stateless list table ip t",
      "ip -json -4 rule show",
      "bridge -json fdb show",
    ]);

    const missing = commandKernel({
      run: async (c, a) => Promise.reject(new CommandError(c, a, 1, "Error: No such file or directory")),
    });
    expect(await missing.nftList("table ip t")).toBeUndefined();
    const broken = commandKernel({
      run: async (c, a) => Promise.reject(new CommandError(c, a, 1, "Error: Operation not permitted")),
    });
    await expect(broken.nftList("table ip t")).rejects.toThrow(/Operation not permitted/);
  });

  it("asks for every instance's route in one ip batch; an address without a route is left out, other failures thrown", async () => {
    const calls: { line: string; input?: string }[] = [];
    // `ip -force` goes on past a failing line, prints the others and exits 1.
    const partial = commandKernel({
      run: async (c, a, o) => {
        calls.push({ line: `${c} ${a.join(" ")}`, ...(o?.input !== undefined ? { input: o.input } : {}) });
        throw new CommandError(
          c,
          a,
          1,
          "RTNETLINK answers: Network is unreachable\nCommand failed -:2\n",
          '[{"dst":"10.0.0.1","dev":"eth0","flags":[]}]\n[{"type":"local","dst":"10.0.0.3","dev":"lo","flags":[]}]\n',
        );
      },
    });
    expect(await partial.routeDevices(["10.0.0.1", "10.0.0.2", "10.0.0.3"])).toEqual(
      new Map([
        ["10.0.0.1", "eth0"],
        ["10.0.0.3", "lo"],
      ]),
    );
    expect(calls).toEqual([
      { line: "ip -force -json -batch -", input: "route get 10.0.0.1\nroute get 10.0.0.2\nroute get 10.0.0.3\n" },
    ]);
    const { calls: none, kernel } = recorder();
    expect(await kernel.routeDevices([])).toEqual(new Map());
    expect(none).toEqual([]);
    const missing = commandKernel({
      run: async (c, a) => Promise.reject(new CommandError(c, a, null, "spawn ip ENOENT")),
    });
    await expect(missing.routeDevices(["10.0.0.1"])).rejects.toThrow(/ENOENT/);
  });

  it("writes several /proc/sys files with one process", async () => {
    const { calls, kernel } = recorder(() => "");
    await kernel.writeProcSys(["/proc/sys/net/ipv4/conf/a/rp_filter", "/proc/sys/net/ipv4/conf/b.1/rp_filter"], "2");
    await kernel.writeProcSys([], "2");
    expect(calls).toEqual([
      {
        line:
          'sh -c v="$1"; shift; for f; do echo "$v" > "$f" || exit 1; done sh 2 ' +
          "/proc/sys/net/ipv4/conf/a/rp_filter /proc/sys/net/ipv4/conf/b.1/rp_filter",
      },
    ]);
  });

  it("writes /proc/sys through the runner (the agent's namespace), and deletes flows with one conntrack batch (none for no filter)", async () => {
    const { calls, kernel } = recorder(() => "");
    await kernel.writeProcSys("/host/proc/sys/net/ipv4/conf/eth0.100/rp_filter", "2");
    await kernel.deleteFlows([]);
    await kernel.deleteFlows([
      ["--mark", "0x10010000/0x1fff0000"],
      ["-s", "10.0.0.5", "--mark", "0x10000000/0x10000000"],
    ]);
    expect(calls).toEqual([
      { line: 'sh -c echo "$1" > "$0" /host/proc/sys/net/ipv4/conf/eth0.100/rp_filter 2' },
      {
        line: "sh -c cat | conntrack -R -",
        input: "-D --mark 0x10010000/0x1fff0000\n-D -s 10.0.0.5 --mark 0x10000000/0x10000000\n",
      },
    ]);
  });
});
