import { describe, expect, it } from "vitest";
import { parseCidr } from "../util/ipv4.js";
import { CommandError, type CommandRunner } from "../util/exec.js";
import {
  parseQuarantineListing,
  QuarantineTable,
  quarantineComment,
  renderBootstrap,
  renderHold,
  renderRelease,
  renderSync,
} from "./quarantine.js";

describe("scripts", () => {
  it("hold replaces an element's comment in one transaction", () => {
    expect(renderHold("q", [{ ip: "10.244.1.2", comment: "payments/pay-1" }])).toBe(
      'add element ip q pods { 10.244.1.2 }\ndelete element ip q pods { 10.244.1.2 }\nadd element ip q pods { 10.244.1.2 comment "payments/pay-1" }\n',
    );
  });

  it("bootstrap creates (never declares) the table, so it aborts if anyone was faster", () => {
    const s = renderBootstrap(
      "q",
      [parseCidr("10.96.0.0/12"), parseCidr("10.244.0.0/16"), parseCidr("10.244.1.0/24")],
      [{ ip: "10.244.1.2" }],
    );
    expect(s.startsWith("create table ip q\n")).toBe(true);
    expect(s).toContain('add rule ip q hold ip saddr @pods ip daddr != @cluster counter name "drops" drop\n');
    // Overlapping ranges are merged: interval sets refuse overlaps.
    expect(s).toContain("add element ip q cluster { 10.96.0.0-10.111.255.255, 10.244.0.0-10.244.255.255 }\n");
    expect(s.match(/add rule/g)).toHaveLength(1);
  });

  it("sync rewrites the cluster ranges and the one rule, and leaves the held pods alone", () => {
    const s = renderSync("q", [parseCidr("10.0.0.0/24")]);
    expect(s).toContain(
      "flush set ip q cluster\nadd element ip q cluster { 10.0.0.0-10.0.0.255 }\nflush chain ip q hold\nadd rule ip q hold ",
    );
    expect(s).not.toMatch(/flush set ip q pods|delete table|create table/);
    expect(renderSync("q", [])).not.toContain("add element");
  });

  it("release adds before it deletes, so a missing element is no error", () => {
    expect(renderRelease("q", ["10.244.1.2"])).toBe(
      "add element ip q pods { 10.244.1.2 }\ndelete element ip q pods { 10.244.1.2 }\n",
    );
  });

  it("comments fit nft's 128 characters", () => {
    expect(quarantineComment("payments", "pay-1")).toBe("payments/pay-1");
    const long = quarantineComment("ns", "p".repeat(200));
    expect(long).toHaveLength(128);
    expect(long.endsWith("...")).toBe(true);
  });
});

describe("listing", () => {
  it("reads bare and commented elements", () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: "1.0.6" } },
        {
          set: {
            family: "ip",
            name: "pods",
            table: "q",
            type: "ipv4_addr",
            elem: ["10.244.1.3", { elem: { val: "10.244.1.2", comment: "payments/pay-1" } }],
          },
        },
      ],
    });
    expect(parseQuarantineListing(json)).toEqual([
      { ip: "10.244.1.3" },
      { ip: "10.244.1.2", comment: "payments/pay-1" },
    ]);
    expect(parseQuarantineListing(JSON.stringify({ nftables: [{ set: { name: "pods" } }] }))).toEqual([]);
  });
});

/** A runner that plays a kernel: the table exists or not, and who wins a creation race. */
function fakeNft(state: { exists: boolean; raceLost?: boolean }) {
  const scripts: string[] = [];
  const runner: CommandRunner = {
    run: async (cmd, args, opts) => {
      const script = opts?.input ?? "";
      scripts.push(script || args.join(" "));
      const fail = (stderr: string) => Promise.reject(new CommandError(cmd, args, 1, stderr));
      if (script.startsWith("create table")) {
        if (state.exists || state.raceLost) {
          state.exists = true;
          return fail("Error: Could not process rule: File exists");
        }
        state.exists = true;
        return { stdout: "", stderr: "" };
      }
      if (!state.exists && !script.startsWith("table ip"))
        return fail("Error: Could not process rule: No such file or directory");
      if (args.includes("-j"))
        return { stdout: JSON.stringify({ nftables: [{ set: { elem: ["10.244.1.2"] } }] }), stderr: "" };
      return { stdout: "", stderr: "" };
    },
  };
  return { runner, scripts };
}

describe("QuarantineTable", () => {
  it("adds to an existing table", async () => {
    const nft = fakeNft({ exists: true });
    expect(await new QuarantineTable(nft.runner, "q").hold([{ ip: "10.244.1.2" }])).toEqual({ created: false });
    expect(nft.scripts).toHaveLength(1);
  });

  it("creates the table when the agent never ran", async () => {
    const nft = fakeNft({ exists: false });
    expect(await new QuarantineTable(nft.runner, "q").hold([{ ip: "10.244.1.2" }], [parseCidr("10.0.0.0/8")])).toEqual({
      created: true,
    });
    expect(nft.scripts[1]).toMatch(/^create table ip q\n/);
  });

  it("adds to the other's table when it lost the creation race", async () => {
    const nft = fakeNft({ exists: false, raceLost: true });
    expect(await new QuarantineTable(nft.runner, "q").hold([{ ip: "10.244.1.2" }])).toEqual({ created: false });
    expect(nft.scripts.map((s) => s.split("\n")[0])).toEqual([
      "add element ip q pods { 10.244.1.2 }",
      "create table ip q",
      "add element ip q pods { 10.244.1.2 }",
    ]);
  });

  it("treats a missing table as holding nobody", async () => {
    const t = new QuarantineTable(fakeNft({ exists: false }).runner, "q");
    expect(await t.list()).toBeUndefined();
    await expect(t.release(["10.244.1.2"])).resolves.toBeUndefined();
    expect(await t.drops()).toBe(0);
  });

  it("passes other failures on", async () => {
    const runner: CommandRunner = {
      run: (cmd, args) => Promise.reject(new CommandError(cmd, args, 1, "Error: Operation not permitted")),
    };
    await expect(new QuarantineTable(runner, "q").hold([{ ip: "10.244.1.2" }])).rejects.toThrow(
      /Operation not permitted/,
    );
    await expect(new QuarantineTable(runner, "q").list()).rejects.toThrow(/Operation not permitted/);
  });
});
