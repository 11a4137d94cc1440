import { watch, type FSWatcher } from "node:fs";
import { readdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../util/log.js";
import { ConflistError, runtimeConfigFile, withEntry, withoutEntry, type ChainEntry } from "./conflist.js";

/** What a chain or unchain did to the runtime's config file. */
export interface ConfDirResult {
  file: string;
  changed: boolean;
}

async function runtimeFile(dir: string): Promise<string> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new ConflistError(
      `${dir}: cannot read the CNI config directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const name = runtimeConfigFile(names);
  if (!name)
    throw new ConflistError(
      `${dir}: no CNI configuration yet (the cluster's CNI writes one; static-egress chains into it)`,
    );
  return join(dir, name);
}

/**
 * Rewrites the file atomically (a runtime never reads half a file) and keeps its mode. The
 * temporary name starts with a dot and has no config extension, so no runtime ever loads it.
 */
async function replaceFile(file: string, text: string, dir: string): Promise<void> {
  const mode = (await stat(file)).mode & 0o777;
  const tmp = join(dir, `.static-egress-${process.pid}.tmp`);
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** Chains our plugin last into the file the runtime uses; writes only when something changes. */
export async function chainConfDir(dir: string, entry: ChainEntry): Promise<ConfDirResult> {
  const file = await runtimeFile(dir);
  const next = withEntry(await readFile(file, "utf8"), file, entry);
  if (next.changed) await replaceFile(file, next.text, dir);
  return { file, changed: next.changed };
}

/** Removes our entry from the file the runtime uses (uninstall). */
export async function unchainConfDir(dir: string): Promise<ConfDirResult> {
  const file = await runtimeFile(dir);
  const next = withoutEntry(await readFile(file, "utf8"), file);
  if (next.changed) await replaceFile(file, next.text, dir);
  return { file, changed: next.changed };
}

/**
 * Keeps our entry in the runtime's config file: cluster CNIs (Cilium, Calico, Flannel, ...)
 * rewrite their file when they restart or upgrade, and drop entries they did not write. Checks
 * on every change in the directory and every `intervalMs`; a failure is logged and tried again.
 */
export class ConfDirKeeper {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private lastError = "";

  constructor(
    private readonly dir: string,
    private readonly entry: ChainEntry,
    private readonly logger: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  /** Chains once (errors are thrown, so a misconfigured agent says so at start), then keeps it. */
  async start(): Promise<ConfDirResult | undefined> {
    let first: ConfDirResult | undefined;
    try {
      first = await chainConfDir(this.dir, this.entry);
      this.logger.info({ file: first.file, changed: first.changed }, "CNI plugin chained");
    } catch (e) {
      if (!(e instanceof ConflistError)) throw e;
      // No config yet (the cluster CNI starts after us): the watch picks it up when it appears.
      this.logger.warn({ err: e.message }, "CNI plugin not chained yet");
      this.lastError = e.message;
    }
    try {
      this.watcher = watch(this.dir, () => this.check());
      this.watcher.on("error", (e) =>
        this.logger.warn({ err: e.message }, "watching the CNI config directory failed; checking by interval only"),
      );
    } catch (e) {
      this.logger.warn(
        { err: (e as Error).message },
        "cannot watch the CNI config directory; checking by interval only",
      );
    }
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
    return first;
  }

  /** Runs one check now (or right after the one running). */
  check(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          const r = await chainConfDir(this.dir, this.entry);
          if (r.changed)
            this.logger.warn(
              { file: r.file },
              "CNI plugin entry was missing or changed (the cluster CNI rewrote its file?); chained again",
            );
          this.lastError = "";
        } catch (e) {
          const message = (e as Error).message;
          if (message !== this.lastError) this.logger.warn({ err: message }, "cannot chain the CNI plugin");
          this.lastError = message;
        }
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
  }

  /** Waits for a running check (tests). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  stop(): void {
    this.watcher?.close();
    clearInterval(this.timer);
  }
}
