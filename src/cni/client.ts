import { request } from "node:http";
import {
  CNI_API,
  parseAddResponse,
  parseCheckResponse,
  parseDelResponse,
  parseHealthResponse,
  type AddRequest,
  type AddResponse,
  type CheckRequest,
  type CheckResponse,
  type DelRequest,
  type DelResponse,
  type HealthResponse,
} from "./protocol.js";
import { StaticEgressError } from "../util/errors.js";

/** What the plugin needs from the node agent (the socket client, or a fake in tests). */
export interface AgentApi {
  add(req: AddRequest): Promise<AddResponse>;
  del(req: DelRequest): Promise<DelResponse>;
  check(req: CheckRequest): Promise<CheckResponse>;
  health(): Promise<HealthResponse>;
}

/** The agent did not answer: no socket, nobody listening, or no answer in time. */
export class AgentUnavailableError extends StaticEgressError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentUnavailableError";
  }
}

/** No answer in time: the same words whether the agent is asked over its socket or in-process. */
export function timedOut(socketPath: string, timeoutMs: number): AgentUnavailableError {
  return new AgentUnavailableError(`no answer from the agent at ${socketPath} within ${timeoutMs} ms`);
}

/** The agent answered, but not with a success (4xx, 5xx) or not with the expected message. */
export class AgentResponseError extends StaticEgressError {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "AgentResponseError";
  }
}

/** The agent refused a request (4xx, 5xx): the same words over the socket and in-process. */
export function refused(path: string, status: number, message: string): AgentResponseError {
  return new AgentResponseError(status, `the agent refused ${path} (status ${status}): ${message}`);
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/** HTTP on the node agent's unix socket. Every call is bounded by `timeoutMs`, connect included. */
export class AgentClient implements AgentApi {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs: number,
  ) {}

  add(req: AddRequest): Promise<AddResponse> {
    return this.call("POST", CNI_API.add, req).then(parseAddResponse);
  }

  del(req: DelRequest): Promise<DelResponse> {
    return this.call("POST", CNI_API.del, req).then(parseDelResponse);
  }

  check(req: CheckRequest): Promise<CheckResponse> {
    return this.call("POST", CNI_API.check, req).then(parseCheckResponse);
  }

  health(): Promise<HealthResponse> {
    return this.call("GET", CNI_API.health, undefined).then(parseHealthResponse);
  }

  private call(method: "GET" | "POST", path: string, body: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          agent: false,
          headers:
            payload === undefined
              ? {}
              : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES)
              req.destroy(
                new AgentResponseError(
                  res.statusCode ?? 0,
                  `the agent's answer to ${path} is larger than ${MAX_RESPONSE_BYTES} bytes`,
                ),
              );
            else chunks.push(c);
          });
          res.on("error", (e) => settle(() => reject(e)));
          res.on("end", () =>
            settle(() => {
              const text = Buffer.concat(chunks).toString("utf8");
              const status = res.statusCode ?? 0;
              let parsed: unknown;
              try {
                parsed = JSON.parse(text);
              } catch (e) {
                reject(
                  new AgentResponseError(
                    status,
                    `the agent answered ${path} with status ${status} and a body that is not JSON`,
                    { cause: e },
                  ),
                );
                return;
              }
              if (status < 200 || status > 299) {
                const msg = (parsed as { error?: unknown } | null)?.error;
                reject(refused(path, status, typeof msg === "string" ? msg : text.slice(0, 300)));
                return;
              }
              resolve(parsed);
            }),
          );
        },
      );
      const timer = setTimeout(() => {
        const err = timedOut(this.socketPath, this.timeoutMs);
        settle(() => reject(err));
        req.destroy(err);
      }, this.timeoutMs);
      req.on("error", (e: NodeJS.ErrnoException) =>
        settle(() => {
          if (e instanceof AgentResponseError || e instanceof AgentUnavailableError) reject(e);
          else if (
            !req.reusedSocket &&
            (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EACCES" || e.code === "ENOTSOCK")
          ) {
            reject(new AgentUnavailableError(`cannot reach the agent at ${this.socketPath}: ${e.code}`, { cause: e }));
          } else
            reject(
              new AgentUnavailableError(`lost the connection to the agent at ${this.socketPath}: ${e.message}`, {
                cause: e,
              }),
            );
        }),
      );
      req.end(payload);
    });
  }
}
