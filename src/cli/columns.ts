/** Rows as columns padded to their widest cell (the first row is the header), `gap` spaces apart. */
export function columns(rows: readonly (readonly string[])[], gap = 3): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join(" ".repeat(gap))
        .trimEnd(),
    )
    .join("\n");
}
