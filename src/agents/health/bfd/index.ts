export * from "./packet.js";
export * from "./session.js";
export * from "./transport.js";
export * from "./agent.js";
