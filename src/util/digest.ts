import { createHash } from "node:crypto";

/** A digest of an object's planned content (sorted keys), stored on it as APPLIED_ANNOTATION. */
export function digest(o: unknown): string {
  const stable = JSON.stringify(o, (_k, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : v,
  );
  return createHash("sha256").update(stable).digest("hex").slice(0, 20);
}
