import { pino, type Logger } from "pino";

export type { Logger };

/** JSON logs on stderr; the level comes from STATIC_EGRESS_LOG_LEVEL (default info). */
export function createLogger(name: string, level = process.env.STATIC_EGRESS_LOG_LEVEL ?? "info"): Logger {
  return pino(
    {
      name,
      level,
      redact: { paths: ["token", "*.token", "headers.authorization", "*.headers.authorization"], censor: "[redacted]" },
    },
    pino.destination(2),
  );
}

export const silentLogger: Logger = pino({ level: "silent" });
