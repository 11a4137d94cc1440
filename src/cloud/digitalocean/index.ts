export { DigitalOceanClient, type DigitalOceanClientOptions } from "./client.js";
export { DigitalOceanProvider } from "./provider.js";
export { ActionErroredError, ActionTimeoutError, DigitalOceanApiError, DigitalOceanNetworkError } from "./errors.js";
export { loadToken, tokenSource } from "./token.js";
export { type FetchLike } from "./transport.js";
export { fleetNames, serviceFirewallName } from "./naming.js";
export type * from "./types.js";
