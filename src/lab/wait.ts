import { StaticEgressError } from "../util/errors.js";
export class LabError extends StaticEgressError {}

export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  message: string,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new LabError(message);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
