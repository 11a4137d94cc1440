import { stringify } from "yaml";
import { refer } from "./common.js";
import type { ImportResult } from "./index.js";

/** The made objects as kubectl reads them: YAML documents, or a JSON `List`. */
export function formatObjects(result: ImportResult, output: "yaml" | "json"): string {
  const objects = result.made.map((m) => m.object);
  if (output === "json") return `${JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }, null, 2)}\n`;
  return objects.map((o) => stringify(o)).join("---\n");
}

/** One line per made object and per finding, then the counts: what `import` tells the user. */
export function formatReport(result: ImportResult): string {
  const lines = result.made.map((m) => `made     ${refer(m.object)}  <- ${m.from.join(", ")}`);
  for (const verdict of ["refused", "ignored", "todo"] as const) {
    for (const f of result.findings.filter((x) => x.verdict === verdict))
      lines.push(`${verdict.padEnd(8)} ${f.source}  ${f.field}: ${f.reason}`);
  }
  const count = (v: string) => result.findings.filter((f) => f.verdict === v).length;
  lines.push(
    `${result.made.length} made, ${count("refused")} refused, ${count("ignored")} ignored, ${count("todo")} to do`,
  );
  return `${lines.join("\n")}\n`;
}
