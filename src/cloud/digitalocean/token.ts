import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { TokenError } from "./errors.js";

const TOKEN_ENV_VAR = "DIGITALOCEAN_TOKEN";

export interface TokenSourceOptions {
  /** Environment to read (default process.env). */
  env?: Record<string, string | undefined>;
  /** Variable holding the token (default DIGITALOCEAN_TOKEN). */
  envVar?: string;
  /** File holding the token, e.g. a Kubernetes Secret mounted as a volume. Wins over the variable. */
  file?: string;
}

/**
 * Reads the API token once: from `file` when given, else from the environment variable.
 * Surrounding whitespace (the newline of a mounted Secret) is dropped. Errors name the source,
 * never the content.
 */
export function loadToken(opts: TokenSourceOptions = {}): string {
  if (opts.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.file, "utf8");
    } catch (err) {
      throw new TokenError(`cannot read the DigitalOcean token file ${opts.file}`, { cause: err });
    }
    return checked(text, `token file ${opts.file}`);
  }
  const envVar = opts.envVar ?? TOKEN_ENV_VAR;
  const value = (opts.env ?? process.env)[envVar];
  if (value === undefined) throw new TokenError(`no DigitalOcean token: set ${envVar} or give a token file`);
  return checked(value, `environment variable ${envVar}`);
}

/**
 * A token provider for the client that re-reads a mounted Secret file at most every
 * `refreshMs`, so a rotated token is picked up without a restart. Without `file` it returns
 * the environment token.
 */
export function tokenSource(
  opts: TokenSourceOptions & { refreshMs?: number; now?: () => number } = {},
): () => Promise<string> {
  if (opts.file === undefined) {
    const token = loadToken(opts);
    return () => Promise.resolve(token);
  }
  const file = opts.file;
  const refreshMs = opts.refreshMs ?? 60_000;
  const now = opts.now ?? Date.now;
  let cached: { token: string; at: number } | undefined;
  return async () => {
    if (cached && now() - cached.at < refreshMs) return cached.token;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      // Keep serving the last good token while the kubelet swaps the Secret's symlinks.
      if (cached) return cached.token;
      throw new TokenError(`cannot read the DigitalOcean token file ${file}`, { cause: err });
    }
    cached = { token: checked(text, `token file ${file}`), at: now() };
    return cached.token;
  };
}

function checked(raw: string, source: string): string {
  const token = raw.trim();
  if (token === "") throw new TokenError(`the DigitalOcean token from ${source} is empty`);
  if (/\s/.test(token)) throw new TokenError(`the DigitalOcean token from ${source} contains whitespace`);
  return token;
}
