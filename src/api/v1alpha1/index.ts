export * from "./common.js";
export * from "./egress-gateway.js";
export * from "./egress-policy.js";
export * from "./app.js";
export * from "./crd.js";
export * from "./validate.js";
