import { isIPv4 } from "node:net";
import type { FetchLike } from "./transport.js";
import { StaticEgressError } from "../../util/errors.js";

/**
 * The droplet metadata service (link-local, no token): what a droplet learns about itself. Used
 * by the node agent to publish its anchor IP, the address traffic to a reserved IP arrives at.
 */

export const METADATA_URL = "http://169.254.169.254/metadata/v1";

export interface MetadataOptions {
  /** Metadata root (default http://169.254.169.254/metadata/v1); the stand-in's per-droplet URL in tests. */
  baseUrl?: string;
  fetch?: FetchLike;
  /** Per request (default 2000 ms: the service answers from the hypervisor, fast or not at all). */
  timeoutMs?: number;
}

export interface AnchorIPv4 {
  address: string;
  netmask?: string;
  gateway?: string;
}

export class MetadataError extends StaticEgressError {
  constructor(
    message: string,
    readonly url: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "MetadataError";
  }
}

/** GETs one path as text; undefined on 404 (the droplet has no such item). */
async function readText(path: string, opts: MetadataOptions): Promise<string | undefined> {
  const url = `${(opts.baseUrl ?? METADATA_URL).replace(/\/+$/, "")}/${path}`;
  const doFetch = opts.fetch ?? ((r: Request) => globalThis.fetch(r));
  let res: Response;
  try {
    res = await doFetch(new Request(url, { signal: AbortSignal.timeout(opts.timeoutMs ?? 2_000) }));
  } catch (err) {
    throw new MetadataError(`metadata service: GET ${url} failed: ${(err as Error).message}`, url, { cause: err });
  }
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new MetadataError(`metadata service: GET ${url} answered ${res.status}`, url);
  }
  return (await res.text()).trim();
}

function ipv4(text: string | undefined, path: string, opts: MetadataOptions): string | undefined {
  if (text === undefined || text === "") return undefined;
  if (!isIPv4(text)) {
    const url = `${(opts.baseUrl ?? METADATA_URL).replace(/\/+$/, "")}/${path}`;
    throw new MetadataError(
      `metadata service: GET ${url} answered ${JSON.stringify(text.slice(0, 64))}, not an IPv4 address`,
      url,
    );
  }
  return text;
}

/**
 * The droplet's anchor IPv4 (`interfaces/public/0/anchor_ipv4/*`), or undefined when it has none
 * (404: no public interface or no anchor). The netmask and gateway are optional extras.
 */
export async function readAnchorIPv4(opts: MetadataOptions = {}): Promise<AnchorIPv4 | undefined> {
  const base = "interfaces/public/0/anchor_ipv4";
  const address = ipv4(await readText(`${base}/address`, opts), `${base}/address`, opts);
  if (address === undefined) return undefined;
  const [netmask, gateway] = await Promise.all(
    (["netmask", "gateway"] as const).map(async (k) =>
      ipv4(await readText(`${base}/${k}`, opts), `${base}/${k}`, opts),
    ),
  );
  return { address, ...(netmask ? { netmask } : {}), ...(gateway ? { gateway } : {}) };
}

/** The droplet's id (`/id`), as the decimal string that also appears in a node's providerID. */
export async function readDropletId(opts: MetadataOptions = {}): Promise<string> {
  const text = await readText("id", opts);
  const url = `${(opts.baseUrl ?? METADATA_URL).replace(/\/+$/, "")}/id`;
  if (text === undefined) throw new MetadataError(`metadata service: GET ${url} answered 404; is this a droplet?`, url);
  if (!/^\d{1,19}$/.test(text))
    throw new MetadataError(
      `metadata service: GET ${url} answered ${JSON.stringify(text.slice(0, 64))}, not a droplet id`,
      url,
    );
  return text;
}
