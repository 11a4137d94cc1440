import { readFileSync, watchFile, unwatchFile, statSync } from "node:fs";
import { parseDocuments, type KubeObject } from "../../api/objects.js";
import type { Logger } from "../../util/log.js";
import type { ClusterSource } from "../../api/source.js";

/**
 * Reads Kubernetes documents from a YAML file and reloads when it changes. A file that does
 * not parse is reported and ignored: the agent keeps the last good state (never flushes).
 * Writers should replace the file atomically (write + rename), as the lab does.
 */
export class FileSource implements ClusterSource {
  private current: KubeObject[] = [];
  private lastMtime = -1;

  constructor(
    private readonly path: string,
    private readonly logger: Logger,
    private readonly pollMs = 100,
  ) {}

  async start(onChange: () => void): Promise<void> {
    this.reload(true);
    watchFile(this.path, { interval: this.pollMs, persistent: true }, () => {
      if (this.reload(false)) onChange();
    });
  }

  private reload(first: boolean): boolean {
    try {
      const mtime = statSync(this.path).mtimeMs;
      if (!first && mtime === this.lastMtime) return false;
      this.lastMtime = mtime;
      this.current = parseDocuments(readFileSync(this.path, "utf8"), this.path);
      this.logger.info({ path: this.path, objects: this.current.length }, "cluster state loaded");
      return true;
    } catch (e) {
      if (first) throw e;
      this.logger.error(
        { path: this.path, err: (e as Error).message },
        "cannot read cluster state; keeping the last good one",
      );
      return false;
    }
  }

  objects(): readonly KubeObject[] {
    return this.current;
  }

  async stop(): Promise<void> {
    unwatchFile(this.path);
  }
}
