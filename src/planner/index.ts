export * from "./model.js";
export * from "../util/ipv4.js";
export * from "./ids.js";
export * from "./selector.js";
export * from "./resolve.js";
export * from "./plan.js";
