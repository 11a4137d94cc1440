export {
  startDigitalOceanStandin,
  type DigitalOceanStandin,
  type RejectedRequest,
  type RequestLogEntry,
  type StandinOptions,
  type StandinStateView,
  type Violation,
} from "./server.js";
export { StandinFaults, type FaultRequest } from "./faults.js";
export { createCrashingFetch, SimulatedCrashError, type CrashingFetch, type FetchLike } from "./crash.js";
export { OpenApiDocument, locateOpenApiDocument } from "./openapi.js";
export type { CrashOptions } from "./crash.js";
export type { StandinAddressing } from "./state.js";
