import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { InstallError, installWrapper, renderWrapper } from "./install.js";

const dir = mkdtempSync(join(tmpdir(), "se-cni-install-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("wrapper", () => {
  it("execs node on the plugin entry with the runtime's arguments", () => {
    expect(renderWrapper({ node: "/usr/bin/node", entry: "/opt/static-egress/dist/cni/main.js" })).toBe(
      "#!/bin/sh\n# static-egress chained CNI plugin (written by `static-egress cni install`).\nexec '/usr/bin/node' '/opt/static-egress/dist/cni/main.js' \"$@\"\n",
    );
  });

  it("quotes paths for the shell", () => {
    expect(renderWrapper({ node: "/opt/my node", entry: "/it's/main.js" })).toContain(`exec '/opt/my node' '/it'\\''s/main.js' "$@"`);
    expect(() => renderWrapper({ node: "node", entry: "/x.js" })).toThrow(InstallError);
  });

  it("is installed executable, under the plugin's type, and runs the entry with the runtime's environment", () => {
    const entry = join(dir, "entry.mjs");
    writeFileSync(entry, `process.stdout.write(JSON.stringify({ command: process.env.CNI_COMMAND, args: process.argv.slice(2) }));\n`);
    const path = installWrapper(join(dir, "bin"), { entry });
    expect(path).toBe(join(dir, "bin", "static-egress"));
    expect(statSync(path).mode & 0o777).toBe(0o755);
    const out = execFileSync(path, ["x"], { env: { CNI_COMMAND: "VERSION" } }).toString();
    expect(JSON.parse(out)).toEqual({ command: "VERSION", args: ["x"] });
  });

  it("refuses an entry that is not built", () => {
    expect(() => installWrapper(join(dir, "bin2"), { entry: join(dir, "missing.js") })).toThrow(/npm run build/);
  });
});
