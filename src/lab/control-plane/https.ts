import { request, type RequestOptions } from "node:https";

export interface HttpsResponse {
  status: number;
  body: string;
}

/** One HTTPS request against the control plane (trusting its CA), with an optional bearer token. */
export function httpsRequest(
  url: string,
  opts: { ca: string; token?: string; method?: string; body?: string; contentType?: string; timeoutMs?: number },
): Promise<HttpsResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: "application/json" };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers["content-type"] = opts.contentType ?? "application/json";
    const options: RequestOptions = {
      method: opts.method ?? "GET",
      ca: opts.ca,
      headers,
      timeout: opts.timeoutMs ?? 10_000,
    };
    const req = request(url, options, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () =>
      req.destroy(new Error(`${opts.method ?? "GET"} ${url}: no answer in ${opts.timeoutMs ?? 10_000} ms`)),
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}
