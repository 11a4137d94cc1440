import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FALLBACK_PLUGIN, InstallError, installPlugin, renderWrapper } from "./install.js";

const dir = mkdtempSync(join(tmpdir(), "se-cni-install-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("wrapper", () => {
  it("execs node on the plugin entry with the runtime's arguments", () => {
    expect(renderWrapper({ node: "/usr/bin/node", entry: "/opt/static-egress/dist/cni/main.js" })).toBe(
      "#!/bin/sh\n# static-egress chained CNI plugin (written by `static-egress cni " +
        "install`).\nexec '/usr/bin/node' '/opt/static-egress/dist/cni/main.js' \"$@\"\n",
    );
  });

  it("quotes paths for the shell", () => {
    expect(renderWrapper({ node: "/opt/my node", entry: "/it's/main.js" })).toContain(
      `exec '/opt/my node' '/it'\\''s/main.js' "$@"`,
    );
    expect(() => renderWrapper({ node: "node", entry: "/x.js" })).toThrow(InstallError);
  });

  it("installs the shim under the plugin's type and the wrapper beside it, both executable; the wrapper runs the entry with the runtime's environment", () => {
    const entry = join(dir, "entry.mjs");
    writeFileSync(
      entry,
      `process.stdout.write(JSON.stringify({ command: process.env.CNI_COMMAND, args: process.argv.slice(2) }));\n`,
    );
    const shim = join(dir, "shim");
    writeFileSync(shim, "#!/bin/sh\necho shim\n");
    const path = installPlugin(join(dir, "bin"), { entry, shim });
    expect(path).toBe(join(dir, "bin", "static-egress"));
    expect(readFileSync(path, "utf8")).toBe("#!/bin/sh\necho shim\n");
    const wrapper = join(dir, "bin", FALLBACK_PLUGIN);
    for (const f of [path, wrapper]) expect(statSync(f).mode & 0o777).toBe(0o755);
    const out = execFileSync(wrapper, ["x"], { env: { CNI_COMMAND: "VERSION" } }).toString();
    expect(JSON.parse(out)).toEqual({ command: "VERSION", args: ["x"] });
  });

  it("refuses an entry that is not built, or a shim that is not", () => {
    writeFileSync(join(dir, "entry2.mjs"), "");
    expect(() => installPlugin(join(dir, "bin2"), { entry: join(dir, "missing.js"), shim: join(dir, "shim") })).toThrow(
      /npm run build/,
    );
    expect(() =>
      installPlugin(join(dir, "bin2"), { entry: join(dir, "entry2.mjs"), shim: join(dir, "no-shim") }),
    ).toThrow(/build-cni-shim\.sh/);
  });
});
