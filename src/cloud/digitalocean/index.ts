export { DigitalOceanClient, DIGITALOCEAN_API_URL, type ActionRef, type DigitalOceanClientOptions, type WaitOptions } from "./client.js";
export { DigitalOceanProvider, validateFleetSpec, type DigitalOceanProviderOptions } from "./provider.js";
export {
  ActionErroredError,
  ActionTimeoutError,
  DigitalOceanApiError,
  DigitalOceanNetworkError,
  isNotFound,
  isTransientError,
  ResourceWaitTimeoutError,
  TokenError,
} from "./errors.js";
export { loadToken, tokenSource, TOKEN_ENV_VAR, type TokenSourceOptions } from "./token.js";
export { DEFAULT_RETRY_POLICY, decideRetry, isIdempotentRequest, type RetryPolicy } from "./retry.js";
export { createRetryingFetch, redactHeaders, type FetchLike, type Sleep } from "./transport.js";
export { METADATA_URL, MetadataError, readAnchorIPv4, readDropletId, type AnchorIPv4, type MetadataOptions } from "./metadata.js";
export { fleetNames, serviceFirewallName, MANAGED_TAG, type FleetNames } from "./naming.js";
export type * from "./types.js";
