import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TokenError } from "./errors.js";
import { loadToken, tokenSource } from "./token.js";

const dir = mkdtempSync(join(tmpdir(), "se-token-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("token loading", () => {
  it("reads DIGITALOCEAN_TOKEN from the environment", () => {
    expect(loadToken({ env: { DIGITALOCEAN_TOKEN: " dop_v1_abc\n" } })).toBe("dop_v1_abc");
    expect(loadToken({ env: { OTHER: "x1" }, envVar: "OTHER" })).toBe("x1");
  });

  it("prefers a mounted Secret file and trims its newline", () => {
    const file = join(dir, "token");
    writeFileSync(file, "dop_v1_fromfile\n");
    expect(loadToken({ file, env: { DIGITALOCEAN_TOKEN: "dop_v1_env" } })).toBe("dop_v1_fromfile");
  });

  it("fails with a message naming the source but never the content", () => {
    const file = join(dir, "bad");
    writeFileSync(file, "dop_v1_secret part2");
    expect(() => loadToken({ file })).toThrow(TokenError);
    try {
      loadToken({ file });
    } catch (err) {
      expect(String((err as Error).message)).toContain(file);
      expect(String((err as Error).message)).not.toContain("dop_v1_secret");
    }
    expect(() => loadToken({ env: {} })).toThrow(/DIGITALOCEAN_TOKEN/);
    expect(() => loadToken({ env: { DIGITALOCEAN_TOKEN: "  " } })).toThrow(TokenError);
    expect(() => loadToken({ file: join(dir, "missing") })).toThrow(TokenError);
  });

  it("re-reads a rotated token file after refreshMs", async () => {
    const file = join(dir, "rotating");
    writeFileSync(file, "dop_v1_one");
    let now = 0;
    const source = tokenSource({ file, refreshMs: 1000, now: () => now });
    expect(await source()).toBe("dop_v1_one");
    writeFileSync(file, "dop_v1_two");
    now = 500;
    expect(await source()).toBe("dop_v1_one");
    now = 1500;
    expect(await source()).toBe("dop_v1_two");
  });
});
