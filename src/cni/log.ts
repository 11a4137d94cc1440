/**
 * The plugin's logger: the few pino methods it uses, so pino's `Logger` fits (tests inject
 * pino's silent logger), and a minimal JSON-lines writer for the executable. The plugin runs
 * once per pod on the pod's start path; loading pino costs about 100 ms there, more than all of
 * the plugin's own modules. The lines have pino's shape (level, time, pid, name, msg).
 */
export interface PluginLogger {
  child(bindings: Record<string, unknown>): PluginLogger;
  debug(obj: unknown, msg?: string): void;
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
}

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;
type LevelName = keyof typeof LEVELS;

export function isLevelName(s: string): s is LevelName {
  return s in LEVELS;
}

export function jsonLinesLogger(
  opts: { name: string; level: LevelName | "silent"; write: (line: string) => void; now?: () => number; pid?: number },
  bindings: Record<string, unknown> = {},
): PluginLogger {
  const threshold = opts.level === "silent" ? Infinity : LEVELS[opts.level];
  const emit = (level: LevelName) => (obj: unknown, msg?: string) => {
    if (LEVELS[level] < threshold) return;
    const fields =
      typeof obj === "string"
        ? { msg: obj }
        : { ...(obj as Record<string, unknown>), ...(msg !== undefined ? { msg } : {}) };
    opts.write(
      JSON.stringify({
        level: LEVELS[level],
        time: (opts.now ?? Date.now)(),
        pid: opts.pid ?? process.pid,
        name: opts.name,
        ...bindings,
        ...fields,
      }) + "\n",
    );
  };
  return {
    child: (more) => jsonLinesLogger(opts, { ...bindings, ...more }),
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
  };
}
