export { startDigitalOceanStandin, type DigitalOceanStandin, type StandinOptions } from "./server.js";
export { createCrashingFetch, SimulatedCrashError } from "./crash.js";
export { OpenApiDocument, locateOpenApiDocument } from "./openapi.js";
export type { CrashOptions } from "./crash.js";
