/**
 * The base of the errors static-egress defines: a message that names what failed, and the error
 * that caused it as the standard `cause` (Node prints the chain; loggers serialize it).
 */
export class StaticEgressError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
