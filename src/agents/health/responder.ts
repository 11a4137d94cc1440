import { LIMITS } from "../../api/v1alpha1/common.js";
import type { BfdPeerConfig } from "./bfd/agent.js";

/**
 * The health responder's session for a node that probes it: passive, and sending at the rate the
 * node asks for. Its own DesiredMinTx is the shortest health interval a gateway may set, so the
 * interval it sends at is the node's RequiredMinRx (RFC 5880 §6.8.7: the slower of the two), and
 * the node detects a dead gateway in its multiplier times the gateway's `health.intervalMs`. With
 * the default 100 ms here, a node asking for 50 ms still got a packet every 100 ms and detected
 * in 300 ms (§6.8.4: the remote's DetectMult times the larger of its own RequiredMinRx and the
 * remote's DesiredMinTx). What the responder requires of the node stays the default: a node
 * that stalls is timed out no sooner than before.
 */
export function responderSession(): BfdPeerConfig {
  return { peer: "", passive: true, desiredMinTxMs: LIMITS.healthIntervalMs };
}
