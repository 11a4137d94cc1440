import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConflistError, runtimeConfigFile, withEntry, withoutEntry, type ChainEntry } from "./conflist.js";

const entry: ChainEntry = {
  agentSocket: "/run/static-egress/cni.sock",
  clusterCIDRs: ["10.244.0.0/16", "10.96.0.0/12"],
};
const cilium = {
  cniVersion: "0.3.1",
  name: "cilium",
  plugins: [
    { type: "cilium-cni", enable_debug: false },
    { type: "portmap", capabilities: { portMappings: true } },
  ],
};
const text = (x: unknown) => JSON.stringify(x, null, 2);

describe("runtimeConfigFile", () => {
  it("is the first config file by name, as libcni picks it; other files and dotfiles do not count", () => {
    expect(runtimeConfigFile(["20-b.conflist", "05-cilium.conflist", "10-a.conf", "README", ".05-x.conflist"])).toBe(
      "05-cilium.conflist",
    );
    expect(runtimeConfigFile(["99-x.json", "README.md"])).toBe("99-x.json");
    expect(runtimeConfigFile(["cni.sock", ".static-egress-1.tmp"])).toBeUndefined();
  });
});

describe("withEntry", () => {
  it("puts our entry last, keeps every other field and plugin in order", () => {
    const r = withEntry(text(cilium), "05-cilium.conflist", entry);
    expect(r.changed).toBe(true);
    const out = JSON.parse(r.text);
    expect(out).toEqual({
      ...cilium,
      plugins: [
        ...cilium.plugins,
        { type: "static-egress", agentSocket: entry.agentSocket, clusterCIDRs: entry.clusterCIDRs },
      ],
    });
  });

  it("is idempotent, and replaces an older entry wherever it is", () => {
    const once = withEntry(text(cilium), "f", entry);
    expect(withEntry(once.text, "f", entry)).toEqual({ text: once.text, changed: false });
    const stale = {
      ...cilium,
      plugins: [{ type: "static-egress", agentSocket: "/old.sock", clusterCIDRs: [] }, ...cilium.plugins],
    };
    const fixed = JSON.parse(withEntry(text(stale), "f", entry).text);
    expect(fixed.plugins.map((p: { type: string }) => p.type)).toEqual(["cilium-cni", "portmap", "static-egress"]);
    expect(fixed.plugins[2].agentSocket).toBe(entry.agentSocket);
  });

  it.each([
    ["{", /^f: not JSON/],
    ["[]", /^f: not a JSON object/],
    [
      text({ cniVersion: "0.3.1", name: "flannel", type: "flannel" }),
      /^f: a single-plugin configuration \(type "flannel"\); chain static-egress into a \.conflist/,
    ],
    [text({ cniVersion: "1.0.0", name: "x", plugins: [1] }), /^f: plugins\[0\] is not an object/],
    [text({ cniVersion: "1.0.0", name: "x", plugins: [] }), /^f: no plugin to chain after/],
  ])("refuses %s, naming the file and what is wrong", (input, message) => {
    expect(() => withEntry(input, "f", entry)).toThrow(ConflistError);
    expect(() => withEntry(input, "f", entry)).toThrow(message);
  });

  it("property: for any list, ours is last exactly once, the others keep their order, and unchaining gives them back", () => {
    const plugin = fc.record({
      type: fc.constantFrom("ptp", "bridge", "portmap", "bandwidth", "tuning", "static-egress"),
      x: fc.integer(),
    });
    fc.assert(
      fc.property(fc.array(plugin, { minLength: 1, maxLength: 6 }), (plugins) => {
        fc.pre(plugins.some((p) => p.type !== "static-egress"));
        const input = text({ cniVersion: "1.0.0", name: "k8s", plugins });
        const out = JSON.parse(withEntry(input, "f", entry).text) as { plugins: { type: string }[] };
        const others = plugins.filter((p) => p.type !== "static-egress");
        expect(out.plugins.filter((p) => p.type === "static-egress")).toHaveLength(1);
        expect(out.plugins.at(-1)!.type).toBe("static-egress");
        expect(out.plugins.slice(0, -1)).toEqual(others);
        expect(JSON.parse(withoutEntry(JSON.stringify(out), "f").text).plugins).toEqual(others);
      }),
    );
  });
});

describe("withoutEntry", () => {
  it("removes our entry and nothing else; unchanged when there is none", () => {
    const chained = withEntry(text(cilium), "f", entry).text;
    expect(JSON.parse(withoutEntry(chained, "f").text)).toEqual(cilium);
    expect(withoutEntry(text(cilium), "f")).toEqual({ text: text(cilium), changed: false });
  });
});
