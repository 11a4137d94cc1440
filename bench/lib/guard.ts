/**
 * Runs a benchmark body with its cleanup guaranteed: in a finally block, on SIGINT/SIGTERM, and
 * when the time budget runs out (the watchdog). Cleanup runs once, whichever comes first.
 */
export interface GuardOptions {
  /** Hard limit for the whole benchmark; cleanup then exit 124. */
  maxSeconds: number;
  log?: (line: string) => void;
}

export async function guarded<T>(cleanup: () => Promise<void>, body: () => Promise<T>, opts: GuardOptions): Promise<T> {
  const log = opts.log ?? ((l: string) => console.error(l));
  let cleaned: Promise<void> | undefined;
  const cleanOnce = (): Promise<void> =>
    (cleaned ??= cleanup().catch((e: unknown) => log(`cleanup failed: ${(e as Error).message}`)));
  const bail = (why: string, code: number) => {
    log(`${why}: cleaning up`);
    void cleanOnce().then(() => process.exit(code));
  };
  const onSigint = () => bail("interrupted (SIGINT)", 130);
  const onSigterm = () => bail("terminated (SIGTERM)", 143);
  process.once("SIGINT", onSigint);
  process.once("SIGTERM", onSigterm);
  const watchdog = setTimeout(() => bail(`time budget of ${opts.maxSeconds}s exceeded`, 124), opts.maxSeconds * 1000);
  watchdog.unref();
  try {
    return await body();
  } finally {
    clearTimeout(watchdog);
    await cleanOnce();
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigterm);
  }
}
