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
