/**
 * How the CLI was started: `static-egress`, or as kubectl's plugin (`kubectl static-egress`, the
 * executable `kubectl-static_egress`). Only help texts and usage lines read it.
 */
let name = "static-egress";

export function programName(): string {
  return name;
}

/** Called by the kubectl plugin's entry point before the CLI loads. */
export function invokedAs(program: string): void {
  name = program;
}
