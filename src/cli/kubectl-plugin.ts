#!/usr/bin/env node
// kubectl's plugin: kubectl runs `kubectl-static_egress` (on PATH) for `kubectl static-egress ...`.
// The same CLI, with its usage lines saying how it was called.
import { invokedAs } from "./invocation.js";

invokedAs("kubectl static-egress");
await import("./main.js");
