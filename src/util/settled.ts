/**
 * `Promise.all` that rejects (with the first failure, in order) only once every promise has
 * settled: nothing started beside a failed step is still writing when the caller goes on, or
 * when its retry starts.
 */
export async function settled<T extends readonly Promise<unknown>[]>(
  promises: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === "rejected") throw r.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}
